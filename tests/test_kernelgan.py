"""KernelGAN + ZSSR (models/kernelgan.py, models/zssr.py, models/bench_kernelgan.py): parameter counts at the
official widths, G's kernel against an independent numpy composition, every loss term on a hand case, the
kernel post-processing and the analytic ×4 kernel against numpy, ZSSR's resampling against the toolkit's
MATLAB bicubic and scipy, and ``bsr bench --method kernelgan`` end to end with resume."""

import json

import numpy as np
import pytest
import torch
from cli_run import bsr as _run
from scipy import ndimage, signal
from sr_fakes import make_bench_dataset

from bsrdata.errors import BsrError
from bsrdata.models import create_model
from bsrdata.models import kernelgan as kg
from bsrdata.models import zssr as zs


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_official():
    assert _count(create_model("kernelgan_g")) == 150_656
    assert _count(create_model("kernelgan_d")) == 30_977
    assert _count(create_model("zssr")) == 224_640


def _compose_numpy(weights):
    """Correlation kernel of a chain of bias-free convs: C[o, a+b] += Σ_m W[o, m, b] · C_prev[m, a]."""
    c = np.ones((1, 1, 1))  # (channels, h, w): the identity for a 1-channel input
    for w in weights:
        o, i, kh, kw = w.shape
        new = np.zeros((o, c.shape[1] + kh - 1, c.shape[2] + kw - 1))
        for b0 in range(kh):
            for b1 in range(kw):
                new[:, b0:b0 + c.shape[1], b1:b1 + c.shape[2]] += np.einsum("om,mhw->ohw", w[:, :, b0, b1], c)
        c = new
    return c[0]


def test_generator_kernel_is_its_impulse_response():
    torch.manual_seed(0)
    g = kg.KernelGenerator(width=4).double()
    ws = [conv.weight.detach().numpy() for conv in g.layers]
    ref = _compose_numpy(ws)
    k = g.kernel().detach().numpy()
    assert k.shape == (13, 13)
    np.testing.assert_allclose(k, ref, rtol=1e-10, atol=1e-12)
    # and G itself is "correlate with k, keep every second pixel", per channel
    x = torch.rand(1, 3, 20, 22, dtype=torch.float64)
    y = g(x).detach().numpy()
    for ch in range(3):
        full = signal.correlate2d(x[0, ch].numpy(), ref, mode="valid")
        np.testing.assert_allclose(y[0, ch], full[::2, ::2], rtol=1e-10, atol=1e-12)


def test_shapes():
    g, d = kg.KernelGenerator(width=4), kg.KernelDiscriminator(width=4)
    assert g(torch.rand(1, 3, 64, 64)).shape == (1, 3, 26, 26)
    assert d(torch.rand(2, 3, 26, 26)).shape == (2, 1, 20, 20)
    net = zs.ZSSRNet(width=4)
    assert net(torch.rand(1, 3, 16, 12)).shape == (1, 3, 16, 12)


def test_gan_and_simple_losses_hand_values():
    d = torch.tensor([[[[0.2, 0.6]]]])
    assert kg.gan_loss(d, True).item() == pytest.approx(0.6)
    assert kg.gan_loss(d, False).item() == pytest.approx(0.4)
    assert kg.sum_to_one_loss(torch.full((13, 13), 0.01)).item() == pytest.approx(0.69)
    k = torch.tensor([[1.0, 32.0], [0.0, 0.0]])
    assert kg.sparsity_loss(k).item() == pytest.approx((1 + 2) / 4)  # 32^0.2 = 2
    delta = torch.zeros(13, 13, dtype=torch.float64)
    delta[3, 8] = 1.0
    # centre of mass (3, 8), wanted 13//2 + 0.5·(2 − 1) = 6.5
    assert kg.centroid_loss(delta).item() == pytest.approx(((3 - 6.5) ** 2 + (8 - 6.5) ** 2) / 2)


def test_bicubic_taps_and_loss():
    hand = np.array([-0.01171875, -0.03515625, 0.11328125, 0.43359375])
    np.testing.assert_allclose(kg.bicubic_x2_taps(), np.concatenate([hand, hand[::-1]]), atol=1e-15)
    x = torch.rand(1, 2, 16, 16, dtype=torch.float64)
    y = kg.bicubic_down2(x).numpy()
    t = kg.bicubic_x2_taps()
    xp = np.pad(x.numpy()[0], ((0, 0), (3, 3), (3, 3)))
    ref = np.zeros((2, 8, 8))
    for i in range(8):
        for j in range(8):
            ref[:, i, j] = np.einsum("chw,h,w->c", xp[:, 2 * i:2 * i + 8, 2 * j:2 * j + 8], t, t)
    np.testing.assert_allclose(y[0], ref, atol=1e-12)
    g_out = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    assert kg.bicubic_loss(x, g_out).item() == pytest.approx(float((ref[:, 2:6, 2:6] ** 2).mean()))


