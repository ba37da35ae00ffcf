"""The shared pieces the baselines plug into: ``bsr convert``'s arch dispatch, ``bsr bench --opt`` and the
generic checkpoint method (models.bench_methods.NetworkSRMethod)."""

import os

import pytest
import torch
from cli_run import bsr_code as _run

from bsrdata.cli.bench import parse_opts
from bsrdata.errors import BsrError
from bsrdata.models import checkpoint, create_model
from bsrdata.models.bench_methods import BASELINES, NetworkSRMethod


def test_parse_opts_reads_yaml_scalars_and_refuses_bad_items():
    assert parse_opts(["align=direct", "seed=3", "scale=0.5", "flag=true", "empty="]) == {
        "align": "direct", "seed": 3, "scale": 0.5, "flag": True, "empty": ""}
    for bad in ("noequals", "=3", "two words=1"):
        with pytest.raises(BsrError, match="--opt"):
            parse_opts([bad])


def test_convert_cmos_arch_needs_classes_and_refuses_baseline_options(tmp_path, capsys):
    src = tmp_path / "x.pth"
    torch.save({"a": torch.zeros(1)}, src)
    assert _run(["convert", str(src), "--arch", "cmos", "--out", str(tmp_path / "o")]) == 1
    assert "--num-classes" in capsys.readouterr().err
    assert _run(["convert", str(src), "--arch", "cmos", "--num-classes", "40", "--variant", "v2",
                 "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "--variant: not an option of --arch cmos" in err and "\n" not in err
    assert not os.path.exists(tmp_path / "o")


def test_network_method_refuses_a_checkpoint_of_another_network(tmp_path):
    torch.manual_seed(0)
    m = create_model("rrdb_sft_noseg", num_classes=3, nf=8, nb=1, gc=4, prior_ch=8, sft_hidden=4)
    checkpoint.save(tmp_path / "ck", m, {"model": {"name": "rrdb_sft_noseg", "num_classes": 3, "nf": 8, "nb": 1,
                                                   "gc": 4, "prior_ch": 8, "sft_hidden": 4}})
    for kind in BASELINES:
        meth = NetworkSRMethod(kind, ckpt=str(tmp_path / "ck"), device="cpu")
        with pytest.raises(BsrError, match=f"is a rrdb_sft_noseg checkpoint, {kind} needs"):
            meth.prepare(None)
    with pytest.raises(BsrError, match="needs a checkpoint"):
        NetworkSRMethod("manet", device="cpu").prepare(None)
