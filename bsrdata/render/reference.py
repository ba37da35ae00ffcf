"""Slow, plain numpy float64 twins of the numba operators: the test reference.

Written for obviousness, not speed: every layer is blurred over the full frame, every fill is a sparse
direct solve over the whole band. Use on small images (tests) only.

- :func:`layered_reference`: SYNDOF layered rendering (docs/render.md) (numpy blur).
- :func:`layered_opencv`: the same algorithm with OpenCV's full-frame blur per layer; the "straightforward
  implementation" the benchmark compares against.
- :func:`gather_reference`, :func:`gather_points_reference`: per-pixel normalised Gaussian.
- :func:`laplace_fill`: MATLAB-regionfill-style Laplace interpolation (sparse direct solve).
"""

from __future__ import annotations

import numpy as np

from bsrdata.optics import check_max_coc
from bsrdata.render.common import (
    ALPHA_FLOOR,
    BAND_FLOOR,
    check_image,
    check_map,
    check_near,
    gaussian_kernel_1d,
    layer_labels,
    reflect_index,
)


def blur_separable(x, g):
    """Convolve (H, W) or (H, W, C) float64 ``x`` with g ⊗ g, mirrored borders (edge pixel included)."""
    x = np.asarray(x, dtype=np.float64)
    r = g.size // 2
    h, w = x.shape[:2]
    xi = reflect_index(np.arange(-r, w + r), w)
    xp = x[:, xi]
    t = sum(g[k] * xp[:, k:k + w] for k in range(g.size))
    yi = reflect_index(np.arange(-r, h + r), h)
    tp = t[yi]
    return sum(g[k] * tp[k:k + h] for k in range(g.size))


def laplace_fill(values, region):
    """Fill ``values`` inside ``region`` by the discrete Laplace equation.

    Each region pixel equals the mean of its 4-neighbours that lie inside the image (so the image border
    acts as a mirror); pixels outside the region are fixed (Dirichlet data). Solved exactly (sparse LU).

    Args:
        values: float64 (H, W, K). region: bool (H, W).

    Returns:
        float64 (H, W, K): ``values`` with the region replaced.
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    h, w = region.shape
    out = np.array(values, dtype=np.float64, copy=True)
    ys, xs = np.nonzero(region)
    n = ys.size
    if n == 0:
        return out
    index = -np.ones((h, w), dtype=np.int64)
    index[ys, xs] = np.arange(n)
    rows, cols, vals = [], [], []
    rhs = np.zeros((n, out.shape[2]))
    deg = np.zeros(n)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        yy, xx = ys + dy, xs + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        deg += inside
        k = np.nonzero(inside)[0]
        nb = index[yy[k], xx[k]]
        unk = nb >= 0
        rows.append(k[unk])
        cols.append(nb[unk])
        vals.append(-np.ones(int(unk.sum())))
        kn = k[~unk]
        rhs[kn] += out[yy[kn], xx[kn]]
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(deg)
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    sol = spla.splu(a).solve(rhs)
    out[ys, xs] = sol
    return out


def _layered(img, coc, max_coc, near, floor_colour, coc_step, blur):
    img = check_image(img).astype(np.float64)
    h, w = img.shape[:2]
    m_coc = check_max_coc(max_coc)
    coc = check_map(coc, (h, w), "coc")
    near = check_near(near, (h, w))
    labels, cidx, _ = layer_labels(coc, near, coc_step)
    merged = np.zeros((h, w, 3))
    acc = np.zeros((h, w))
    farther = np.zeros((h, w), dtype=bool)
    seen_focus = False
    for li in range(cidx.size):
        m = labels == li
        c = cidx[li] * float(coc_step)
        sigma = max(0.0, (c - 1.0) / 4.0)
        mf = m.astype(np.float64)
        if sigma == 0.0:
            a = mf
            col = img * mf[..., None]
        else:
            g = gaussian_kernel_1d(sigma, m_coc)
            a = blur(mf, g)
            col = blur(img * mf[..., None], g)
        low = a < ALPHA_FLOOR
        a = np.where(low, 0.0, a)
        if floor_colour:
            col = np.where(low[..., None], 0.0, col)
        if seen_focus and sigma > 0.0:
            b = blur(farther.astype(np.float64), g)
            b[b < BAND_FLOOR] = 0.0
            band = (b > 0) & ~farther
            accd = np.where(acc > 0, acc, 1.0)
            bg = merged / accd[..., None]
            bg[~farther] = 0.0
            merged = merged / accd[..., None]
            acc = np.where(acc > 0, 1.0, 0.0)
            if band.any():
                vals = np.concatenate([bg, farther[..., None].astype(np.float64)], axis=2)
                filled = laplace_fill(vals, band)
                merged[band] = filled[band][:, :3]
                acc[band] = filled[band][:, 3]
        merged = (1.0 - a)[..., None] * merged + col
        acc = (1.0 - a) * acc + a
        farther |= m
        if sigma == 0.0:
            seen_focus = True
    out = merged / np.where(acc > 0, acc, 1.0)[..., None]
    out[acc <= 0] = 0.0
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def layered_reference(img, coc, max_coc, *, near=None, floor_colour=False, coc_step=0.1):
    """SYNDOF layered rendering (docs/render.md) in plain numpy float64 (see ``bsrdata.render.render_layered``)."""
    return _layered(img, coc, max_coc, near, floor_colour, coc_step, blur_separable)


def _blur_cv2(x, g):
    import cv2

    x32 = np.asarray(x, dtype=np.float32)
    k = g.astype(np.float32)
    return cv2.sepFilter2D(x32, cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT).astype(np.float64)


def layered_opencv(img, coc, max_coc, *, near=None, floor_colour=False, coc_step=0.1):
    """The straightforward implementation: the same algorithm with a full-frame OpenCV blur per layer."""
    return _layered(img, coc, max_coc, near, floor_colour, coc_step, _blur_cv2)


def gather_reference(img, sigma, max_coc):
    """Per-pixel normalised Gaussian (fixed window, mirrored borders), float64 twin.

    Pixels sharing a σ are taken from one full-frame blur with that σ.
    """
    img = check_image(img).astype(np.float64)
    h, w = img.shape[:2]
    m = check_max_coc(max_coc)
    sigma = check_map(sigma, (h, w), "sigma")
    out = np.zeros_like(img)
    for s in np.unique(sigma):
        sel = sigma == s
        out[sel] = blur_separable(img, gaussian_kernel_1d(s, m))[sel]
    return out.astype(np.float32)


def gather_points_reference(img, sigma, max_coc, step):
    """:func:`gather_reference` subsampled at (i·step, j·step)."""
    return gather_reference(img, sigma, max_coc)[::step, ::step]
