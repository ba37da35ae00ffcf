"""DAN: blind ×s SR by an unrolled alternation of a Restorer and an Estimator (docs/baselines.md, "DAN").

Two versions, registered as ``dan_v1`` (Luo et al., "Unfolding the Alternating Optimization for Blind Super
Resolution", NeurIPS 2020) and ``dan_v2`` (Luo et al., "End-to-end Alternating Optimization for Blind Super
Resolution", arXiv 2105.06878). Both estimate **one kernel per image** as a PCA code of length ``code_len``.

Forward (both, ``loops`` = 4 at the official settings, weights shared across loops):
code₀ = Eᵀ·vec(δ) (E: the ``encoder`` buffer (1, k², code_len), δ: the centred k×k Dirac);
for t = 1..loops: SR_t = R(LR, stopgrad(code_{t−1})); v1: code_t = Est(stopgrad(SR_t), LR);
v2: k_t = Est(stopgrad(SR_t), LR) (a k×k softmax kernel), code_t = Eᵀ·vec(k_t). No global skip, no clamp.
Because of the two stop-gradients, a loss on SR reaches only the Restorer and a loss on the code / kernel
only the Estimator.

v1 blocks: CRB(nf, nc) = f + CA(conv3×3(LReLU(conv3×3(concat(f, c))))) with c broadcast to h×w (channel
attention: global average pool, 1×1 nf→nf/16, LReLU, 1×1 →nf, sigmoid). Restorer: head conv3×3 3→nf,
``nb`` CRB(nf, code_len), fusion conv, upscale (conv nf→4nf, PixelShuffle 2, twice for ×4; conv nf→3).
Estimator (width ``est_nf``): head_lr conv1×1 on LR, head_sr conv9×9 stride s on SR, ``est_blocks``
CRB(est_nf, est_nf) updating the LR feature conditioned on the (unchanged) SR feature, conv3×3 →code_len,
global average pool.

v2 blocks: DPCB(x₀, x₁): f₁ = conv(LReLU(conv(x₀))) (k₁×k₁), f₂ = conv(LReLU(conv(x₁))) (k₂×k₂);
x₀ ← x₀ + f₁·f₂, x₁ ← x₁ + f₂. DPCG = ``nb`` DPCBs followed by the official code's group skip, which —
because the official blocks update their input list in place — returns **2·y on both paths** (y the blocks'
output) instead of y + x; reproduced here (:class:`DPCG`) so that released weights behave as published.
Restorer: head_lr conv3×3 3→nf, head_code conv1×1 code_len→nf on the code as a 1×1 map, ``ng`` DPCG(nf, nf,
3, 1, nb), fusion, upscale as v1. Estimator: head_lr conv5×5, head_sr conv(4s+1) stride s, one DPCG(est_nf,
est_nf, 3, 3, est_blocks), tail conv3×3 est_nf→2·est_nf, global average pool, conv1×1 → k², softmax.

Parameter counts at the official ×4 settings (nf 64, code 10, kernel 21; v1 nb 40; v2 nb 10, ng 5; estimator
width 32, 5 blocks) equal the official networks: v1 4,329,511 (Restorer 4,040,915 + Estimator 288,596),
v2 4,707,708 (Restorer 4,445,379 + Estimator 262,329) (tests/test_dan.py).

Tensors: ``lr`` float (N, 3, h, w) RGB in [0, 1]; SR float (N, 3, s·h, s·w) (unclamped in :meth:`forward`);
codes (N, code_len); kernels (N, k, k), each summing to 1.

The PCA basis is a buffer, not a constructor argument (``pca`` records where it came from):
``"gaussian"`` (default) refits it at construction on centred G_σ, σ evenly over [0, ``pca_sigma_max``]
(:func:`bsrdata.models.kernels.gaussian_pca_basis`); ``"file"`` / ``"checkpoint"`` leave a placeholder that
:meth:`DAN.set_basis` or the checkpoint's ``encoder`` replaces. Codes are Eᵀ·vec(k) without mean
subtraction, as the official code.

Non-official options (off by default): ``img_residual`` ("bicubic" / "bilinear") adds the interpolated LR
to every SR_t, with the Restorer's last conv zero-initialised (for short CPU runs; docs/baselines.md);
``grid`` records the LR sampling grid the weights
were trained on (``"direct"``: LR(i) = HR(s·i), networks trained here; ``"bicubic"``: LR(i) ≈ HR(s·i +
(s−1)/2), the released weights), used by :meth:`DAN.super_resolve`'s ``align``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.registry import register_model

VERSIONS = ("v1", "v2")
# official ×4 setting-1 widths per version (the released DAN v1 / v2 configurations; docs/baselines.md)
OFFICIAL = {"v1": {"nb": 40, "ng": None}, "v2": {"nb": 10, "ng": 5}}
PCA_SOURCES = ("gaussian", "file", "checkpoint")
GRIDS = ("direct", "bicubic")
ALIGNS = ("auto", "none", "shift")


def _lrelu(inplace=False):
    return nn.LeakyReLU(0.2, inplace=inplace)


# ------------------------------------------------------------------------------------------------ v1
class ChannelAttention(nn.Module):
    """x (N, C, h, w) -> x · sigmoid(excite(LReLU(squeeze(mean_hw(x))))); hidden C // reduction (>= 1)."""

    def __init__(self, ch: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, ch // reduction)
        self.squeeze = nn.Conv2d(ch, hidden, 1)
        self.excite = nn.Conv2d(hidden, ch, 1)

    def forward(self, x):
        w = x.mean(dim=(-2, -1), keepdim=True)
        return x * torch.sigmoid(self.excite(F.leaky_relu(self.squeeze(w), 0.2)))


class CRB(nn.Module):
    """Conditional residual block: f (N, nf, h, w), c (N, nc, h, w) -> f + CA(conv(LReLU(conv(cat(f, c)))))."""

    def __init__(self, nf: int, nc: int):
        super().__init__()
        self.conv1 = nn.Conv2d(nf + nc, nf + nc, 3, padding=1)
        self.conv2 = nn.Conv2d(nf + nc, nf, 3, padding=1)
        self.att = ChannelAttention(nf)

    def forward(self, f, c):
        y = self.conv2(F.leaky_relu(self.conv1(torch.cat((f, c), 1)), 0.2))
        return f + self.att(y)


class Upscale(nn.Module):
    """conv nf→nf·4 + PixelShuffle(2) twice (×4) or conv nf→nf·s² + PixelShuffle(s) (×2, ×3); conv nf→3."""

    def __init__(self, nf: int, scale: int):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale!r}")
        self.steps = nn.ModuleList()
        for f in ((2, 2) if scale == 4 else (scale,)):
            self.steps.append(nn.Conv2d(nf, nf * f * f, 3, padding=1))
        self.factors = (2, 2) if scale == 4 else (scale,)
        self.out = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x):
        for conv, f in zip(self.steps, self.factors):
            x = F.pixel_shuffle(conv(x), f)
        return self.out(x)


