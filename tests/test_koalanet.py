"""KOALAnet: official parameter counts, shapes, the local filtering / normalisation / LR reconstruction
against float64 numpy twins, kernel targets, the three training stages and ``bsr bench --method koalanet``."""

import json

import numpy as np
import pytest
import torch

from bsrdata.models import create_model
from bsrdata.models.koalanet import (
    local_filter,
    normalise_filters,
    place_kernel,
    reconstruct_lr,
    upsample_filter,
    window_offset,
)


def _count(m):
    return sum(p.numel() for p in m.parameters())


def _conv(cin, cout, k=3):
    return cin * cout * k * k + cout


# ------------------------------------------------------------------------------------------ counts
def test_official_parameter_counts_per_part():
    m = create_model("koalanet")  # d 20, up_kernel 5: the official x4 network
    assert _count(m) == 6_545_416
    assert _count(m.ds) == 4_319_184 and _count(m.us) == 2_226_232
    ds = {"enc0": 149_504, "enc1": 664_192, "mid": 1_475_328, "dec0": 1_409_792, "dec1": 352_640,
          "head": 267_728}
    assert {k: _count(getattr(m.ds, k)) for k in ds} == ds
    us = m.us
    assert _count(us.kfeat) == 304_320 and _count(us.head) == 1_792
    assert _count(us.filt) == 535_056 and _count(us.rgb) == 92_787
    res = 2 * _conv(64, 64)
    koala = _conv(64, 64) * 2 + _conv(64, 64, 1) + _conv(64, 49, 1)
    assert koala == 81_201 and 12 * res == 886_272
    assert [_count(b) for b in us.blocks] == [res + koala] * 5 + [res] * 7
    # stage 2 baseline: the same upsampling network without the KOALA parts and the kernel branch
    assert _count(create_model("koalanet_us")) == 2_226_232 - 304_320 - 5 * koala == 1_515_907
    assert _count(create_model("koalanet_ds")) == 4_319_184


def test_window_size_changes_only_the_kernel_layers():
    n20, n21 = _count(create_model("koalanet")), _count(create_model("koalanet", d=21, placement="centred"))
    assert n21 - n20 == (441 - 400) * (64 * 9 + 1) + (441 - 400) * 64 * 9  # DS head out + US kfeat in


# ------------------------------------------------------------------------------------------ shapes
def test_tiny_forward_shapes_and_super_resolve_range():
    torch.manual_seed(0)
    kw = dict(d=9, ds_nf=4, us_nf=8, nb=2, n_koala=1, placement="centred")
    m = create_model("koalanet", **kw)
    lr = torch.rand(2, 3, 8, 12) * 2 - 1
    out = m(lr, torch.rand(2, 3, 32, 48) * 2 - 1)
    assert out["sr"].shape == (2, 3, 32, 48) and out["kernels"].shape == (2, 81, 8, 12)
    assert out["lr_recon"].shape == (2, 3, 8, 12)
    assert torch.allclose(out["kernels"].sum(1), torch.ones(2, 8, 12), atol=1e-5)
    sr = m.super_resolve(torch.rand(1, 3, 7, 10))  # not multiples of 4: padded, cropped back
    assert sr.shape == (1, 3, 28, 40) and float(sr.min()) >= 0 and float(sr.max()) <= 1
    us = create_model("koalanet_us", us_nf=8, nb=2)
    assert us(lr).shape == (2, 3, 32, 48) and us.super_resolve(torch.rand(1, 3, 5, 6)).shape == (1, 3, 20, 24)
    with pytest.raises(ValueError, match="stage 1"):
        create_model("koalanet", stage=1)
    with pytest.raises(ValueError, match="odd"):
        create_model("koalanet_ds", d=20, placement="centred")


# -------------------------------------------------------------------------------------- numerics
def _np_local_filter(x, w, k):
    n, c, h, wd = x.shape
    r = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(wd):
            for u in range(k):
                for v in range(k):
                    out[:, :, i, j] += w[:, u * k + v, i, j][:, None] * xp[:, :, i + u, j + v]
    return out


def test_local_filter_equals_numpy():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 3, 5, 6)), rng.normal(size=(2, 9, 5, 6))
    got = local_filter(torch.from_numpy(x), torch.from_numpy(w), 3).numpy()
    np.testing.assert_allclose(got, _np_local_filter(x, w, 3), atol=1e-12)
    x7, w7 = rng.normal(size=(1, 2, 4, 4)), rng.normal(size=(1, 49, 4, 4))
    np.testing.assert_allclose(local_filter(torch.from_numpy(x7), torch.from_numpy(w7), 7).numpy(),
                               _np_local_filter(x7, w7, 7), atol=1e-12)


