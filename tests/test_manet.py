"""MANet (bsrdata.models.manet, task ``manet``, bsr convert --arch manet): parameter counts at the official widths,
numerics against numpy twins, the three training stages through the engine, the bench method, the converter."""

import json
import math
import os
import re

import numpy as np
import pytest
import torch

from bsrdata.errors import BsrError
from bsrdata.models import create_model

TINY_EST = {"kernel_size": 7, "est_nf": 8, "est_nb": 1, "split": 2}
TINY_SR = {"nf": 8, "nb": 1, "gc": 4, "code_length": 4, "kernel_size": 7}


def _count(m):
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------ counts
def test_parameter_counts_equal_the_official_per_module():
    torch.manual_seed(0)
    est = create_model("manet_estimator")  # kernel 21, est_nf 128, est_nb 1, split 2
    assert _count(est.head) == 3_584
    assert _count(est.down_blocks) + _count(est.down) == 304_256  # m_down1
    assert _count(est.body) == 689_920  # m_body
    assert _count(est.up) + _count(est.up_blocks) == 304_128  # m_up1
    assert _count(est.tail) == 508_473  # m_tail
    assert _count(est) == 1_810_361
    sr = create_model("manet_rrdb_sft", pca_sigma_max=5.0)
    blk = sr.blocks[0]
    assert _count(blk.sft) == 82_560 and _count(blk.dense[0]) == 239_808 and _count(blk) == 801_984
    assert _count(sr.blocks) == 8_019_840
    assert (_count(sr.head), _count(sr.trunk), _count(sr.tail)) == (1_792, 36_928, 27_696)
    assert _count(sr) == 8_086_256
    full = create_model("manet")
    assert (_count(full.estimator), _count(full.restorer), _count(full)) == (1_810_361, 8_086_256, 9_896_617)
    # the official layouts hold 80 / 387 / 467 tensors (pca_matrix included)
    assert (len(est.state_dict()), len(sr.state_dict()), len(full.state_dict())) == (80, 387, 467)


def test_kernel_size_61_changes_only_the_tail():
    est = create_model("manet_estimator", kernel_size=61)
    assert _count(est.tail) == 128 * 3721 * 9 + 3721
    assert _count(est) - _count(est.tail) == 1_810_361 - 508_473


# ------------------------------------------------------------------------------------------ shapes
def test_forward_shapes_padding_and_softmax():
    torch.manual_seed(0)
    est = create_model("manet_estimator", **TINY_EST).eval()
    x = torch.rand(2, 3, 13, 10)
    with torch.no_grad():
        k = est(x)
        # the official padding: replicate bottom/right to a multiple of 8, then crop back
        xp = torch.nn.functional.pad(x, (0, 6, 0, 3), mode="replicate")
        x1 = est.head(xp)
        x2 = est.down(est.down_blocks(x1))
        ref = torch.softmax(est.tail(est.up_blocks(est.up(est.body(x2) + x2)) + x1), 1)[..., :13, :10]
    assert k.shape == (2, 49, 13, 10)
    torch.testing.assert_close(k.sum(1), torch.ones(2, 13, 10))
    torch.testing.assert_close(k, ref)
    sr = create_model("manet_rrdb_sft", **TINY_SR)
    assert sr(x, torch.rand(2, 4, 13, 10)).shape == (2, 3, 52, 40)
    with pytest.raises(ValueError, match="code_length"):
        sr(x, torch.rand(2, 5, 13, 10))
    full = create_model("manet", **TINY_EST, **{k: v for k, v in TINY_SR.items() if k != "kernel_size"}).eval()
    out = full(x)
    assert out["sr"].shape == (2, 3, 52, 40) and out["kernel"].shape == (2, 49, 13, 10)
    y = full.super_resolve(x)
    assert y.shape == (2, 3, 52, 40) and float(y.min()) >= 0 and float(y.max()) <= 1
    assert full.estimate_sigma(x).shape == (2, 1, 13, 10)
    assert all(not p.requires_grad for p in full.estimator.parameters())


