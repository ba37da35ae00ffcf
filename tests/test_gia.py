import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bsrdata.models.gia import GIA, flow_warp, from_windows, pad_reflect, to_windows


def _gia(**kw):
    torch.manual_seed(0)
    args = dict(in1=8, in2=8, channels=8, groups=4, window=(3, 4))
    args.update(kw)
    return GIA(**args).eval()


def test_shapes_pair_and_sum_across_scales():
    g = GIA(16, 8, 8, 2, window=(3, 4), output="sum").eval()
    y = g(torch.randn(2, 16, 5, 6), torch.randn(2, 8, 10, 12))
    assert y.shape == (2, 8, 10, 12)
    g = GIA(8, 8, 8, 4, window=(3, 4)).eval()
    y1, y2 = g(torch.randn(1, 8, 7, 9), torch.randn(1, 8, 7, 9))
    assert y1.shape == y2.shape == (1, 8, 7, 9)


def test_paper_window_and_groups_at_small_maps():
    g = GIA(18, 18, 18, 3).eval()  # window 15x20, P = 300, maps smaller than a window
    y1, y2 = g(torch.randn(2, 18, 4, 5), torch.randn(2, 18, 4, 5))
    assert y1.shape == (2, 18, 4, 5)
    with pytest.raises(ValueError):
        GIA(18, 18, 18, 4)


def test_flow_warp_zero_flow_is_bilinear_resize_and_shift_moves():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    flow = torch.zeros(2, 2, 10, 14, dtype=torch.float64)
    ref = F.interpolate(x, size=(10, 14), mode="bilinear", align_corners=False)
    assert torch.allclose(flow_warp(x, flow), ref, atol=1e-12)
    # same grid, flow +1 px in x: output(p) = x(p + (1, 0)) away from the right border
    flow = torch.zeros(2, 2, 5, 7, dtype=torch.float64)
    flow[:, 0] = 1.0
    out = flow_warp(x, flow)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-12)


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


def test_flow_off_is_resize_of_projection():
    g = _gia(flow=False)
    x1, x2 = torch.randn(2, 8, 3, 4), torch.randn(2, 8, 6, 8)
    a1, a2 = g.align(x1, x2)
    assert torch.allclose(a1, F.interpolate(g.proj1(x1), size=(6, 8), mode="bilinear", align_corners=False))
    a1, _ = g.align(x2, x2)  # same scale: identity after projection
    assert torch.equal(a1, g.proj1(x2))


def test_flow_switch_changes_computation():
    on, off = _gia(flow=True, channel=False, spatial=False), _gia(flow=False, channel=False, spatial=False)
    off.load_state_dict(on.state_dict(), strict=False)
    x1, x2 = torch.randn(2, 8, 6, 8), torch.randn(2, 8, 6, 8)
    assert torch.allclose(on(x1, x2)[0], off(x1, x2)[0], atol=1e-5)  # zero-initialised flow == no flow
    torch.nn.init.normal_(on.flow.weight, std=0.5)
    assert not torch.allclose(on(x1, x2)[0], off(x1, x2)[0], atol=1e-4)


@pytest.mark.parametrize("branch,param", [("channel", "channel.beta"), ("spatial", "spatial.alpha")])
def test_interaction_branches_read_the_other_input_only_through_their_gate(branch, param):
    kw = {"flow": False, "channel": branch == "channel", "spatial": branch == "spatial"}
    g = _gia(**kw)
    x1 = torch.randn(2, 8, 6, 8)
    x2a, x2b = torch.randn(2, 8, 6, 8), torch.randn(2, 8, 6, 8)
    # gate at its initial 0: y1 does not depend on x2
    assert torch.allclose(g(x1, x2a)[0], g(x1, x2b)[0])
    with torch.no_grad():
        dict(g.named_parameters())[param].fill_(20.0)
    assert not torch.allclose(g(x1, x2a)[0], g(x1, x2b)[0], atol=1e-5)
    # and y2 now depends on x1
    assert not torch.allclose(g(x1, x2a)[1], g(torch.randn(2, 8, 6, 8), x2a)[1], atol=1e-5)


def test_each_switch_changes_the_parameter_set_and_output():
    x1, x2 = torch.randn(2, 8, 6, 8), torch.randn(2, 8, 6, 8)
    full = _gia()
    with torch.no_grad():
        full.channel.beta.fill_(1.0)
        full.spatial.alpha.fill_(1.0)
        torch.nn.init.normal_(full.flow.weight, std=0.5)
    ref = full(x1, x2)[0]
    for kw in ({"flow": False}, {"channel": False}, {"spatial": False}):
        g = _gia(**kw)
        own = g.state_dict()
        g.load_state_dict({k: v for k, v in full.state_dict().items() if k in own and own[k].shape == v.shape},
                          strict=False)
        assert len(list(g.parameters())) < len(list(full.parameters()))
        assert not torch.allclose(g(x1, x2)[0], ref, atol=1e-4), kw


def test_channel_matrix_hand_computed():
    g = _gia(flow=False, spatial=False)
    ch = g.channel
    x1, x2 = torch.randn(2, 8, 6, 8), torch.randn(2, 8, 6, 8)
    with torch.no_grad():
        ch.beta.fill_(0.7)
        a1 = ch.att[0](ch.feat[0](x1).mean((2, 3), keepdim=True)).flatten(1)
        a2 = ch.att[1](ch.feat[1](x2).mean((2, 3), keepdim=True)).flatten(1)
        m = np.zeros((2, 4, 4))
        for b in range(2):
            for i in range(4):
                for j in range(4):
                    m[b, i, j] = float((a1[b, 2 * i:2 * i + 2] * a2[b, 2 * j:2 * j + 2]).sum()) / 2
        m = torch.from_numpy(m).float()
        r1 = torch.sigmoid(a1 + 0.7 * ch.mlp[0](m.flatten(1)))
        ref = ch.smooth[0](x1 * r1[:, :, None, None])
        got = ch(x1, x2)[0]
    assert torch.allclose(got, ref, atol=1e-5)
