"""bsrdata.degrade: config validation, per-sample RNG, downsamplers (vs independent references), synthesize."""

import hashlib
import math

import numpy as np
import pytest

from bsrdata.degrade import DegradeConfig, downsample, imresize_bicubic, sample_rng, synthesize, to_uint8
from bsrdata.errors import BsrError
from bsrdata.sources.base import Record


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("mc, msg", [(20, "even"), (1, "too small"), (2, "too small"), (22, "even"),
                                     (21.5, "odd integer"), ("x", "odd integer")])
def test_bad_max_coc(mc, msg):
    with pytest.raises(BsrError, match=msg) as e:
        DegradeConfig(max_coc=mc)
    assert "max_coc" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kw", [{"renderer": "fast"}, {"downsample": "area"}, {"noise": -1.0}, {"scale": 0},
                                {"coc_step": 0}])
def test_bad_options(kw):
    with pytest.raises(BsrError):
        DegradeConfig(**kw)


def test_config_attrs():
    c = DegradeConfig(max_coc=61)
    assert c.sigma_max == 15.0
    a = c.to_attrs()
    for k in ("scale", "max_coc", "sigma_max", "renderer", "downsample", "noise", "generator_version"):
        assert k in a
    assert DegradeConfig.from_dict(a) == c


# ------------------------------------------------------------------------------------------ rng
def test_sample_rng_is_sha256_of_seed_key_group():
    words = hashlib.sha256("bsrdata-sample\x1f7\x1fnyuv2-0001\x1f3".encode()).digest()
    ent = [int.from_bytes(words[i:i + 4], "little") for i in range(0, 32, 4)]
    ref = np.random.Generator(np.random.PCG64(np.random.SeedSequence(ent)))
    assert np.array_equal(sample_rng(7, "nyuv2-0001", 3).random(5), ref.random(5))
    a = sample_rng(7, "nyuv2-0001", 3).random(4)
    for other in [(8, "nyuv2-0001", 3), (7, "nyuv2-0002", 3), (7, "nyuv2-0001", 0)]:
        assert not np.array_equal(sample_rng(*other).random(4), a)


# ------------------------------------------------------------------------------------ downsampling
def test_direct_downsample():
    x = np.random.default_rng(0).random((12, 16, 3))
    y = downsample(x, 4, "direct")
    assert y.shape == (3, 4, 3)
    assert np.array_equal(y, x[0::4, 0::4])
    assert y[1, 2, 0] == x[4, 8, 0]


def _cubic_ref(t):
    t = abs(t)
    if t <= 1:
        return 1.5 * t ** 3 - 2.5 * t ** 2 + 1
    if t <= 2:
        return -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
    return 0.0


