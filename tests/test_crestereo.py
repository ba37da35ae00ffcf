"""CREStereo: architecture vs the public checkpoint's table, component numerics vs float64 numpy
references, the cascade's sign/scale plumbing, and strict weight loading."""

import json
import os

import numpy as np
import pytest
import torch

from bsrdata.errors import BsrError
from bsrdata.models import crestereo as cs

# name and shape of every tensor of crestereo_eth3d.pth (the common PyTorch port), in file order
PUBLIC_TABLE = """
fnet.conv1.weight 64x3x7x7
fnet.conv1.bias 64
fnet.layer1.0.conv1.weight 64x64x3x3
fnet.layer1.0.conv1.bias 64
fnet.layer1.0.conv2.weight 64x64x3x3
fnet.layer1.0.conv2.bias 64
fnet.layer1.0.downsample.0.weight 64x64x1x1
fnet.layer1.0.downsample.0.bias 64
fnet.layer1.1.conv1.weight 64x64x3x3
fnet.layer1.1.conv1.bias 64
fnet.layer1.1.conv2.weight 64x64x3x3
fnet.layer1.1.conv2.bias 64
fnet.layer1.1.downsample.0.weight 64x64x1x1
fnet.layer1.1.downsample.0.bias 64
fnet.layer2.0.conv1.weight 96x64x3x3
fnet.layer2.0.conv1.bias 96
fnet.layer2.0.conv2.weight 96x96x3x3
fnet.layer2.0.conv2.bias 96
fnet.layer2.0.downsample.0.weight 96x64x1x1
fnet.layer2.0.downsample.0.bias 96
fnet.layer2.1.conv1.weight 96x96x3x3
fnet.layer2.1.conv1.bias 96
fnet.layer2.1.conv2.weight 96x96x3x3
fnet.layer2.1.conv2.bias 96
fnet.layer2.1.downsample.0.weight 96x96x1x1
fnet.layer2.1.downsample.0.bias 96
fnet.layer3.0.conv1.weight 128x96x3x3
fnet.layer3.0.conv1.bias 128
fnet.layer3.0.conv2.weight 128x128x3x3
fnet.layer3.0.conv2.bias 128
fnet.layer3.0.downsample.0.weight 128x96x1x1
fnet.layer3.0.downsample.0.bias 128
fnet.layer3.1.conv1.weight 128x128x3x3
fnet.layer3.1.conv1.bias 128
fnet.layer3.1.conv2.weight 128x128x3x3
fnet.layer3.1.conv2.bias 128
fnet.layer3.1.downsample.0.weight 128x128x1x1
fnet.layer3.1.downsample.0.bias 128
fnet.conv2.weight 256x128x1x1
fnet.conv2.bias 256
update_block.encoder.convc1.weight 256x36x1x1
update_block.encoder.convc1.bias 256
update_block.encoder.convc2.weight 192x256x3x3
update_block.encoder.convc2.bias 192
update_block.encoder.convf1.weight 128x2x7x7
update_block.encoder.convf1.bias 128
update_block.encoder.convf2.weight 64x128x3x3
update_block.encoder.convf2.bias 64
update_block.encoder.conv.weight 126x256x3x3
update_block.encoder.conv.bias 126
update_block.gru.convz1.weight 128x384x1x5
update_block.gru.convz1.bias 128
update_block.gru.convr1.weight 128x384x1x5
update_block.gru.convr1.bias 128
update_block.gru.convq1.weight 128x384x1x5
update_block.gru.convq1.bias 128
update_block.gru.convz2.weight 128x384x5x1
update_block.gru.convz2.bias 128
update_block.gru.convr2.weight 128x384x5x1
update_block.gru.convr2.bias 128
update_block.gru.convq2.weight 128x384x5x1
update_block.gru.convq2.bias 128
update_block.flow_head.conv1.weight 256x128x3x3
update_block.flow_head.conv1.bias 256
update_block.flow_head.conv2.weight 2x256x3x3
update_block.flow_head.conv2.bias 2
update_block.mask.0.weight 256x128x3x3
update_block.mask.0.bias 256
update_block.mask.2.weight 144x256x1x1
update_block.mask.2.bias 144
self_att_fn.layers.0.q_proj.weight 256x256
self_att_fn.layers.0.k_proj.weight 256x256
self_att_fn.layers.0.v_proj.weight 256x256
self_att_fn.layers.0.merge.weight 256x256
self_att_fn.layers.0.mlp.0.weight 512x512
self_att_fn.layers.0.mlp.2.weight 256x512
self_att_fn.layers.0.norm1.weight 256
self_att_fn.layers.0.norm1.bias 256
self_att_fn.layers.0.norm2.weight 256
self_att_fn.layers.0.norm2.bias 256
cross_att_fn.layers.0.q_proj.weight 256x256
cross_att_fn.layers.0.k_proj.weight 256x256
cross_att_fn.layers.0.v_proj.weight 256x256
cross_att_fn.layers.0.merge.weight 256x256
cross_att_fn.layers.0.mlp.0.weight 512x512
cross_att_fn.layers.0.mlp.2.weight 256x512
cross_att_fn.layers.0.norm1.weight 256
cross_att_fn.layers.0.norm1.bias 256
cross_att_fn.layers.0.norm2.weight 256
cross_att_fn.layers.0.norm2.bias 256
conv_offset_16.weight 18x256x3x3
conv_offset_16.bias 18
conv_offset_8.weight 18x256x3x3
conv_offset_8.bias 18
"""
PUBLIC_PARAMS = 5_432_948
SHARED_JSON = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "design", "crestereo_state_dict.json")


