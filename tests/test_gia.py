import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bsrdata.models.gia import GIA, flow_warp, from_windows, from_windows_legacy, pad_reflect, to_windows


def _gia(**kw):
    torch.manual_seed(0)
    args = dict(in1=8, channels=8, groups=4, window=(3, 4))
    args.update(kw)
    return GIA(**args).eval()


def test_shapes_pair_and_sum_across_scales():
    g = GIA(16, 8, 2, window=(3, 4), output="sum").eval()
    y = g(torch.randn(2, 16, 5, 6), torch.randn(2, 8, 10, 12))
    assert y.shape == (2, 8, 10, 12)
    g = GIA(8, 8, 4, window=(3, 4)).eval()
    y1, y2 = g(torch.randn(1, 8, 7, 9), torch.randn(1, 8, 7, 9))
    assert y1.shape == y2.shape == (1, 8, 7, 9)


def test_paper_window_and_groups_at_small_maps():
    # window 15x20, P = 300: maps smaller than half a window need repeated reflection (the public code fails)
    g = GIA(18, 18, 3).eval()
    y1, y2 = g(torch.randn(2, 18, 4, 5), torch.randn(2, 18, 4, 5))
    assert y1.shape == (2, 18, 4, 5) and torch.isfinite(y1).all()
    with pytest.raises(ValueError):
        GIA(18, 18, 4)
    with pytest.raises(ValueError):
        GIA(18, 18, 3, window_merge="old")


def test_flow_warp_zero_flow_is_align_corners_resize_and_shift_moves():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    flow = torch.zeros(2, 2, 10, 14, dtype=torch.float64)
    ref = F.interpolate(x, size=(10, 14), mode="bilinear", align_corners=True)
    assert torch.allclose(flow_warp(x, flow), ref, atol=1e-6)  # float32 base grid, as the public code
    # same grid; flow is divided by the output width: a flow of W in x moves by 1 grid unit = (w-1)/2 pixels
    flow = torch.zeros(2, 2, 5, 7, dtype=torch.float64)
    flow[:, 0] = 7.0 * 2 / 6  # one pixel to the right
    out = flow_warp(x, flow)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-6)
    assert torch.equal(out[..., -1], torch.zeros_like(out[..., -1]))  # zero padding outside


@pytest.mark.parametrize("size,pad", [((5, 6), (3, 4)), ((4, 5), (11, 15)), ((1, 3), (2, 7))])
def test_pad_reflect_matches_numpy(size, pad):
    x = np.random.default_rng(0).normal(size=(1, 2) + size)
    got = pad_reflect(torch.from_numpy(x), *pad).numpy()
    mode = "reflect" if min(size) > 1 else "edge"
    if min(size) > 1:
        ref = np.pad(x, ((0, 0), (0, 0), (0, pad[0]), (0, pad[1])), mode=mode)
        assert np.array_equal(got, ref)
    else:
        assert got.shape == (1, 2, size[0] + pad[0], size[1] + pad[1])


def test_windows_round_trip_and_order():
    x = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).view(2, 3, 6, 8)
    w = to_windows(x, 3, 4)
    assert w.shape == (2 * 2 * 2, 3, 3, 4)
    assert torch.equal(w[1], x[0, :, 0:3, 4:8])  # second window: top row, right
    assert torch.equal(w[6], x[1, :, 3:6, 0:4])
    assert torch.equal(from_windows(w, 2, 6, 8), x)


def test_legacy_merge_matches_the_flat_index_formula():
    # independent numpy implementation of the older public merge:
    # out[b, c, wh*iH + y, ww*iW + x] = flat[((((b*nH + iH)*nW + iW)*wh + y)*ww + x)*C + c]
    n, c, wh, ww, nh, nw = 2, 3, 3, 4, 2, 3
    o = np.random.default_rng(0).normal(size=(n * nh * nw, c, wh, ww))
    flat = o.reshape(-1)
    ref = np.zeros((n, c, nh * wh, nw * ww))
    for b in range(n):
        for ch in range(c):
            for ih in range(nh):
                for iw in range(nw):
                    for y in range(wh):
                        for x in range(ww):
                            ref[b, ch, wh * ih + y, ww * iw + x] = flat[
                                ((((b * nh + ih) * nw + iw) * wh + y) * ww + x) * c + ch]
    got = from_windows_legacy(torch.from_numpy(o), n, nh * wh, nw * ww).numpy()
    assert np.array_equal(got, ref)
    assert not np.array_equal(from_windows(torch.from_numpy(o), n, nh * wh, nw * ww).numpy(), ref)


def test_window_merge_option_changes_only_the_spatial_merge():
    fixed, legacy = _gia(), _gia(window_merge="legacy")
    legacy.load_state_dict(fixed.state_dict())
    with torch.no_grad():
        fixed.spatial.gate1.fill_(0.5)
        legacy.spatial.gate1.fill_(0.5)
    x1, x2 = torch.randn(1, 8, 6, 8), torch.randn(1, 8, 6, 8)
    with torch.no_grad():
        assert not torch.allclose(fixed(x1, x2)[0], legacy(x1, x2)[0], atol=1e-4)
        # one window, one channel: both merges are the identity
        f1, l1 = _gia(channels=1, in1=1, groups=1), _gia(channels=1, in1=1, groups=1, window_merge="legacy")
        l1.load_state_dict(f1.state_dict())
        a, b = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
        assert torch.allclose(f1(a, b)[0], l1(a, b)[0])


