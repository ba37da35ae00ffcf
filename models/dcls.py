"""DCLS (Luo et al., "Deep Constrained Least Squares for Blind Image Super-Resolution", CVPR 2022): one LR-domain
kernel per image from a dynamic deep linear network, then a Fourier-domain constrained least squares
deconvolution of the LR features and a dual-path restorer (docs/baselines.md, "DCLS").

Shapes: LR ``lr`` (N, 3, h, w) float in [0, 1] RGB, h, w >= 7 (the estimator's and the CLS smoothness filter's
valid convolutions); SR (N, 3, s·h, s·w) clamped to [0, 1]; kernel (N, 1, k, k), k = ``kernel_size``, summing
to 1 (divided by its sum: no softmax, negatives allowed).

- :class:`Estimator`: head conv7×7, residual blocks + long skip, a tail of two *valid* conv3×3 (LReLU 0.1),
  global average pooling and a 1×1 conv to the latent z (``latent``); one Linear per layer of a bias-free
  linear CNN (``kernel_hidden`` channels, spatial sizes ``filters``, e.g. 11, 7, 5, 1) gives that CNN's
  per-sample weights. The kernel is the CNN's impulse response (an all-ones 3-channel pixel zero-padded by
  k − 1), flipped, averaged over the 3 output channels and divided by its sum.
- :class:`Restorer`: conv_first, residual blocks, head1 (→ f₁, nf/r channels), the CLS step (→ f₂, nf),
  ``ng`` dual-path groups of ``nb`` DPCAB on (f₂, f₁), fusion conv3×3 of concat(f₁, f₂) + conv_first's
  output, the DAN upscaler, clamp to [0, 1]. It gets the detached kernel.
- :func:`cls_deconv`: per sample and channel, X = Re F⁻¹[conj(K̂)·F(F_pad) / (|K̂|² + |P̂|²)] on the features
  replicate-padded by k, cropped back (psf2otf: the filter's centre moved to (0, 0), zero-filled).
- :func:`dpcag` quirk: the official group skip "x + y" evaluates as y + y (the blocks update the list that
  holds x in place), so every group doubles its blocks' output; kept so released weights behave as trained.

``img_residual`` ``bicubic`` (not official; the small CPU config only): SR = clamp(bicubic(LR) + the network's
output), so a tiny network trained for minutes starts from bicubic.

``align`` (constructor default, ``super_resolve(lr, align=...)``, ``bsr bench --opt align=...``): ``none`` for
networks trained on our ``direct`` grid (LR(i) = blurred HR(4i)); ``bicubic`` for the released weights, trained
on MATLAB-bicubic pairs (LR(i) centred on HR 4i + 1.5): the SR is resampled 1.5 HR px (half-pixel cubic
weights [−1, 9, 9, −1]/16 after a one-pixel shift, replicate border) so it lands on our grid.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.registry import register_model

# the official filter sizes of the linear kernel network per kernel size (x4 setting 1: 21; setting 2: 31;
# x2 setting 2: 11); other kernel sizes need ``filters`` given explicitly
DEFAULT_FILTERS = {21: (11, 7, 5, 1), 31: (11, 9, 7, 5, 3), 11: (7, 3, 3, 1)}
ALIGNS = ("none", "bicubic")


def _lrelu():
    return nn.LeakyReLU(0.1)


def check_filters(kernel_size: int, filters) -> tuple:
    """The linear network's filter sizes for ``kernel_size`` (ValueError naming the keyword when they do not
    give a ``kernel_size`` impulse response: sum(f − 1) + 1 must equal it)."""
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    if filters is None:
        if kernel_size not in DEFAULT_FILTERS:
            raise ValueError(f"kernel_size {kernel_size} has no official filters; give filters "
                             f"(known sizes: {', '.join(map(str, sorted(DEFAULT_FILTERS)))})")
        return DEFAULT_FILTERS[kernel_size]
    f = tuple(filters)
    if len(f) < 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in f):
        raise ValueError(f"filters must be at least two positive integers, got {list(filters)!r}")
    if sum(x - 1 for x in f) + 1 != kernel_size:
        raise ValueError(f"filters {list(f)} give a {sum(x - 1 for x in f) + 1}-tap response, kernel_size is "
                         f"{kernel_size} (need sum(f - 1) + 1 = kernel_size)")
    return f


class ResBlock(nn.Module):
    """x + conv3×3(LReLU 0.1(conv3×3(x))), C channels, shape kept."""

    def __init__(self, nf: int):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.act = _lrelu()
        for c in (self.conv1, self.conv2):  # the official init of these blocks: Kaiming (fan in) × 0.1
            nn.init.kaiming_normal_(c.weight, a=0, mode="fan_in")
            c.weight.data.mul_(0.1)
            nn.init.zeros_(c.bias)

    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(x)))


class ChannelAttention(nn.Module):
    """x · sigmoid(1×1(ReLU(1×1(GAP(x))))), C → C/r → C."""

    def __init__(self, nf: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Conv2d(nf, nf // reduction, 1), nn.ReLU(), nn.Conv2d(nf // reduction, nf, 1),
                                nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(F.adaptive_avg_pool2d(x, 1))


class DPCAB(nn.Module):
    """Dual-path block: a = conv(LReLU(conv(x₀))), b = the same on x₁ (conv3×3 both);
    x₀ + CA(conv3×3(LReLU(concat(a, b)))) (nf₁ + nf₂ → nf₁), x₁ + CA(b)."""

    def __init__(self, nf1: int, nf2: int, reduction: int):
        super().__init__()
        self.branch1 = nn.Sequential(nn.Conv2d(nf1, nf1, 3, padding=1), _lrelu(), nn.Conv2d(nf1, nf1, 3, padding=1))
        self.branch2 = nn.Sequential(nn.Conv2d(nf2, nf2, 3, padding=1), _lrelu(), nn.Conv2d(nf2, nf2, 3, padding=1))
        self.act = _lrelu()
        self.fuse = nn.Conv2d(nf1 + nf2, nf1, 3, padding=1)
        self.ca1 = ChannelAttention(nf1, reduction)
        self.ca2 = ChannelAttention(nf2, reduction)

    def forward(self, x0, x1):
        a, b = self.branch1(x0), self.branch2(x1)
        return x0 + self.ca1(self.fuse(self.act(torch.cat([a, b], 1)))), x1 + self.ca2(b)


class DPCAG(nn.Module):
    """``nb`` DPCAB; output = 2 × the blocks' output on both paths (the official group skip, see module doc)."""

    def __init__(self, nf1: int, nf2: int, nb: int, reduction: int):
        super().__init__()
        self.blocks = nn.ModuleList(DPCAB(nf1, nf2, reduction) for _ in range(nb))

    def forward(self, x0, x1):
        y0, y1 = x0, x1
        for blk in self.blocks:
            y0, y1 = blk(y0, y1)
        return y0 + y0, y1 + y1  # official: "x + y" with x overwritten by y in place


