"""KOALAnet (Kim et al., CVPR 2021): per-LR-pixel downsampling kernels and kernel-oriented local filtering.

A native PyTorch implementation written from the paper and the official settings (docs/baselines.md,
"KOALAnet"); no official code is copied. Scale ×4 only. **Images are in [−1, 1] inside the networks**:
``forward`` takes and returns [−1, 1] tensors; :meth:`KOALAnet.super_resolve` takes RGB in [0, 1] and returns
SR in [0, 1] (clamped).

Parts (all convolutions 3×3, zero "same" padding, with bias, unless noted):

- :class:`DownsamplingNet` (``koalanet_ds``, stage 1): U-Net on the LR image. Encoder levels conv → 2 pre-act
  residual blocks → ReLU (skip) → 2×2 max-pool (widths nf, 2nf; bottleneck 4nf with 1 block); decoder
  levels 4×4 stride-2 transposed conv → concat(up, skip) → conv → 2 blocks → ReLU; head conv nf → nf, ReLU,
  conv nf → d². Output: raw kernels (N, d², h, w), tap index ``u·d + v`` (row-major in the d×d window).
- :class:`UpsamplingNet` (``koalanet_us`` without KOALA = the stage-2 baseline; inside ``koalanet`` with
  KOALA): kernel-feature branch (3 × conv + ReLU, d² → 64 → 64 → 64) on the raw kernels; trunk conv 3 → nf
  then ``nb`` pre-act residual blocks, the first ``n_koala`` of them KOALA modules, then ReLU; filter branch
  conv nf → 2nf, ReLU, conv 2nf → t²·16 (t = ``up_kernel``); RGB branch conv nf → 2nf, ReLU, ×2 pixel
  shuffle, conv nf/2 → nf, ReLU, ×2 pixel shuffle, conv nf/4 → 3.
  SR = LF_up(LR, filters) + RGB branch. Filter channel index = ``tap·16 + sub`` with ``tap = u·t + v`` and
  ``sub = a·4 + b`` the HR sub-pixel (4i + a, 4j + b) (PyTorch's PixelShuffle order; the TF layout differs,
  see :mod:`bsrdata.models.convert_koalanet`).
- KOALA module (:class:`KOALABlock`): r = conv(ReLU(conv(ReLU(x)))); m = conv(ReLU(conv(kfeat))) (no
  sigmoid); w = 1×1 conv(ReLU(1×1 conv(kfeat))) → 7×7 = 49 taps; out = x + LF₇(r ⊙ m, norm(w)).

Every predicted filter is normalised by :func:`normalise_filters` (k − mean(k) + 1/n: sums to 1, may be
negative). Local filtering :func:`local_filter`: each pixel's own k×k filter applied to every channel of its
zero-padded neighbourhood.

LR reconstruction (:func:`reconstruct_lr`): LR̂(i, j) = Σ_{u,v<d} k̂_{ij}(u, v)·HR(4i − p + u, 4j − p + v)
with zero padding outside the image. ``placement="official"`` (TF "SAME", stride 4): p = (d − 4)//2, so
the window centre (d − 1)/2 sits at HR 4i + 1.5 for even d. ``placement="centred"`` (our ``direct`` grid, LR(i)
= blurred HR(4i)): d must be odd and p = (d − 1)/2, so the window is centred on HR 4i. In both cases HR(4i)
is tap p of the window (:func:`window_offset`).

Parameter counts at the official settings (d 20, up_kernel 5, nf 64, nb 12, n_koala 5, koala_k 7):
DS 4,319,184, US 2,226,232, total 6,545,416; the stage-2 baseline (no KOALA, no kernel branch) 1,515,907.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.registry import register_model

SCALE = 4
PLACEMENTS = ("official", "centred")


# ----------------------------------------------------------------------------------------- operations
def normalise_filters(k: torch.Tensor, n: int, dim: int = 1) -> torch.Tensor:
    """k − mean(k) + 1/n over groups of ``n`` consecutive entries of ``dim`` (sum 1 per group).

    ``k`` (..., G·n, ...) float -> same shape; groups are the contiguous blocks of ``n`` channels."""
    shape = k.shape
    c = shape[dim]
    if c % n:
        raise ValueError(f"normalise_filters: {c} channels are not groups of {n}")
    g = k.reshape(*shape[:dim], c // n, n, *shape[dim + 1:])
    g = g - g.mean(dim=dim + 1, keepdim=True) + 1.0 / n
    return g.reshape(shape)


def local_filter(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """Per-pixel filtering: ``x`` (N, C, h, w), ``w`` (N, k², h, w) -> (N, C, h, w),
    out[c, i, j] = Σ_{u,v} w[u·k + v, i, j]·x[c, i + u − k//2, j + v − k//2] (zeros outside)."""
    n, c, h, wd = x.shape
    p = F.unfold(x, k, padding=k // 2).view(n, c, k * k, h, wd)
    return (p * w.unsqueeze(1)).sum(2)


def upsample_filter(lr: torch.Tensor, filt: torch.Tensor, t: int, s: int = SCALE) -> torch.Tensor:
    """``lr`` (N, C, h, w), ``filt`` (N, t²·s², h, w) with channel ``tap·s² + sub`` -> (N, C, s·h, s·w):
    HR(s·i + a, s·j + b) = Σ_tap filt[tap·s² + a·s + b, i, j]·LR(i + u − t//2, j + v − t//2)."""
    n, c, h, w = lr.shape
    p = F.unfold(lr, t, padding=t // 2).view(n, c, t * t, h, w)
    f = filt.view(n, t * t, s * s, h, w)
    out = torch.einsum("nckhw,nkshw->ncshw", p, f).reshape(n, c * s * s, h, w)
    return F.pixel_shuffle(out, s)


def window_offset(d: int, placement: str, s: int = SCALE) -> int:
    """Index p of HR pixel s·i inside LR pixel i's d-wide reconstruction window (see the module doc)."""
    if placement == "official":
        if d < s:
            raise ValueError(f"d {d} is smaller than the scale {s}")
        return (d - s) // 2
    if placement == "centred":
        if d % 2 == 0:
            raise ValueError(f"d must be odd for placement 'centred' (window centred on HR {s}i), got {d}")
        if d < 2 * s - 1:
            raise ValueError(f"d {d} is too small for placement 'centred' (need >= {2 * s - 1})")
        return (d - 1) // 2
    raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")


def reconstruct_lr(hr: torch.Tensor, kernels: torch.Tensor, d: int, placement: str = "official",
                   s: int = SCALE) -> torch.Tensor:
    """LR̂ from HR and per-LR-pixel kernels: ``hr`` (N, C, s·h, s·w), ``kernels`` (N, d², h, w) (tap u·d + v)
    -> (N, C, h, w); LR̂(i, j) = Σ k(u, v)·HR(s·i − p + u, s·j − p + v), zeros outside the image."""
    n, c, hh, ww = hr.shape
    h, w = kernels.shape[-2:]
    if hh != s * h or ww != s * w:
        raise ValueError(f"reconstruct_lr: HR {hh}x{ww} is not {s}x the kernel map {h}x{w}")
    p = window_offset(d, placement, s)
    a = d - s - p  # pad after: the last window ends at s·(h − 1) − p + d − 1 = s·h − 1 + a
    x = F.pad(hr, (p, a, p, a))
    patches = F.unfold(x, d, stride=s).view(n, c, d * d, h, w)
    return (patches * kernels.unsqueeze(1)).sum(2)


def place_kernel(k: torch.Tensor, d: int, p: int) -> torch.Tensor:
    """Put centred kernels ``k`` (..., m, m) (m odd) into a d×d window with their centre at tap (p, p)
    -> (..., d, d); taps falling outside are cut and the result renormalised to sum 1."""
    m = k.shape[-1]
    r = m // 2
    lo, hi = p - r, d - 1 - (p + r)  # pad before / after (negative: crop)
    k = F.pad(k, (lo, hi, lo, hi))
    return k / k.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def _conv(cin, cout, k=3):
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(ReLU(conv(ReLU(x)))), (N, C, h, w) -> same."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(c, c), _conv(c, c)

    def residual(self, x):
        return self.conv2(F.relu(self.conv1(F.relu(x))))

    def forward(self, x):
        return x + self.residual(x)


class KOALABlock(ResBlock):
    """KOALA module: x + LF_k(r ⊙ m, norm(w)); ``kfeat`` (N, kc, h, w) are the kernel features."""

    def __init__(self, c: int, kc: int = 64, k: int = 7):
        super().__init__(c)
        self.k = k
        self.mult = nn.Sequential(_conv(kc, c), nn.ReLU(), _conv(c, c))
        self.filt = nn.Sequential(_conv(kc, c, 1), nn.ReLU(), _conv(c, k * k, 1))

    def forward(self, x, kfeat):
        r = self.residual(x) * self.mult(kfeat)
        w = normalise_filters(self.filt(kfeat), self.k * self.k)
        return x + local_filter(r, w, self.k)


def xavier_init(module: nn.Module, gain: float = 1.0) -> None:
    """Xavier-normal weights × ``gain`` for every conv / transposed conv, zero biases (the official init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _check_common(d, nf, placement):
    if not isinstance(d, int) or d < SCALE:
        raise ValueError(f"d must be an integer >= {SCALE}, got {d!r}")
    window_offset(d, placement)
    if not isinstance(nf, int) or nf < 4 or nf % 4:
        raise ValueError(f"nf must be a positive multiple of 4, got {nf!r}")


# ------------------------------------------------------------------------------------------- networks
class _Level(nn.Module):
    def __init__(self, cin, c, nblocks):
        super().__init__()
        self.conv = _conv(cin, c)
        self.blocks = nn.Sequential(*[ResBlock(c) for _ in range(nblocks)])

    def forward(self, x):
        return F.relu(self.blocks(self.conv(x)))


class _Up(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, c, 4, stride=2, padding=1)
        self.level = _Level(2 * c, c, 2)

    def forward(self, x, skip):
        return self.level(torch.cat((self.up(x), skip), 1))


class DownsamplingNet(nn.Module):
    """Stage-1 network: LR (N, 3, h, w) in [−1, 1], h and w multiples of 4 -> raw kernels (N, d², h, w).

    ``kernels(lr)`` returns them normalised (sum 1 per pixel); ``reconstruct(hr, k)`` gives LR̂."""

    scale = SCALE

    def __init__(self, d: int = 20, nf: int = 64, placement: str = "official", init_gain: float = 1.0):
        super().__init__()
        _check_common(d, nf, placement)
        self.d, self.placement = d, placement
        self.enc0 = _Level(3, nf, 2)
        self.enc1 = _Level(nf, 2 * nf, 2)
        self.mid = _Level(2 * nf, 4 * nf, 1)
        self.dec0 = _Up(4 * nf, 2 * nf)
        self.dec1 = _Up(2 * nf, nf)
        self.head = nn.Sequential(_conv(nf, nf), nn.ReLU(), _conv(nf, d * d))
        xavier_init(self, init_gain)

    def forward(self, lr):
        s0 = self.enc0(lr)
        s1 = self.enc1(F.max_pool2d(s0, 2))
        x = self.mid(F.max_pool2d(s1, 2))
        return self.head(self.dec1(self.dec0(x, s1), s0))

    def kernels(self, lr):
        return normalise_filters(self(lr), self.d * self.d)

    def reconstruct(self, hr, kernels):
        return reconstruct_lr(hr, kernels, self.d, self.placement)


class UpsamplingNet(nn.Module):
    """LR (N, 3, h, w) in [−1, 1] [+ raw kernels (N, d², h, w) when ``koala``] -> SR (N, 3, 4h, 4w) in [−1, 1]
    (unclamped). ``koala=False`` is the stage-2 baseline: no kernel branch, plain residual blocks."""

    scale = SCALE

    def __init__(self, d: int = 20, nf: int = 64, nb: int = 12, n_koala: int = 5, koala_k: int = 7,
                 up_kernel: int = 5, kf: int = 64, koala: bool = True, init_gain: float = 1.0):
        super().__init__()
        if not 0 <= n_koala <= nb:
            raise ValueError(f"n_koala must be in [0, nb], got {n_koala!r}")
        if up_kernel % 2 == 0 or koala_k % 2 == 0:
            raise ValueError(f"up_kernel and koala_k must be odd, got {up_kernel}, {koala_k}")
        self.koala, self.t, self.d = koala, up_kernel, d
        self.n_koala = n_koala if koala else 0
        if koala:
            self.kfeat = nn.Sequential(_conv(d * d, kf), nn.ReLU(), _conv(kf, kf), nn.ReLU(), _conv(kf, kf), nn.ReLU())
        self.head = _conv(3, nf)
        self.blocks = nn.ModuleList([KOALABlock(nf, kf, koala_k) if i < self.n_koala else ResBlock(nf)
                                     for i in range(nb)])
        self.filt = nn.Sequential(_conv(nf, 2 * nf), nn.ReLU(), _conv(2 * nf, up_kernel ** 2 * SCALE ** 2))
        self.rgb = nn.Sequential(_conv(nf, 2 * nf), nn.ReLU(), nn.PixelShuffle(2), _conv(nf // 2, nf), nn.ReLU(),
                                 nn.PixelShuffle(2), _conv(nf // 4, 3))
        xavier_init(self, init_gain)

    def forward(self, lr, kernels=None):
        if self.koala and kernels is None:
            raise ValueError("this upsampling network has KOALA modules: it needs the raw kernels")
        kf = self.kfeat(kernels) if self.koala else None
        x = self.head(lr)
        for i, blk in enumerate(self.blocks):
            x = blk(x, kf) if i < self.n_koala else blk(x)
        x = F.relu(x)
        return upsample_filter(lr, self._filters(x), self.t) + self.rgb(x)

    def _filters(self, x):
        """(N, t²·16, h, w), normalised over the t² taps of each sub-pixel (channel tap·16 + sub)."""
        f = self.filt(x)
        n, _, h, w = f.shape
        f = f.view(n, self.t * self.t, SCALE * SCALE, h, w)
        f = f - f.mean(1, keepdim=True) + 1.0 / (self.t * self.t)
        return f.view(n, -1, h, w)


def _to_pm1(x):
    return x * 2.0 - 1.0


def _pad4(lr):
    h, w = lr.shape[-2:]
    ph, pw = (-h) % SCALE, (-w) % SCALE
    return (F.pad(lr, (0, pw, 0, ph), mode="replicate") if ph or pw else lr), h, w


class KOALAnet(nn.Module):
    """Stage 3: ``ds`` (:class:`DownsamplingNet`) feeding ``us`` (:class:`UpsamplingNet` with KOALA).

    ``forward(lr, hr=None)``: [−1, 1] tensors, h, w multiples of 4 -> ``{"sr": (N, 3, 4h, 4w), "kernels":
    (N, d², h, w) normalised}`` plus ``"lr_recon"`` (N, 3, h, w) when ``hr`` is given. The SR loss reaches
    the DS network through the raw kernels (no stop-gradient)."""

    scale = SCALE

    def __init__(self, d: int = 20, ds_nf: int = 64, us_nf: int = 64, nb: int = 12, n_koala: int = 5,
                 koala_k: int = 7, up_kernel: int = 5, placement: str = "official", init_gain: float = 1.0):
        super().__init__()
        self.ds = DownsamplingNet(d, ds_nf, placement, init_gain)
        self.us = UpsamplingNet(d, us_nf, nb, n_koala, koala_k, up_kernel, koala=True, init_gain=init_gain)
        self.d, self.placement = d, placement

    def forward(self, lr, hr=None):
        raw = self.ds(lr)
        k = normalise_filters(raw, self.d * self.d)
        out = {"sr": self.us(lr, raw), "kernels": k}
        if hr is not None:
            out["lr_recon"] = self.ds.reconstruct(hr, k)
        return out

    @torch.no_grad()
    def super_resolve(self, lr):
        """RGB ``lr`` (N, 3, h, w) in [0, 1] (any h, w: replicate-padded to multiples of 4, output cropped)
        -> SR (N, 3, 4h, 4w) in [0, 1], clamped."""
        x, h, w = _pad4(lr)
        sr = self(_to_pm1(x))["sr"][..., :SCALE * h, :SCALE * w]
        return ((sr + 1.0) / 2.0).clamp(0.0, 1.0)


class _USBaselineSR(UpsamplingNet):
    """The stage-2 baseline with the bench interface (``super_resolve`` as :class:`KOALAnet`)."""

    @torch.no_grad()
    def super_resolve(self, lr):
        x, h, w = _pad4(lr)
        sr = self(_to_pm1(x))[..., :SCALE * h, :SCALE * w]
        return ((sr + 1.0) / 2.0).clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------- registry
# One keyword set for the three names (the training task's model section, docs/baselines.md); each
# constructor uses the keywords of its part. ``stage`` is recorded and checked.
def _stage(stage, want):
    if stage is not None and stage != want:
        raise ValueError(f"stage {stage!r} does not build this network (stage {want})")


@register_model("koalanet_ds")
def koalanet_ds(d=20, ds_nf=64, placement="official", init_gain=1.0, stage=1, **_us):
    """Stage 1: the downsampling network (4,319,184 parameters at d 20). Keywords of the other parts ignored."""
    _stage(stage, 1)
    return DownsamplingNet(d, ds_nf, placement, init_gain)


@register_model("koalanet_us")
def koalanet_us(us_nf=64, nb=12, up_kernel=5, init_gain=1.0, stage=2, n_koala=5, koala_k=7, **_ds):
    """Stage 2: the upsampling network without KOALA modules and kernel input (1,515,907 parameters);
    ``n_koala`` / ``koala_k`` are recorded for stage 3 but build nothing here."""
    _stage(stage, 2)
    return _USBaselineSR(20, us_nf, nb, 0, koala_k, up_kernel, koala=False, init_gain=init_gain)


@register_model("koalanet")
def koalanet(d=20, ds_nf=64, us_nf=64, nb=12, n_koala=5, koala_k=7, up_kernel=5, placement="official",
             init_gain=1.0, stage=3):
    """Stage 3: the joint network (6,545,416 parameters at the official settings)."""
    _stage(stage, 3)
    return KOALAnet(d, ds_nf, us_nf, nb, n_koala, koala_k, up_kernel, placement, init_gain)
