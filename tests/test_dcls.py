"""DCLS (models/dcls.py, docs/baselines.md "DCLS"): parameter counts at the official widths, the CLS Fourier step
against a float64 numpy twin, the kernel network's impulse response and normalisation, the doubling group skip,
the image-derived kernel target, the converter's strict mapping and a tiny ``bsr train dcls`` + ``bsr bench``."""

import json

import numpy as np
import pytest
import torch
import yaml
from sr_fakes import make_bench_dataset

from bsrdata.errors import BsrError
from bsrdata.models import checkpoint, create_model
from bsrdata.models.dcls import DPCAB, DPCAG, align_bicubic, check_filters, cls_deconv, cls_fourier
from bsrdata.models.engine.task import get_task
from bsrdata.models.engine.task_dcls import lr_kernel_target

TINY = {"nf": 16, "nb": 1, "ng": 2, "reduction": 2, "res_blocks": 1, "est_blocks": 1, "latent": 8,
        "kernel_size": 11, "kernel_hidden": 4}


def _count(m):
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------ counts

def test_official_parameter_counts():
    m = create_model("dcls")
    e, r = m.estimator, m.restorer
    assert _count(m) == 13_626_187
    assert _count(e) == 6_695_136 and _count(r) == 6_931_051
    assert (_count(e.head), _count(e.body), _count(e.tail), _count(e.dec)) == (9_472, 221_568, 90_496, 6_373_600)
    assert [lin.out_features for lin in e.dec] == [5808, 12544, 6400, 48]
    assert (_count(r.conv_first), _count(r.features), _count(r.cls), _count(r.body), _count(r.fusion),
            _count(r.upscale)) == (1_792, 221_568, 9_360, 6_345_800, 46_144, 297_155)
    assert _count(r.body[0].blocks[0]) == 126_916
    assert len(m.state_dict()) == 964  # no buffers


def test_setting2_kernel31_count():
    assert check_filters(31, None) == (11, 9, 7, 5, 3)
    assert _count(create_model("dcls", kernel_size=31)) == 19_054_027


def test_bad_filters_are_one_line():
    with pytest.raises(ValueError, match="kernel_size is 21"):
        check_filters(21, [11, 7, 3])
    with pytest.raises(ValueError, match="no official filters"):
        check_filters(15, None)
    assert check_filters(15, [9, 5, 3]) == (9, 5, 3)


# ------------------------------------------------------------------------------------------ CLS numerics

def _np_psf2otf(k, shape):
    """Independent twin: tap (a, b) of a centred k×k filter goes to ((a − c) mod H, (b − c) mod W)."""
    out = np.zeros(shape)
    c0, c1 = k.shape[0] // 2, k.shape[1] // 2
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            out[(a - c0) % shape[0], (b - c1) % shape[1]] += k[a, b]
    return np.fft.fft2(out)


def _np_cls(feat, kernel, smooth):
    n, c, h, w = feat.shape
    ks = kernel.shape[-1]
    out = np.zeros_like(feat)
    for i in range(n):
        for j in range(c):
            x = np.pad(feat[i, j], ks, mode="edge")
            kf = _np_psf2otf(kernel[i, 0], x.shape)
            pf = _np_psf2otf(smooth[i, j], x.shape)
            y = np.real(np.fft.ifft2(np.conj(kf) * np.fft.fft2(x) / (np.abs(kf) ** 2 + np.abs(pf) ** 2)))
            out[i, j] = y[ks:-ks, ks:-ks]
    return out