def test_boundary_mask_and_loss():
    m = kg.boundary_mask(13)
    assert m.shape == (13, 13) and (m[2:-2, 2:-2] == 0).all()
    assert m[0, 0] == pytest.approx(30 * (1 - np.exp(-(36 + 36) / (2 * 169))))
    assert m[1, 6] == pytest.approx(30 * (1 - np.exp(-25 / (2 * 169))))
    k = torch.zeros(13, 13, dtype=torch.float64)
    k[0, 0], k[6, 6] = -0.5, 1.0
    assert kg.boundary_loss(k, torch.from_numpy(m)).item() == pytest.approx(0.5 * m[0, 0] / 169)


def test_lambda_schedule():
    lam = kg.LossWeights(period=4)
    lam.update(1, 0.3)
    lam.update(2, 0.5)  # resets the count
    for it in (3, 4, 5):
        lam.update(it, 0.1)
    assert lam.similar and lam.bicubic == 5.0
    lam.update(8, 0.1)
    assert lam.bicubic == pytest.approx(0.05) and lam.centroid == 0
    lam.update(12, 0.1)
    assert lam.bicubic == pytest.approx(5e-4) and (lam.centroid, lam.sparse) == (1.0, 5.0)
    for it in (16, 20, 24):
        lam.update(it, 0.1)
    assert lam.bicubic == 5e-6


def test_post_processing_against_numpy():
    # a kernel symmetric about 6.5 (support 1..12): the centring shift is 0, so the result is the zeroed,
    # renormalised kernel, zero-padded
    rng = np.random.default_rng(1)
    g = np.zeros(13)
    half = np.exp(-np.arange(6) ** 2 / 6.0) + 0.01 * rng.random(6)
    g[7:], g[1:7] = half, half[::-1]
    k = np.outer(g, g)
    out = kg.post_process_kernel(k)
    thr = 0.75 * np.sort(k.ravel())[::-1][40]  # the 41st largest
    z = np.where(k >= thr, k, 0.0)
    z = z / z.sum()
    pad = (out.shape[0] - 13) // 2
    assert pad in (1, 2) and out.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(out[pad:pad + 13, pad:pad + 13], z, atol=1e-12)
    # an off-centre Gaussian: the centre of mass moves to 6.5 (+ the padding)
    yy, xx = np.mgrid[0:13, 0:13]
    k = np.exp(-((yy - 5.2) ** 2 + (xx - 7.1) ** 2) / 4.0)
    out = kg.post_process_kernel(k)
    pad = (out.shape[0] - 13) // 2
    assert pad == 3 and out.sum() == pytest.approx(1.0)  # ceil(max |shift| = 1.3) + 1
    np.testing.assert_allclose(ndimage.center_of_mass(out), np.array([6.5, 6.5]) + pad, atol=0.02)


def test_analytic_x4_against_numpy():
    rng = np.random.default_rng(2)
    k = rng.random((5, 5))
    k /= k.sum()
    dil = np.zeros((9, 9))
    dil[::2, ::2] = k
    full = signal.convolve2d(dil, k)  # 13 = 3·5 − 2
    ref = full[2:-2, 2:-2] / full[2:-2, 2:-2].sum()
    np.testing.assert_allclose(kg.analytic_x4(k), ref, atol=1e-14)
    d = np.zeros((13, 13))
    d[6, 6] = 1
    k4 = kg.analytic_x4(d)
    assert k4.shape == (25, 25) and k4[12, 12] == pytest.approx(1.0)


def test_zssr_resampling_against_references():
    from bsrdata.degrade import imresize_bicubic

    rng = np.random.default_rng(3)
    img = rng.random((6, 7, 3))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    up = zs.bicubic_up(x, (24, 28))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(up, imresize_bicubic(img, 4.0), atol=1e-5)
    big = rng.random((12, 16, 3))
    k = rng.random((5, 4))
    k /= k.sum()
    y = zs.downscale(torch.from_numpy(big).permute(2, 0, 1)[None], torch.from_numpy(k), 2)[0].numpy()
    # scipy 'reflect' is the symmetric border; origin puts the kernel's centre at index size//2
    ref = np.stack([ndimage.correlate(big[..., c], k, mode="reflect") for c in range(3)])
    np.testing.assert_allclose(y, ref[:, ::2, ::2], atol=1e-12)


def test_father_zero_fill_for_small_images():
    x = torch.rand(1, 3, 10, 12)
    w = torch.ones(1, 1, 10, 12)
    f, m = zs._father(x, w, 16, 4, np.random.default_rng(0))
    assert f.shape == (1, 3, 16, 16) and m.sum() == 120  # the whole image, once, weight 0 outside