def test_upsample_filter_equals_numpy():
    rng = np.random.default_rng(1)
    t, s = 3, 4
    lr, f = rng.normal(size=(1, 2, 3, 4)), rng.normal(size=(1, t * t * s * s, 3, 4))
    got = upsample_filter(torch.from_numpy(lr), torch.from_numpy(f), t).numpy()
    lp = np.pad(lr, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((1, 2, 12, 16))
    for i in range(3):
        for j in range(4):
            for a in range(s):
                for b in range(s):
                    for u in range(t):
                        for v in range(t):
                            tap = f[0, (u * t + v) * s * s + a * s + b, i, j]
                            want[0, :, s * i + a, s * j + b] += tap * lp[0, :, i + u, j + v]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_normalisation_is_minus_mean_plus_one_over_n():
    rng = np.random.default_rng(2)
    k = rng.normal(size=(2, 8, 3, 3))  # two groups of 4 channels
    got = normalise_filters(torch.from_numpy(k), 4).numpy()
    g = k.reshape(2, 2, 4, 3, 3)
    want = (g - g.mean(2, keepdims=True) + 0.25).reshape(2, 8, 3, 3)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got.reshape(2, 2, 4, 3, 3).sum(2), 1.0, atol=1e-12)


def _np_recon(hr, k, d, p, s=4):
    n, c, hh, ww = hr.shape
    h, w = hh // s, ww // s
    out = np.zeros((n, c, h, w))
    for i in range(h):
        for j in range(w):
            for u in range(d):
                for v in range(d):
                    y, x = s * i - p + u, s * j - p + v
                    if 0 <= y < hh and 0 <= x < ww:
                        out[:, :, i, j] += k[:, u * d + v, i, j][:, None] * hr[:, :, y, x]
    return out


@pytest.mark.parametrize("d,placement,p", [(20, "official", 8), (8, "official", 2), (9, "centred", 4)])
def test_lr_reconstruction_equals_numpy(d, placement, p):
    assert window_offset(d, placement) == p
    rng = np.random.default_rng(3)
    hr, k = rng.normal(size=(1, 2, 12, 16)), rng.normal(size=(1, d * d, 3, 4))
    got = reconstruct_lr(torch.from_numpy(hr), torch.from_numpy(k), d, placement).numpy()
    np.testing.assert_allclose(got, _np_recon(hr, k, d, p), atol=1e-12)


def test_window_placement_hand_case():
    """An impulse HR(y0, x0) and a kernel that is a delta at tap (q, q): LR̂(i, j) = 1 iff 4i − p + q = y0.
    Official d 20: p 8, the window centre (9.5) sits at HR 4i + 1.5; centred d 21: tap 10 is HR 4i."""
    hr = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    hr[0, 0, 8, 4] = 1.0
    for d, placement, q, want in ((20, "official", 8, (2, 1)), (20, "official", 10, None), (21, "centred", 10, (2, 1))):
        k = torch.zeros(1, d * d, 4, 4, dtype=torch.float64)
        k[0, q * d + q] = 1.0
        out = reconstruct_lr(hr, k, d, placement)[0, 0]
        if want is None:  # tap 10 of the official window is HR 4i + 2: (8 - 2) / 4 is no LR row
            assert float(out.abs().sum()) == 0.0
        else:
            assert float(out[want]) == 1.0 and float(out.sum()) == 1.0
    assert (20 - 1) / 2 - window_offset(20, "official") == 1.5