def test_cls_matches_numpy_float64():
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(2, 3, 6, 7))
    yy, xx = np.mgrid[-2:3, -2:3]
    kernel = np.stack([np.exp(-(xx ** 2 + yy ** 2) / (2 * s * s)) for s in (0.8, 1.3)])[:, None]
    kernel[1, 0, 1, 3] += 0.2  # not symmetric: checks the centring and the conjugate
    kernel /= kernel.sum(axis=(2, 3), keepdims=True)
    smooth = np.exp(rng.normal(size=(2, 3, 3, 3)) * 0.5)
    smooth -= smooth.mean(axis=(2, 3), keepdims=True)
    want = _np_cls(feat, kernel, smooth)
    got = cls_deconv(torch.tensor(feat, dtype=torch.float32), torch.tensor(kernel, dtype=torch.float32),
                     torch.tensor(smooth, dtype=torch.float32)).double().numpy()
    assert got.shape == feat.shape
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def _np_circular_blur(x, k):
    """y(p) = Σ_u k(c + u) x(p − u) (circular; the convolution whose OTF is psf2otf(k))."""
    c = k.shape[0] // 2
    y = np.zeros_like(x)
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            y += k[a, b] * np.roll(x, (a - c, b - c), axis=(-2, -1))
    return y


def test_cls_with_zero_p_inverts_a_circular_blur():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(1, 2, 12, 10))
    k = np.full((3, 3), 0.04)
    k[1, 1] = 0.6
    k[0, 2] = 0.12  # |K̂| >= 0.6 − 0.4 > 0: invertible
    k /= k.sum()
    y = _np_circular_blur(x, k)
    back = cls_fourier(torch.tensor(y), torch.tensor(k)[None, None], torch.zeros(1, 2, 3, 3)).double().numpy()
    np.testing.assert_allclose(back, x, atol=1e-5)


# ------------------------------------------------------------------------------------------ estimator

def test_kernel_is_the_normalised_impulse_response():
    torch.manual_seed(0)
    m = create_model("dcls", **TINY).eval()
    lr = torch.rand(2, 3, 9, 9)
    with torch.no_grad():
        k = m.estimator(lr)
        assert k.shape == (2, 1, 11, 11)
        torch.testing.assert_close(k.sum((2, 3)), torch.ones(2, 1), rtol=0, atol=1e-5)
        # the linear network on a grey image = correlation with the channel-summed kernel; its response to a
        # constant image is the kernel's sum: so net(x).mean_c / net(1).mean_c = x ⋆ k (numpy correlation)
        ws = m.estimator.linear_weights(lr)
        g = torch.rand(1, 1, 20, 18).double()

        def net(img, n=2):
            y = img.expand(n, 3, -1, -1).reshape(1, n * 3, *img.shape[-2:])
            for w in ws:
                y = torch.nn.functional.conv2d(y, w.double(), groups=n)
            return y.reshape(n, 3, *y.shape[-2:]).mean(1)

        ratio = (net(g) / net(torch.ones_like(g))).numpy()
    kk, gg = k.double().numpy()[:, 0], g.numpy()[0, 0]
    want = np.zeros_like(ratio)
    for i in range(ratio.shape[1]):
        for j in range(ratio.shape[2]):
            want[:, i, j] = (kk * gg[i:i + 11, j:j + 11]).sum(axis=(1, 2))
    np.testing.assert_allclose(ratio, want, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------ DPCAG quirk

def test_dpcag_group_skip_doubles():
    torch.manual_seed(0)
    g = DPCAG(8, 4, nb=2, reduction=2)
    x0, x1 = torch.randn(1, 8, 5, 5), torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        # hand case: blocks that add nothing -> the group returns 2x its input
        saved = {k: v.clone() for k, v in g.state_dict().items()}
        for p in g.parameters():
            p.zero_()
        y0, y1 = g(x0, x1)
        torch.testing.assert_close(y0, 2 * x0)
        torch.testing.assert_close(y1, 2 * x1)
        g.load_state_dict(saved)
        a0, a1 = x0, x1
        for blk in g.blocks:
            a0, a1 = blk(a0, a1)
        y0, y1 = g(x0, x1)
        torch.testing.assert_close(y0, 2 * a0)
        torch.testing.assert_close(y1, 2 * a1)


def test_dpcab_by_hand():
    torch.manual_seed(0)
    b = DPCAB(4, 2, reduction=2)
    x0, x1 = torch.randn(1, 4, 4, 4), torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        y0, y1 = b(x0, x1)
        a, bb = b.branch1(x0), b.branch2(x1)
        f = b.fuse(torch.nn.functional.leaky_relu(torch.cat([a, bb], 1), 0.1))
        ca = lambda m, t: t * torch.sigmoid(m.fc[2](torch.relu(m.fc[0](t.mean((2, 3), keepdim=True)))))  # noqa: E731
        torch.testing.assert_close(y0, x0 + ca(b.ca1, f))
        torch.testing.assert_close(y1, x1 + ca(b.ca2, bb))


def test_align_bicubic_shifts_by_one_and_a_half():
    ramp = torch.arange(12.0).view(1, 1, 1, 12).expand(1, 1, 3, 12) / 20
    out = align_bicubic(ramp)
    # a linear ramp is reproduced exactly by cubic interpolation: value at q + 1.5 (away from the border)
    torch.testing.assert_close(out[..., :8], (torch.arange(8.0) + 1.5).view(1, 1, 1, 8).expand(1, 1, 3, 8) / 20)


# ------------------------------------------------------------------------------------------ kernel target

def test_target_recovers_a_circular_blur_kernel():
    rng = np.random.default_rng(2)
    clean = rng.uniform(0.1, 1.0, size=(2, 3, 24, 24))
    k = np.zeros((11, 11))
    k[4:7, 5:9] = rng.uniform(0.5, 1.0, size=(3, 4))  # 12 taps (< 41), off centre
    k /= k.sum()
    blur = _np_circular_blur(clean, k)
    got = lr_kernel_target(torch.tensor(blur), torch.tensor(clean), 11).numpy()
    assert got.shape == (2, 1, 11, 11)
    np.testing.assert_allclose(got[:, 0], np.broadcast_to(k, (2, 11, 11)), atol=1e-9)


def test_target_zeroize_negligible_by_hand():
    rng = np.random.default_rng(3)
    clean = rng.uniform(0.1, 1.0, size=(1, 3, 20, 20))
    yy, xx = np.mgrid[-4:5, -4:5]
    k = np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.6 ** 2))
    k /= k.sum()
    got = lr_kernel_target(torch.tensor(_np_circular_blur(clean, k)), torch.tensor(clean), 9).numpy()[0, 0]
    kmin = 0.75 * np.sort(k.ravel())[-41]
    want = np.clip(k - kmin, 0, 1)
    want[4, 4] += 1e-20
    want /= want.sum()
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert 0 < (got > 0).sum() < 81  # the small tails are zeroed


