"""Per-pixel ``gather`` operator (numba): out(p) = Σ_q G_σ(p)(p − q) I(q) / Σ_q G_σ(p)(p − q).

The window is fixed at max_coc × max_coc with mirrored borders (edge pixel included); the normalised
2-D kernel is the outer product of the normalised 1-D kernel, so the sum is evaluated row by row.
Taps below 1e-12 of the peak are skipped (relative error < 1e-10).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bsrdata.optics import check_max_coc
from bsrdata.render.common import check_image, check_map, gaussian_kernel_1d, trimmed_radius


@njit(cache=True, inline="always")
def _refl(i, n):
    p = 2 * n
    i = i % p
    if i < 0:
        i += p
    if i >= n:
        i = p - 1 - i
    return i


@njit(cache=True)
def _gather_kernel(img, kidx, ktab, krad, step, out):
    """img float32 (H,W,3); kidx int32 (h,w) kernel index at the sample points; ktab float64 (K, m);
    krad int64 (K,); out float32 (h,w,3) at pixels (i·step, j·step)."""
    hh, ww = img.shape[0], img.shape[1]
    r = ktab.shape[1] // 2
    for i in range(out.shape[0]):
        y = i * step
        for j in range(out.shape[1]):
            x = j * step
            ki = kidx[i, j]
            rt = krad[ki]
            if rt == 0:
                for ch in range(3):
                    out[i, j, ch] = img[y, x, ch]
                continue
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            inner = x - rt >= 0 and x + rt < ww
            for dy in range(-rt, rt + 1):
                yy = _refl(y + dy, hh)
                t0 = 0.0
                t1 = 0.0
                t2 = 0.0
                if inner:
                    for dx in range(-rt, rt + 1):
                        gx = ktab[ki, r + dx]
                        t0 += gx * img[yy, x + dx, 0]
                        t1 += gx * img[yy, x + dx, 1]
                        t2 += gx * img[yy, x + dx, 2]
                else:
                    for dx in range(-rt, rt + 1):
                        xx = _refl(x + dx, ww)
                        gx = ktab[ki, r + dx]
                        t0 += gx * img[yy, xx, 0]
                        t1 += gx * img[yy, xx, 1]
                        t2 += gx * img[yy, xx, 2]
                gy = ktab[ki, r + dy]
                s0 += gy * t0
                s1 += gy * t1
                s2 += gy * t2
            out[i, j, 0] = s0
            out[i, j, 1] = s1
            out[i, j, 2] = s2


def _kernel_table(sig, m):
    uniq, inv = np.unique(sig, return_inverse=True)
    ktab = np.zeros((uniq.size, m), dtype=np.float64)
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
    _gather_kernel(a, kidx, ktab, krad, np.int64(step), out)
    return out


def render_gather(img, sigma, max_coc):
    """Per-pixel normalised Gaussian of σ(p) in the fixed max_coc window, mirrored borders.

    Args:
        img: float (H, W, 3) in [0, 1]. sigma: (H, W) σ px ≥ 0. max_coc: odd int ≥ 3.

    Returns:
        float32 (H, W, 3).
    """
    return render_gather_points(img, sigma, max_coc, 1)
