"""RRDB-SFT: parameter count, shapes, variants, the SFT and prior definitions."""

import pytest
import torch

from models import create_model
from models.rrdb_sft import SFTLayer


def _count(m):
    return sum(p.numel() for p in m.parameters())


def _hand_count(nf=64, gc=32, nb=10, pc=64, hid=32, scale=4):
    conv = lambda cin, cout, k=3: cin * cout * k * k + cout  # noqa: E731
    dense = sum(conv(nf + i * gc, gc) for i in range(4)) + conv(nf + 4 * gc, nf)
    sft = 2 * (conv(nf + pc, hid) + conv(hid, nf))
    return conv(1, pc) + conv(3, nf) + nb * (sft + 3 * dense) + conv(nf, nf) + conv(nf, 3 * scale * scale)


def test_param_count_matches_paper_within_3_percent():
    m = create_model("rrdb_sft", num_classes=40)
    n = _count(m)
    assert abs(n - 8.96e6) / 8.96e6 < 0.03
    # everything but the fusion GIA follows the architecture exactly
    n_gia = _count(m.fuse)
    assert n - n_gia == _hand_count() + (1 * 64 * 9 + 64)  # + the segmentation prior conv
    noseg = create_model("rrdb_sft_noseg")
    assert _count(noseg) == _hand_count()
    assert not hasattr(noseg, "fuse")


def test_forward_shapes_small_config():
    torch.manual_seed(0)
    m = create_model("rrdb_sft", num_classes=5, nf=16, nb=2, gc=8, prior_ch=16, sft_hidden=8).eval()
    lr = torch.rand(2, 3, 12, 20)
    blur = torch.rand(2, 1, 48, 80) * 5
    seg = torch.randint(0, 5, (2, 48, 80))
    seg[0, :4] = 255
    with torch.no_grad():
        out = m(lr, blur, seg)
    assert out.shape == (2, 3, 48, 80)
    assert torch.isfinite(out).all()
    # a different blur map changes the output (the prior is used)
    with torch.no_grad():
        out2 = m(lr, blur * 0, seg)
    assert (out - out2).abs().max() > 1e-6
    with pytest.raises(ValueError):
        m(lr, blur[..., :40], seg)
    with pytest.raises(ValueError):
        m(lr, blur, None)


def test_backward_trains_all_parameters():
    torch.manual_seed(1)
    m = create_model("rrdb_sft", num_classes=4, nf=8, nb=1, gc=4, prior_ch=8, sft_hidden=4, gia_groups=4)
    lr = torch.rand(2, 3, 8, 8)
    out = m(lr, torch.rand(2, 1, 32, 32), torch.randint(0, 4, (2, 32, 32)))
    out.abs().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    # GIA's zero-initialised gates (β, α) and flow conv may get zero gradients but must get one
    assert not missing


def test_seg_channel_and_nearest_prior():
    m = create_model("rrdb_sft_noseg", nf=8, nb=1, gc=4, prior_ch=4, sft_hidden=4, num_classes=10)
    seg = torch.tensor([[[0, 3], [9, 255]]])
    ch = m.seg_channel(seg)
    assert ch.shape == (1, 1, 2, 2)
    assert torch.allclose(ch.flatten(), torch.tensor([0.0, 0.3, 0.9, 1.0]))
    blur = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    with torch.no_grad():
        m.prior_blur.weight.zero_()
        m.prior_blur.weight[:, 0, 1, 1] = 1.0  # identity 3x3 conv
        m.prior_blur.bias.zero_()
        p = m.prior(blur, None, (2, 2))
    assert torch.equal(p[0, 0], blur[0, 0, ::4, ::4])


def test_sft_definition():
    torch.manual_seed(2)
    sft = SFTLayer(nf=4, prior_ch=3, hidden=5)
    f, p = torch.randn(1, 4, 6, 6), torch.randn(1, 3, 6, 6)
    x = torch.cat((f, p), 1)
    expected = f * torch.sigmoid(sft.scale(x)) + sft.shift(x)
    assert torch.allclose(sft(f, p), expected)
