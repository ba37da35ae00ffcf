"""``bsr reproduce``: the ablation tables as one command (plan, and tiny end-to-end runs on a fake dataset)."""

import json
import os

import pytest
from sr_fakes import make_bench_dataset

from bsrdata.cli.main import main
from bsrdata.errors import BsrError
from bsrdata.models import reproduce as rp

TINY_CMOS = """task: cmos
model: {name: cmos, num_classes: 4, width: 0.25, window: [3, 4], backbone_init: torch}
data: {crop: [16, 20], zoom: [1]}
train: {iterations: 2, batch_size: 2, workers: 0, log_every: 1, ckpt_every: 2, warmup: 0, lr: 1.0e-3, amp: false,
        val_limit: 1}
"""
TINY_SR = """task: rrdb-sft
model: {name: rrdb_sft, num_classes: 4, nf: 8, nb: 1, gc: 4, prior_ch: 8, sft_hidden: 4, gia_groups: 2}
data: {crop: 16, zoom: [1]}
train: {iterations: 2, batch_size: 2, workers: 0, log_every: 1, ckpt_every: 2, warmup: 0, lr: 1.0e-3, amp: false,
        val_limit: 1}
"""


@pytest.fixture
def configs(tmp_path):
    d = tmp_path / "configs"
    d.mkdir()
    for name in ("cmos_demo.yaml", "cmos_nyuv2.yaml"):
        (d / name).write_text(TINY_CMOS)
    for name in ("rrdb_sft_demo.yaml", "rrdb_sft_nyuv2.yaml", "rrdb_sft_noseg_nyuv2.yaml"):
        (d / name).write_text(TINY_SR)
    return str(d)


def test_every_table_plans_and_uses_shipped_configs(tmp_path):
    for t in rp.table_names():
        for small in (False, True):
            lines = rp.plan(t, "data", str(tmp_path / "o"), small=small, num_classes=40)
            assert lines and all(ln.startswith("bsr ") for ln in lines)
            assert sum(ln.startswith("bsr train") for ln in lines) == len(rp.TABLES[t][1])
    with pytest.raises(BsrError, match="unknown table 'table9'"):
        rp.plan("table9", "d", "o")
    t4 = rp.plan("table4", "bsr", "o", small=True, data_iva="iva")
    assert sum("--data iva " in ln for ln in t4) == 3 and "init.estimator_ckpt=o/runs/t4_iva_s1/last" in t4[2]


def test_table8_and_table6_end_to_end(tmp_path, configs):
    data = tmp_path / "data"
    make_bench_dataset(data, n_test=5, n_train=6, h=32, w=40, num_classes=4)
    out = tmp_path / "out"
    for table, n in (("table8", 2), ("table6", 2), ("table7", 5)):
        res = rp.reproduce(table, str(data), str(out), small=True, configs_dir=configs, device="cpu",
                           progress=False, log=lambda m: None)
        doc = json.loads(open(res["files"]["json"]).read())
        assert len(doc["rows"]) == n and doc["provenance"]["small"] is True
        assert all(len(r["checkpoint_sha256"]) == 64 for r in doc["rows"])
        assert os.path.isfile(os.path.join(out, f"{table}.md"))
    t8 = json.loads(open(os.path.join(out, "table8.json")).read())
    assert all(r["blur_psnr"] is not None and r["kind"] == "cmos" for r in t8["rows"])
    # the two variants really differ (aux loss off changes the training)
    assert t8["rows"][0]["checkpoint_sha256"] != t8["rows"][1]["checkpoint_sha256"]
    t7 = {r["label"]: r for r in json.loads(open(os.path.join(out, "table7.json")).read())["rows"]}
    assert t7["segmentation only"]["blur_psnr"] is None and t7["segmentation only"]["miou"] is not None
    assert t7["blur only"]["miou"] is None and t7["SR from multi-task"]["psnr"] > 0
    t6 = json.loads(open(os.path.join(out, "table6.json")).read())
    assert all(r["kind"] == "sr" and r["psnr"] > 0 for r in t6["rows"])
    # resumed: a second call trains nothing new and gives the same table
    again = rp.reproduce("table8", str(data), str(out), small=True, configs_dir=configs, device="cpu",
                         progress=False, log=lambda m: None)
    assert [r["checkpoint_sha256"] for r in again["rows"]] == [r["checkpoint_sha256"] for r in t8["rows"]]


def test_cli_dry_run_and_bad_data(tmp_path, capsys, configs):
    data = tmp_path / "data"
    make_bench_dataset(data, n_test=5, h=32, w=40)
    try:
        main(["reproduce", "table5", "--data", str(data), "--out", str(tmp_path / "o"), "--small", "--dry-run",
              "--configs", configs])
    except SystemExit as exc:
        assert not exc.code
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8 and "model.gia.flow=false" in lines[0]
    try:
        main(["reproduce", "table8", "--data", str(data), "--out", str(tmp_path / "o"), "--small", "--dry-run",
              "--configs", configs, "--set", "train.iterations=7"])
    except SystemExit as exc:
        assert not exc.code
    lines = capsys.readouterr().out.strip().splitlines()
    assert all("train.iterations=7" in ln for ln in lines if ln.startswith("bsr train"))
    with pytest.raises(BsrError, match="--data-iva"):
        rp.reproduce("table4", str(data), str(tmp_path / "o"), small=True, configs_dir=configs, log=lambda m: None)
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "table5", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 1
    assert "no manifest.json" in capsys.readouterr().err