def test_flow_off_is_align_corners_resize_then_conv():
    g = _gia(flow=False)
    x1, x2 = torch.randn(2, 8, 3, 4), torch.randn(2, 8, 6, 8)
    with torch.no_grad():
        a1 = g.align(x1, x2)
        ref = g.align.out(F.interpolate(x1, size=(6, 8), mode="bilinear", align_corners=True))
    assert torch.allclose(a1, ref, atol=1e-5)


def test_flow_switch_changes_computation():
    on, off = _gia(flow=True, channel=False, spatial=False), _gia(flow=False, channel=False, spatial=False)
    off.load_state_dict(on.state_dict(), strict=False)
    x1, x2 = torch.randn(2, 8, 6, 8), torch.randn(2, 8, 6, 8)
    with torch.no_grad():
        on.align.flow.weight.zero_()
        assert torch.allclose(on(x1, x2)[0], off(x1, x2)[0], atol=1e-5)  # zero flow == no flow
        torch.nn.init.normal_(on.align.flow.weight, std=0.5)
        assert not torch.allclose(on(x1, x2)[0], off(x1, x2)[0], atol=1e-4)


@pytest.mark.parametrize("branch,param", [("channel", "channel.gate1"), ("spatial", "spatial.gate1")])
def test_interaction_branches_read_the_other_input_only_through_their_gate(branch, param):
    kw = {"flow": False, "channel": branch == "channel", "spatial": branch == "spatial"}
    g = _gia(**kw)
    x1 = torch.randn(2, 8, 6, 8)
    x2a, x2b = torch.randn(2, 8, 6, 8), torch.randn(2, 8, 6, 8)
    with torch.no_grad():
        # gate at its initial 0: y1 does not depend on x2
        assert torch.allclose(g(x1, x2a)[0], g(x1, x2b)[0])
        dict(g.named_parameters())[param].fill_(2.0)
        assert not torch.allclose(g(x1, x2a)[0], g(x1, x2b)[0], atol=1e-5)


def test_each_switch_changes_the_parameter_set_and_output():
    x1, x2 = torch.randn(2, 8, 6, 8), torch.randn(2, 8, 6, 8)
    full = _gia()
    with torch.no_grad():
        full.channel.gate1.fill_(1.0)
        full.spatial.gate1.fill_(1.0)
        torch.nn.init.normal_(full.align.flow.weight, std=0.5)
        ref = full(x1, x2)[0]
    for kw in ({"flow": False}, {"channel": False}, {"spatial": False}):
        g = _gia(**kw)
        own = g.state_dict()
        g.load_state_dict({k: v for k, v in full.state_dict().items() if k in own and own[k].shape == v.shape},
                          strict=False)
        assert len(list(g.parameters())) < len(list(full.parameters()))
        with torch.no_grad():
            assert not torch.allclose(g(x1, x2)[0], ref, atol=1e-4), kw


def test_parameter_count_formula():
    # 10·C_l·C + 131·C² + 70·C + 2r²·C + 608 with the 15×20 window (P = 300)
    for cl, c, r in ((36, 36, 6), (36, 18, 3), (64, 64, 8), (144, 72, 8)):
        n = sum(p.numel() for p in GIA(cl, c, r).parameters())
        assert n == 10 * cl * c + 131 * c * c + 70 * c + 2 * r * r * c + 608


def test_channel_branch_hand_computed():
    g = _gia(flow=False, spatial=False)
    ch = g.channel
    x1, x2 = torch.randn(2, 8, 6, 8, dtype=torch.float64), torch.randn(2, 8, 6, 8, dtype=torch.float64)
    ch.double()
    with torch.no_grad():
        ch.gate1.fill_(0.7)
        ch.gate2.fill_(0.3)
        f1, f2 = ch.feat1(x1), ch.feat2(x2)
        a1 = ch.vec1(f1.mean((2, 3), keepdim=True)).flatten(1).numpy()
        a2 = ch.vec2(f2.mean((2, 3), keepdim=True)).flatten(1).numpy()
        m = np.zeros((2, 4, 4))
        for b in range(2):
            for i in range(4):
                for k in range(4):
                    m[b, i, k] = float((a2[b, 2 * i:2 * i + 2] * a1[b, 2 * k:2 * k + 2]).sum())  # no scaling
        v = torch.from_numpy(m.reshape(2, 16))
        r1 = torch.sigmoid(torch.from_numpy(a1) + 0.7 * torch.relu(ch.mlp1(v)))
        r2 = torch.sigmoid(torch.from_numpy(a2) + 0.3 * torch.relu(ch.mlp2(v)))
        got = ch(x1, x2)
        assert torch.allclose(got[0], ch.smooth1(f1 * r1[:, :, None, None]), atol=1e-12)
        assert torch.allclose(got[1], ch.smooth2(f2 * r2[:, :, None, None]), atol=1e-12)


def test_channel_mlps_and_gates_train():
    g = _gia().train()
    with torch.no_grad():
        for gate in (g.channel.gate1, g.channel.gate2, g.spatial.gate1, g.spatial.gate2):
            gate.fill_(1.0)
    y1, y2 = g(torch.randn(2, 8, 6, 8), torch.randn(2, 8, 6, 8))
    (y1.square().mean() + y2.square().mean()).backward()
    for n in ("channel.mlp1.0.weight", "channel.mlp2.2.weight", "channel.gate1", "spatial.gate2",
              "spatial.read1.weight"):
        assert dict(g.named_parameters())[n].grad.abs().sum() > 0, n