def test_task_target_uses_the_dataset_grid():
    rng = np.random.default_rng(4)
    hr = rng.uniform(size=(1, 3, 64, 64))
    k = np.zeros((11, 11))
    k[5, 4:7] = [0.2, 0.5, 0.3]
    k[6, 5] = 0.1
    k /= k.sum()
    task = get_task("dcls")
    lr = _np_circular_blur(hr[..., 0::4, 0::4], k)  # direct grid: y_clean = HR[0::4, 0::4]
    got = task.kernel_target(torch.tensor(lr), torch.tensor(hr), 11).numpy()[0, 0]
    np.testing.assert_allclose(got, k, atol=1e-9)
    task._direct = False  # a bicubic-built dataset: y_clean = the 4x4 block mean
    lr = _np_circular_blur(hr.reshape(1, 3, 16, 4, 16, 4).mean(axis=(3, 5)), k)
    got = task.kernel_target(torch.tensor(lr), torch.tensor(hr), 11).numpy()[0, 0]
    np.testing.assert_allclose(got, k, atol=1e-9)


def test_target_needs_a_patch_as_large_as_the_kernel():
    with pytest.raises(BsrError, match="smaller than the kernel"):
        lr_kernel_target(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), 11)


# ------------------------------------------------------------------------------------------ config

def test_config_checks():
    t = get_task("dcls")
    cfg = t.config({})
    assert cfg["train"]["lr"] == 4e-4 and cfg["train"]["milestones"] == [200000, 400000]
    assert cfg["train"]["batch_size"] == 64 and cfg["data"]["crop"] == 256 and cfg["train"]["schedule"] == "multistep"
    with pytest.raises(BsrError, match="model.kernel_size"):
        t.config({"model": {"kernel_size": 15}})
    with pytest.raises(BsrError, match="model.filters"):
        t.config({"model": {"filters": [11, 7, 3]}})
    with pytest.raises(BsrError, match="data.crop 64 gives an LR patch of 16 px"):
        t.config({"data": {"crop": 64}})
    with pytest.raises(BsrError, match="model.align"):
        t.config({"model": {"align": "shift"}})


