"""MANet (Liang et al., ICCV 2021): a per-pixel kernel estimator and a kernel-conditioned RRDB-SFT restorer.

Three registered networks, one per training stage (docs/baselines.md, "MANet"):

- ``manet_estimator`` (stage 1): the mutual-affine U-shaped estimator. Input ``lr`` float (N, 3, h, w) RGB in
  [0, 1]; it is replication-padded at the bottom/right to a multiple of 8 and the output cropped back (as the
  official code). Output float (N, K², h, w): for every LR pixel a K×K HR-domain blur kernel (softmax over the
  K² channels, so each sums to 1; channel c is tap (c // K, c % K)).
- ``manet_rrdb_sft`` (stage 2): MANet's own RRDB-SFT restorer (SFT on concat(feature nf, code n), not the
  toolkit's GIA-fused :mod:`bsrdata.models.rrdb_sft`), with the ``pca_matrix`` buffer (K², n) that turns
  kernels into codes. ``forward(lr, code)``: ``code`` float (N, n, h, w) per LR pixel -> SR (N, 3, s·h, s·w),
  not clamped. :meth:`MANetRRDBSFT.codes_from_sigma` makes the codes of the centred Gaussians G_σ of a σ map.
- ``manet`` (stage 3): estimator + restorer + ``pca_matrix``: code(i) = Pᵀ·k̂(i) (no mean subtraction), the
  estimator frozen (run under ``no_grad``, ``freeze_estimator``). ``forward(lr)`` -> ``{"sr", "kernel"}``;
  :meth:`MANet.super_resolve` (the bench entry) -> SR clamped to [0, 1]; :meth:`MANet.estimate_sigma` -> σ̂ map.

Blocks (the paper's Sec. 3, Fig. 2): MAConv(C, split 2) splits the channels into halves x₀, x₁; half i is
modulated by the other half through 1×1 conv (C/2 -> C/4) -> ReLU -> 1×1 conv (C/4 -> C) = (scale, shift),
outᵢ = conv3×3(xᵢ·sigmoid(scale) + shift); output = concat(out₀, out₁). MABlock(C) = x + MAConv(ReLU(MAConv(x))).
Estimator: head conv3×3 3 -> C; ``est_nb`` MABlocks, conv2×2 stride 2 C -> 2C; ``est_nb`` MABlocks (2C);
convT2×2 stride 2 2C -> C on (body + down), ``est_nb`` MABlocks; tail conv3×3 C -> K² on (up + head); softmax.
Restorer: conv 3 -> nf; ``nb`` blocks (SFT(feat, code) then 3 residual dense blocks of 5 convs, growth ``gc``,
LReLU 0.2, residuals ×0.2; block output ×0.2 + input); conv nf -> nf with the global skip; conv nf -> 3·s²,
PixelShuffle(s). SFT: γ = sigmoid(conv(LReLU(conv(cat)))), β = conv(LReLU(conv(cat))), cat = (feat, code),
hidden width 32; out = feat·γ + β.

Parameter counts at the official widths (kernel 21, est_nf 128, est_nb 1, nf 64, nb 10, gc 32, code 15):
estimator 1,810,361; restorer 8,086,256; stage-3 model 9,896,617 (the official numbers; tests/test_manet.py).

PCA basis (``pca``): ``"gaussian"`` (default) fits the basis on centred G_σ for σ evenly spaced in
[0, ``pca_sigma_max``] (:func:`bsrdata.models.kernels.gaussian_pca_basis`, the dataset's σ range);
``"external"`` starts from zeros and is filled from a file (the official ``pca_matrix`` .pth, 441×15) by the
training task (``init.pca_file``) or by ``bsr convert``; a checkpoint carries the buffer either way.

``img_residual`` ("bicubic", not in the paper; small CPU configs only) adds the bicubic-upscaled LR to the
restorer's output and zero-initialises its last conv. ``output_shift`` (HR px, default 0) resamples the SR
image so that content moves by that much right/down: the released weights were trained on LR(i) ≈ HR(4i − 1.5)
and give an SR image shifted by −1.5 px on this toolkit's direct grid LR(i) = HR(4i); converted checkpoints set
1.5 (``bench_options``: ``align``, the shift in HR px, overrides it per bench run).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.registry import register_model
from bsrdata.models.rrdb_sft import DenseBlock, SFTLayer

PCA_CHOICES = ("gaussian", "external")


def _lrelu():
    return nn.LeakyReLU(0.2, inplace=True)


# ------------------------------------------------------------------------------------------------ estimator
class MAConv(nn.Module):
    """Mutual-affine conv, ``split`` parts: (N, C, h, w) -> (N, C, h, w) (in = out channels, as used)."""

    def __init__(self, channels: int, split: int = 2, reduction: int = 2):
        super().__init__()
        if split < 2 or channels < split:
            raise ValueError(f"MAConv: split must be >= 2 and <= channels, got split {split}, channels {channels}")
        sizes = [channels // split] * (split - 1)
        sizes.append(channels - sum(sizes))
        self.sizes = sizes
        self.affine = nn.ModuleList()
        self.convs = nn.ModuleList()
        for c in sizes:
            rest = channels - c
            self.affine.append(nn.Sequential(nn.Conv2d(rest, rest // reduction, 1), nn.ReLU(inplace=True),
                                             nn.Conv2d(rest // reduction, 2 * c, 1)))
            self.convs.append(nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        parts = torch.split(x, self.sizes, dim=1)
        out = []
        for i, (aff, conv) in enumerate(zip(self.affine, self.convs)):
            others = torch.cat(parts[:i] + parts[i + 1:], dim=1)
            scale, shift = torch.split(aff(others), (self.sizes[i], self.sizes[i]), dim=1)
            out.append(conv(parts[i] * torch.sigmoid(scale) + shift))
        return torch.cat(out, dim=1)


class MABlock(nn.Module):
    """x + MAConv(ReLU(MAConv(x))): (N, C, h, w) -> (N, C, h, w)."""

    def __init__(self, channels: int, split: int = 2):
        super().__init__()
        self.ma1 = MAConv(channels, split)
        self.act = nn.ReLU(inplace=True)
        self.ma2 = MAConv(channels, split)

    def forward(self, x):
        return x + self.ma2(self.act(self.ma1(x)))


class KernelEstimator(nn.Module):
    """Stage 1 (``manet_estimator``): LR (N, 3, h, w) in [0, 1] -> kernels (N, K², h, w), softmax over K²."""

    def __init__(self, kernel_size: int = 21, est_nf: int = 128, est_nb: int = 1, split: int = 2, scale: int = 4,
                 in_ch: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.scale = int(scale)
        c, c2 = int(est_nf), 2 * int(est_nf)
        self.head = nn.Conv2d(in_ch, c, 3, padding=1)
        self.down_blocks = nn.Sequential(*[MABlock(c, split) for _ in range(est_nb)])
        self.down = nn.Conv2d(c, c2, 2, stride=2)
        self.body = nn.Sequential(*[MABlock(c2, split) for _ in range(est_nb)])
        self.up = nn.ConvTranspose2d(c2, c, 2, stride=2)
        self.up_blocks = nn.Sequential(*[MABlock(c, split) for _ in range(est_nb)])
        self.tail = nn.Conv2d(c, self.kernel_size ** 2, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[-2:]
        pb, pr = (-h) % 8, (-w) % 8
        x = F.pad(lr, (0, pr, 0, pb), mode="replicate") if (pb or pr) else lr
        x1 = self.head(x)
        x2 = self.down(self.down_blocks(x1))
        x = self.body(x2)
        x = self.up_blocks(self.up(x + x2))
        x = self.tail(x + x1)[..., :h, :w]
        return torch.softmax(x, dim=1)


def kernel_sigma(kernels: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """σ̂ from a kernel's second moment: ``kernels`` (N, K², h, w) (sum 1) -> (N, 1, h, w) in px.

    σ̂² = ½·Σ k(u, v)·((u − ū)² + (v − v̄)²) over the taps (u, v) ∈ [−r, r]² around the centroid (ū, v̄);
    exact for an untruncated isotropic Gaussian, smaller when the window truncates it."""
    k = kernels.float()
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, dtype=k.dtype, device=k.device)
    u = t.repeat_interleave(kernel_size).view(1, -1, 1, 1)  # row offset of channel c
    v = t.repeat(kernel_size).view(1, -1, 1, 1)  # column offset
    tot = k.sum(1, keepdim=True).clamp_min(1e-12)
    mu, mv = (k * u).sum(1, keepdim=True) / tot, (k * v).sum(1, keepdim=True) / tot
    var = (k * ((u - mu) ** 2 + (v - mv) ** 2)).sum(1, keepdim=True) / tot / 2.0
    return var.clamp_min(0).sqrt()


# ------------------------------------------------------------------------------------------------ restorer
class SFTBlock(nn.Module):
    """SFT then 3 RDBs; out = 0.2·RDBs(SFT(x, code)) + x."""

    def __init__(self, nf: int = 64, gc: int = 32, code_length: int = 15):
        super().__init__()
        # the toolkit's SFT layer (on concat(feat, code)) and dense blocks, here with PyTorch's default init
        self.sft = SFTLayer(nf, code_length, 32)
        self.dense = nn.Sequential(*[DenseBlock(nf, gc, scaled_init=False) for _ in range(3)])

    def forward(self, x, code):
        return x + 0.2 * self.dense(self.sft(x, code))


class Restorer(nn.Module):
    """MANet's RRDB-SFT: ``lr`` (N, 3, h, w) in [0, 1], ``code`` (N, n, h, w) -> SR (N, 3, s·h, s·w)."""

    def __init__(self, nf: int = 64, nb: int = 10, gc: int = 32, code_length: int = 15, scale: int = 4,
                 img_residual: str | None = None):
        super().__init__()
        if img_residual not in (None, "bicubic"):
            raise ValueError(f"img_residual must be None or 'bicubic', not {img_residual!r}")
        self.scale = int(scale)
        self.code_length = int(code_length)
        self.img_residual = img_residual
        self.head = nn.Conv2d(3, nf, 3, padding=1)
        self.blocks = nn.ModuleList([SFTBlock(nf, gc, code_length) for _ in range(nb)])
        self.trunk = nn.Conv2d(nf, nf, 3, padding=1)
        self.tail = nn.Conv2d(nf, 3 * self.scale ** 2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(self.scale)
        if img_residual:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, lr: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if code.shape[1] != self.code_length or code.shape[-2:] != lr.shape[-2:]:
            raise ValueError(f"manet restorer: code {tuple(code.shape)} does not fit LR {tuple(lr.shape)} "
                             f"with code_length {self.code_length}")
        x = self.head(lr)
        y = x
        for blk in self.blocks:
            y = blk(y, code.to(y.dtype))
        out = self.shuffle(self.tail(x + self.trunk(y)))
        if self.img_residual:
            out = out + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


def _pca_buffer(pca: str, pca_sigma_max, kernel_size: int, code_length: int) -> torch.Tensor:
    if pca not in PCA_CHOICES:
        raise ValueError(f"pca must be one of {', '.join(PCA_CHOICES)}, got {pca!r}")
    if pca == "external":
        return torch.zeros(kernel_size ** 2, code_length)
    if pca_sigma_max is None or not float(pca_sigma_max) > 0:
        raise ValueError(f"pca_sigma_max must be > 0 for pca 'gaussian', got {pca_sigma_max!r}")
    from bsrdata.models.kernels import gaussian_pca_basis

    return gaussian_pca_basis(float(pca_sigma_max), int(kernel_size), int(code_length)).float()


def sigma_codes(sigma: torch.Tensor, basis: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Codes Pᵀ·vec(G_σ) of a σ map: ``sigma`` (N, h, w) px, ``basis`` (K², n) -> (N, n, h, w) float32.

    Computed once per distinct σ value (the maps are quantised), so memory does not grow with K²·h·w."""
    from bsrdata.models.kernels import gaussian_kernels, project

    vals, inv = torch.unique(sigma.detach().float(), return_inverse=True)
    codes = project(gaussian_kernels(vals.double(), kernel_size), basis.double()).float()  # (U, n)
    return codes[inv].permute(0, 3, 1, 2).contiguous()


class MANetRRDBSFT(Restorer):
    """Stage 2 (``manet_rrdb_sft``): the restorer plus its ``pca_matrix`` buffer (K², n)."""

    def __init__(self, nf: int = 64, nb: int = 10, gc: int = 32, code_length: int = 15, kernel_size: int = 21,
                 scale: int = 4, pca: str = "gaussian", pca_sigma_max: float | None = 5.0,
                 img_residual: str | None = None):
        super().__init__(nf, nb, gc, code_length, scale, img_residual)
        self.kernel_size = int(kernel_size)
        self.register_buffer("pca_matrix", _pca_buffer(pca, pca_sigma_max, self.kernel_size, self.code_length))

    def codes_from_sigma(self, sigma_lr: torch.Tensor) -> torch.Tensor:
        """σ at the LR sites (N, h, w) or (N, 1, h, w) -> codes (N, n, h, w) of the centred G_σ."""
        if sigma_lr.dim() == 4:
            sigma_lr = sigma_lr[:, 0]
        return sigma_codes(sigma_lr, self.pca_matrix, self.kernel_size)


# ------------------------------------------------------------------------------------------------ stage 3
def _shift(img: torch.Tensor, d: float) -> torch.Tensor:
    """Move the content of ``img`` (N, C, H, W) by ``d`` px right and down (bicubic, border-replicated)."""
    n, _, h, w = img.shape
    ys = torch.arange(h, dtype=torch.float32, device=img.device) - d
    xs = torch.arange(w, dtype=torch.float32, device=img.device) - d
    gy = (2 * ys + 1) / h - 1
    gx = (2 * xs + 1) / w - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).unsqueeze(0).expand(n, h, w, 2)
    return F.grid_sample(img.float(), grid, mode="bicubic", padding_mode="border", align_corners=False)


class MANet(nn.Module):
    """Stage 3 (``manet``): estimator -> PCA codes -> restorer; see the module docstring."""

    bench_options = ("align",)

    def __init__(self, kernel_size: int = 21, est_nf: int = 128, est_nb: int = 1, split: int = 2, nf: int = 64,
                 nb: int = 10, gc: int = 32, code_length: int = 15, scale: int = 4, pca: str = "gaussian",
                 pca_sigma_max: float | None = 5.0, img_residual: str | None = None, output_shift: float = 0.0,
                 freeze_estimator: bool = True):
        super().__init__()
        self.scale = int(scale)
        self.kernel_size = int(kernel_size)
        self.output_shift = float(output_shift)
        self.estimator = KernelEstimator(kernel_size, est_nf, est_nb, split, scale)
        self.restorer = Restorer(nf, nb, gc, code_length, scale, img_residual)
        self.register_buffer("pca_matrix", _pca_buffer(pca, pca_sigma_max, self.kernel_size, int(code_length)))
        self.freeze_estimator = bool(freeze_estimator)
        if self.freeze_estimator:
            for p in self.estimator.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_estimator:
            self.estimator.eval()
        return self

    def kernels(self, lr: torch.Tensor) -> torch.Tensor:
        """Per-LR-pixel kernels (N, K², h, w) (no gradient when the estimator is frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_estimator):
            return self.estimator(lr)

    def codes(self, kernels: torch.Tensor) -> torch.Tensor:
        """Pᵀ·k per pixel: (N, K², h, w) -> (N, n, h, w) (no mean subtraction)."""
        return torch.einsum("nkhw,kc->nchw", kernels.float(), self.pca_matrix.float())

    def estimate_sigma(self, lr: torch.Tensor) -> torch.Tensor:
        """σ̂ per LR pixel (N, 1, h, w) from the estimated kernels' second moment (:func:`kernel_sigma`)."""
        return kernel_sigma(self.kernels(lr), self.kernel_size)

    def forward(self, lr: torch.Tensor) -> dict:
        k = self.kernels(lr)
        return {"sr": self.restorer(lr, self.codes(k)), "kernel": k}

    @torch.no_grad()
    def super_resolve(self, lr: torch.Tensor, align=None) -> torch.Tensor:
        """RGB (N, 3, h, w) in [0, 1] -> SR (N, 3, s·h, s·w) in [0, 1]. ``align``: output shift in HR px
        (default: the checkpoint's ``output_shift``; 1.5 for the released weights on the direct grid)."""
        from bsrdata.errors import BsrError

        if align is None:
            d = self.output_shift
        elif isinstance(align, str) and align.strip().lower() == "none":
            d = 0.0  # the raw output, as the other methods' align=none
        else:
            try:
                d = float(align)
            except (TypeError, ValueError):
                d = float("nan")
        if not math.isfinite(d):
            raise BsrError(f"--opt align: must be none or a shift in HR px (e.g. 1.5), got {align!r}")
        sr = self.forward(lr)["sr"]
        if d:
            sr = _shift(sr, d)
        return sr.clamp(0.0, 1.0)


@register_model("manet_estimator")
def manet_estimator(**kw) -> KernelEstimator:
    return KernelEstimator(**kw)


@register_model("manet_rrdb_sft")
def manet_rrdb_sft(**kw) -> MANetRRDBSFT:
    return MANetRRDBSFT(**kw)


@register_model("manet")
def manet(**kw) -> MANet:
    return MANet(**kw)