def test_estimation_is_deterministic():
    lr = (np.random.default_rng(4).random((36, 40, 3)) * 255).astype(np.uint8)
    a = kg.estimate_kernels(lr, iters=3, seed=5, width=8)
    b = kg.estimate_kernels(lr, iters=3, seed=5, width=8)
    np.testing.assert_array_equal(a.raw, b.raw)
    assert a.k2.sum() == pytest.approx(1) and a.k4.sum() == pytest.approx(1)


def test_zssr_is_deterministic_and_shaped():
    lr = (np.random.default_rng(6).random((12, 16, 3)) * 255).astype(np.uint8)
    k2 = kg.post_process_kernel(np.outer(*[np.exp(-(np.arange(13) - 6.0) ** 2 / 3)] * 2))
    k4 = kg.analytic_x4(k2)
    a = zs.super_resolve(lr, k2, k4, iters=3, seed=2, crop=16, width=4)
    b = zs.super_resolve(lr, k2, k4, iters=3, seed=2, crop=16, width=4)
    assert a.sr.shape == (48, 64, 3) and a.iterations == [3, 3] and a.sr.min() >= 0 and a.sr.max() <= 1
    np.testing.assert_array_equal(a.sr, b.sr)


def test_options_are_checked():
    from bsrdata.models.bench_kernelgan import make_method

    with pytest.raises(BsrError, match="no option 'foo'"):
        make_method(None, "kernelgan", opts={"foo": "1"})
    with pytest.raises(BsrError, match="--opt seed: must be an integer"):
        make_method(None, "kernelgan", opts={"seed": "x"})
    with pytest.raises(BsrError, match="--opt align"):
        make_method(None, "kernelgan", opts={"align": "left"})
    m = make_method(None, "kernelgan", iters=7, opts={"zssr_iters": "3"})
    assert (m.kg_iters, m.zssr_iters) == (7, 3)


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernelgan_ds")
    make_bench_dataset(root, n_test=5, h=32, w=40)
    return root


def _results(out):
    (f,) = list((out / "results").glob("kernelgan-*.jsonl"))
    return [json.loads(line) for line in f.read_text().splitlines()]


def test_bench_end_to_end_resumes(dataset, tmp_path, capsys, monkeypatch):
    from bsrdata.models import bench_kernelgan as bk

    argv = ["bench", "--data", str(dataset), "--method", "kernelgan", "--iters", "5", "--out", str(tmp_path),
            "--opt", "zssr_crop=16"]
    real_one, calls = bk.KernelGANMethod._one, []

    def interrupted(self, uid, lr):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(uid)
        return real_one(self, uid, lr)

    monkeypatch.setattr(bk.KernelGANMethod, "_one", interrupted)
    code, _, _ = _run(argv, capsys)  # Ctrl-C during the third image (click: "Aborted!", exit 1)
    assert code != 0
    assert len([r for r in _results(tmp_path) if "uid" in r]) == 2  # stored as each image finished

    def counted(self, uid, lr):
        calls.append(uid)
        return real_one(self, uid, lr)

    monkeypatch.setattr(bk.KernelGANMethod, "_one", counted)
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert len(calls) == 10 and len(set(calls)) == 10  # the 8 others, each once
    assert out.splitlines()[2].startswith("| kernelgan |")
    header = _results(tmp_path)[0]["header"]["provenance"]
    assert header["kernelgan_iters"] == 5 and header["align"] == "official"
    rec = json.loads(next((tmp_path / "kernelgan").glob("*/" + calls[0] + ".json")).read_text())
    assert rec["kernelgan"]["iterations"] == 5 and rec["zssr"]["iterations"] == [5, 5]

    n = len(_results(tmp_path))
    code, out2, _ = _run(argv, capsys)  # a second run scores nothing again
    assert code == 0 and out2 == out and len(calls) == 10 and len(_results(tmp_path)) == n

    argv[4] = "KG-direct=kernelgan"
    code, out3, err = _run(argv + ["--opt", "align=direct"], capsys)  # reuses the raw SR, only shifts it
    assert code == 0, err
    assert len(calls) == 10 and len(out3.splitlines()) == len(out.splitlines()) + 1


def test_align_direct_shifts_by_one_and_a_half_pixels():
    from bsrdata.models.bench_kernelgan import shift_direct

    yy, xx = np.mgrid[0:16, 0:20].astype(np.float64)
    sr = np.stack([xx, yy, xx + yy], -1)
    out = shift_direct(sr)  # out(p) = sr(p + 1.5): a linear ramp moves by 1.5 away from the edges
    np.testing.assert_allclose(out[5:-6, 5:-6, 0], xx[5:-6, 5:-6] + 1.5, atol=2e-3)
    np.testing.assert_allclose(out[5:-6, 5:-6, 1], yy[5:-6, 5:-6] + 1.5, atol=2e-3)
