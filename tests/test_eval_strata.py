"""bsr eval cmos --strata / --figures: blur-map strata against a hand computation, and the CLI outputs."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from sr_fakes import make_bench_dataset

from bsrdata import strata as st
from bsrdata.benchmark import BenchData
from bsrdata.cli.main import main
from bsrdata.models import checkpoint, create_model
from bsrdata.models.engine.task_cmos import evaluate_cmos

C = 4


class ConstCMOS(nn.Module):
    """σ = 1 px everywhere, class 0 everywhere."""

    num_classes = C

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, lr):
        n, _, h, w = lr.shape
        seg = torch.zeros(n, C, 4 * h, 4 * w)
        seg[:, 0] = 1
        return {"blur": torch.ones(n, 1, 4 * h, 4 * w) + self.w, "seg": seg}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("es") / "data")
    make_bench_dataset(root, n_test=5, n_train=2, h=32, w=40, num_classes=C)
    return root


def test_blur_strata_by_hand(data):
    spec = st.StrataSpec((0, 1, 2, 5))
    bd = BenchData(data, [1, 2])
    stats = {}
    evaluate_cmos(ConstCMOS(), data, [1, 2],
                  on_unit=lambda u, s, p: stats.__setitem__(u, st.blur_unit_stats(p["blur"], s["blur"], spec, 5.0)))
    assert set(stats) == {u for g in (1, 2) for u in bd.groups[g]}  # every unit once
    agg = st.aggregate(bd.select(0), stats, {u: bd.units[u].invariant for u in bd.units}, spec, 1.0)
    # the fake maps: VA half 0.3 / half 0.8 (4 VA images per group), IVA 1.5 everywhere (1 per group)
    err = np.array([0.7, 0.2]) / 5.0
    assert agg["sigma[0,1)"]["1"]["mae"] == pytest.approx(0.45)
    assert agg["sigma[0,1)"]["1"]["psnr"] == pytest.approx(10 * math.log10(1 / np.mean(err ** 2)))
    assert agg["sigma[1,2)"]["1"]["mae"] == pytest.approx(0.5) and agg["sigma[1,2)"]["1"]["images"] == 1
    assert agg["sigma[2,5]"] == {}
    assert agg["iva"]["2"]["mae"] == pytest.approx(0.5) and agg["va"]["2"]["mae"] == pytest.approx(0.45)
    # all: 4 VA images (mae 0.45) and one IVA (0.5), equal sizes
    assert agg["all"]["avg"]["mae"] == pytest.approx((4 * 0.45 + 0.5) / 5)


def test_cli_eval_strata_and_figures(tmp_path, data, capsys):
    pytest.importorskip("matplotlib")
    torch.manual_seed(0)
    ck = tmp_path / "run" / "last"
    checkpoint.save(ck, create_model("cmos", num_classes=C, width=0.25),
                    {"task": "cmos", "model": {"name": "cmos", "num_classes": C, "width": 0.25}})
    with pytest.raises(SystemExit) as exc:
        main(["eval", "cmos", "--data", data, "--ckpt", str(ck), "--out", str(tmp_path / "res"), "--strata",
              "--strata-bins", "0,1,2,5", "--figures", str(tmp_path / "fig")])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "Stratified blur-map scores" in out and "sigma[2,5]" in out
    doc = json.loads((tmp_path / "res" / "cmos_strata.json").read_text())
    assert doc["spec"]["edges"] == [0, 1, 2, 5] and set(doc["strata"]["all"]) == {"1", "2", "3", "4", "5", "avg"}
    assert doc["provenance"]["checkpoint_sha256"]
    figs = os.listdir(tmp_path / "fig")
    assert len(figs) == 1 and figs[0].startswith("cmos_") and "_va" in figs[0]
    with pytest.raises(SystemExit) as exc:
        main(["eval", "cmos", "--data", data, "--ckpt", str(ck), "--strata", "--strata-bins", "2,1"])
    assert exc.value.code == 1 and "--strata-bins" in capsys.readouterr().err
