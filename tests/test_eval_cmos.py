import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from cli_run import bsr as _run
from skimage.metrics import structural_similarity
from sr_fakes import make_bench_dataset

from bsrdata.models import checkpoint, create_model
from bsrdata.models.engine.task_cmos import evaluate_cmos
from bsrdata.shards import open_dataset

C = 4


class FakeCMOS(nn.Module):
    """σ = 1 everywhere; class = (x // 8 + row parity of the LR mean) % C; counts forward calls."""

    num_classes = C

    def __init__(self, mod=C):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.calls = 0
        self.mod = mod  # predicts classes 0..mod-1 of the C outputs

    def forward(self, lr):
        self.calls += 1
        n, _, h, w = lr.shape
        xs = torch.arange(4 * w) // 8
        cls = (xs[None, :] + (torch.arange(4 * h)[:, None] // 16)) % self.mod
        seg = torch.nn.functional.one_hot(cls, C).permute(2, 0, 1)[None].float().repeat(n, 1, 1, 1)
        return {"blur": torch.ones(n, 1, 4 * h, 4 * w) + self.w, "seg": seg, "aux_blur": None, "aux_seg": None}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("e") / "data")
    make_bench_dataset(root, n_test=5, n_train=2, h=32, w=40, num_classes=C)
    return root


def _expected(root, g, mod=C):
    view = open_dataset(root, "test", g)
    psnr, ssim, cm = [], [], np.zeros((C, C), np.int64)
    for s in view:
        gt = s["blur"].astype(np.float64) / 5.0
        pred = np.full_like(gt, 1.0 / 5.0)
        psnr.append(10 * math.log10(1.0 / np.mean((pred - gt) ** 2)))
        ssim.append(structural_similarity(pred, gt, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False))
        h, w = gt.shape
        xs = np.arange(w) // 8
        lab = (xs[None, :] + np.arange(h)[:, None] // 16) % mod
        seg = s["seg"]
        for y in range(h):
            for x in range(w):
                if seg[y, x] != 255:
                    cm[seg[y, x], lab[y, x]] += 1
    union = [cm[c].sum() + cm[:, c].sum() - cm[c, c] for c in range(C)]
    present = [cm[c, c] / union[c] for c in range(C) if union[c] > 0]
    public = [cm[c, c] / max(union[c], 1e-8) for c in range(C)]  # all C classes, absent ones count 0
    return np.mean(psnr), np.mean(ssim), 100 * np.mean(public), 100 * np.mean(present)


def test_metrics_per_group_against_hand_computation(data):
    model = FakeCMOS()
    rows = evaluate_cmos(model, data, [1, 2, 3, 4, 5])
    assert model.calls == 10  # 5 shared VA renderings + 5 IVA ones, not 25
    assert list(rows) == ["1", "2", "3", "4", "5", "avg"]
    exp = {g: _expected(data, g) for g in range(1, 6)}
    for g in range(1, 6):
        r = rows[str(g)]
        assert r["n"] == 5
        assert r["blur_psnr"] == pytest.approx(exp[g][0], abs=1e-9)
        assert r["blur_ssim"] == pytest.approx(exp[g][1], abs=1e-4)
        assert r["miou"] == pytest.approx(exp[g][2], abs=1e-9)
    assert rows["avg"]["blur_psnr"] == pytest.approx(np.mean([exp[g][0] for g in exp]))
    assert rows["avg"]["miou"] == pytest.approx(np.mean([exp[g][2] for g in exp]))
    rows_p = evaluate_cmos(FakeCMOS(), data, [1, 2, 3, 4, 5], miou="present")
    for g in range(1, 6):
        assert rows_p[str(g)]["miou"] == pytest.approx(exp[g][3], abs=1e-9)
        assert rows_p[str(g)]["blur_psnr"] == rows[str(g)]["blur_psnr"]


def test_public_miou_counts_absent_classes(tmp_path):
    """GT and prediction use 2 of the model's 4 classes: the public mean divides by 4, the present one by 2."""
    root = str(tmp_path / "d2")
    make_bench_dataset(root, n_test=5, n_train=2, h=32, w=40, num_classes=2)
    model = FakeCMOS(mod=2)  # 4 outputs, predicts classes 0 and 1 only
    pub = evaluate_cmos(model, root, [1])["1"]["miou"]
    pre = evaluate_cmos(model, root, [1], miou="present")["1"]["miou"]
    exp = _expected(root, 1, mod=2)
    assert pub == pytest.approx(exp[2], abs=1e-9) and pre == pytest.approx(exp[3], abs=1e-9)
    assert pub == pytest.approx(pre / 2, abs=1e-9)  # the same two IoUs, summed over 4 instead of 2


def test_prediction_is_not_clipped(data):
    model = FakeCMOS()
    with torch.no_grad():
        model.w.fill_(-3.0)  # σ = -2: negative, must not be clipped to 0
    r = evaluate_cmos(model, data, [1])["1"]
    view = open_dataset(data, "test", 1)
    ref = np.mean([10 * math.log10(1 / np.mean(((-2.0 - s["blur"].astype(np.float64)) / 5) ** 2)) for s in view])
    assert r["blur_psnr"] == pytest.approx(ref, abs=1e-9)


def test_cli_eval_outputs_and_bad_checkpoints(tmp_path, data, capsys):
    torch.manual_seed(0)
    ck = tmp_path / "run" / "last"
    checkpoint.save(ck, create_model("cmos", num_classes=C),
                    {"task": "cmos", "model": {"name": "cmos", "num_classes": C}})
    code, out, err = _run(["eval", "cmos", "--data", data, "--ckpt", str(tmp_path / "run"), "--out",
                           str(tmp_path / "res")], capsys)
    assert code == 0, err
    assert "| Group1 |" in out and "| Group5 |" in out and "| Avg |" in out and "mIoU" in out
    js = json.loads((tmp_path / "res" / "cmos_eval.json").read_text())
    assert set(js["results"]) == {"1", "2", "3", "4", "5", "avg"} and js["provenance"]["model"]["name"] == "cmos"
    csv = (tmp_path / "res" / "cmos_eval.csv").read_text().splitlines()
    assert csv[0] == "group,blur_psnr,blur_ssim,miou,n,blur_norm,miou_def" and len(csv) == 7
    assert all(line.endswith(",sigma/5.0,public") or line.endswith(",sigma/5,public") for line in csv[1:])
    conv = js["provenance"]["conventions"]
    assert conv["miou"]["definition"] == "public" and conv["miou"]["num_classes"] == C
    assert conv["blur"]["sigma_max"] == 5.0
    md = (tmp_path / "res" / "cmos_eval.md").read_text()
    assert "Conventions: blur maps ÷ σ_max = 5" in md and f"mIoU public: mean over all {C} classes" in md
    code, out, err = _run(["eval", "cmos", "--data", data, "--ckpt", str(ck), "--miou", "present", "--out",
                           str(tmp_path / "res_p")], capsys)
    assert code == 0, err
    assert "mIoU present" in out
    assert json.loads((tmp_path / "res_p" / "cmos_eval.json").read_text())["provenance"]["conventions"]["miou"][
        "definition"] == "present"
    code, out, err = _run(["eval", "cmos", "--data", data, "--ckpt", str(ck), "--miou", "all"], capsys)
    assert code != 0 and "--miou" in err
    code, out, err = _run(["eval", "cmos", "--data", data, "--ckpt", str(ck), "--group", "2"], capsys)
    assert code == 0 and "| Group2 |" in out and "Group1" not in out
    # another architecture
    checkpoint.save(tmp_path / "sr", nn.Conv2d(1, 1, 1), {"model": {"name": "rrdb_sft"}})
    code, out, err = _run(["eval", "cmos", "--data", data, "--ckpt", str(tmp_path / "sr")], capsys)
    assert code == 1 and "not CMOS" in err and len(err.strip().splitlines()) == 1
    # another class count than the dataset
    checkpoint.save(tmp_path / "c40", nn.Conv2d(1, 1, 1), {"model": {"name": "cmos", "num_classes": 40}})
    code, out, err = _run(["eval", "cmos", "--data", data, "--ckpt", str(tmp_path / "c40")], capsys)
    assert code == 1 and "40 classes" in err and len(err.strip().splitlines()) == 1
    code, out, err = _run(["eval", "cmos", "--data", data, "--ckpt", str(ck), "--group", "9"], capsys)
    assert code == 1 and "--group" in err
    assert not os.path.exists(tmp_path / "res2")


def test_group_ranges_limit_and_split(tmp_path, data, capsys):
    torch.manual_seed(0)
    ck = tmp_path / "ck"
    checkpoint.save(ck, create_model("cmos", num_classes=C),
                    {"task": "cmos", "model": {"name": "cmos", "num_classes": C}})
    code, out, err = _run(["eval", "cmos", "--data", data, "--ckpt", str(ck), "--groups", "1-2"], capsys)
    assert code == 0, err
    assert "| Group1 |" in out and "| Group2 |" in out and "Group3" not in out
    code, out, err = _run(["eval", "cmos", "--data", data, "--ckpt", str(ck), "--group", "1,x"], capsys)
    assert code == 1 and "--group: cannot read" in err
    model = FakeCMOS()
    rows = evaluate_cmos(model, data, [1, 2], limit=2)
    assert rows["1"]["n"] == 2 and rows["avg"]["n"] == 4
    whole = evaluate_cmos(FakeCMOS(), data, None, split="train")
    assert set(whole) == {"train", "avg"} and whole["train"]["n"] == len(open_dataset(data, "train"))