def public_table():
    rows = []
    for line in PUBLIC_TABLE.strip().splitlines():
        name, shape = line.split()
        rows.append((name, tuple(int(s) for s in shape.split("x"))))
    return rows


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return cs.CREStereo().eval()


# ------------------------------------------------------------------------------ architecture / weights

def test_state_dict_equals_public_checkpoint_table(model):
    mine = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert mine == public_table()
    assert len(mine) == 94
    assert sum(p.numel() for p in model.parameters()) == PUBLIC_PARAMS
    assert list(model.buffers()) == []


@pytest.mark.skipif(not os.path.isfile(SHARED_JSON), reason="shared design JSON not present")
def test_embedded_table_equals_shared_json():
    with open(SHARED_JSON) as fh:
        ref = json.load(fh)
    assert [(k, tuple(s)) for k, s in ref["keys"]] == public_table()
    assert ref["param_count"] == PUBLIC_PARAMS


def test_registry_builds_it():
    from bsrdata.models import create_model

    m = create_model("crestereo")
    assert isinstance(m, cs.CREStereo)


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def test_load_round_trips_bare_nested_and_module_prefix(model, tmp_path):
    sd = model.state_dict()
    variants = {
        "bare.pth": sd,
        "nested.pth": {"state_dict": sd, "epoch": 3},
        "model.pth": {"model": {f"module.{k}": v for k, v in sd.items()}},
    }
    for name, obj in variants.items():
        loaded = cs.load_crestereo(_save(obj, tmp_path / name), "cpu")
        assert not loaded.training
        for k, v in loaded.state_dict().items():
            assert torch.equal(v, sd[k]), (name, k)