def psf2otf(psf: torch.Tensor, size) -> torch.Tensor:
    """DFT of a filter ``psf`` (..., kh, kw) zero-filled to ``size`` (H, W) with its centre tap
    (kh // 2, kw // 2) moved to (0, 0) -> complex (..., H, W)."""
    kh, kw = psf.shape[-2:]
    pad = F.pad(psf, (0, size[1] - kw, 0, size[0] - kh))
    return torch.fft.fft2(torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1)))


def cls_fourier(x: torch.Tensor, kernel: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """The Fourier step of the CLS filter on whole (circular) images: ``x`` (N, C, H, W), ``kernel``
    (N, 1, k, k), ``smooth`` (N, C, 3, 3) -> Re F⁻¹[conj(K̂)·F(x) / (|K̂|² + |P̂|²)] (N, C, H, W), float32 (run
    outside autocast), with K̂, P̂ from :func:`psf2otf`. No ε, no λ (as the paper)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        size = x.shape[-2:]
        kf = psf2otf(kernel.float(), size)
        pf = psf2otf(smooth.float(), size)
        num = torch.conj(kf) * torch.fft.fft2(x)
        den = kf.real ** 2 + kf.imag ** 2 + pf.real ** 2 + pf.imag ** 2
        return torch.fft.ifft2(num / den).real


def cls_deconv(feat: torch.Tensor, kernel: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """The constrained least squares step on features: ``feat`` (N, C, H, W); ``kernel`` (N, 1, k, k) (one per
    sample, odd k); ``smooth`` (N, C, 3, 3) the per-sample, per-channel smoothness filter P. Each channel is
    replicate-padded by k, filtered by :func:`cls_fourier` and cropped back -> (N, C, H, W) float32."""
    k = kernel.shape[-1]
    x = F.pad(feat.float(), (k, k, k, k), mode="replicate")
    return cls_fourier(x, kernel, smooth)[..., k:-k, k:-k]


class CLS(nn.Module):
    """F = 1×1 (nf → nf/r) of the features; P = exp(three valid conv3×3 with LReLU 0.1 between, adaptive
    average pool to 3×3, 1×1), minus its 3×3 mean; X = :func:`cls_deconv`; output 1×1 (nf/r → nf)."""

    def __init__(self, nf: int, reduction: int):
        super().__init__()
        c = nf // reduction
        self.reduce = nn.Conv2d(nf, c, 1)
        self.smooth = nn.Sequential(nn.Conv2d(c, c, 3), _lrelu(), nn.Conv2d(c, c, 3), _lrelu(), nn.Conv2d(c, c, 3),
                                    nn.AdaptiveAvgPool2d(3), nn.Conv2d(c, c, 1))
        self.expand = nn.Conv2d(c, nf, 1)

    def forward(self, feat, kernel):
        f = self.reduce(feat)
        p = torch.exp(self.smooth(f).float())
        p = p - p.mean(dim=(2, 3), keepdim=True)
        return self.expand(cls_deconv(f, kernel, p).to(f.dtype))


def upscaler(nf: int, scale: int) -> nn.Sequential:
    """×4: conv nf → 4nf, PixelShuffle 2, twice, conv nf → 3; ×2 / ×3: conv nf → s²nf, PixelShuffle s, conv → 3."""
    if scale == 4:
        return nn.Sequential(nn.Conv2d(nf, nf * 4, 3, padding=1), nn.PixelShuffle(2),
                             nn.Conv2d(nf, nf * 4, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(nf, 3, 3, padding=1))
    return nn.Sequential(nn.Conv2d(nf, nf * scale * scale, 3, padding=1), nn.PixelShuffle(scale),
                         nn.Conv2d(nf, 3, 3, padding=1))


class Estimator(nn.Module):
    """LR (N, 3, h, w) -> kernel (N, 1, k, k) summing to 1."""

    def __init__(self, nf: int = 64, blocks: int = 3, latent: int = 256, kernel_size: int = 21,
                 filters=None, hidden: int = 16):
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.filters = check_filters(self.kernel_size, filters)
        self.hidden = int(hidden)
        self.head = nn.Conv2d(3, nf, 7, padding=3)
        self.body = nn.Sequential(*[ResBlock(nf) for _ in range(blocks)])
        self.tail = nn.Sequential(nn.Conv2d(nf, nf, 3), _lrelu(), nn.Conv2d(nf, nf, 3), nn.AdaptiveAvgPool2d(1),
                                  nn.Conv2d(nf, latent, 1))
        n = len(self.filters)
        ins = [3] + [self.hidden] * (n - 1)
        outs = [self.hidden] * (n - 1) + [3]
        self.shapes = [(o, i, f, f) for o, i, f in zip(outs, ins, self.filters)]
        self.dec = nn.ModuleList(nn.Linear(latent, o * i * f * f) for o, i, f, _ in self.shapes)
        for m in self.modules():  # the official estimator init: Kaiming normal (fan in), zero biases, every layer
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                nn.init.zeros_(m.bias)

    def linear_weights(self, lr):
        """The per-sample weights of the linear network: a list of (N·out, in, f, f) tensors."""
        f1 = self.head(lr)
        z = self.tail(self.body(f1) + f1).flatten(1)
        n = lr.shape[0]
        return [d(z).reshape(n * o, i, f, f2) for d, (o, i, f, f2) in zip(self.dec, self.shapes)]

    def impulse_response(self, weights, n: int) -> torch.Tensor:
        """The kernel of the per-sample linear networks ``weights`` -> (N, 1, k, k), flipped, channel-mean,
        divided by its sum."""
        k = self.kernel_size
        x = weights[0].new_ones(1, n * 3, 1, 1)
        for j, w in enumerate(weights):
            x = F.conv2d(x, w, padding=k - 1 if j == 0 else 0, groups=n)
        ker = x.reshape(n, 3, k, k).flip(-2, -1).mean(1, keepdim=True)
        return ker / ker.sum(dim=(2, 3), keepdim=True)

    def forward(self, lr):
        ws = self.linear_weights(lr)
        with torch.autocast(device_type=lr.device.type, enabled=False):  # the products of 4 layers: float32
            return self.impulse_response([w.float() for w in ws], lr.shape[0])


class Restorer(nn.Module):
    """(LR (N, 3, h, w), kernel (N, 1, k, k)) -> SR (N, 3, s·h, s·w) in [0, 1]."""

    def __init__(self, nf: int = 64, nb: int = 10, ng: int = 5, reduction: int = 4, res_blocks: int = 3,
                 scale: int = 4, img_residual: str | None = None):
        super().__init__()
        nf2 = nf // reduction
        self.scale = int(scale)
        self.img_residual = img_residual
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.features = nn.Sequential(*[ResBlock(nf) for _ in range(res_blocks)])
        self.head1 = nn.Conv2d(nf, nf2, 3, padding=1)
        self.cls = CLS(nf, reduction)
        self.body = nn.ModuleList(DPCAG(nf, nf2, nb, reduction) for _ in range(ng))
        self.fusion = nn.Conv2d(nf + nf2, nf, 3, padding=1)
        self.upscale = upscaler(nf, scale)

    def forward(self, lr, kernel):
        f = self.conv_first(lr)
        feat = self.features(f)
        f1 = self.head1(feat)
        f2 = self.cls(feat, kernel)
        for g in self.body:
            f2, f1 = g(f2, f1)
        f = self.fusion(torch.cat([f1, f2], 1)) + f
        out = self.upscale(f)
        if self.img_residual == "bicubic":  # not official (small CPU configs only): a residual over bicubic
            out = out + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out.clamp(0.0, 1.0)


def align_bicubic(sr: torch.Tensor) -> torch.Tensor:
    """SR of a network trained on bicubic pairs (pixel p shows HR p − 1.5) resampled to our grid: out(q) =
    cubic interpolation at q + 1.5 = Σ_j w_j SR(q + j), w = [−1, 9, 9, −1]/16, rows and columns, replicate
    border; clamped to [0, 1]. (N, C, H, W) -> same shape."""
    w = sr.new_tensor([-1.0, 9.0, 9.0, -1.0]) / 16.0
    n, c, h, wd = sr.shape
    x = F.pad(sr, (0, 3, 0, 3), mode="replicate").reshape(n * c, 1, h + 3, wd + 3)
    x = F.conv2d(x, w.view(1, 1, 1, 4))
    x = F.conv2d(x, w.view(1, 1, 4, 1))
    return x.reshape(n, c, h, wd).clamp(0.0, 1.0)


class DCLS(nn.Module):
    """Estimator → (detached kernel) → Restorer. ``forward(lr)`` -> ``{"sr": (N, 3, s·h, s·w) in [0, 1],
    "kernel": (N, 1, k, k)}``; ``super_resolve(lr, align=None)`` -> SR (the bench's entry point)."""

    bench_options = ("align",)

    def __init__(self, scale: int = 4, nf: int = 64, nb: int = 10, ng: int = 5, reduction: int = 4,
                 res_blocks: int = 3, est_nf: int | None = None, est_blocks: int = 3, latent: int = 256,
                 kernel_size: int = 21, filters=None, kernel_hidden: int = 16, align: str = "none",
                 img_residual: str | None = None):
        super().__init__()
        for key, v in (("scale", scale), ("nf", nf), ("nb", nb), ("ng", ng), ("reduction", reduction),
                       ("latent", latent), ("kernel_hidden", kernel_hidden)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale!r}")
        if nf % reduction:
            raise ValueError(f"reduction {reduction} does not divide nf {nf}")
        if nf // reduction < reduction:
            raise ValueError(f"nf // reduction ({nf // reduction}) must be >= reduction {reduction}")
        if align not in ALIGNS:
            raise ValueError(f"align must be one of {', '.join(ALIGNS)}, got {align!r}")
        self.scale = int(scale)
        self.align = align
        self.kernel_size = int(kernel_size)
        self.estimator = Estimator(est_nf or nf, est_blocks, latent, kernel_size, filters, kernel_hidden)
        if img_residual not in (None, "bicubic"):
            raise ValueError(f"img_residual must be null or bicubic, got {img_residual!r}")
        self.restorer = Restorer(nf, nb, ng, reduction, res_blocks, scale, img_residual)

    def forward(self, lr):
        kernel = self.estimator(lr)
        return {"sr": self.restorer(lr, kernel.detach()), "kernel": kernel}

    def super_resolve(self, lr, align: str | None = None):
        """RGB ``lr`` (N, 3, h, w) in [0, 1] -> SR (N, 3, s·h, s·w) in [0, 1]; ``align`` (default: the
        model's) ``none`` or ``bicubic`` (see the module doc)."""
        from bsrdata.errors import BsrError

        align = self.align if align is None else align
        if align not in ALIGNS:
            raise BsrError(f"--opt align: must be one of {', '.join(ALIGNS)}, got {align!r}")
        if min(lr.shape[-2:]) < 7:
            raise BsrError(f"dcls: the LR image must be at least 7x7, got {lr.shape[-2]}x{lr.shape[-1]}")
        sr = self.forward(lr)["sr"]
        return align_bicubic(sr) if align == "bicubic" else sr


@register_model("dcls")
def dcls(**kw) -> DCLS:
    """DCLS; official ×4 setting 1: nf 64, nb 10, ng 5, reduction 4, latent 256, kernel 21, filters
    [11, 7, 5, 1], 16 hidden channels (13,626,187 parameters)."""
    return DCLS(**kw)