# ------------------------------------------------------------------------------------------ converter

def _official_table(nb, ng, res_blocks=3, est_blocks=3, n_dec=4):
    """Our name prefix -> the official one, written out module by module (independent of convert_dcls)."""
    t = {"estimator.head.": "Estimator.head.0.", "restorer.conv_first.": "Restorer.conv_first.",
         "restorer.head1.": "Restorer.head1.", "restorer.cls.reduce.": "Restorer.head2.reduce_feature.",
         "restorer.cls.expand.": "Restorer.head2.expand_feature.", "restorer.fusion.": "Restorer.fusion."}
    for i in range(est_blocks):
        for c in ("conv1", "conv2"):
            t[f"estimator.body.{i}.{c}."] = f"Estimator.body.0.{i}.{c}."
    for i in range(res_blocks):
        for c in ("conv1", "conv2"):
            t[f"restorer.features.{i}.{c}."] = f"Restorer.feature_block.{i}.{c}."
    for i in (0, 2, 4):
        t[f"estimator.tail.{i}."] = f"Estimator.tail.{i}."
        t[f"restorer.upscale.{i}."] = f"Restorer.upscale.{i}."
    for i in range(n_dec):
        t[f"estimator.dec.{i}."] = f"Estimator.dec.{i}."
    for i in (0, 2, 4, 6):
        t[f"restorer.cls.smooth.{i}."] = f"Restorer.head2.grad_filter.{i}."
    for g in range(ng):
        for b in range(nb):
            ours, off = f"restorer.body.{g}.blocks.{b}.", f"Restorer.body.{g}.body.{b}."
            for i in (0, 2):
                t[f"{ours}branch1.{i}."] = f"{off}body1.{i}."
                t[f"{ours}branch2.{i}."] = f"{off}body2.{i}."
                t[f"{ours}ca1.fc.{i}."] = f"{off}CA_body1.2.conv_du.{i}."
                t[f"{ours}ca2.fc.{i}."] = f"{off}CA_body2.conv_du.{i}."
            t[f"{ours}fuse."] = f"{off}CA_body1.1."
    return t


def _rename(state, table):
    out = {}
    for k, v in state.items():
        pre = max((p for p in table if k.startswith(p)), key=len)
        out[table[pre] + k[len(pre):]] = v
    return out


def test_official_layout_names_and_shapes():
    from bsrdata.models.convert_dcls import infer_config, official_name

    m = create_model("dcls")
    off = {official_name(k): tuple(v.shape) for k, v in m.state_dict().items()}
    assert len(off) == 964
    assert off == {k: tuple(v.shape) for k, v in _rename(m.state_dict(), _official_table(10, 5)).items()}
    for k, shape in (("Restorer.head2.grad_filter.0.weight", (16, 16, 3, 3)),
                     ("Restorer.body.0.body.0.CA_body1.1.weight", (64, 80, 3, 3)),
                     ("Restorer.fusion.weight", (64, 80, 3, 3)), ("Estimator.body.0.0.conv1.weight", (64, 64, 3, 3)),
                     ("Estimator.tail.4.weight", (256, 64, 1, 1)), ("Estimator.dec.0.weight", (5808, 256)),
                     ("Estimator.dec.3.weight", (48, 256))):
        assert off[k] == shape, k
    kw = infer_config({official_name(k): v for k, v in m.state_dict().items()}, "x")
    assert kw == {"scale": 4, "nf": 64, "nb": 10, "ng": 5, "reduction": 4, "res_blocks": 3, "est_nf": None,
                  "est_blocks": 3, "latent": 256, "kernel_size": 21, "filters": [11, 7, 5, 1], "kernel_hidden": 16}


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    torch.manual_seed(0)
    m = create_model("dcls", nf=16, nb=2, ng=2, reduction=4, latent=8).eval()
    path = tmp_path_factory.mktemp("dcls_off") / "DCLSx4_setting1.pth"
    state = _rename(m.state_dict(), _official_table(2, 2))
    torch.save(state, path)
    return m, path, state