def test_load_reports_missing_unexpected_and_shapes(model, tmp_path):
    sd = dict(model.state_dict())
    sd.pop("fnet.conv1.weight")
    sd.pop("update_block.mask.2.bias")
    sd["extra.weight"] = torch.zeros(3)
    sd["conv_offset_8.bias"] = torch.zeros(7)
    with pytest.raises(BsrError) as err:
        cs.load_crestereo(_save(sd, tmp_path / "bad.pth"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "2 missing keys" in msg and "fnet.conv1.weight" in msg and "update_block.mask.2.bias" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "1 shape mismatches" in msg and "conv_offset_8.bias" in msg


def test_load_truncates_long_key_lists(tmp_path):
    sd = {f"other.layer{i}.weight": torch.zeros(1) for i in range(20)}
    with pytest.raises(BsrError) as err:
        cs.load_crestereo(_save(sd, tmp_path / "other.pth"))
    msg = str(err.value)
    assert "94 missing keys" in msg and "(+88 more)" in msg
    assert "20 unexpected keys" in msg and "(+14 more)" in msg


def test_load_rejects_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    for path, words in ((tmp_path / "absent.pth", "not found"), (junk, "not a readable PyTorch weights file"),
                        (_save([1, 2, 3], tmp_path / "list.pth"), "not a CREStereo state dict")):
        with pytest.raises(BsrError) as err:
            cs.load_crestereo(path)
        assert words in str(err.value) and str(path) in str(err.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_load_never_unpickles_arbitrary_objects(tmp_path):
    path = _save({"state_dict": {"x": torch.zeros(1)}, "obj": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(BsrError, match="not a readable PyTorch weights file"):
        cs.load_crestereo(path)


# ------------------------------------------------------------------------------------ forward passes

def _pair(n, h, w, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 255, torch.rand(n, 3, h, w, generator=g) * 255


def test_forward_shapes_and_batch_independence(model):
    left, right = _pair(2, 64, 96)
    with torch.no_grad():
        out = model(left, right, iters=2)
        one = model(left[1:], right[1:], iters=2)
        init = model(left, right, iters=1, flow_init=out[:, :, ::2, ::2])
        allp = model(left, right, iters=2, return_all=True)
    assert out.shape == (2, 2, 64, 96) and torch.isfinite(out).all()
    assert torch.allclose(out[1:], one, atol=1e-4)
    assert init.shape == (2, 2, 64, 96)
    assert len(allp) == 1 + 1 + 2 and all(p.shape == (2, 2, 64, 96) for p in allp)
    assert torch.equal(allp[-1], out)


def test_two_pass_inference_pads_and_crops(model):
    left, right = _pair(1, 45, 70)
    disp = cs.crestereo_disparity(model, left, right, iters=1)
    assert disp.shape == (1, 45, 70) and disp.dtype == torch.float32 and torch.isfinite(disp).all()
    with pytest.raises(ValueError):
        cs.crestereo_disparity(model, left, right[..., :64])


def _constant_update_model(bx, by):
    """Random network whose update block always predicts delta = (bx, by) and whose upsampling mask
    puts all weight on the centre neighbour, so every flow field stays constant."""
    torch.manual_seed(3)
    m = cs.CREStereo().eval()
    with torch.no_grad():
        m.update_block.flow_head.conv2.weight.zero_()
        m.update_block.flow_head.conv2.bias.copy_(torch.tensor([bx, by]))
        m.update_block.mask[2].weight.zero_()
        bias = torch.zeros(144)
        bias[4 * 16:5 * 16] = 200.0  # neighbour k = 4 (centre) for all 16 sub-pixels
        m.update_block.mask[2].bias.copy_(bias)
    return m


@pytest.mark.parametrize("iters", [2, 4])
def test_cascade_sign_and_scale_plumbing(iters):
    """Expected values from the reference control flow with a constant update b per iteration:
    1/16: n16·b; x4 convex; -1/2 resize to 1/8; +n8·b; x4 convex (at 1/2); -1/2 resize to 1/4;
    +n4·b; output = -(x4 convex). n16 = n8 = iters//2, n4 = iters."""
    b = np.array([0.3, -0.2])
    m = _constant_update_model(*b)
    left, right = _pair(1, 64, 96)
    n16 = n8 = iters // 2
    n4 = iters
    expected = -4 * (n4 - 2 * n8 + 4 * n16) * b
    with torch.no_grad():
        out = m(left, right, iters=iters)
        d0 = 5.0  # an initial disparity at input resolution: output = d0 - 4·n4·b
        init = torch.stack([torch.full((64, 96), d0), torch.zeros(64, 96)])[None]
        out_init = m(left, right, iters=iters, flow_init=init)
    for c in range(2):
        np.testing.assert_allclose(out[0, c].numpy(), expected[c], atol=1e-4)
    np.testing.assert_allclose(out_init[0, 0].numpy(), d0 - 4 * n4 * b[0], atol=1e-4)
    np.testing.assert_allclose(out_init[0, 1].numpy(), -4 * n4 * b[1], atol=1e-4)
    # two-pass: half-resolution result K (half px) -> full pass starts at K/2 px of 1/4 grid... = 2K - 4·n4·b
    disp = cs.crestereo_disparity(m, left[..., :60, :90], right[..., :60, :90], iters=iters)
    np.testing.assert_allclose(disp[0].numpy(), 2 * expected[0] - 4 * n4 * b[0], atol=1e-4)


def test_predict_disparity_resizes_and_rescales():
    calls = []

    def fake_model(left, right, iters, flow_init=None):
        calls.append((tuple(left.shape), flow_init is None, left[0, :, 0, 0].tolist()))
        n, _, h, w = left.shape
        return torch.full((n, 2, h, w), 4.0)

    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (40, 72, 3), dtype=np.uint8)
    left[0, 0] = (10, 20, 30)
    right = left.copy()
    disp = cs.predict_disparity(fake_model, left, right, size=(64, 96), iters=3)
    assert disp.shape == (40, 72) and disp.dtype == np.float32
    np.testing.assert_allclose(disp, 4.0 * 72 / 96, rtol=1e-6)
    assert [c[:2] for c in calls] == [((1, 3, 32, 48), True), ((1, 3, 64, 96), False)]
    np.testing.assert_allclose(calls[1][2], [10, 20, 30])  # channels passed through in the given order
    same = cs.predict_disparity(fake_model, left, right, size=None)
    np.testing.assert_allclose(same, 4.0)


# ------------------------------------------------------------------------------ numpy references

def _sample_np(img, x, y):
    """Bilinear sample of img (C, H, W) at float (x, y), zero outside (float64)."""
    c, h, w = img.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def _windows(small):
    return [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)] if small else [(dx, 0) for dx in range(-4, 5)]


def _corr_adaptive_np(f1, f2, flow, off, small):
    n, c, h, w = f1.shape
    out = np.zeros((n, 36, h, w))
    g = c // 4
    for b in range(n):
        for k, (dx, dy) in enumerate(_windows(small)):
            for y in range(h):
                for x in range(w):
                    px = x + flow[b, 0, y, x] + dx + off[b, 2 * k, y, x]
                    py = y + flow[b, 1, y, x] + dy + off[b, 2 * k + 1, y, x]
                    r = _sample_np(f2[b], px, py)
                    for gi in range(4):
                        out[b, gi * 9 + k, y, x] = np.mean(f1[b, gi * g:(gi + 1) * g, y, x] * r[gi * g:(gi + 1) * g])
    return out


def _corr_warped_np(f1, f2, flow, small):
    n, c, h, w = f1.shape
    warped = np.zeros_like(f2)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                warped[b, :, y, x] = _sample_np(f2[b], x + flow[b, 0, y, x], y + flow[b, 1, y, x])
    out = np.zeros((n, 36, h, w))
    g = c // 4
    for k, (dx, dy) in enumerate(_windows(small)):
        ys = np.clip(np.arange(h) + dy, 0, h - 1)
        xs = np.clip(np.arange(w) + dx, 0, w - 1)
        shifted = warped[:, :, ys][:, :, :, xs]
        for gi in range(4):
            out[:, gi * 9 + k] = np.mean(f1[:, gi * g:(gi + 1) * g] * shifted[:, gi * g:(gi + 1) * g], axis=1)
    return out


@pytest.mark.parametrize("small", [False, True])
def test_group_correlation_matches_numpy(small):
    rng = np.random.default_rng(5)
    n, c, h, w = 2, 8, 4, 7
    f1, f2 = rng.normal(size=(2, n, c, h, w))
    flow = rng.normal(scale=2.0, size=(n, 2, h, w))
    off = rng.uniform(-1, 1, size=(n, 18, h, w))
    t = lambda a: torch.from_numpy(a)  # noqa: E731  (float64 end to end)
    corr = cs.GroupCorrelation(t(f1), t(f2))
    np.testing.assert_allclose(corr.adaptive(t(flow), t(off), small).numpy(),
                               _corr_adaptive_np(f1, f2, flow, off, small), atol=1e-10)
    np.testing.assert_allclose(corr.warped(t(flow), small).numpy(), _corr_warped_np(f1, f2, flow, small), atol=1e-10)


def test_correlation_sign_convention():
    """Right features = left features moved d px to the left (a point at x in the left image is at
    x - d in the right one): flow_x = -d puts the best match at the window centre."""
    rng = np.random.default_rng(2)
    d = 3
    base = rng.normal(size=(1, 256, 5, 30))
    f1 = torch.from_numpy(base[..., :24].copy())
    f2 = torch.from_numpy(base[..., d:24 + d].copy())  # f2[x] = base[x + d] = f1[x + d] -> f1[x] = f2[x - d]
    corr = cs.GroupCorrelation(f1, f2)
    flow = torch.zeros(1, 2, 5, 24, dtype=torch.float64)
    flow[:, 0] = -d
    c = corr.warped(flow, small_patch=False)[0].reshape(4, 9, 5, 24)[:, :, :, 8:20]
    assert (c.sum(0).argmax(0) == 4).all()  # centre of the 1x9 window


def test_linear_attention_matches_formula():
    rng = np.random.default_rng(7)
    q = rng.normal(size=(2, 5, 3, 4))
    k = rng.normal(size=(2, 6, 3, 4))
    v = rng.normal(size=(2, 6, 3, 4))
    phi = lambda x: np.where(x > 0, x + 1, np.exp(x))  # noqa: E731  elu(x) + 1
    ref = np.zeros_like(q)
    for b in range(2):
        for hd in range(3):
            Q, K, V = phi(q[b, :, hd]), phi(k[b, :, hd]), v[b, :, hd]
            num = Q @ (K.T @ V)
            den = Q @ K.sum(0) + 1e-6
            ref[b, :, hd] = num / den[:, None]
    got = cs.linear_attention(*(torch.from_numpy(a) for a in (q, k, v)))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", ["megengine", "loftr"])
def test_position_encoding_formula(variant):
    c, h, w = 16, 3, 5
    pe = cs.sine_position_encoding(c, h, w, variant, dtype=torch.float64)[0].numpy()
    for i in range(c // 4):
        wi = np.exp(-2.0 * i) if variant == "megengine" else 10000.0 ** (-2.0 * i / (c // 2))
        for y in range(h):
            for x in range(w):
                np.testing.assert_allclose(pe[4 * i:4 * i + 4, y, x],
                                           [np.sin((x + 1) * wi), np.cos((x + 1) * wi),
                                            np.sin((y + 1) * wi), np.cos((y + 1) * wi)], atol=1e-12)


def test_convex_upsample_matches_numpy():
    rng = np.random.default_rng(4)
    n, h, w, r = 1, 3, 4, 4
    flow = rng.normal(size=(n, 2, h, w))
    mask = rng.normal(size=(n, 9 * r * r, h, w))
    got = cs.convex_upsample(torch.from_numpy(flow), torch.from_numpy(mask), r).numpy()
    padded = np.pad(r * flow, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((n, 2, r * h, r * w))
    for y in range(h):
        for x in range(w):
            for i in range(r):
                for j in range(r):
                    logits = np.array([mask[0, k * r * r + i * r + j, y, x] for k in range(9)])
                    wts = np.exp(logits - logits.max())
                    wts /= wts.sum()
                    nb = np.array([padded[0, :, y + ky, x + kx] for ky in range(3) for kx in range(3)])
                    ref[0, :, r * y + i, r * x + j] = wts @ nb
    np.testing.assert_allclose(got, ref, atol=1e-12)
