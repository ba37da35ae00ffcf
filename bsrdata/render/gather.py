"""Per-pixel ``gather`` operator (numba): out(p) = Σ_q G_σ(p)(p − q) I(q) / Σ_q G_σ(p)(p − q).

The window is fixed at max_coc × max_coc with mirrored borders (edge pixel included); the normalised
2-D kernel is the outer product of the normalised 1-D kernel, so the sum is evaluated row by row
(float32 dot products per row, float64 over rows; error ~1e-6). Taps below 1e-12 of the peak are skipped.
"""

from __future__ import annotations

import numpy as np

from bsrdata.optics import check_max_coc
from bsrdata.render.blur import _refl
from bsrdata.render.common import check_image, check_map, gaussian_kernel_1d, trimmed_radius
from bsrdata.render.kernel_cache import njit


@njit(cache=True, fastmath=True)
def _dot(g, off, row, x0, n):
    s = np.float32(0.0)
    for k in range(n):
        s += g[off + k] * row[x0 + k]
    return s


@njit(cache=True)
def _gather_kernel(planes, kidx, ktab, krad, step, out):
    """planes float32 (3,H,W); kidx int32 (h,w) kernel index at the sample points; ktab float32 (K, m);
    krad int64 (K,); out float32 (h,w,3) at pixels (i·step, j·step). Rows are float32 dot products
    (SIMD), accumulated over rows in float64."""
    hh, ww = planes.shape[1], planes.shape[2]
    r = ktab.shape[1] // 2
    for i in range(out.shape[0]):
        y = i * step
        for j in range(out.shape[1]):
            x = j * step
            ki = kidx[i, j]
            rt = krad[ki]
            if rt == 0:
                for ch in range(3):
                    out[i, j, ch] = planes[ch, y, x]
                continue
            g = ktab[ki]
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            inner = x - rt >= 0 and x + rt < ww
            for dy in range(-rt, rt + 1):
                yy = _refl(y + dy, hh)
                if inner:
                    t0 = _dot(g, r - rt, planes[0, yy], x - rt, 2 * rt + 1)
                    t1 = _dot(g, r - rt, planes[1, yy], x - rt, 2 * rt + 1)
                    t2 = _dot(g, r - rt, planes[2, yy], x - rt, 2 * rt + 1)
                else:
                    t0 = np.float32(0.0)
                    t1 = np.float32(0.0)
                    t2 = np.float32(0.0)
                    for dx in range(-rt, rt + 1):
                        xx = _refl(x + dx, ww)
                        gx = g[r + dx]
                        t0 += gx * planes[0, yy, xx]
                        t1 += gx * planes[1, yy, xx]
                        t2 += gx * planes[2, yy, xx]
                gy = float(g[r + dy])
                s0 += gy * t0
                s1 += gy * t1
                s2 += gy * t2
            out[i, j, 0] = s0
            out[i, j, 1] = s1
            out[i, j, 2] = s2


def _kernel_table(sig, m):
    uniq, inv = np.unique(sig, return_inverse=True)
    ktab = np.zeros((uniq.size, m), dtype=np.float32)
    krad = np.zeros(uniq.size, dtype=np.int64)
    for k, s in enumerate(uniq):
        ktab[k] = gaussian_kernel_1d(float(s), m)
        krad[k] = trimmed_radius(ktab[k])
    return ktab, krad, inv.reshape(sig.shape).astype(np.int32)


def render_gather_points(img, sigma, max_coc, step):
    """The gather result only at pixels (i·step, j·step): the fast path for ``direct`` downsampling.

    Args:
        img: float (H, W, 3) in [0, 1]. sigma: (H, W) σ px ≥ 0. max_coc: odd int ≥ 3. step: int ≥ 1.

    Returns:
        float32 (ceil(H/step), ceil(W/step), 3).
    """
    from bsrdata.errors import BsrError

    a = check_image(img)
    m = check_max_coc(max_coc)
    s = check_map(sigma, a.shape[:2], "sigma")
    if int(step) != step or step < 1:
        raise BsrError(f"step: must be an integer >= 1, got {step!r}")
    step = int(step)
    sp = s[::step, ::step]
    ktab, krad, kidx = _kernel_table(sp, m)
    out = np.empty(sp.shape + (3,), dtype=np.float32)
    planes = np.ascontiguousarray(a.transpose(2, 0, 1))
    _gather_kernel(planes, kidx, ktab, krad, np.int64(step), out)
    return out


def render_gather(img, sigma, max_coc):
    """Per-pixel normalised Gaussian of σ(p) in the fixed max_coc window, mirrored borders.

    Args:
        img: float (H, W, 3) in [0, 1]. sigma: (H, W) σ px ≥ 0. max_coc: odd int ≥ 3.

    Returns:
        float32 (H, W, 3).
    """
    return render_gather_points(img, sigma, max_coc, 1)