class RestorerV1(nn.Module):
    """(LR (N, 3, h, w), code (N, nc)) -> SR (N, 3, s·h, s·w)."""

    def __init__(self, nf: int, nb: int, code_len: int, scale: int):
        super().__init__()
        self.head = nn.Conv2d(3, nf, 3, padding=1)
        self.blocks = nn.ModuleList([CRB(nf, code_len) for _ in range(nb)])
        self.fusion = nn.Conv2d(nf, nf, 3, padding=1)
        self.up = Upscale(nf, scale)

    def forward(self, lr, code):
        f = self.head(lr)
        c = code[:, :, None, None].expand(-1, -1, *f.shape[-2:])
        for blk in self.blocks:
            f = blk(f, c)
        return self.up(self.fusion(f))


class EstimatorV1(nn.Module):
    """(SR (N, 3, s·h, s·w), LR (N, 3, h, w)) -> code (N, code_len)."""

    def __init__(self, nf: int, nb: int, code_len: int, scale: int):
        super().__init__()
        self.head_lr = nn.Conv2d(3, nf, 1)
        self.head_sr = nn.Conv2d(3, nf, 9, stride=scale, padding=4)
        self.blocks = nn.ModuleList([CRB(nf, nf) for _ in range(nb)])
        self.out = nn.Conv2d(nf, code_len, 3, padding=1)

    def forward(self, sr, lr):
        f, g = self.head_lr(lr), self.head_sr(sr)
        g = _match(g, f)
        for blk in self.blocks:
            f = blk(f, g)
        return self.out(f).mean(dim=(-2, -1))


