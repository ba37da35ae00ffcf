"""Shared pieces of the blur operators: the kernel, input validation, layer ordering (numpy only)."""

from __future__ import annotations

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.optics import check_max_coc

ALPHA_FLOOR = 1e-4  # blurred layer mask below this is set to 0 (SYNDOF)
BAND_FLOOR = 1e-3  # blurred farther-layer mask below this is not part of the fill band (SYNDOF)
TAP_TRIM = 1e-12  # fast kernels drop taps below this fraction of the peak (relative error < 1e-10)


def gaussian_kernel_1d(sigma, max_coc):
    """Normalised 1-D Gaussian sampled in the fixed window.

    Args:
        sigma: σ in px (≥ 0). 0 gives a delta (no blur).
        max_coc: odd int ≥ 3, the window length.

    Returns:
        float64 (max_coc,), sums to 1, taps at offsets −r..r with r = (max_coc − 1) / 2.
    """
    m = check_max_coc(max_coc)
    s = float(sigma)
    if not np.isfinite(s) or s < 0:
        raise BsrError(f"sigma: must be finite and >= 0, got {sigma}")
    r = m // 2
    if s == 0.0:
        g = np.zeros(m, dtype=np.float64)
        g[r] = 1.0
        return g
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2.0 * s * s))
    return g / g.sum()


def trimmed_radius(g):
    """Half-width of ``g`` (odd, centred) after dropping taps below TAP_TRIM of the peak."""
    r = g.size // 2
    keep = np.nonzero(g >= TAP_TRIM * g.max())[0]
    return int(max(r - keep[0], keep[-1] - r))


def reflect_index(i, n):
    """Mirror index i into [0, n) including the edge pixel (OpenCV BORDER_REFLECT, MATLAB 'symmetric')."""
    p = 2 * n
    i = np.mod(i, p)
    return np.where(i >= n, p - 1 - i, i)


def check_image(img, name="img"):
    """(H, W, 3) float image -> float32 C-contiguous; BsrError otherwise."""
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise BsrError(f"{name}: expected an RGB image of shape (H, W, 3), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise BsrError(f"{name}: expected a float image in [0, 1], got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise BsrError(f"{name}: contains NaN or inf")
    return a


def check_map(x, shape, name):
    """(H, W) finite, ≥ 0 map matching the image size -> float64."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise BsrError(f"{name}: expected an (H, W) map, got shape {a.shape}")
    if a.shape != tuple(shape):
        raise BsrError(f"{name}: size {a.shape[0]}x{a.shape[1]} does not match the image {shape[0]}x{shape[1]}")
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise BsrError(f"{name}: must be finite and >= 0")
    return a


def check_near(near, shape):
    if near is None:
        return np.zeros(shape, dtype=bool)
    a = np.asarray(near)
    if a.shape != tuple(shape):
        raise BsrError(f"near: size {a.shape} does not match the image {tuple(shape)}")
    return a.astype(bool)


def layer_labels(coc, near, coc_step=0.1):
    """Group pixels into layers and order them far → near.

    A layer is the set of pixels with equal ``rint(c / coc_step)`` on the same side of the focal plane
    (``near`` True = in front of it). Behind focus, c grows with depth, so far → near is c descending;
    in front of focus it is c ascending; all behind-focus layers come first.

    Args:
        coc: float64 (H, W) CoC px (≥ 0). near: bool (H, W). coc_step: px.

    Returns:
        ``(labels, cidx, is_near)``: int32 (H, W) layer index in processing order; int64 (L,) the layer's
        rint(c / step); bool (L,).
    """
    q = np.rint(coc / float(coc_step)).astype(np.int64)
    off = int(q.max()) + 1
    # far side: key = -q in [-qmax, 0]; near side: key = q + off in [off, off + qmax]; ascending = far -> near
    key = np.where(near, q + off, -q)
    uniq, inv = np.unique(key.ravel(), return_inverse=True)
    labels = inv.reshape(coc.shape).astype(np.int32)
    is_near = uniq > 0
    cidx = np.where(is_near, uniq - off, -uniq)
    return labels, cidx.astype(np.int64), is_near


def count_layers(coc, near=None, coc_step=0.1):
    """Number of layers ``render_layered`` would composite for this CoC map (int)."""
    c = np.asarray(coc, dtype=np.float64)
    q = np.rint(c / float(coc_step)).astype(np.int64)
    n = check_near(near, c.shape)
    return int(np.unique(q[~n]).size + np.unique(q[n]).size)