def _imresize_1d_loop(v, scale, out_len):
    """MATLAB imresize along one axis, written as plain loops in float64 (independent reference)."""
    n = len(v)
    out = np.zeros(out_len)
    width = 4.0 / scale if scale < 1 else 4.0
    for i in range(out_len):
        u = (i + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of output pixel i+1
        lo = math.floor(u - width / 2)
        acc, wsum = 0.0, 0.0
        for j in range(lo, lo + int(math.ceil(width)) + 2):
            x = u - j
            w = scale * _cubic_ref(scale * x) if scale < 1 else _cubic_ref(x)
            jj = j
            while jj < 1 or jj > n:  # symmetric padding incl. the edge pixel
                jj = 1 - jj if jj < 1 else 2 * n + 1 - jj
            acc += w * v[jj - 1]
            wsum += w
        out[i] = acc / wsum
    return out


def _imresize_loop(img, scale, oh, ow):
    tmp = np.stack([_imresize_1d_loop(img[:, c], scale, oh) for c in range(img.shape[1])], axis=1)
    return np.stack([_imresize_1d_loop(tmp[r], scale, ow) for r in range(oh)], axis=0)


@pytest.mark.parametrize("shape, s", [((16, 20), 4), ((9, 14), 2), ((12, 9), 3)])
def test_bicubic_matches_loop_reference(shape, s):
    img = np.random.default_rng(1).random(shape)
    oh, ow = math.ceil(shape[0] / s), math.ceil(shape[1] / s)
    ref = _imresize_loop(img, 1 / s, oh, ow)
    got = imresize_bicubic(img, 1 / s)
    assert got.shape == (oh, ow)
    assert np.max(np.abs(got - ref)) < 1e-12


def test_bicubic_known_matlab_values():
    # imresize(1:8, 0.5) along a row. Derivation: antialiased kernel h(x) = 0.5·cubic(0.5x), width 8;
    # output 1 sits at u = 1/0.5 + 0.5(1 - 2) = 1.5, so taps j = -2..5 at distances ±0.5, ±1.5, ±2.5, ±3.5,
    # with cubic(0.25) = 0.8671875, cubic(0.75) = 0.2265625, cubic(1.25) = -0.0703125, cubic(1.75) = -0.0234375
    # (weights sum to 1); j = 0, -1, -2 mirror to 1, 2, 3. out1 = 1.44921875, out2 (u = 3.5) = 3.48828125, and
    # the ramp's antisymmetry gives out3 = 9 - out2, out4 = 9 - out1.
    row = np.tile(np.arange(1, 9, dtype=np.float64), (4, 1))
    got = imresize_bicubic(row, 0.5)
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got[0], [1.44921875, 3.48828125, 5.51171875, 7.55078125], atol=1e-12)
    np.testing.assert_allclose(got[1], got[0], atol=1e-12)
    # a constant image stays constant; bicubic downsample via the public function, RGB
    c = np.full((8, 12, 3), 0.3)
    np.testing.assert_allclose(downsample(c, 4, "bicubic"), 0.3, atol=1e-12)


def test_to_uint8_rounds_half_up_and_clips():
    x = np.array([-0.1, 0.5 / 255, 1.5 / 255, 254.5 / 255, 1.2])
    assert to_uint8(x).tolist() == [0, 1, 2, 255, 255]


