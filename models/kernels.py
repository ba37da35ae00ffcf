"""Blur kernels from σ maps, for the baselines that are supervised with kernels (docs/baselines.md).

The datasets blur each HR pixel with the SYNDOF Gaussian G_σ sampled in the fixed ``max_coc`` window and
normalised (:func:`bsrdata.render.gaussian_kernel_1d`; a delta for σ = 0), so the *per-pixel kernel
target* of a pixel with σ is the outer product of that 1-D kernel with itself, centred in a window of
``size`` taps (odd). Near depth edges the layered rendering is not exactly a per-pixel Gaussian; the
target is then an approximation (the paper's Sec. 3 blur model).

- :func:`gaussian_1d` / :func:`gaussian_kernels`: (..., size) / (..., size, size) kernels for a tensor of σ.
- :func:`lr_sites`: an HR-grid map (σ) at the LR pixels' sites (``direct``: HR pixel s·i; ``bicubic``:
  the mean of the s×s block around the LR pixel's centre).
- :func:`mean_kernel`: the mean of the per-pixel kernels of a σ map (one kernel per image: the L2-optimal
  single kernel, exact for a space-invariant image), computed over the distinct σ values.
- :func:`fit_pca` / :func:`project`: a PCA basis fitted on centred kernels (the MANet / DAN recipe) and the
  projection of raw kernels on it, **without** subtracting the mean (as the official code does).
- :func:`gaussian_pca_basis`: a basis fitted on G_σ for σ uniform in [0, σ_max] (deterministic).

All functions work in the dtype and on the device of their inputs (float32 or float64).
"""

from __future__ import annotations

import torch

from bsrdata.errors import BsrError


def _check_size(size) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
        raise BsrError(f"kernel size must be an odd positive integer, got {size!r}")
    return size


def gaussian_1d(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussians: ``sigma`` (...) in px, >= 0 -> (..., size), taps at offsets −r..r.

    σ = 0 (or below 1e-6) gives a delta at the centre. Equals :func:`bsrdata.render.gaussian_kernel_1d`
    for ``size == max_coc``.
    """
    size = _check_size(size)
    sigma = torch.as_tensor(sigma)
    if not sigma.is_floating_point():
        sigma = sigma.double()
    r = size // 2
    x = torch.arange(-r, r + 1, dtype=sigma.dtype, device=sigma.device)
    s = sigma.unsqueeze(-1)
    tiny = s < 1e-6
    g = torch.exp(-(x * x) / (2.0 * torch.where(tiny, torch.ones_like(s), s) ** 2))
    delta = (x == 0).to(sigma.dtype).expand_as(g)
    g = torch.where(tiny, delta, g)
    return g / g.sum(-1, keepdim=True)


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Per-pixel 2-D kernels G_σ: ``sigma`` (...) -> (..., size, size), each summing to 1, centred."""
    g = gaussian_1d(sigma, size)
    return g.unsqueeze(-1) * g.unsqueeze(-2)


def lr_sites(hr_map: torch.Tensor, scale: int, downsample: str = "direct") -> torch.Tensor:
    """An HR-grid map (..., H, W) at the LR sites -> (..., H // s, W // s).

    ``direct``: LR pixel (i, j) is HR pixel (s·i, s·j) (the datasets' default sampler); ``bicubic``: the LR
    pixel is centred on its s×s HR block, and the block mean is taken.
    """
    s = int(scale)
    h, w = hr_map.shape[-2] // s, hr_map.shape[-1] // s
    if downsample == "direct":
        return hr_map[..., 0:h * s:s, 0:w * s:s]
    if downsample == "bicubic":
        x = hr_map[..., :h * s, :w * s]
        return x.reshape(*x.shape[:-2], h, s, w, s).mean(dim=(-3, -1))
    raise BsrError(f"downsample: {downsample!r} is not direct or bicubic")


def mean_kernel(sigma_map: torch.Tensor, size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of the per-pixel kernels G_σ(p) over a map: ``sigma_map`` (N, H, W) -> (N, size, size).

    ``mask`` (N, H, W) bool: only those pixels (all when None; an image without any gives a delta).
    Computed per image over the distinct σ values with their counts, so memory does not grow with H·W.
    """
    if sigma_map.dim() != 3:
        raise BsrError(f"mean_kernel: sigma_map must be (N, H, W), got {tuple(sigma_map.shape)}")
    out = []
    for i in range(sigma_map.shape[0]):
        v = sigma_map[i].reshape(-1)
        if mask is not None:
            v = v[mask[i].reshape(-1)]
        if v.numel() == 0:
            v = torch.zeros(1, dtype=sigma_map.dtype, device=sigma_map.device)
        vals, counts = torch.unique(v, return_counts=True)
        k = gaussian_kernels(vals, size)
        wts = counts.to(k.dtype) / counts.sum()
        out.append((k * wts[:, None, None]).sum(0))
    return torch.stack(out)


def fit_pca(kernels: torch.Tensor, n: int) -> torch.Tensor:
    """A PCA basis of flattened kernels: ``kernels`` (M, k·k) -> (k·k, n), orthonormal columns.

    The data are centred before the SVD (the MANet / DAN recipe), the first ``n`` left singular vectors of
    the (k·k, M) matrix are kept, and each column's sign is fixed (largest entry positive) so the basis is
    deterministic.
    """
    if kernels.dim() != 2 or not 1 <= n <= min(kernels.shape):
        raise BsrError(f"fit_pca: need (M, k*k) kernels with M, k*k >= n = {n}, got {tuple(kernels.shape)}")
    x = (kernels - kernels.mean(0, keepdim=True)).T  # (k·k, M)
    u, _, _ = torch.linalg.svd(x, full_matrices=False)
    b = u[:, :n]
    idx = b.abs().argmax(0)
    sign = torch.sign(b[idx, torch.arange(n)])
    return b * torch.where(sign == 0, torch.ones_like(sign), sign)


def project(kernels: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Codes of raw kernels: ``kernels`` (..., k, k) or (..., k·k), ``basis`` (k·k, n) -> (..., n), Pᵀ·vec(k)
    (no mean subtraction, as the official MANet / DAN code)."""
    kk = basis.shape[0]
    flat = kernels.reshape(*kernels.shape[:-2], -1) if kernels.shape[-1] != kk else kernels
    if flat.shape[-1] != kk:
        raise BsrError(f"project: kernels have {flat.shape[-1]} taps, the basis {kk}")
    return flat @ basis.to(flat.dtype)


def gaussian_pca_basis(sigma_max: float, size: int, n: int, samples: int = 2000,
                       dtype=torch.float64) -> torch.Tensor:
    """A PCA basis (size², n) fitted on G_σ with σ evenly spaced over [0, σ_max] (``samples`` kernels).

    Evenly spaced σ, not random draws, so the basis is the same on every machine; the datasets' σ is
    distributed over [0, σ_max] (sigma_max 5 for NYUv2-BSR, 15 for Cityscapes-BSR).
    """
    if not sigma_max > 0:
        raise BsrError(f"gaussian_pca_basis: sigma_max must be > 0, got {sigma_max!r}")
    s = torch.linspace(0.0, float(sigma_max), int(samples), dtype=dtype)
    k = gaussian_kernels(s, size).reshape(int(samples), -1)
    return fit_pca(k, n)