def _match(g, f):
    """Crop / replicate-pad the strided SR feature ``g`` to the LR feature's h×w (equal for sizes that are
    multiples of the scale; the official code assumes that)."""
    h, w = f.shape[-2:]
    if g.shape[-2:] == (h, w):
        return g
    g = g[..., :h, :w]
    return F.pad(g, (0, w - g.shape[-1], 0, h - g.shape[-2]), mode="replicate")


# ------------------------------------------------------------------------------------------------ v2
class DPCB(nn.Module):
    """Dual-path conditional block: (x₀, x₁) -> (x₀ + f₁·f₂, x₁ + f₂); f₂ broadcasts when x₁ is 1×1."""

    def __init__(self, nf1: int, nf2: int, k1: int = 3, k2: int = 1):
        super().__init__()
        self.a1 = nn.Conv2d(nf1, nf1, k1, padding=k1 // 2)
        self.a2 = nn.Conv2d(nf1, nf1, k1, padding=k1 // 2)
        self.b1 = nn.Conv2d(nf2, nf1, k2, padding=k2 // 2)
        self.b2 = nn.Conv2d(nf1, nf1, k2, padding=k2 // 2)

    def forward(self, x0, x1):
        f1 = self.a2(F.leaky_relu(self.a1(x0), 0.2))
        f2 = self.b2(F.leaky_relu(self.b1(x1), 0.2))
        return x0 + f1 * f2, x1 + f2


class DPCG(nn.Module):
    """``nb`` DPCBs; output (2·y₀, 2·y₁) with (y₀, y₁) the blocks' output.

    The official group adds its input back ("y + x"), but its blocks have already overwritten that input
    with their output, so it computes y + y. Kept, since the released weights were trained with it."""

    def __init__(self, nf1: int, nf2: int, k1: int, k2: int, nb: int):
        super().__init__()
        self.blocks = nn.ModuleList([DPCB(nf1, nf2, k1, k2) for _ in range(nb)])

    def forward(self, x0, x1):
        for blk in self.blocks:
            x0, x1 = blk(x0, x1)
        return 2.0 * x0, 2.0 * x1


class RestorerV2(nn.Module):
    """(LR (N, 3, h, w), code (N, nc)) -> SR (N, 3, s·h, s·w)."""

    def __init__(self, nf: int, nb: int, ng: int, code_len: int, scale: int):
        super().__init__()
        self.head_lr = nn.Conv2d(3, nf, 3, padding=1)
        self.head_code = nn.Conv2d(code_len, nf, 1)
        self.groups = nn.ModuleList([DPCG(nf, nf, 3, 1, nb) for _ in range(ng)])
        self.fusion = nn.Conv2d(nf, nf, 3, padding=1)
        self.up = Upscale(nf, scale)

    def forward(self, lr, code):
        f, c = self.head_lr(lr), self.head_code(code[:, :, None, None])
        for grp in self.groups:
            f, c = grp(f, c)
        return self.up(self.fusion(f))


class EstimatorV2(nn.Module):
    """(SR (N, 3, s·h, s·w), LR (N, 3, h, w)) -> kernel (N, k, k), softmax over the k² taps."""

    def __init__(self, nf: int, nb: int, kernel_size: int, scale: int):
        super().__init__()
        self.k = kernel_size
        self.head_lr = nn.Conv2d(3, nf, 5, padding=2)
        self.head_sr = nn.Conv2d(3, nf, 4 * scale + 1, stride=scale, padding=2 * scale)
        self.group = DPCG(nf, nf, 3, 3, nb)
        self.tail_conv = nn.Conv2d(nf, 2 * nf, 3, padding=1)
        self.tail_fc = nn.Conv2d(2 * nf, kernel_size * kernel_size, 1)

    def forward(self, sr, lr):
        f, g = self.head_lr(lr), self.head_sr(sr)
        f, _ = self.group(f, _match(g, f))
        z = self.tail_fc(self.tail_conv(f).mean(dim=(-2, -1), keepdim=True)).flatten(1)
        return torch.softmax(z, dim=1).view(-1, self.k, self.k)


# ------------------------------------------------------------------------------------------------ DAN
class DAN(nn.Module):
    """DAN v1 / v2 (module docstring). ``nb`` / ``ng`` None = the official value of the version."""

    bench_options = ("align",)

    def __init__(self, version: str = "v1", scale: int = 4, nf: int = 64, nb: int | None = None,
                 ng: int | None = None, code_len: int = 10, kernel_size: int = 21, loops: int = 4,
                 est_nf: int = 32, est_blocks: int = 5, pca: str = "gaussian", pca_sigma_max: float = 5.0,
                 grid: str = "direct", img_residual: str | None = None):
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"version must be v1 or v2, got {version!r}")
        nb = OFFICIAL[version]["nb"] if nb is None else nb
        ng = OFFICIAL[version]["ng"] if ng is None else ng
        if version == "v1" and ng is not None:
            raise ValueError("ng: only dan_v2 has groups (leave it null for dan_v1)")
        for key, v in (("nf", nf), ("nb", nb), ("code_len", code_len), ("loops", loops), ("est_nf", est_nf),
                       ("est_blocks", est_blocks)) + ((("ng", ng),) if version == "v2" else ()):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
        if code_len > kernel_size * kernel_size:
            raise ValueError(f"code_len {code_len} exceeds kernel_size² = {kernel_size ** 2}")
        if pca not in PCA_SOURCES:
            raise ValueError(f"pca must be one of {', '.join(PCA_SOURCES)}, got {pca!r}")
        if grid not in GRIDS:
            raise ValueError(f"grid must be direct or bicubic, got {grid!r}")
        if img_residual not in (None, "bicubic", "bilinear"):
            raise ValueError(f"img_residual must be null, bicubic or bilinear, got {img_residual!r}")
        if not isinstance(pca_sigma_max, (int, float)) or not pca_sigma_max > 0:
            raise ValueError(f"pca_sigma_max must be > 0, got {pca_sigma_max!r}")
        self.version, self.scale, self.kernel_size, self.code_len = version, int(scale), kernel_size, code_len
        self.loops, self.grid, self.img_residual, self.pca = loops, grid, img_residual, pca
        if version == "v1":
            self.restorer = RestorerV1(nf, nb, code_len, self.scale)
            self.estimator = EstimatorV1(est_nf, est_blocks, code_len, self.scale)
        else:
            self.restorer = RestorerV2(nf, nb, ng, code_len, self.scale)
            self.estimator = EstimatorV2(est_nf, est_blocks, kernel_size, self.scale)
        kk = kernel_size * kernel_size
        delta = torch.zeros(1, kernel_size, kernel_size)
        delta[0, kernel_size // 2, kernel_size // 2] = 1.0
        if img_residual:  # start exactly at the interpolated LR (as rrdb_sft's img_residual)
            nn.init.zeros_(self.restorer.up.out.weight)
            nn.init.zeros_(self.restorer.up.out.bias)
        self.register_buffer("encoder", torch.zeros(1, kk, code_len))
        self.register_buffer("init_kernel", delta)
        self.register_buffer("init_ker_map", torch.zeros(1, code_len))
        if pca == "gaussian":
            from bsrdata.models.kernels import gaussian_pca_basis

            self.set_basis(gaussian_pca_basis(float(pca_sigma_max), kernel_size, code_len))

    @torch.no_grad()
    def set_basis(self, basis: torch.Tensor) -> None:
        """Use the PCA matrix ``basis`` (k², code_len) or (1, k², code_len); recomputes code₀ = Eᵀ·vec(δ)."""
        basis = torch.as_tensor(basis)
        want = tuple(self.encoder.shape[1:])
        if basis.dim() == 3 and basis.shape[0] == 1:
            basis = basis[0]
        if tuple(basis.shape) != want:
            raise ValueError(f"PCA basis must be {want}, got {tuple(basis.shape)}")
        self.encoder.copy_(basis[None].to(self.encoder.dtype))
        self.init_ker_map.copy_(self.init_kernel.reshape(1, -1) @ self.encoder[0])

    def encode(self, kernel: torch.Tensor) -> torch.Tensor:
        """Codes Eᵀ·vec(k) of kernels (N, k, k) or (N, k²) -> (N, code_len) (no mean subtraction)."""
        return kernel.reshape(kernel.shape[0], -1) @ self.encoder[0].to(kernel.dtype)

    def restore(self, lr, code):
        """One Restorer pass: (N, 3, h, w), (N, code_len) -> SR (N, 3, s·h, s·w), unclamped."""
        sr = self.restorer(lr, code)
        if self.img_residual:
            sr = sr + F.interpolate(lr, scale_factor=self.scale, mode=self.img_residual, align_corners=False)
        return sr

    def forward(self, lr: torch.Tensor) -> dict:
        """All loop outputs: ``sr`` (N, 3, s·h, s·w) and ``code`` (N, code_len) of the last loop (v2 also
        ``kernel`` (N, k, k)); ``sr_all`` (loops, N, 3, s·h, s·w), ``code_all`` (loops, N, code_len) (v2
        ``kernel_all`` (loops, N, k, k)), index t−1 for loop t. Unclamped."""
        code = self.init_ker_map.to(lr.dtype).expand(lr.shape[0], -1)
        srs, codes, kernels = [], [], []
        for _ in range(self.loops):
            sr = self.restore(lr, code.detach())
            if self.version == "v1":
                code = self.estimator(sr.detach(), lr)
            else:
                k = self.estimator(sr.detach(), lr)
                kernels.append(k)
                code = self.encode(k)
            srs.append(sr)
            codes.append(code)
        out = {"sr": srs[-1], "code": codes[-1], "sr_all": torch.stack(srs), "code_all": torch.stack(codes)}
        if kernels:
            out["kernel"] = kernels[-1]
            out["kernel_all"] = torch.stack(kernels)
        return out

    @torch.no_grad()
    def super_resolve(self, lr: torch.Tensor, align: str = "auto") -> torch.Tensor:
        """LR (N, 3, h, w) RGB in [0, 1] -> the last loop's SR (N, 3, s·h, s·w), clamped to [0, 1].

        ``align`` (``bsr bench --opt align=...``): ``"shift"`` resamples the SR image by (s − 1)/2 HR px
        (bicubic, border replicated) so that weights trained on the bicubic grid (LR(i) ≈ HR(s·i + (s−1)/2))
        are scored on the datasets' direct grid (LR(i) = HR(s·i)); ``"none"`` leaves it; ``"auto"`` (default)
        shifts when the checkpoint's ``grid`` is ``"bicubic"`` (converted weights)."""
        if align not in ALIGNS:
            from bsrdata.errors import BsrError

            raise BsrError(f"--opt align: must be one of {', '.join(ALIGNS)}, got {align!r}")
        sr = self.forward(lr)["sr"]
        if align == "shift" or (align == "auto" and self.grid == "bicubic"):
            sr = shift_image(sr, (self.scale - 1) / 2.0)
        return sr.clamp(0.0, 1.0)


def shift_image(x: torch.Tensor, d: float) -> torch.Tensor:
    """out(p) = x(p + d) along both axes (sub-pixel, bicubic; borders replicated): (N, C, H, W) -> same."""
    n, _, h, w = x.shape
    ys = (torch.arange(h, dtype=x.dtype, device=x.device) + d + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=x.dtype, device=x.device) + d + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack((gx, gy), -1)[None].expand(n, -1, -1, -1)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)


@register_model("dan_v1")
def dan_v1(**kw) -> DAN:
    return DAN(version="v1", **kw)


@register_model("dan_v2")
def dan_v2(**kw) -> DAN:
    return DAN(version="v2", **kw)