def test_convert_round_trip(official_file, tmp_path):
    from bsrdata.models.converters import convert

    m, path, _ = official_file
    cfg = convert(path, "dcls", tmp_path / "ck")
    assert cfg["source"]["tensors"] == len(m.state_dict()) and cfg["adaptation"]["align"] == "bicubic"
    m2, cfg2 = checkpoint.load(tmp_path / "ck")
    assert cfg2["model"]["kernel_size"] == 21 and m2.align == "bicubic"
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        a, b = m(x), m2(x)
        torch.testing.assert_close(a["sr"], b["sr"], rtol=0, atol=0)
        torch.testing.assert_close(a["kernel"], b["kernel"], rtol=0, atol=0)
        torch.testing.assert_close(m2.super_resolve(x), align_bicubic(a["sr"]))
        torch.testing.assert_close(m2.super_resolve(x, align="none"), a["sr"])


@pytest.mark.parametrize("change, match", [
    ("drop", "missing"), ("extra", "unexpected"), ("shape", "Restorer.fusion.weight")])
def test_convert_failures_are_one_line_and_write_nothing(official_file, tmp_path, change, match):
    from bsrdata.models.converters import convert

    _, _, state = official_file
    bad = dict(state)
    if change == "drop":
        bad.pop("Restorer.body.1.body.0.CA_body2.conv_du.0.bias")
    elif change == "extra":
        bad["Restorer.extra.weight"] = torch.zeros(1)
    else:
        bad["Restorer.fusion.weight"] = torch.zeros(16, 20, 1, 1)
    src = tmp_path / "bad.pth"
    torch.save(bad, src)
    with pytest.raises(BsrError, match=match) as exc:
        convert(src, "dcls", tmp_path / "out")
    assert "\n" not in str(exc.value) and not (tmp_path / "out").exists()


def test_convert_rejects_other_files(tmp_path):
    from bsrdata.models.converters import convert

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BsrError, match="junk.pth"):
        convert(tmp_path / "junk.pth", "dcls", tmp_path / "o1")
    with pytest.raises(BsrError, match="--variant"):
        convert(tmp_path / "junk.pth", "dcls", tmp_path / "o2", variant="v2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


# ------------------------------------------------------------------------------------------ train + bench

def test_tiny_train_and_bench(tmp_path, capsys):
    from bsrdata.cli.main import main

    data = tmp_path / "ds"
    make_bench_dataset(data, n_test=5, n_train=4, h=48, w=64)
    cfg = {"task": "dcls", "model": {**TINY}, "data": {"crop": 48, "zoom": [1]},
           "train": {"iterations": 2, "batch_size": 2, "workers": 0, "log_every": 1, "ckpt_every": 2,
                     "amp": False, "schedule": "multistep", "milestones": [1], "lr": 1e-3, "val_groups": [1]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exc:
        main(["train", "dcls", "--data", str(data), "--config", str(tmp_path / "c.yaml"), "--out",
              str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    assert exc.value.code in (0, None), capsys.readouterr().err
    log = (tmp_path / "run" / "log.csv").read_text()
    assert "kernel" in log.splitlines()[0]
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--data", str(data), "--method", "dcls", "--ckpt", str(tmp_path / "run"), "--out",
              str(tmp_path / "b"), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert any(line.startswith("| dcls |") for line in out.splitlines())
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert len(doc["methods"]) == 1 and '"dcls"' in json.dumps(doc["methods"])
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--data", str(data), "--method", "dcls", "--ckpt", str(tmp_path / "run"), "--out",
              str(tmp_path / "b2"), "--device", "cpu", "--opt", "align=sideways"])
    _, err = capsys.readouterr()
    assert exc.value.code != 0 and "align" in err
