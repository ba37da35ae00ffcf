"""RRDB-SFT: non-blind ×4 SR conditioned on a blur map and a segmentation map (docs/sr.md).

Priors at HR: the σ map (N, 1, H, W) -> 3×3 conv -> ``prior_ch``; the segmentation as **one channel of
class indices** (not one-hot) -> 3×3 conv -> ``prior_ch``; one GIA (``groups`` = 8) fuses the two (sum);
the fused prior is taken to LR by nearest ×1/4 (pixel (4i, 4j)).
Trunk at LR: conv 3 -> nf, ``nb`` RRDB blocks (each: an SFT layer conditioned on the prior, then 3 residual
dense blocks of 5 convs with growth ``gc``, residuals ×0.2), conv, global residual, conv nf -> 3·s² and
PixelShuffle(s). SFT: concat(feature, prior) -> two branches 3×3 conv (-> ``sft_hidden``) LReLU(0.2)
3×3 conv (-> nf); γ = sigmoid(branch 1), β = branch 2; out = feat·γ + β.

Inputs: ``lr`` float (N, 3, h, w) RGB in [0, 1] (not normalised); ``blur`` float (N, 1, s·h, s·w) σ in HR
pixels; ``seg`` integer (N, s·h, s·w) or (N, 1, s·h, s·w) class indices with 255 = void. ``seg_input``:
``"index"`` (default, the authors' code) feeds the raw class index as a float with 255.0 at void;
``"scaled"`` (our earlier choice) feeds ``index / num_classes`` with void -> 1.0, keeping the channel on the
order of the other inputs. Output: float (N, 3, s·h, s·w), RGB, not clamped.
Initialisation as the authors' code: the 5 convs of every dense block kaiming-normal (fan_in) × 0.1, bias 0;
the GIA's conv-BN blocks as in :mod:`bsrdata.models.gia`; everything else PyTorch's defaults.

``img_residual`` ("bicubic" / "bilinear", default None = the paper's network) adds the interpolated LR to the
output (the last conv starts at zero, so the untrained network returns the interpolation), and the trunk
learns a correction; it adds no parameters and makes short CPU runs (small configs,
the demo) start from an interpolated image instead of from noise.

Parameter count (defaults, any class count): 8,960,592, equal to the authors' network (the GIA is 590,816
of it). ``rrdb_sft_noseg`` (Table 6, blur prior only, no GIA): 8,369,136.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.registry import register_model

IGNORE_INDEX = 255


def _lrelu():
    return nn.LeakyReLU(0.2, inplace=True)


class SFTLayer(nn.Module):
    """Spatial feature transform: feat (N, nf, h, w), prior (N, pc, h, w) -> (N, nf, h, w)."""

    def __init__(self, nf: int = 64, prior_ch: int = 64, hidden: int = 32):
        super().__init__()
        cin = nf + prior_ch
        self.scale = nn.Sequential(nn.Conv2d(cin, hidden, 3, padding=1), _lrelu(), nn.Conv2d(hidden, nf, 3, padding=1))
        self.shift = nn.Sequential(nn.Conv2d(cin, hidden, 3, padding=1), _lrelu(), nn.Conv2d(hidden, nf, 3, padding=1))

    def forward(self, feat, prior):
        x = torch.cat((feat, prior), dim=1)
        return feat * torch.sigmoid(self.scale(x)) + self.shift(x)


class DenseBlock(nn.Module):
    """Residual dense block: 5 convs with growth ``gc``; out = x + 0.2·conv5(...). ``scaled_init``: Kaiming
    normal ×0.1, zero bias (ESRGAN / the public RRDB-SFT); False keeps PyTorch's default (MANet's restorer)."""

    def __init__(self, nf: int = 64, gc: int = 32, scaled_init: bool = True):
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(nf + i * gc, gc, 3, padding=1) for i in range(4)] + [nn.Conv2d(nf + 4 * gc, nf, 3, padding=1)]
        )
        for conv in self.convs if scaled_init else ():
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)
        self.act = _lrelu()

    def forward(self, x):
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(self.act(conv(torch.cat(feats, dim=1))))
        return x + 0.2 * self.convs[-1](torch.cat(feats, dim=1))


class SFTRRDB(nn.Module):
    """SFT layer then 3 dense blocks; out = x + 0.2·dense(sft(x, prior))."""

    def __init__(self, nf: int = 64, gc: int = 32, prior_ch: int = 64, sft_hidden: int = 32, n_dense: int = 3):
        super().__init__()
        self.sft = SFTLayer(nf, prior_ch, sft_hidden)
        self.dense = nn.Sequential(*[DenseBlock(nf, gc) for _ in range(n_dense)])

    def forward(self, x, prior):
        return x + 0.2 * self.dense(self.sft(x, prior))


class RRDBSFT(nn.Module):
    """RRDB-SFT; see the module docstring. ``use_seg=False`` is the Table 6 variant without the semantic prior."""

    def __init__(self, num_classes: int = 40, nf: int = 64, nb: int = 10, gc: int = 32, prior_ch: int = 64,
                 sft_hidden: int = 32, scale: int = 4, use_seg: bool = True, gia_groups: int = 8,
                 gia_window=(15, 20), fusion: str = "gia", img_residual: str | None = None,
                 seg_input: str = "index", window_merge: str = "fixed"):
        super().__init__()
        if seg_input not in ("index", "scaled"):
            raise ValueError(f"seg_input must be 'index' or 'scaled', not {seg_input!r}")
        self.seg_input = seg_input
        if fusion not in ("gia", "sum"):
            raise ValueError(f"fusion must be 'gia' or 'sum', not {fusion!r}")
        if img_residual not in (None, "bicubic", "bilinear"):
            raise ValueError(f"img_residual must be None, 'bicubic' or 'bilinear', not {img_residual!r}")
        self.img_residual = img_residual
        self.num_classes = int(num_classes)
        self.scale = int(scale)
        self.use_seg = bool(use_seg)
        self.fusion_kind = fusion
        self.prior_blur = nn.Conv2d(1, prior_ch, 3, padding=1)
        if self.use_seg:
            self.prior_seg = nn.Conv2d(1, prior_ch, 3, padding=1)
            if fusion == "gia":
                from bsrdata.models.gia import GIA

                self.fuse = GIA(prior_ch, prior_ch, gia_groups, window=tuple(gia_window), output="sum",
                                window_merge=window_merge)
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.blocks = nn.ModuleList([SFTRRDB(nf, gc, prior_ch, sft_hidden) for _ in range(nb)])
        self.conv_trunk = nn.Conv2d(nf, nf, 3, padding=1)
        self.upconv = nn.Conv2d(nf, 3 * self.scale * self.scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(self.scale)
        if self.img_residual:  # start exactly at the interpolated LR
            nn.init.zeros_(self.upconv.weight)
            nn.init.zeros_(self.upconv.bias)

    def seg_channel(self, seg: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Class indices (N, H, W) or (N, 1, H, W), 255 = void -> float (N, 1, H, W): the index itself (255.0 at
        void, ``seg_input="index"``) or index / num_classes (void -> 1.0, ``"scaled"``)."""
        if seg.dim() == 3:
            seg = seg.unsqueeze(1)
        if self.seg_input == "index":
            return seg.to(dtype)
        s = seg.long()
        s = torch.where(s == IGNORE_INDEX, torch.full_like(s, self.num_classes), s)
        return s.to(dtype) / float(self.num_classes)

    def prior(self, blur: torch.Tensor, seg: torch.Tensor | None, lr_size) -> torch.Tensor:
        """Fused prior at LR: (N, prior_ch, h, w)."""
        p = self.prior_blur(blur)
        if self.use_seg:
            if seg is None:
                raise ValueError("rrdb_sft: this model needs a segmentation map")
            q = self.prior_seg(self.seg_channel(seg, blur.dtype))
            p = self.fuse(p, q) if self.fusion_kind == "gia" else p + q
        return F.interpolate(p, size=tuple(lr_size), mode="nearest")

    def forward(self, lr: torch.Tensor, blur: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        h, w = lr.shape[-2:]
        if blur.dim() == 3:
            blur = blur.unsqueeze(1)
        if tuple(blur.shape[-2:]) != (h * self.scale, w * self.scale):
            raise ValueError(f"rrdb_sft: blur map {tuple(blur.shape[-2:])} is not {self.scale}x the LR {(h, w)}")
        prior = self.prior(blur, seg, (h, w))
        x = self.conv_first(lr)
        y = x
        for blk in self.blocks:
            y = blk(y, prior)
        x = x + self.conv_trunk(y)
        out = self.shuffle(self.upconv(x))
        if self.img_residual:
            out = out + F.interpolate(lr, scale_factor=self.scale, mode=self.img_residual, align_corners=False)
        return out


@register_model("rrdb_sft")
def rrdb_sft(**kw) -> RRDBSFT:
    return RRDBSFT(**kw)


@register_model("rrdb_sft_noseg")
def rrdb_sft_noseg(**kw) -> RRDBSFT:
    kw["use_seg"] = False
    return RRDBSFT(**kw)