def test_kernel_targets_place_the_gaussian_at_tap_p():
    from bsrdata.models.engine.task_koalanet import kernel_targets

    sig = torch.full((1, 1, 16, 16), 1.3, dtype=torch.float64)
    sig[..., :8] = 0.0
    x = np.arange(-10, 11)
    g = np.exp(-x ** 2 / (2 * 1.3 ** 2))
    g /= g.sum()
    g2 = np.outer(g, g)
    delta = np.zeros((21, 21))
    delta[10, 10] = 1
    # mean over the LR sites: half the sites sigma 0, half 1.3
    want = 0.5 * (g2 + delta)
    got = kernel_targets(sig, 21, 10, 21, "mean").reshape(21, 21).numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)
    # official d 20, p 8: the first two rows / columns are cut and the rest renormalised
    cut = want[2:, 2:]
    got20 = kernel_targets(sig, 20, 8, 21, "mean").reshape(20, 20).numpy()
    np.testing.assert_allclose(got20[:19, :19], cut / cut.sum(), atol=1e-12)
    assert np.allclose(got20[19], 0) and np.allclose(got20[:, 19], 0)
    pp = kernel_targets(sig, 21, 10, 21, "per_pixel")
    assert pp.shape == (1, 441, 4, 4)
    np.testing.assert_allclose(pp[0, :, 0, 3].reshape(21, 21).numpy(), g2, atol=1e-12)
    np.testing.assert_allclose(pp[0, :, 0, 0].reshape(21, 21).numpy(), delta, atol=1e-12)
    k = place_kernel(torch.ones(1, 3, 3, dtype=torch.float64), 5, 0)
    assert float(k[0, 0, 0]) == 0.25 and float(k.sum()) == 1.0


# ------------------------------------------------------------------------------ stages + bench (CLI)
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from sr_fakes import make_bench_dataset

    root = tmp_path_factory.mktemp("koala_ds")
    make_bench_dataset(root, n_test=5, n_train=6, h=32, w=48, num_classes=4)
    return str(root)


TINY_SETS = ["model.d=9", "model.ds_nf=4", "model.us_nf=8", "model.nb=2", "model.n_koala=1", "data.crop=32",
             "train.iterations=2", "train.batch_size=2", "train.workers=0", "train.threads=1", "train.log_every=1",
             "train.ckpt_every=2", "train.milestones=[1]", "train.val_groups=[1]"]


def _train(capsys, data, out, stage, *extra):
    from bsrdata.cli.main import main

    args = ["train", "koalanet", "--data", data, "--config", "configs/koalanet_small_stage1.yaml", "--out", out,
            "--no-progress", "--set", f"model.stage={stage}"]
    for s in TINY_SETS + list(extra):
        args += ["--set", s]
    with pytest.raises(SystemExit) as e:
        main(args)
    o, err = capsys.readouterr()
    assert e.value.code == 0, err
    return o


def test_three_stages_then_bench(data, tmp_path, capsys, monkeypatch):
    import os

    from bsrdata.models import checkpoint

    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    s1, s2, s3 = (str(tmp_path / f"s{i}") for i in (1, 2, 3))
    out1 = _train(capsys, data, s1, 1)
    assert "trained 2 iterations" in out1
    m1 = json.loads((tmp_path / "s1" / "metrics.json").read_text())["val"]
    assert set(m1["avg"]) >= {"lr_psnr", "kernel_l1"}
    _train(capsys, data, s2, 2)
    _train(capsys, data, s3, 3, f"init.ds_ckpt={s1}/last", f"init.us_ckpt={s2}/last", "loss.kernel_loss=per_pixel")
    ds, _ = checkpoint.load(s1 + "/last")
    us, _ = checkpoint.load(s2 + "/last")
    joint, cfg = checkpoint.load(s3 + "/last")
    assert cfg["model"]["name"] == "koalanet" and type(joint.ds) is type(ds)
    # two more Adam steps moved every part, so compare the init instead: rebuild stage 3 at iteration 0
    from bsrdata.models.engine.task import get_task

    task = get_task("koalanet")
    c0 = task.config({"task": "koalanet", "model": {**{k: cfg["model"][k] for k in ("d", "ds_nf", "us_nf", "nb",
                      "n_koala", "placement")}, "stage": 3}, "init": {"ds_ckpt": s1 + "/last", "us_ckpt": s2 + "/last"},
                      "data": {"crop": 32}})
    fresh = task.build_model(task.resolve(c0))
    assert torch.equal(fresh.ds.head[2].weight, ds.head[2].weight)
    assert torch.equal(fresh.us.filt[2].weight, us.filt[2].weight)
    assert torch.equal(fresh.us.blocks[1].conv1.weight, us.blocks[1].conv1.weight)
    # the SR loss reaches the DS network (joint training)
    lr = torch.rand(1, 3, 8, 8)
    fresh(lr)["sr"].abs().sum().backward()
    assert fresh.ds.head[2].weight.grad.abs().sum() > 0

    from bsrdata.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "--data", data, "--method", "koalanet", "--ckpt", s3 + "/last", "--out", str(tmp_path / "b"),
              "--device", "cpu"])
    o, err = capsys.readouterr()
    assert e.value.code == 0, err
    assert any(line.startswith("| koalanet |") for line in o.splitlines())
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    rec = json.dumps(doc["methods"])
    assert '"placement": "centred"' in rec and '"kernel_loss": "per_pixel"' in rec  # config["adaptation"]


