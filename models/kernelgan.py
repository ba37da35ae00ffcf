"""KernelGAN (Bell-Kligler, Shocher & Irani, NeurIPS 2019): a per-image ×2 blur-kernel estimator.

Written from the method's description (paper §3-4 and its official ``--X4`` non-real settings,
docs/baselines.md "KernelGAN + ZSSR"); no code of the official (Weizmann academic non-commercial)
repository is copied. Nothing here is trained on a dataset: :func:`estimate_kernels` fits G and D to one
LR image and returns its ×2 and ×4 kernels.

- :class:`KernelGenerator` (``kernelgan_g``): a deep *linear* network, no biases, no activations; each RGB
  channel is a separate gray image (a batch of 3). conv7×7 1→64, conv5×5, conv3×3, conv1×1, conv1×1
  (64→64), conv1×1 64→1 stride 2: a 64×64 crop gives a 26×26 output; 150,656 parameters at width 64.
  Its ×2 kernel is the 13×13 impulse response (:meth:`KernelGenerator.kernel`), as a correlation kernel:
  ``G(x)[i, j] == sum_{u,v} k[u, v] x[2i + u, 2j + v]``.
- :class:`KernelDiscriminator` (``kernelgan_d``): spectral-norm conv7×7 3→64 (no activation),
  5 × [SN conv1×1, BatchNorm, ReLU], SN conv1×1 64→1, sigmoid; a 26×26 crop gives a 20×20 map;
  30,977 parameters at width 64.
- Loss terms (:func:`gan_loss`, :func:`bicubic_loss`, :func:`sum_to_one_loss`, :func:`boundary_loss`,
  :func:`centroid_loss`, :func:`sparsity_loss`), the λ schedule (:class:`LossWeights`), crops drawn from
  gradient-magnitude probability maps (:func:`crop_probability`), the kernel post-processing
  (:func:`post_process_kernel`) and the analytic ×4 kernel (:func:`analytic_x4`).

Image ranges: G and D work on RGB in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.registry import register_model

G_LAYERS = (7, 5, 3, 1, 1, 1)  # spatial sizes of G's convolutions (the last one has stride 2)
KERNEL_SIZE = sum(G_LAYERS) - len(G_LAYERS) + 1  # 13: G's receptive field = the ×2 kernel's size
TOP_N = 40  # post-processing keeps the values above 0.75 × the (TOP_N + 1)-th largest


# ----------------------------------------------------------------------------------------------- networks
class KernelGenerator(nn.Module):
    """Deep linear G. forward: (N, C, H, W) float in [-1, 1] -> (N, C, ceil((H - 12) / 2), ceil((W - 12) / 2))
    (every channel through the same gray network); 64 -> 26."""

    def __init__(self, width: int = 64):
        super().__init__()
        chans = [1] + [width] * (len(G_LAYERS) - 1) + [1]
        self.layers = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], k, stride=2 if i == len(G_LAYERS) - 1 else 1, bias=False)
            for i, k in enumerate(G_LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = x.reshape(n * c, 1, h, w)
        for conv in self.layers:
            y = conv(y)
        return y.reshape(n, c, y.shape[-2], y.shape[-1])

    def kernel(self) -> torch.Tensor:
        """G's ×2 kernel (13, 13) float32 (differentiable): the flipped response to a unit impulse, i.e. the
        correlation kernel that G applies before keeping every second pixel."""
        p = KERNEL_SIZE - 1
        w0 = self.layers[0].weight
        y = F.pad(torch.ones(1, 1, 1, 1, device=w0.device, dtype=w0.dtype), (p, p, p, p))
        for conv in self.layers:
            y = F.conv2d(y, conv.weight)  # stride 1: the full impulse response
        return y[0, 0].flip(0, 1)


def _sn(conv: nn.Conv2d) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(conv)


class KernelDiscriminator(nn.Module):
    """Patch D. forward: (N, 3, h, w) in [-1, 1] -> (N, 1, h - 6, w - 6) probabilities in (0, 1)."""

    def __init__(self, width: int = 64, in_ch: int = 3, blocks: int = 5):
        super().__init__()
        self.first = _sn(nn.Conv2d(in_ch, width, 7))
        self.body = nn.Sequential(*[nn.Sequential(_sn(nn.Conv2d(width, width, 1)), nn.BatchNorm2d(width),
                                                  nn.ReLU(inplace=True)) for _ in range(blocks)])
        self.last = _sn(nn.Conv2d(width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.last(self.body(self.first(x))))


@register_model("kernelgan_g")
def kernelgan_g(width: int = 64) -> KernelGenerator:
    return KernelGenerator(width=width)


@register_model("kernelgan_d")
def kernelgan_d(width: int = 64, blocks: int = 5) -> KernelDiscriminator:
    return KernelDiscriminator(width=width, blocks=blocks)


# --------------------------------------------------------------------------------------------------- losses
def bicubic_x2_taps() -> np.ndarray:
    """The 8 taps (float64, sum 1) of MATLAB's antialiased bicubic ×1/2: Keys a = -0.5 at ±0.25 … ±1.75."""
    d = np.abs(np.arange(8) - 3.5) / 2.0
    c = np.where(d <= 1, 1.5 * d ** 3 - 2.5 * d ** 2 + 1, -0.5 * d ** 3 + 2.5 * d ** 2 - 4 * d + 2)
    return c / c.sum()


