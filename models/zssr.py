"""ZSSR (Shocher, Cohen & Irani, CVPR 2018) as KernelGAN runs it: per-image training with a given kernel.

Written from the method's description (the paper §3-4 and the settings of the copy that KernelGAN's
``--SR`` uses, docs/baselines.md "KernelGAN + ZSSR"); no official (Weizmann academic non-commercial) code
is copied.

- :class:`ZSSRNet` (``zssr``): 8 conv3×3 (zero "same" padding), 64 channels, ReLU after all but the last,
  no biases, weights N(0, 0.1 / fan_in); the input is the bicubic-upscaled image and the output is input +
  the network's residual. 224,640 parameters at width 64. RGB in [0, 1].
- :func:`super_resolve`: gradual ×4 as KernelGAN's ×4 mode: stage [2, 2] with the ×2 kernel, then stage
  [4, 4] with the ×4 kernel, the same network (and Adam state) continued, each kernel re-centred for its
  scale (:func:`bsrdata.models.kernelgan.centre_kernel`). Each iteration: a "father" = a random
  integer-shifted ``crop``² window of the LR input (zero-filled with zero loss weight where it overhangs a
  small image), its "son" = the father correlated with the kernel (symmetric borders) and sampled at the
  top-left positions (0, sf, 2sf, ...), the network's input = the son bicubic-upscaled to the father's
  size; loss = mean(w · |net − father|) with w the gradient-magnitude weight map (:func:`loss_weights`).
  Adam lr 1e-3; every 50 iterations the reconstruction MSE of the whole image is measured; every 60
  iterations, at least 256 after the last change, a line is fitted to the last 5 MSEs and the lr is ÷10
  when −1.5·slope < the slope's std; a stage stops when lr < 9e-6 or after ``iters`` iterations. Output:
  one forward on the bicubic ×4 LR, 2 back-projection iterations, clipped to [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.registry import register_model


class ZSSRNet(nn.Module):
    """forward: (N, 3, H, W) bicubic-upscaled image in [0, 1] -> (N, 3, H, W) = input + residual."""

    def __init__(self, width: int = 64, depth: int = 8, in_ch: int = 3):
        super().__init__()
        chans = [in_ch] + [width] * (depth - 1) + [in_ch]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False)
                                   for i in range(depth))
        for c in self.convs:
            fan_in = c.in_channels * 9
            nn.init.normal_(c.weight, 0.0, math.sqrt(0.1 / fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, c in enumerate(self.convs):
            y = c(y)
            if i < len(self.convs) - 1:
                y = F.relu(y)
        return x + y


@register_model("zssr")
def zssr(width: int = 64, depth: int = 8) -> ZSSRNet:
    return ZSSRNet(width=width, depth=depth)


# ------------------------------------------------------------------------------------------------- resampling
_WEIGHTS: dict = {}


def bicubic_matrix(n_in: int, n_out: int, device="cpu") -> torch.Tensor:
    """MATLAB-style bicubic (Keys a = −0.5, symmetric borders) interpolation matrix (n_out, n_in) float32."""
    from bsrdata.degrade import _resize_weights

    key = (n_in, n_out, str(device))
    if key not in _WEIGHTS:
        _WEIGHTS[key] = torch.from_numpy(_resize_weights(n_in, n_out, n_out / n_in)).float().to(device)
    return _WEIGHTS[key]


def bicubic_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, H, W) MATLAB bicubic upscaling (pixel i of h sits at (i + 0.5)·H/h − 0.5)."""
    mh = bicubic_matrix(x.shape[-2], size[0], x.device)
    mw = bicubic_matrix(x.shape[-1], size[1], x.device)
    return torch.einsum("ah,nchw,bw->ncab", mh, x, mw)


def _symmetric_index(n: int, before: int, after: int) -> torch.Tensor:
    idx = np.arange(-before, n + after)
    period = 2 * n
    idx = np.mod(idx, period)
    idx = np.where(idx >= n, period - 1 - idx, idx)
    return torch.from_numpy(idx)