# ------------------------------------------------------------------------------------------ numerics
def _np_conv(x, w, b, pad):
    """float64 twin of a stride-1 conv: x (C, H, W), w (O, C, k, k), zero padding ``pad``."""
    c, h, wd = x.shape
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((w.shape[0], h + 2 * pad - k + 1, wd + 2 * pad - k + 1))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = np.tensordot(w, xp[:, i:i + k, j:j + k], axes=([1, 2, 3], [0, 1, 2]))
    return out + b[:, None, None]


def test_maconv_against_a_numpy_twin():
    from bsrdata.models.manet import MAConv

    torch.manual_seed(3)
    m = MAConv(6, split=2).double()
    x = torch.rand(1, 6, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        got = m(x)[0].numpy()
    xn = x[0].numpy()
    par = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    halves = [xn[:3], xn[3:]]
    out = []
    for i in range(2):
        other = halves[1 - i]
        h1 = np.maximum(_np_conv(other, par[f"affine.{i}.0.weight"], par[f"affine.{i}.0.bias"], 0), 0)
        st = _np_conv(h1, par[f"affine.{i}.2.weight"], par[f"affine.{i}.2.bias"], 0)
        scale, shift = st[:3], st[3:]
        mod = halves[i] / (1 + np.exp(-scale)) + shift
        out.append(_np_conv(mod, par[f"convs.{i}.weight"], par[f"convs.{i}.bias"], 1))
    np.testing.assert_allclose(got, np.concatenate(out), rtol=1e-10, atol=1e-12)
    # the reduction: 1x1 conv C/2 -> C/4 -> C, as the official MAConv
    assert par["affine.0.0.weight"].shape == (1, 3, 1, 1) and par["affine.0.2.weight"].shape == (6, 1, 1, 1)


def _np_gauss(s, size):
    r = size // 2
    if s < 1e-6:
        g = np.zeros(size)
        g[r] = 1
    else:
        x = np.arange(-r, r + 1, dtype=np.float64)
        g = np.exp(-x ** 2 / (2 * s * s))
        g /= g.sum()
    return np.outer(g, g)


def test_kernel_target_equals_a_numpy_gaussian():
    from bsrdata.models.engine.task_manet import kernel_targets

    sig = torch.tensor([[0.0, 0.5, 1.3], [2.7, 5.0, 0.5]])
    t = kernel_targets(sig, 21)
    assert t.shape == (2, 3, 441)
    for idx in np.ndindex(2, 3):
        np.testing.assert_allclose(t[idx].numpy().reshape(21, 21), _np_gauss(float(sig[idx]), 21), atol=1e-7)


def test_kernel_loss_hand_case():
    """hr sites: every HR pixel against its LR pixel's kernel (nearest x4); lr sites: HR pixel 4i only."""
    from bsrdata.models.engine.task_manet import kernel_loss

    ks, s = 5, 4
    torch.manual_seed(0)
    pred = torch.softmax(torch.randn(1, ks * ks, 2, 2), 1)
    sig = torch.rand(1, 1, 8, 8) * 2
    p = pred[0].numpy()
    sn = sig[0, 0].numpy()
    d_hr = [np.abs(p[:, y // s, x // s] * 1e4 - _np_gauss(float(sn[y, x]), ks).ravel() * 1e4)
            for y in range(8) for x in range(8)]
    want_hr = np.mean(d_hr) / 64
    d_lr = [np.abs(p[:, i, j] * 1e4 - _np_gauss(float(sn[s * i, s * j]), ks).ravel() * 1e4)
            for i in range(2) for j in range(2)]
    want_lr = np.mean(d_lr) / 64
    assert float(kernel_loss(pred, sig, ks, s, "hr")) == pytest.approx(want_hr, rel=1e-5)
    assert float(kernel_loss(pred, sig, ks, s, "lr")) == pytest.approx(want_lr, rel=1e-5)
    mask = torch.ones(1, 1, 8, 8)
    mask[..., -3:] = 0
    keep = [d for n, d in enumerate(d_hr) if n % 8 < 5]
    assert float(kernel_loss(pred, sig, ks, s, "hr", mask=mask)) == pytest.approx(np.mean(keep) / 64, rel=1e-5)


def test_sigma_from_second_moment_and_codes():
    from bsrdata.models.manet import kernel_sigma, sigma_codes

    ks = 21
    k = np.stack([_np_gauss(s, ks).ravel() for s in (0.0, 1.0, 2.0)], 1)  # (441, 3)
    got = kernel_sigma(torch.from_numpy(k).float().reshape(1, 441, 3, 1), ks)
    np.testing.assert_allclose(got[0, 0, :, 0].numpy(), [0.0, 1.0, 2.0], atol=2e-3)
    # shifted kernel: same σ̂ (moment about the centroid)
    sh = np.roll(_np_gauss(1.0, ks), 2, axis=1).ravel()
    assert float(kernel_sigma(torch.from_numpy(sh).float().view(1, -1, 1, 1), ks)) == pytest.approx(1.0, abs=2e-3)
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(49, 4, dtype=torch.float64))[0]
    sig = torch.tensor([[[0.3, 1.0], [1.0, 2.5]]])
    codes = sigma_codes(sig, basis, 7)
    for i, j in np.ndindex(2, 2):
        want = basis.numpy().T @ _np_gauss(float(sig[0, i, j]), 7).ravel()
        np.testing.assert_allclose(codes[0, :, i, j].numpy(), want, rtol=1e-5, atol=1e-7)


def test_gaussian_pca_basis_buffer_and_external_file(tmp_path):
    from bsrdata.models.engine.task_manet import _read_pca
    from bsrdata.models.kernels import gaussian_pca_basis

    sr = create_model("manet_rrdb_sft", **TINY_SR, pca_sigma_max=3.0)
    want = gaussian_pca_basis(3.0, 7, 4).float()
    torch.testing.assert_close(sr.pca_matrix, want)
    torch.testing.assert_close(sr.pca_matrix.T @ sr.pca_matrix, torch.eye(4), atol=1e-5, rtol=0)
    ext = create_model("manet_rrdb_sft", **TINY_SR, pca="external", pca_sigma_max=None)
    assert not ext.pca_matrix.any()
    torch.save(want, tmp_path / "pca.pth")
    torch.testing.assert_close(_read_pca(str(tmp_path / "pca.pth"), 7, 4), want)
    torch.save(want[:, :3], tmp_path / "bad.pth")
    with pytest.raises(BsrError, match=r"bad.pth: not a PCA basis of 49x4"):
        _read_pca(str(tmp_path / "bad.pth"), 7, 4)
    with pytest.raises(ValueError, match="pca_sigma_max"):
        create_model("manet_rrdb_sft", **TINY_SR, pca_sigma_max=None)


def test_output_shift_moves_content_right_and_down():
    from bsrdata.models.manet import _shift

    x = torch.rand(1, 3, 12, 10)
    y = _shift(x, 1.0)
    torch.testing.assert_close(y[..., 1:, 1:], x[..., :-1, :-1], atol=1e-5, rtol=0)
    ramp = torch.arange(20, dtype=torch.float32).repeat(20, 1)[None, None]  # value = column index
    y = _shift(ramp, 1.5)
    torch.testing.assert_close(y[..., 4:-4, 4:-4], ramp[..., 4:-4, 4:-4] - 1.5, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------ configs
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", [f"manet_{d}_stage{s}" for d in ("nyuv2", "cityscapes", "small") for s in (1, 2, 3)])
def test_stage_configs_validate(name):
    from bsrdata.models.engine.config import read_yaml
    from bsrdata.models.engine.task import get_task

    cfg = get_task("manet").config(read_yaml(os.path.join(ROOT, "configs", f"{name}.yaml")), where=name)
    assert cfg["model"]["stage"] == int(name[-1])
    if "cityscapes" in name and name[-1] in "12":
        assert cfg["model"]["kernel_size"] == 61
    t = cfg["train"]
    official = {"1": (2e-4, [0.9, 0.999], "multistep"), "2": (2e-4, [0.9, 0.99], "cosine_restart"),
                "3": (5e-5, [0.9, 0.999], "multistep")}[name[-1]]
    assert t["betas"] == official[1] and t["schedule"] == official[2]
    if "small" not in name:
        assert t["lr"] == official[0] and t["amp"] and t["batch_size"] == 16


def test_config_errors_are_one_line():
    from bsrdata.models.engine.task import get_task

    task = get_task("manet")
    with pytest.raises(BsrError, match="model.name 'manet' does not train stage 1"):
        task.config({"task": "manet", "model": {"stage": 1, "name": "manet"}})
    with pytest.raises(BsrError, match="kernel_size must be an odd"):
        task.config({"task": "manet", "model": {"kernel_size": 20}})
    with pytest.raises(BsrError, match="loss.kernel_sites"):
        task.config({"task": "manet", "loss": {"kernel_sites": "both"}})
    cfg = task.config({"task": "manet", "model": {"stage": 3}})  # pure: checkpoints are needed by resolve
    with pytest.raises(BsrError, match="stage 3 needs init.estimator_ckpt"):
        task.resolve(cfg)


# ------------------------------------------------------------------------------------------ engine + bench
TRAIN = {"iterations": 3, "batch_size": 2, "lr": 1e-3, "workers": 0, "amp": False, "log_every": 1,
         "val_groups": [1, 2], "val_limit": 2, "ckpt_every": 3, "threads": 1, "milestones": [2]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from sr_fakes import make_bench_dataset

    root = tmp_path_factory.mktemp("manet_ds")
    make_bench_dataset(root, n_test=5, n_train=6, h=32, w=32, num_classes=4)
    return root


@pytest.fixture(scope="module")
def stages(data, tmp_path_factory):
    from bsrdata.models.engine.task import get_task
    from bsrdata.models.engine.trainer import train

    d = tmp_path_factory.mktemp("manet_runs")
    task = get_task("manet")
    c1 = task.config({"task": "manet", "model": {"stage": 1, **TINY_EST}, "data": {"crop": 16}, "train": TRAIN})
    r1 = train(task, c1, data, d / "s1", progress=False)
    c2 = task.config({"task": "manet", "model": {"stage": 2, **TINY_SR}, "data": {"crop": 16},
                      "train": {**TRAIN, "schedule": "cosine_restart", "restart_period": 2}})
    r2 = train(task, c2, data, d / "s2", progress=False)
    c3 = task.config({"task": "manet", "model": {"stage": 3},
                      "init": {"estimator_ckpt": str(d / "s1" / "last"), "sr_ckpt": str(d / "s2" / "last")},
                      "data": {"crop": 16}, "train": TRAIN})
    r3 = train(task, c3, data, d / "s3", progress=False)
    return d, (r1, r2, r3)


def test_three_stages_train_through_the_engine(stages):
    from bsrdata.models import checkpoint
    from bsrdata.models.manet import KernelEstimator, MANet, MANetRRDBSFT

    d, (r1, r2, r3) = stages
    assert [r["iterations"] for r in (r1, r2, r3)] == [3, 3, 3]
    assert set(r1["val"]["avg"]) == {"kernel_l1", "sigma_r", "sigma_mae", "n"} and r1["val"]["1"]["n"] == 2
    assert 0 <= r1["val"]["avg"]["kernel_l1"] <= 2
    assert set(r2["val"]["avg"]) == {"psnr", "ssim", "n"} and set(r3["val"]) == {"1", "2", "avg"}
    est, _ = checkpoint.load(d / "s1" / "last")
    sr, cfg2 = checkpoint.load(d / "s2" / "last")
    full, cfg3 = checkpoint.load(d / "s3" / "last")
    assert isinstance(est, KernelEstimator) and isinstance(sr, MANetRRDBSFT) and isinstance(full, MANet)
    # the checkpoint records the PCA choice (refit on G_σ over the dataset's σ range, attrs.sigma_max 5)
    assert cfg2["model"]["pca"] == "gaussian" and cfg2["model"]["pca_sigma_max"] == 5.0
    assert cfg3["model"]["name"] == "manet" and cfg3["model"]["nf"] == 8 and cfg3["model"]["kernel_size"] == 7
    # stage 3: the estimator is the stage-1 one, untouched; the PCA basis is stage 2's; the restorer moved
    for k, v in est.state_dict().items():
        assert torch.equal(full.estimator.state_dict()[k], v), k
    assert torch.equal(full.pca_matrix, sr.pca_matrix)
    rs = full.restorer.state_dict()
    assert any(not torch.equal(rs[k], v) for k, v in sr.state_dict().items() if k != "pca_matrix")
    metrics = json.loads((d / "s3" / "metrics.json").read_text())
    assert metrics["conventions"]  # SR scoring conventions recorded for stages 2-3


def _bsr(argv, capsys):
    from bsrdata.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_bench_method_scores_the_stage3_checkpoint(data, stages, tmp_path, capsys):
    d, _ = stages
    out = tmp_path / "bench"
    code, text, err = _bsr(["bench", "--data", str(data), "--method", "manet", "--method", "bicubic", "--ckpt",
                            str(d / "s3" / "last"), "--groups", "1-2", "--out", str(out), "--device", "cpu"], capsys)
    assert code == 0, err
    assert "| manet |" in text
    lines = open(next(out.glob("results/manet*.jsonl"))).read().splitlines()
    head, recs = json.loads(lines[0])["header"], [json.loads(x) for x in lines[1:]]
    assert head["provenance"]["model"]["name"] == "manet" and recs
    assert all(math.isfinite(r["psnr"]) for r in recs)
    code, _, err = _bsr(["bench", "--data", str(data), "--method", "manet", "--ckpt", str(d / "s3" / "last"),
                         "--groups", "1", "--out", str(tmp_path / "b2"), "--device", "cpu", "--opt", "align=1.5"],
                        capsys)
    assert code == 0, err
    # a stage-2 checkpoint is not a manet bench checkpoint: one line
    code, _, err = _bsr(["bench", "--data", str(data), "--method", "manet", "--ckpt", str(d / "s2" / "last"),
                         "--groups", "1", "--out", str(tmp_path / "b3"), "--device", "cpu"], capsys)
    assert code != 0 and "manet_rrdb_sft checkpoint" in err, err


# ------------------------------------------------------------------------------------------ converter
# Our name -> the official MANet name (BASELINES-independent table written for this test: ordered regexes).
OFFICIAL = [
    (r"^estimator\.", "kernel_estimation."),
    (r"^kernel_estimation\.head\.", "kernel_estimation.m_head."),
    (r"^kernel_estimation\.tail\.", "kernel_estimation.m_tail."),
    (r"^kernel_estimation\.down_blocks\.0\.", "kernel_estimation.m_down1.0."),
    (r"^kernel_estimation\.down\.", "kernel_estimation.m_down1.1."),
    (r"^kernel_estimation\.body\.0\.", "kernel_estimation.m_body."),
    (r"^kernel_estimation\.up\.", "kernel_estimation.m_up1.0."),
    (r"^kernel_estimation\.up_blocks\.0\.", "kernel_estimation.m_up1.1."),
    (r"\.ma1\.", ".res.0."), (r"\.ma2\.", ".res.2."),
    (r"\.affine\.(\d)\.", r".fc\1."), (r"(res\.\d)\.convs\.(\d)\.", r"\1.conv\2."),
    (r"^restorer\.", ""),
    (r"^head\.", "conv_first."), (r"^trunk\.", "trunk_conv."), (r"^tail\.", "upsampler.0."),
    (r"^blocks\.", "RRDB_trunk."), (r"\.sft\.scale\.0\.", ".SFT.mul_conv1."), (r"\.sft\.scale\.2\.", ".SFT.mul_conv2."),
    (r"\.sft\.shift\.0\.", ".SFT.add_conv1."), (r"\.sft\.shift\.2\.", ".SFT.add_conv2."),
]


def _official(model, stage1=False):
    out = {}
    for k, v in model.state_dict().items():
        n = "estimator." + k if stage1 else k
        for pat, rep in OFFICIAL:
            n = re.sub(pat, rep, n)
        n = re.sub(r"\.dense\.(\d)\.convs\.(\d)\.", lambda m: f".RDB{int(m[1]) + 1}.conv{int(m[2]) + 1}.", n)
        out[n] = v.reshape(1, v.shape[0], v.shape[1], 1, 1) if n == "pca_matrix" else v.clone()
    return out


SMALL_FULL = {"kernel_size": 5, "est_nf": 8, "nf": 8, "nb": 2, "gc": 4, "code_length": 3, "pca": "external",
              "pca_sigma_max": None}


def test_convert_round_trips_a_synthetic_official_state_dict(tmp_path):
    from bsrdata.models import checkpoint
    from bsrdata.models.converters import convert

    torch.manual_seed(0)
    ours = create_model("manet", **SMALL_FULL).eval()
    ours.pca_matrix.copy_(torch.randn(25, 3))
    sd = _official(ours)
    assert "kernel_estimation.m_down1.0.res.0.fc0.0.weight" in sd and "RRDB_trunk.1.RDB3.conv5.bias" in sd
    assert "kernel_estimation.m_body.res.2.conv1.weight" in sd and sd["pca_matrix"].shape == (1, 25, 3, 1, 1)
    torch.save(sd, tmp_path / "stage3.pth")
    cfg = convert(tmp_path / "stage3.pth", "manet", tmp_path / "out")
    assert cfg["source"]["tensors"] == len(sd) and cfg["model"]["output_shift"] == 1.5
    got, saved = checkpoint.load(tmp_path / "out")
    assert {k: saved["model"][k] for k in ("kernel_size", "est_nf", "nf", "nb", "gc", "code_length")} == {
        k: SMALL_FULL[k] for k in ("kernel_size", "est_nf", "nf", "nb", "gc", "code_length")}
    for k, v in ours.state_dict().items():
        assert torch.equal(got.state_dict()[k], v), k
    x = torch.rand(1, 3, 9, 7)
    torch.testing.assert_close(got.eval()(x)["sr"], ours(x)["sr"])
    assert "adaptation" in saved and "4i - 1.5" in saved["adaptation"]["grid"]
    # stage-1 and stage-2 files are detected from the names
    est = create_model("manet_estimator", kernel_size=5, est_nf=8)
    torch.save(_official(est, stage1=True), tmp_path / "s1.pth")
    assert convert(tmp_path / "s1.pth", "manet", tmp_path / "o1")["model"]["name"] == "manet_estimator"
    sr = create_model("manet_rrdb_sft", nf=8, nb=2, gc=4, code_length=3, kernel_size=5, pca_sigma_max=2.0)
    sd2 = _official(sr)
    torch.save(sd2, tmp_path / "s2.pth")
    c2 = convert(tmp_path / "s2.pth", "manet", tmp_path / "o2")
    assert c2["model"]["name"] == "manet_rrdb_sft" and c2["model"]["kernel_size"] == 5
    got2, _ = checkpoint.load(tmp_path / "o2")
    torch.testing.assert_close(got2.pca_matrix, sr.pca_matrix)


@pytest.mark.parametrize("fault", ["missing", "extra", "shape"])
def test_convert_refuses_a_faulty_file_in_one_line(tmp_path, fault):
    from bsrdata.models.converters import convert

    sd = _official(create_model("manet", **SMALL_FULL))
    if fault == "missing":
        del sd["RRDB_trunk.1.RDB2.conv3.weight"]
    elif fault == "extra":
        sd["RRDB_trunk.0.SFT.extra.weight"] = torch.zeros(3)
    else:
        sd["kernel_estimation.m_up1.0.weight"] = torch.zeros(16, 8, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(BsrError) as e:
        convert(tmp_path / "bad.pth", "manet", tmp_path / "out")
    msg = str(e.value)
    assert "\n" not in msg and "bad.pth" in msg
    assert {"missing": "RRDB_trunk.1.RDB2.conv3.weight", "extra": "SFT.extra.weight",
            "shape": "m_up1.0.weight"}[fault] in msg
    assert not (tmp_path / "out").exists()
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(BsrError, match="not a MANet state dict"):
        convert(tmp_path / "other.pth", "manet", tmp_path / "out")


def test_align_option_none_number_and_bad_value():
    from bsrdata.errors import BsrError

    torch.manual_seed(0)
    m = create_model("manet", **TINY_EST, **{k: v for k, v in TINY_SR.items() if k != "kernel_size"}).eval()
    lr = torch.rand(1, 3, 8, 8)
    assert torch.equal(m.super_resolve(lr, align="none"), m.super_resolve(lr, align=0))
    assert not torch.equal(m.super_resolve(lr, align=1.5), m.super_resolve(lr, align="none"))
    with pytest.raises(BsrError, match="--opt align"):
        m.super_resolve(lr, align="bicubic")
