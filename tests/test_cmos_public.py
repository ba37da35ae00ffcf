"""Our CMOS, RRDB-SFT and BlindSR against the authors' released networks (docs/cmos.md, "Equal to the public
code"): state-dict layout and parameter counts from tests/data/cmos_public_keys.json, outputs against golden
tensors the public code produced on deterministic random weights (float64, eval mode), ``bsr convert``."""

import os

import pytest
import torch
from cli_run import bsr_code as _run
from cmos_public import SEEDS, golden, keys, params, public_weights, rel

from bsrdata.errors import BsrError
from bsrdata.models import checkpoint, create_model
from bsrdata.models.convert_public import load_public, public_name, to_ours, to_public

TOL = 1e-6  # parity: max |ours − public| / max |public|; measured ~1e-15 (modules) .. 1e-12 (whole CMOS)


def _count(m):
    return sum(p.numel() for p in m.parameters())


def _public_count(kind, prefix=""):
    return sum(int(torch.Size(s).numel()) for k, s in keys(kind).items()
               if k.startswith(prefix) and not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


@pytest.fixture(scope="module")
def cmos40():
    m, _ = load_public("cmos", public_weights(keys("cmos_40"), SEEDS["cmos_40"]), 40, "fixed", dtype=torch.float64)
    return m


@pytest.fixture(scope="module")
def rrdb():
    m, _ = load_public("rrdb_sft", public_weights(keys("rrdb_sft"), SEEDS["rrdb_sft"]), 40, "fixed",
                       dtype=torch.float64)
    return m


# ------------------------------------------------------------------------------------------ layout and counts
@pytest.mark.parametrize("arch,kind,n", [("cmos", "cmos_40", 40), ("cmos", "cmos_19", 19), ("rrdb_sft", "rrdb_sft", 40),
                                         ("blind_sr", "blind_sr_40", 40), ("blind_sr", "blind_sr_19", 19)])
def test_state_dict_is_the_public_one_name_for_name(arch, kind, n):
    from bsrdata.models.convert_public import build

    model, _ = build(arch, n, "fixed")
    ours = {public_name(arch, k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == keys(kind)  # same names (after our mapping), same shapes, buffers included
    assert _count(model) == params(kind) == _public_count(kind)


def test_parameter_counts_per_module():
    m = create_model("cmos", num_classes=40)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    # the tables of the public network (docs/cmos.md), and the same sums over the public key list
    assert count(m.backbone) == 3_860_720 == _public_count("cmos_40", "cmos.backbone.")
    assert count(m.heads) + count(m.aux) == 1_987_979 == _public_count("cmos_40", "cmos.heads.")
    assert count(m.gia_m) == 3_910_200 == _public_count("cmos_40", "cmos.GIA_m.")
    assert count(m.fuse_down["seg"]) == 1_050_180 == _public_count("cmos_40", "cmos.GIA_s.")
    assert count(m.fuse_down["blur"]) == 1_050_180 == _public_count("cmos_40", "cmos.GIA_b.")
    assert count(m.gia_l) == 3_958_076 == _public_count("cmos_40", "cmos.GIA_l.")
    assert count(m.final["seg"]) == 84_550 and count(m.final["blur"]) == 73_981
    assert [count(g) for g in m.gia_m] == [188_456, 745_808, 2_975_936]
    assert [count(g) for g in m.gia_l] == [47_876, 188_456, 745_808, 2_975_936]
    assert [count(g) for g in m.fuse_down["seg"]] == [51_116, 201_416, 797_648]
    assert count(m) == 15_975_866
    r = create_model("rrdb_sft", num_classes=40)
    assert count(r.fuse) == 590_816 == _public_count("rrdb_sft", "fuse.")
    assert count(r.blocks) == 8_302_080 == _public_count("rrdb_sft", "RRDB_trunk.")
    assert count(r) == 8_960_592
    # BN momenta: 0.01 in the backbone, 0.1 elsewhere
    bn = lambda mod: {b.momentum for b in mod.modules() if isinstance(b, torch.nn.BatchNorm2d)}  # noqa: E731
    assert bn(m.backbone) == {0.01}
    assert bn(m.heads) == bn(m.gia_m) == bn(m.final) == bn(r) == {0.1}


# ------------------------------------------------------------------------------------------------ golden tensors
def _gia_modules(m):
    return {"GIA_m.0": m.gia_m[0], "GIA_s.0": m.fuse_down["seg"][0], "GIA_b.1": m.fuse_down["blur"][1],
            "GIA_l.0": m.gia_l[0], "GIA_l.3": m.gia_l[3]}


@pytest.mark.parametrize("merge", ["fixed", "legacy"])
def test_gia_variants_equal_the_public_code(cmos40, merge):
    g = golden(f"cmos40_{merge}.safetensors")
    m = cmos40
    if merge == "legacy":
        m, _ = load_public("cmos", public_weights(keys("cmos_40"), SEEDS["cmos_40"]), 40, "legacy",
                           dtype=torch.float64)
    with torch.no_grad():
        for name, mod in _gia_modules(m).items():
            out = mod(g[f"{name}.x1"], g[f"{name}.x2"])
            out = out if isinstance(out, tuple) else (out,)
            for j, y in enumerate(out):
                assert rel(y, g[f"{name}.y{j + 1}"]) <= TOL, (name, j)


def test_window_merges_differ_where_there_are_several_windows():
    fixed, legacy = golden("cmos40_fixed.safetensors"), golden("cmos40_legacy.safetensors")
    assert torch.equal(fixed["GIA_m.0.x1"], legacy["GIA_m.0.x1"])
    assert rel(fixed["GIA_m.0.y1"], legacy["GIA_m.0.y1"]) > 1e-3  # 16×22: 2×2 windows


def test_backbone_equals_the_public_code(cmos40):
    g = golden("cmos40_fixed.safetensors")
    with torch.no_grad():
        ys = cmos40.backbone(g["backbone.x"])
    for j, y in enumerate(ys):
        assert rel(y, g[f"backbone.y{j}"]) <= TOL, j


def test_whole_cmos_equals_the_public_code(cmos40):
    g = golden("cmos40_fixed.safetensors")
    with torch.no_grad():
        out = cmos40(g["cmos.lr"])  # LR 57×81: the smallest size the public code runs
    for k in ("blur", "seg", "aux_blur", "aux_seg"):
        assert rel(out[k][..., ::12, ::12], g[f"cmos.{k}"]) <= TOL, k


def test_rrdb_prior_fusion_and_sr_equal_the_public_code(rrdb):
    g = golden("rrdb_sft_fixed.safetensors")
    h, w = g["lr"].shape[-2:]
    with torch.no_grad():
        assert rel(rrdb.prior(g["blur"], g["seg"], (h, w)), g["prior"]) <= TOL
        assert rel(rrdb(g["lr"], g["blur"], g["seg"]), g["sr"]) <= TOL
    gl = golden("rrdb_sft_legacy.safetensors")
    legacy, _ = load_public("rrdb_sft", public_weights(keys("rrdb_sft"), SEEDS["rrdb_sft"]), 40, "legacy",
                            dtype=torch.float64)
    with torch.no_grad():
        assert rel(legacy.prior(gl["blur"], gl["seg"], (h, w)), gl["prior"]) <= TOL


def test_small_inputs_run_where_the_public_code_refuses(cmos40):
    with torch.no_grad():
        out = cmos40(torch.rand(1, 3, 20, 27, dtype=torch.float64))  # public: reflect pad >= map size
    assert out["seg"].shape == (1, 40, 80, 108) and torch.isfinite(out["seg"]).all()


def test_blind_sr_feeds_the_unclamped_blur_and_the_argmax_index():
    torch.manual_seed(0)
    kw = {"width": 0.25, "window": [3, 4]}
    sr_kw = {"nf": 8, "nb": 1, "gc": 4, "prior_ch": 8, "sft_hidden": 4, "gia_groups": 2, "gia_window": [4, 4]}
    chain = create_model("blind_sr", num_classes=3, cmos_kw=kw, sr_kw=sr_kw).eval()
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        est = chain.cmos(lr)
        out = chain(lr)
        ref = chain.sr(lr, est["blur"], est["seg"].argmax(1))
    assert torch.equal(out["blur"], est["blur"]) and torch.equal(out["seg"], est["seg"])
    assert torch.equal(out["sr"], ref)


# ----------------------------------------------------------------------------------------------- bsr convert
def _write_public(path, kind, seed=5, prefix="", drop=None, extra=None):
    state = public_weights(keys(kind), seed, dtype=torch.float32)
    if drop:
        del state[drop]
    state.update(extra or {})
    torch.save({prefix + k: v for k, v in state.items()}, path)
    return state


@pytest.mark.parametrize("arch,kind", [("rrdb_sft", "rrdb_sft"), ("cmos", "cmos_19")])
def test_convert_round_trip(tmp_path, capsys, arch, kind):
    src = tmp_path / "public.pth"
    n = 19 if kind == "cmos_19" else 40
    state = _write_public(src, kind, prefix="module.")  # DataParallel prefix stripped
    out = tmp_path / "ckpt"
    assert _run(["convert", str(src), "--arch", arch, "--num-classes", str(n), "--out", str(out)]) == 0
    assert "tensors ->" in capsys.readouterr().out
    model, cfg = checkpoint.load(out)
    assert cfg["arch"] == arch and cfg["window_merge"] == "legacy"
    from bsrdata.fileio import sha256_file

    assert cfg["source"]["sha256"] == sha256_file(src) and cfg["source"]["tensors"] == len(state)
    back = to_public(model, arch)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], v) for k, v in state.items())
    if arch == "cmos":
        assert model.gia_m[0].spatial.window_merge == "legacy"
        with torch.no_grad():
            o = model(torch.rand(1, 3, 8, 11))
        assert set(o) == {"blur", "seg", "aux_blur", "aux_seg"} and o["seg"].shape == (1, 19, 32, 44)
        # stage 3 takes the converted folder as its CMOS (init.cmos_ckpt)
        from bsrdata.models.engine.task import get_task

        task = get_task("blind")
        cfg = task.resolve(task.config({"task": "blind", "init": {"cmos_ckpt": str(out)}}))
        assert cfg["model"]["num_classes"] == 19 and cfg["model"]["cmos_kw"] == {"window_merge": "legacy"}
    else:
        assert model.fuse.spatial.window_merge == "legacy"