def bicubic_down2(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H // 2 + ..): correlation with the 8×8 bicubic kernel, stride 2, zero pad 3."""
    t = torch.as_tensor(bicubic_x2_taps(), dtype=x.dtype, device=x.device)
    k = (t[:, None] * t[None, :])[None, None]
    n, c, h, w = x.shape
    return F.conv2d(x.reshape(n * c, 1, h, w), k, stride=2, padding=3).reshape(n, c, -1, (w + 6 - 8) // 2 + 1)


def shave_to(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Centre-crop ``a`` (.., H, W) to the spatial size of ``like`` (equal margins; the extra pixel, if any,
    comes off the bottom/right)."""
    dh, dw = a.shape[-2] - like.shape[-2], a.shape[-1] - like.shape[-1]
    return a[..., dh // 2: dh // 2 + like.shape[-2], dw // 2: dw // 2 + like.shape[-1]]


def gan_loss(d_map: torch.Tensor, real: bool) -> torch.Tensor:
    """L1 distance of D's map to the label (1 for real, 0 for fake), mean over all elements."""
    return (d_map - (1.0 if real else 0.0)).abs().mean()


def bicubic_loss(g_in: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    """MSE between G's output and the bicubic ×1/2 of G's input, centre-cropped to G's output size."""
    return F.mse_loss(g_out, shave_to(bicubic_down2(g_in), g_out))


def sum_to_one_loss(k: torch.Tensor) -> torch.Tensor:
    return (k.sum() - 1.0).abs()


def boundary_mask(size: int = KERNEL_SIZE, scale: float = 30.0) -> np.ndarray:
    """(size, size) float64: ``scale · (1 − g / max g)`` for a Gaussian g of σ = size over the offsets
    −size//2+1 … size//2 (odd size: centred), with the central (size − 2·margin)² square set to 0,
    margin = (size − (size//2 + size%2)) // 2 − 1 (13 -> 2: only the outer 2-px frame is penalised)."""
    z = np.arange(-size // 2 + 1, size // 2 + 1, dtype=np.float64)
    g1 = np.exp(-z ** 2 / (2.0 * size ** 2))
    g = np.outer(g1, g1)
    m = 1.0 - g / g.max()
    margin = (size - (size // 2 + size % 2)) // 2 - 1
    if margin > 0:
        m[margin:-margin, margin:-margin] = 0.0
    return scale * m


def boundary_loss(k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (k * mask).abs().mean()


def wanted_centre(size: int, sf: int = 2) -> float:
    """Centre of mass a kernel of ``size`` should have for scale ``sf``: size//2 + 0.5·(sf − size mod 2)."""
    return size // 2 + 0.5 * (sf - size % 2)


def centroid_loss(k: torch.Tensor, sf: int = 2) -> torch.Tensor:
    """MSE of k's centre of mass (row, col) to (c, c), c = :func:`wanted_centre`."""
    idx = torch.arange(k.shape[0], dtype=k.dtype, device=k.device)
    s = k.sum()
    com = torch.stack(((k.sum(1) * idx).sum() / s, (k.sum(0) * idx).sum() / s))
    return ((com - wanted_centre(k.shape[0], sf)) ** 2).mean()


def sparsity_loss(k: torch.Tensor, power: float = 0.2) -> torch.Tensor:
    return (k.abs() ** power).mean()


@dataclasses.dataclass
class LossWeights:
    """The λ schedule. λ_bicubic starts at 5; once the bicubic MSE is below 0.4 on 3 consecutive iterations
    it is divided by 100 every ``period`` (official 200) iterations, down to 5e-6; the first time it is below
    5e-3, λ_centroid = 1 and λ_sparse = 5 switch on (both 0 before). λ_sum2one = λ_boundary = 0.5."""

    bicubic: float = 5.0
    sum2one: float = 0.5
    boundary: float = 0.5
    centroid: float = 0.0
    sparse: float = 0.0
    period: int = 200
    similar: bool = False
    count: int = 0
    constraints_on: bool = False

    def update(self, it: int, bic_mse: float) -> None:
        """Call after iteration ``it`` (1-based count of finished iterations) with its bicubic MSE."""
        if not self.similar:
            self.count = self.count + 1 if bic_mse < 0.4 else 0
            self.similar = self.count >= 3
        elif it % self.period == 0 and self.bicubic > 5e-6:
            self.bicubic = max(self.bicubic / 100.0, 5e-6)
            if not self.constraints_on and self.bicubic < 5e-3:
                self.centroid, self.sparse, self.constraints_on = 1.0, 5.0, True


# ------------------------------------------------------------------------------------------ crops and kernel
def gradient_magnitude(img: np.ndarray) -> np.ndarray:
    """(H, W, C) float -> (H, W) float64: Σ_c (|∂x| + |∂y|), forward differences clipped to [0, 1], 0 at the
    last row/column."""
    a = np.asarray(img, np.float64)
    gx = np.zeros(a.shape[:2])
    gy = np.zeros(a.shape[:2])
    gx[:, :-1] = np.clip(np.abs(np.diff(a, axis=1)), 0, 1).sum(-1)
    gy[:-1, :] = np.clip(np.abs(np.diff(a, axis=0)), 0, 1).sum(-1)
    return gx + gy


def crop_probability(grad: np.ndarray, crop: int, floor: float = 1e-3) -> np.ndarray:
    """Probabilities (H − crop + 1, W − crop + 1) float64, sum 1, of each top-left corner of a ``crop``²
    window: the window's mean gradient magnitude (plus ``floor`` × the image mean so flat images still get
    crops)."""
    c = np.cumsum(np.cumsum(np.pad(grad, ((1, 0), (1, 0))), 0), 1)
    s = c[crop:, crop:] - c[:-crop, crop:] - c[crop:, :-crop] + c[:-crop, :-crop]
    p = s / crop ** 2 + floor * (grad.mean() + 1e-12)
    return p / p.sum()


def sample_corner(prob: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    i = int(rng.choice(prob.size, p=prob.ravel()))
    return divmod(i, prob.shape[1])


def post_process_kernel(k: np.ndarray, n: int = TOP_N, sf: int = 2) -> np.ndarray:
    """KernelGAN's final kernel: zero the values below 0.75 × the (n+1)-th largest, renormalise, shift the
    centre of mass to :func:`wanted_centre` (zero-padding by ceil(max |shift|) + 1 per side, cubic-spline
    shift), renormalise. (S, S) -> (S + 2p, S + 2p) float64."""
    k = np.asarray(k, np.float64)
    thr = 0.75 * np.sort(k.ravel())[-n - 1]
    k = np.where(k < thr, 0.0, k)
    k = k / k.sum()
    k = centre_kernel(k, sf)
    return k / k.sum()


def centre_kernel(k: np.ndarray, sf: int) -> np.ndarray:
    """Shift ``k``'s centre of mass to :func:`wanted_centre` (size, sf) of its unpadded size, after zero
    padding by ceil(max |shift|) + 1 per side (scipy.ndimage.shift, cubic spline, constant 0)."""
    from scipy import ndimage

    k = np.asarray(k, np.float64)
    com = np.array(ndimage.center_of_mass(k))
    want = np.array(k.shape) // 2 + 0.5 * (sf - np.array(k.shape) % 2)
    shift = want - com
    pad = int(np.ceil(np.max(np.abs(shift)))) + 1
    return ndimage.shift(np.pad(k, pad), shift, order=3, mode="constant")


def analytic_x4(k2: np.ndarray) -> np.ndarray:
    """The ×4 kernel of two ×2 steps: k₂ ⊛ (k₂ dilated by 2), size 3n − 2, cropped by n//2 per side,
    normalised. (n, n) -> (3n − 2 − 2·(n//2))² float64 (25 for n = 13)."""
    k2 = np.asarray(k2, np.float64)
    n = k2.shape[0]
    big = np.zeros((3 * n - 2, 3 * n - 2))
    for r in range(n):
        for c in range(n):
            big[2 * r:2 * r + n, 2 * c:2 * c + n] += k2[r, c] * k2
    cut = n // 2
    out = big[cut:-cut, cut:-cut] if cut else big
    return out / out.sum()


# ----------------------------------------------------------------------------------------------- estimation
@dataclasses.dataclass
class KernelGANResult:
    k2: np.ndarray  # post-processed ×2 kernel (float64, sum 1)
    k4: np.ndarray  # analytic ×4 kernel (float64, sum 1)
    raw: np.ndarray  # G's 13×13 kernel at the end (float64)
    iterations: int
    seconds: float
    stopped: str  # "done" | "time"


def prepare_input(lr: np.ndarray, shave: int = 10, min_size: int = 32) -> np.ndarray:
    """uint8 / float LR (H, W, 3) -> float32 (H', W', 3) in [-1, 1]: ``shave`` px off every border (the
    non-real setting; skipped when fewer than ``min_size`` px would remain), cropped to even size, and
    symmetric-padded up to ``min_size`` when smaller (tiny images)."""
    x = np.asarray(lr, np.float32)
    x = x / 255.0 if np.asarray(lr).dtype == np.uint8 else x
    if min(x.shape[:2]) - 2 * shave >= min_size:
        x = x[shave:-shave, shave:-shave]
    x = x[: x.shape[0] // 2 * 2, : x.shape[1] // 2 * 2]
    ph, pw = max(0, min_size - x.shape[0]), max(0, min_size - x.shape[1])
    if ph or pw:
        x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
    return (x * 2.0 - 1.0).astype(np.float32)


def estimate_kernels(lr: np.ndarray, *, iters: int = 3000, seed: int = 0, deadline: float | None = None,
                     g_crop: int = 64, width: int = 64, device="cpu") -> KernelGANResult:
    """Fit KernelGAN to one LR image (uint8 RGB (H, W, 3)) -> :class:`KernelGANResult`.

    Official schedule for ``iters`` = 3000: Adam lr 2e-4, betas (0.5, 0.999) for G and D, both ÷10 at
    iterations iters·{1/4, 1/2, 3/4}; the λ-decay period is round(200·iters/3000) (≥ 1). G gets
    ``g_crop``² crops (the largest even size that fits if the image is smaller), D real crops of G's output
    size with N(0, 1)/255 noise; D's fake input is G's output + N(0, 1)/255. ``deadline``
    (time.monotonic()) stops early. Deterministic on the CPU for a given seed.
    """
    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    img = prepare_input(lr)
    h, w = img.shape[:2]
    gc = min(g_crop, h // 2 * 2, w // 2 * 2)
    dc = (gc - KERNEL_SIZE + 2) // 2  # G's output size
    grad = gradient_magnitude(img / 2.0 + 0.5)
    pg, pd = crop_probability(grad, gc), crop_probability(grad, dc)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].to(device)
    G, D = KernelGenerator(width).to(device), KernelDiscriminator(width).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    lam = LossWeights(period=max(1, round(200 * iters / 3000)))
    mask = torch.as_tensor(boundary_mask(KERNEL_SIZE), dtype=torch.float32, device=device)
    drops = {max(1, round(iters * q / 4)) for q in (1, 2, 3)}
    gen = torch.Generator(device="cpu").manual_seed(seed)
    stopped, done = "done", 0
    for it in range(1, iters + 1):
        if deadline is not None and time.monotonic() >= deadline:
            stopped = "time"
            break
        gi, gj = sample_corner(pg, rng)
        di, dj = sample_corner(pd, rng)
        g_in = x[..., gi:gi + gc, gj:gj + gc]
        real = x[..., di:di + dc, dj:dj + dc] + (torch.randn(1, 3, dc, dc, generator=gen) / 255.0).to(device)
        # G step
        opt_g.zero_grad(set_to_none=True)
        g_out = G(g_in)
        k = G.kernel()
        bic = bicubic_loss(g_in, g_out)
        loss_g = (gan_loss(D(g_out), True) + lam.bicubic * bic + lam.sum2one * sum_to_one_loss(k)
                  + lam.boundary * boundary_loss(k, mask) + lam.centroid * centroid_loss(k)
                  + lam.sparse * sparsity_loss(k))
        loss_g.backward()
        opt_g.step()
        # D step
        opt_d.zero_grad(set_to_none=True)
        fake = g_out.detach() + (torch.randn(g_out.shape, generator=gen) / 255.0).to(device)
        loss_d = 0.5 * (gan_loss(D(fake), False) + gan_loss(D(real), True))
        loss_d.backward()
        opt_d.step()
        done = it
        lam.update(it, float(bic.detach()))
        if it in drops:
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] /= 10.0
    with torch.no_grad():
        raw = G.kernel().double().cpu().numpy()
    k2 = post_process_kernel(raw)
    return KernelGANResult(k2=k2, k4=analytic_x4(k2), raw=raw, iterations=done,
                           seconds=time.monotonic() - t0, stopped=stopped)