def downscale(x: torch.Tensor, k: torch.Tensor, sf: int) -> torch.Tensor:
    """(N, C, H, W) correlated with ``k`` (Sh, Sw) centred at (Sh//2, Sw//2), symmetric borders, sampled at
    (sf·i, sf·j) -> (N, C, ceil(H / sf), ceil(W / sf)). ``y[i] = Σ_u k[u] · x[sf·i + u − S//2]``."""
    n, c, h, w = x.shape
    sh, sw = k.shape[-2:]
    xp = x.index_select(2, _symmetric_index(h, sh // 2, sh - 1 - sh // 2).to(x.device))
    xp = xp.index_select(3, _symmetric_index(w, sw // 2, sw - 1 - sw // 2).to(x.device))
    y = F.conv2d(xp.reshape(n * c, 1, *xp.shape[-2:]), k[None, None].to(x.dtype), stride=sf)
    return y.reshape(n, c, y.shape[-2], y.shape[-1])


def back_project(sr: torch.Tensor, lr: torch.Tensor, k: torch.Tensor, sf: int, iters: int = 2) -> torch.Tensor:
    """``iters`` × [sr += bicubic_up(lr − downscale(sr, k, sf)); clip to [0, 1]]."""
    for _ in range(iters):
        sr = (sr + bicubic_up(lr - downscale(sr, k, sf), sr.shape[-2:])).clamp(0, 1)
    return sr


def loss_weights(img: np.ndarray, window: int = 5) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (H, W) float32 with mean 1: the gradient magnitude Σ_c(|∂x| + |∂y|) averaged
    over a ``window``² box, plus 10 % of its mean (flat regions keep some weight), normalised to mean 1."""
    from scipy import ndimage

    from bsrdata.models.kernelgan import gradient_magnitude

    g = ndimage.uniform_filter(gradient_magnitude(img), window, mode="reflect")
    g = g + 0.1 * g.mean() + 1e-12
    return (g / g.mean()).astype(np.float32)


# ----------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class ZSSRResult:
    sr: np.ndarray  # float32 (4h, 4w, 3) in [0, 1]
    iterations: list  # per stage
    stopped: list  # per stage: "lr" | "iters" | "time"
    seconds: float


TEST_EVERY, CHECK_EVERY, MIN_ITERS, SLOPE_RANGE, MIN_LR = 50, 60, 256, 256, 9e-6


def super_resolve(lr: np.ndarray, k2: np.ndarray, k4: np.ndarray, *, iters: int = 3000, seed: int = 0,
                  crop: int = 128, deadlines=(None, None), width: int = 64, device="cpu") -> ZSSRResult:
    """Gradual ×4 ZSSR of one LR image (uint8 RGB (h, w, 3)) with KernelGAN's kernels -> :class:`ZSSRResult`.

    ``iters`` caps each stage (official 3000); ``deadlines`` (time.monotonic() per stage) stop a stage
    early. Deterministic on the CPU for a given seed.
    """
    from bsrdata.models.kernelgan import centre_kernel

    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    img = np.asarray(lr, np.float32) / 255.0
    h, w = img.shape[:2]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].to(device)
    wmap = torch.from_numpy(loss_weights(img))[None, None].to(device)
    net = ZSSRNet(width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    its, stops = [], []
    for (sf, k), deadline in zip(((2, k2), (4, k4)), deadlines):
        kk = centre_kernel(np.asarray(k, np.float64), sf)
        kt = torch.from_numpy(kk / kk.sum()).float().to(device)
        lr_now = 1e-3
        for g in opt.param_groups:
            g["lr"] = lr_now
        mse_steps, mse_rec, last_change, stop = [], [], 0, "iters"
        done = 0
        for it in range(iters):
            if deadline is not None and time.monotonic() >= deadline:
                stop = "time"
                break
            if lr_now < MIN_LR:
                stop = "lr"
                break
            father, weight = _father(x, wmap, crop, sf, rng)
            son = downscale(father, kt, sf)
            pred = net(bicubic_up(son, father.shape[-2:]))
            loss = (weight * (pred - father).abs()).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done = it + 1
            if iters > MIN_ITERS and it % TEST_EVERY == 0:  # the lr rule can act only past MIN_ITERS
                with torch.no_grad():
                    sr = net(bicubic_up(x, (h * sf, w * sf)))
                    mse_rec.append(float(((x - downscale(sr, kt, sf)) ** 2).mean()))
                    mse_steps.append(it)
            if (1 + it) % CHECK_EVERY == 0 and it - last_change > MIN_ITERS:
                n = SLOPE_RANGE // TEST_EVERY
                if len(mse_rec) >= max(n, 4):
                    (slope, _), cov = np.polyfit(mse_steps[-n:], mse_rec[-n:], 1, cov=True)
                    if -1.5 * slope < math.sqrt(max(cov[0, 0], 0.0)):
                        lr_now /= 10.0
                        last_change = it
                        for g in opt.param_groups:
                            g["lr"] = lr_now
        its.append(done)
        stops.append(stop)
    with torch.no_grad():
        sr = net(bicubic_up(x, (h * 4, w * 4)))
        sr = back_project(sr, x, kt, 4, iters=2).clamp(0, 1)
    out = sr[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)
    return ZSSRResult(sr=out, iterations=its, stopped=stops, seconds=time.monotonic() - t0)


def _father(x, wmap, crop, sf, rng):
    """A random ``crop``² window of x (1, 3, h, w) (zero-filled where it overhangs) and its loss weights
    (zero where it overhangs). crop is rounded down to a multiple of sf."""
    c = max(sf, crop // sf * sf)
    h, w = x.shape[-2:]
    top = int(rng.integers(min(0, h - c), max(0, h - c) + 1))
    left = int(rng.integers(min(0, w - c), max(0, w - c) + 1))
    father = x.new_zeros(1, 3, c, c)
    weight = x.new_zeros(1, 1, c, c)
    y0, y1, x0, x1 = max(top, 0), min(top + c, h), max(left, 0), min(left + c, w)
    father[..., y0 - top:y1 - top, x0 - left:x1 - left] = x[..., y0:y1, x0:x1]
    weight[..., y0 - top:y1 - top, x0 - left:x1 - left] = wmap[..., y0:y1, x0:x1]
    return father, weight