def test_config_errors_are_one_line():
    from bsrdata.errors import BsrError
    from bsrdata.models.engine.task import get_task

    t = get_task("koalanet")
    for bad, msg in (({"model": {"stage": 4}}, "model.stage"), ({"model": {"d": 20, "placement": "centred"}}, "odd"),
                     ({"loss": {"kernel_loss": "max"}}, "loss.kernel_loss"), ({"data": {"crop": 40}}, "multiple of 16"),
                     ({"init": {"ds_ckpt": "x/last"}}, "only used by model.stage 3"),
                     ({"model": {"stage": 2, "name": "koalanet"}}, "does not fit")):
        with pytest.raises(BsrError, match=msg):
            t.config({"task": "koalanet", **bad})


# ---------------------------------------------------------------------------------------- converter
def _np_depth_to_space(x, r):
    """TF depth_to_space on NHWC: out[n, h·r + a, w·r + b, c] = x[n, h, w, (a·r + b)·C + c]."""
    n, h, w, cr = x.shape
    c = cr // (r * r)
    out = np.zeros((n, h * r, w * r, c))
    for a in range(r):
        for b in range(r):
            out[:, a::r, b::r, :] = x[..., (a * r + b) * c:(a * r + b + 1) * c]
    return out


def test_d2s_permutation_matches_tf_depth_to_space():
    from bsrdata.models.convert_koalanet import d2s_perm

    rng = np.random.default_rng(4)
    x_tf = rng.normal(size=(1, 3, 2, 8))  # NHWC, 8 channels in TF order
    want = _np_depth_to_space(x_tf, 2)
    ours = torch.from_numpy(x_tf).permute(0, 3, 1, 2)[:, torch.from_numpy(d2s_perm(8))]
    got = torch.nn.functional.pixel_shuffle(ours, 2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want, atol=0)


def test_convert_synthetic_npz_round_trip(tmp_path):
    from bsrdata.errors import BsrError
    from bsrdata.models import checkpoint
    from bsrdata.models.convert_koalanet import D2S, convert, d2s_perm, tf_names

    torch.manual_seed(1)
    ref = create_model("koalanet")
    own = ref.state_dict()
    tf = {"global_step": np.array(7), "beta1_power": np.array(0.9, np.float32)}
    for ours, scope in tf_names().items():
        w = own[f"{ours}.weight"]
        if ours in D2S:  # invert ours[o] = tf[perm[o]]
            inv = np.argsort(d2s_perm(w.shape[0]))
            w = w[torch.from_numpy(inv)]
            b = own[f"{ours}.bias"][torch.from_numpy(inv)]
        else:
            b = own[f"{ours}.bias"]
        tf[f"{scope}/kernel"] = w.permute(2, 3, 1, 0).numpy()  # OIHW -> HWIO
        tf[f"{scope}/bias"] = b.numpy()
        tf[f"{scope}/kernel/Adam"] = tf[f"{scope}/kernel"] * 0
    assert len(tf_names()) * 2 == len(own)  # every tensor of ours has a TF variable
    np.savez(tmp_path / "k.npz", **tf)
    cfg = convert(str(tmp_path / "k.npz"), str(tmp_path / "out"))
    assert cfg["model"]["placement"] == "official" and cfg["model"]["d"] == 20
    got, _ = checkpoint.load(str(tmp_path / "out"))
    for k, v in got.state_dict().items():
        assert torch.equal(v, own[k]), k
    # strict: a missing or an unexpected variable is one line, nothing written
    del tf["SISR_DUF/conv2d_5/bias"]
    np.savez(tmp_path / "bad.npz", **tf)
    with pytest.raises(BsrError, match="SISR_DUF/conv2d_5/bias"):
        convert(str(tmp_path / "bad.npz"), str(tmp_path / "o2"))
    assert not (tmp_path / "o2").exists()
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.ckpt-1.index").write_bytes(b"")
    with pytest.raises(BsrError, match="TensorFlow 1 checkpoint cannot be read here"):
        convert(str(tmp_path / "ckpt"), str(tmp_path / "o3"))