# ------------------------------------------------------------------------------------------ synthesize
def _scene(h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = np.full((h, w), 4.0, np.float32)
    depth[:, : w // 2] = 1.0
    depth[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = 2.0
    seg = (depth * 10).astype(np.uint8) % 7
    return Record("k1", rgb, depth, seg)


def test_synthesize_shapes_and_params():
    rec = _scene(26, 35)  # cropped to 24 x 32
    s = synthesize(rec, DegradeConfig(renderer="gather"), 5, False)
    assert s["hr"].shape == (24, 32, 3) and s["hr"].dtype == np.uint8
    assert s["lr"].shape == (6, 8, 3) and s["lr"].dtype == np.uint8
    assert s["blur"].shape == (24, 32) and s["blur"].dtype == np.float32
    assert s["seg"].shape == (24, 32) and s["depth"].dtype == np.float32
    assert np.array_equal(s["hr"], rec.rgb[:24, :32])
    p = s["params"]
    for k in ("focus_m", "f_mm", "coc_max_px", "seed", "render_seed", "n_layers"):
        assert k in p
    assert p["f_mm"] in (50.0, 70.0, 85.0) and p["focus_m"] in (1.0, 2.0, 4.0)
    # SYNDOF normalisation: the largest σ equals σ_max; the focus plane is in focus; σ on the 0.025 grid
    assert s["blur"].max() == pytest.approx(5.0)
    assert s["blur"].min() == 0.0
    assert np.allclose(np.round(s["blur"] / 0.025) * 0.025, s["blur"], atol=1e-5)


def test_two_planes_give_zero_and_sigma_max():
    rgb = np.zeros((16, 20, 3), np.uint8)
    depth = np.full((16, 20), 3.0, np.float32)
    depth[:, :10] = 1.0
    s = synthesize(Record("two", rgb, depth, None), DegradeConfig(renderer="gather"), 0, False)
    assert set(np.unique(s["blur"]).tolist()) == {0.0, 5.0}


def test_synthesize_is_deterministic_and_depends_on_group():
    rec = _scene()
    cfg = DegradeConfig(renderer="gather", noise=3.0)
    a = synthesize(rec, cfg, 1, True, group=2)
    b = synthesize(rec, cfg, 1, True, group=2)
    assert np.array_equal(a["lr"], b["lr"]) and a["params"] == b["params"]
    sig = {synthesize(rec, cfg, 1, True, group=g)["params"]["sigma_iva"] for g in range(1, 6)}
    assert len(sig) > 1


def test_gather_direct_matches_reference_at_lr_points():
    from bsrdata.render.reference import gather_reference

    rec = _scene()
    s = synthesize(rec, DegradeConfig(renderer="gather"), 3, False)
    ref = gather_reference(rec.rgb.astype(np.float64) / 255, s["blur"].astype(np.float64), 21)
    want = to_uint8(ref[::4, ::4])
    assert np.abs(s["lr"].astype(int) - want.astype(int)).max() <= 1


def test_layered_matches_reference():
    from bsrdata.optics import coc_normalised, quantise_coc
    from bsrdata.render.reference import layered_reference

    rec = _scene()
    s = synthesize(rec, DegradeConfig(renderer="layered", downsample="bicubic"), 3, False)
    focus = s["params"]["focus_m"]
    depth = rec.depth.astype(np.float64)
    coc = quantise_coc(coc_normalised(depth, focus, 21))
    np.testing.assert_allclose(s["blur"], np.maximum(0, (coc - 1) / 4), atol=1e-6)
    ref = layered_reference(rec.rgb.astype(np.float32) / 255, coc, 21, near=depth < focus)
    want = to_uint8(imresize_bicubic(np.asarray(ref, np.float64), 0.25))
    assert np.abs(s["lr"].astype(int) - want.astype(int)).max() <= 1


def test_invariant_is_plain_gaussian():
    import cv2

    from bsrdata.render import gaussian_kernel_1d

    rec = _scene()
    s = synthesize(rec, DegradeConfig(), 11, True)
    sig = s["params"]["sigma_iva"]
    assert s["invariant"] and np.all(s["blur"] == s["blur"][0, 0]) and s["blur"][0, 0] == pytest.approx(sig)
    assert 0 <= sig <= 5 and abs(sig / 0.025 - round(sig / 0.025)) < 1e-6
    k = gaussian_kernel_1d(sig, 21)
    ref = cv2.filter2D(rec.rgb.astype(np.float64) / 255, -1, np.outer(k, k), borderType=cv2.BORDER_REFLECT)
    assert np.abs(s["lr"].astype(int) - to_uint8(ref[::4, ::4]).astype(int)).max() <= 1


def test_noise_level():
    rec = _scene(64, 64)
    a = synthesize(rec, DegradeConfig(renderer="gather"), 0, False)
    b = synthesize(rec, DegradeConfig(renderer="gather", noise=5.0), 0, False)
    d = b["lr"].astype(float) - a["lr"].astype(float)
    assert 3.5 < d.std() < 6.5 and abs(d.mean()) < 1.5


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("make, msg", [
    (lambda r: Record("k", r.rgb, r.depth[:-2], None), "image is 24x32 but depth is 22x32"),
    (lambda r: Record("k", r.rgb[..., 0], r.depth, None), "RGB"),
    (lambda r: Record("k", np.concatenate([r.rgb, r.rgb[..., :1]], 2), r.depth, None), "RGB"),
    (lambda r: Record("k", r.rgb.astype(np.float32), r.depth, None), "uint8"),
    (lambda r: Record("k", r.rgb, np.zeros_like(r.depth), None), "valid"),
    (lambda r: Record("k", r.rgb, np.full_like(r.depth, np.nan), None), "valid"),
    (lambda r: Record("k", r.rgb[:3, :3], r.depth[:3, :3], None), "smaller"),
])
def test_bad_records(make, msg):
    with pytest.raises(BsrError, match=msg) as e:
        synthesize(make(_scene()), DegradeConfig(renderer="gather"), 0, False)
    assert "\n" not in str(e.value)