def test_convert_fixed_merge_and_blind_mapping(tmp_path):
    src = tmp_path / "sr.pth"
    _write_public(src, "rrdb_sft")
    out = tmp_path / "fixed"
    assert _run(["convert", str(src), "--arch", "rrdb_sft", "--num-classes", "40", "--out", str(out),
                 "--window-merge", "fixed"]) == 0
    model, cfg = checkpoint.load(out)
    assert cfg["window_merge"] == "fixed" and model.fuse.spatial.window_merge == "fixed"
    # a BlindSR file: the RRDB names without prefix plus cmos.* (mapped without a file: 25 M parameters)
    from bsrdata.models.convert_public import build

    chain, _ = build("blind_sr", 40)
    st = public_weights(keys("blind_sr_40"), 7, dtype=torch.float32)
    mapped = to_ours(chain, "blind_sr", st)
    assert len(mapped) == 2980
    assert torch.equal(mapped["cmos.gia_l.0.merge1.conv.weight"], st["cmos.GIA_l.0.smooth2.conv.weight"])
    assert torch.equal(mapped["sr.blocks.9.dense.2.convs.4.bias"], st["RRDB_trunk.9.RDB3.conv5.bias"])


@pytest.mark.parametrize("case,match", [
    ("missing", "1 missing keys: trunk_conv.bias"),
    ("unexpected", "1 unexpected keys: extra.weight"),
    ("shape", "shape mismatches: cmos.heads.0.decoders.seg.bias"),
])
def test_convert_refuses_bad_files_in_one_line_and_writes_nothing(tmp_path, capsys, case, match):
    src = tmp_path / "bad.pth"
    if case == "missing":
        _write_public(src, "rrdb_sft", drop="trunk_conv.bias")
        argv = ["--arch", "rrdb_sft", "--num-classes", "40"]
    elif case == "unexpected":
        _write_public(src, "rrdb_sft", extra={"extra.weight": torch.zeros(2)})
        argv = ["--arch", "rrdb_sft", "--num-classes", "40"]
    else:  # a 19-class CMOS file converted as 40 classes
        _write_public(src, "cmos_19")
        argv = ["--arch", "cmos", "--num-classes", "40"]
    out = tmp_path / "out"
    assert _run(["convert", str(src), *argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bsr: error: ") and "\n" not in err and match in err, err
    assert not os.path.exists(out) and os.listdir(tmp_path) == ["bad.pth"]


class _Pickled:
    """An arbitrary object: ``torch.load(weights_only=True)`` refuses to unpickle it."""


def test_convert_refuses_pickled_objects(tmp_path, capsys):
    src = tmp_path / "obj.pth"
    torch.save({"net": _Pickled()}, src)
    assert _run(["convert", str(src), "--arch", "cmos", "--num-classes", "40", "--out", str(tmp_path / "o")]) == 1
    assert "cannot read weights" in capsys.readouterr().err
    with pytest.raises(BsrError, match="--num-classes"):
        from bsrdata.models.convert_public import convert

        convert(src, "cmos", 1, tmp_path / "o")


def test_imagenet_hrnet_file_gives_exactly_the_backbone_tensors(tmp_path):

    st = public_weights(keys("hrnet_w18_small_v2_imagenet"), 9, dtype=torch.float32)
    assert len(st) == 990
    torch.save(st, tmp_path / "hrnet_w18_small_model_v2.pth")
    m = create_model("cmos", num_classes=40, backbone_weights=str(tmp_path / "hrnet_w18_small_model_v2.pth"))
    rep = m.pretrained_report
    assert rep["taken"] == len(rep["loaded"]) == 864 and rep["of"] == 990 and rep["missing"] == []
    heads = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
    assert len(rep["skipped"]) == 126 and all(k.startswith(heads) for k in rep["skipped"])
    assert torch.equal(m.backbone.stage4[1].fuse_layers[3][2][0][0].weight, st["stage4.1.fuse_layers.3.2.0.0.weight"])
