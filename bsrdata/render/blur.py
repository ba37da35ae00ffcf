"""Blur and compositing kernels of ``render_layered`` (numba): per layer, the separable Gaussian of the
layer's colour and mask (α_i = G_i * m_i, C_i = G_i * (I·m_i), fixed max_coc window, mirrored borders),
``merged = (1 − α_i)·merged + C_i``, ``acc = (1 − α_i)·acc + α_i``, and the normalisation merged/acc
before a fill.

The horizontal pass scatters only the layer's own pixels; the vertical pass and the compositing run only on
the 8×8 tiles the blurred layer touches (α = C = 0 elsewhere leaves merged unchanged); normalisation
touches only tiles changed since the previous one. Work is shared out between numba's threads so that
every sum keeps its order (bit-identical output for any thread count). Arrays: img float32 (H, W, 3);
hb, vb float32 (H, W, 4) scratch (colour, mask), zero between layers; merged float64 (H, W, 3), acc
float64 (H, W); tile marks uint8 (nty, ntx) with their int64 lists of flat tile indices ty·ntx + tx.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from bsrdata.render.kernel_cache import njit

TILE = 8
PAR_MIN_TILES = 16  # fewer tiles than this: one thread (a parallel launch costs a few µs)
PAR_MIN_PIXELS = 2048  # the same for per-pixel loops
# Loops shared out between threads come as three functions: X_range(k0, k1, ...) does items k0..k1-1,
# X_par runs it on contiguous chunks in a prange, X(..., nchunk) picks one (nchunk = 1: no thread pool).
# One generic chunker taking X_range as an argument would do, but numba cannot cache a function that
# takes another jitted function as an argument (every process would recompile), so each X has its own.



@njit(cache=True, inline="always")
def _refl(i, n):
    p = 2 * n
    i = i % p
    if i < 0:
        i += p
    if i >= n:
        i = p - 1 - i
    return i


BLUR_PAR_MIN = 16  # fewer touched tiles than this: the blur kernels run on one thread
BLUR_CHUNKS = 32  # the scatter passes' work items (whole rows / tile columns; static split between threads)


@njit(cache=True)
def _hscatter(img, pix, n_w, g, r, rt, hb, hmark, hlist, nh, nthreads):
    """Horizontal pass: scatter each layer pixel (and 1 for the mask) along its row into hb (H,W,4).

    Every hb row receives only its own row's pixels, in pix (raster) order, so the rows can be split
    between threads (at row boundaries of pix) without changing any sum: the result is the same for any
    number of threads. The touched 8×8 tiles are marked first, serially, in the one-thread order."""
    nh0 = nh
    nh = _hmark(pix, n_w, rt, hmark, hlist, nh)
    if nthreads < 2 or nh - nh0 < BLUR_PAR_MIN:  # small layer: one thread
        _hscatter_rows(img, pix, 0, pix.shape[0], n_w, g, r, rt, hb)
    else:
        _hscatter_par(img, pix, n_w, g, r, rt, hb, BLUR_CHUNKS)
    return nh


@njit(cache=True)
def _hmark(pix, n_w, rt, hmark, hlist, nh):
    """Mark (hmark, hlist) the tiles that the horizontal pass of the pixels pix touches."""
    mm = rt // (2 * n_w) + 1
    ntx = hmark.shape[1]
    for q in range(pix.shape[0]):
        p = pix[q]
        y = p // n_w
        x = p - y * n_w
        ty = y // TILE
        for k in range(-mm, mm + 1):
            for fam in range(2):
                if fam == 0:
                    j = x + 2 * n_w * k
                else:
                    j = 2 * n_w * k - 1 - x
                if j < -rt or j > n_w - 1 + rt:
                    continue
                t0 = max(0, j - rt)
                t1 = min(n_w - 1, j + rt)
                for tx in range(t0 // TILE, t1 // TILE + 1):
                    if hmark[ty, tx] == 0:
                        hmark[ty, tx] = 1
                        hlist[nh] = ty * ntx + tx
                        nh += 1
    return nh


@njit(cache=True, inline="always")
def _hscatter_rows(img, pix, q0, q1, n_w, g, r, rt, hb):
    """The sums of the horizontal pass for the pixels pix[q0:q1], in order."""
    mm = rt // (2 * n_w) + 1
    for q in range(q0, q1):
        p = pix[q]
        y = p // n_w
        x = p - y * n_w
        v0 = img[y, x, 0]
        v1 = img[y, x, 1]
        v2 = img[y, x, 2]
        # virtual source positions j with refl(j) == x inside [-rt, W - 1 + rt]
        for k in range(-mm, mm + 1):
            for fam in range(2):
                if fam == 0:
                    j = x + 2 * n_w * k
                else:
                    j = 2 * n_w * k - 1 - x
                if j < -rt or j > n_w - 1 + rt:
                    continue
                t0 = max(0, j - rt)
                t1 = min(n_w - 1, j + rt)
                for t in range(t0, t1 + 1):
                    w = g[r + j - t]
                    hb[y, t, 0] += w * v0
                    hb[y, t, 1] += w * v1
                    hb[y, t, 2] += w * v2
                    hb[y, t, 3] += w


@njit(cache=True, inline="always")
def _row_start(pix, q, n_w):
    """The first index of pix (sorted) in the row of pix[q] (len(pix) for q = len(pix))."""
    n = pix.shape[0]
    if q >= n:
        return n
    return np.searchsorted(pix, (pix[q] // n_w) * n_w)


@njit(cache=True, parallel=True)
def _hscatter_par(img, pix, n_w, g, r, rt, hb, nc):
    """_hscatter_rows over nc chunks of about equal pixel count, cut at row boundaries (whole rows)."""
    n = pix.shape[0]
    for c in prange(nc):
        q0 = _row_start(pix, c * n // nc, n_w)
        q1 = _row_start(pix, (c + 1) * n // nc, n_w)
        _hscatter_rows(img, pix, q0, q1, n_w, g, r, rt, hb)


@njit(cache=True)
def _vscatter(hb, g, r, rt, hlist, nh, hmark, vb, vmark, vlist, nv, vwork, nthreads):
    """Vertical pass: scatter the touched rows of hb along columns into vb; clear hb and its marks.

    Every vb element receives only terms from its own tile column, taken in hlist order: the touched
    tiles are grouped by tile column (stable, so hlist order within a column) and the columns shared out
    between threads, so the sums are the same for any number of threads. ``vwork`` is a tuple of scratch
    arrays (ccnt, cstart, srt, vlo, vhi); ccnt must be all zero on entry (and is left so)."""
    ntx = hmark.shape[1]
    if nthreads < 2 or nh < BLUR_PAR_MIN:
        for q in range(nh):
            nv, _, _ = _vscatter_tile(hb, g, r, rt, hlist[q], hmark, vb, vmark, vlist, nv, 0, 0, True)
        return nv
    ccnt, cstart, srt, vlo, vhi = vwork
    for q in range(nh):  # stable counting sort of hlist by tile column
        ccnt[hlist[q] % ntx] += 1
    s = 0
    for tx in range(ntx):
        cstart[tx] = s
        s += ccnt[tx]
        ccnt[tx] = cstart[tx]
    for q in range(nh):
        tx = hlist[q] % ntx
        srt[ccnt[tx]] = hlist[q]
        ccnt[tx] += 1
    _vscatter_par(hb, g, r, rt, srt, nh, cstart, ccnt, hmark, vb, vmark, vlo, vhi, BLUR_CHUNKS)
    for tx in range(ntx):
        if ccnt[tx] > cstart[tx]:
            for ty in range(vlo[tx], vhi[tx] + 1):
                if vmark[ty, tx] != 0:
                    vlist[nv] = ty * ntx + tx
                    nv += 1
        ccnt[tx] = 0
    return nv


@njit(cache=True, parallel=True)
def _vscatter_par(hb, g, r, rt, srt, nh, cstart, cend, hmark, vb, vmark, vlo, vhi, nc):
    """The vertical pass of the tiles srt[:nh] (sorted by tile column) over nc chunks of about equal tile
    count, cut at column boundaries (whole columns); marks vmark only and the range of its newly marked
    tile rows in vlo/vhi[tx]."""
    ntx = hmark.shape[1]
    for c in prange(nc):
        q0 = nh
        if c * nh // nc < nh:
            q0 = cstart[srt[c * nh // nc] % ntx]
        q1 = nh
        if (c + 1) * nh // nc < nh:
            q1 = cstart[srt[(c + 1) * nh // nc] % ntx]
        q = q0
        while q < q1:
            tx = srt[q] % ntx
            lo = vmark.shape[0]
            hi = -1
            for qq in range(q, cend[tx]):
                _, lo, hi = _vscatter_tile(hb, g, r, rt, srt[qq], hmark, vb, vmark, srt, 0, lo, hi, False)
            vlo[tx] = lo
            vhi[tx] = hi
            q = cend[tx]


@njit(cache=True, inline="always")
def _vscatter_tile(hb, g, r, rt, t, hmark, vb, vmark, vlist, nv, lo, hi, serial):
    """The vertical pass of the tile t = ty·ntx + tx; returns (nv, lo, hi): newly marked tiles are
    appended to vlist (serial only; nv the new count), lo..hi widened to the newly marked tile rows."""
    n_h = hb.shape[0]
    n_w = hb.shape[1]
    ntx = hmark.shape[1]
    mm = rt // (2 * n_h) + 1
    ty = t // ntx
    tx = t - ty * ntx
    hmark[ty, tx] = 0
    x0 = tx * TILE
    x1 = min(n_w, x0 + TILE)
    for y in range(ty * TILE, min(n_h, ty * TILE + TILE)):
        nz = False
        for x in range(x0, x1):
            if hb[y, x, 3] != 0.0:
                nz = True
                break
        if not nz:
            continue
        for k in range(-mm, mm + 1):
            for fam in range(2):
                if fam == 0:
                    j = y + 2 * n_h * k
                else:
                    j = 2 * n_h * k - 1 - y
                if j < -rt or j > n_h - 1 + rt:
                    continue
                t0 = max(0, j - rt)
                t1 = min(n_h - 1, j + rt)
                for tt in range(t0, t1 + 1):
                    w = g[r + j - tt]
                    for x in range(x0, x1):
                        vb[tt, x, 0] += w * hb[y, x, 0]
                        vb[tt, x, 1] += w * hb[y, x, 1]
                        vb[tt, x, 2] += w * hb[y, x, 2]
                        vb[tt, x, 3] += w * hb[y, x, 3]
                for tyy in range(t0 // TILE, t1 // TILE + 1):
                    if vmark[tyy, tx] == 0:
                        vmark[tyy, tx] = 1
                        lo = min(lo, tyy)
                        hi = max(hi, tyy)
                        if serial:
                            vlist[nv] = tyy * ntx + tx
                            nv += 1
        for x in range(x0, x1):
            for c in range(4):
                hb[y, x, c] = 0.0
    return nv, lo, hi


@njit(cache=True)
def _mark(marks, lst, n, t):
    ty = t // marks.shape[1]
    tx = t - ty * marks.shape[1]
    if marks[ty, tx] == 0:
        marks[ty, tx] = 1
        lst[n] = t
        n += 1
    return n


@njit(cache=True, inline="always")
def _composite_tile(vb, t, vmark, merged, acc, floor_colour, alpha_floor):
    n_h = vb.shape[0]
    n_w = vb.shape[1]
    ntx = vmark.shape[1]
    ty = t // ntx
    tx = t - ty * ntx
    vmark[ty, tx] = 0
    for y in range(ty * TILE, min(n_h, ty * TILE + TILE)):
        for x in range(tx * TILE, min(n_w, tx * TILE + TILE)):
            a = float(vb[y, x, 3])
            c0 = float(vb[y, x, 0])
            c1 = float(vb[y, x, 1])
            c2 = float(vb[y, x, 2])
            if a < alpha_floor:
                a = 0.0
                if floor_colour:
                    c0 = 0.0
                    c1 = 0.0
                    c2 = 0.0
            om = 1.0 - a
            merged[y, x, 0] = om * merged[y, x, 0] + c0
            merged[y, x, 1] = om * merged[y, x, 1] + c1
            merged[y, x, 2] = om * merged[y, x, 2] + c2
            acc[y, x] = om * acc[y, x] + a
            for c in range(4):
                vb[y, x, c] = 0.0


@njit(cache=True, parallel=True)
def _composite_par(vb, vlist, nv, vmark, merged, acc, floor_colour, alpha_floor):
    for q in prange(nv):
        _composite_tile(vb, vlist[q], vmark, merged, acc, floor_colour, alpha_floor)


@njit(cache=True)
def _composite(vb, vlist, nv, vmark, merged, acc, floor_colour, alpha_floor, dmark, dlist, nd, nthreads):
    """merged = (1-α) merged + C, acc = (1-α) acc + α on the touched tiles; clears vb and its marks.
    Every tile on its own: the tiles are shared out between threads (the dirty marks first, serially)."""
    for q in range(nv):
        nd = _mark(dmark, dlist, nd, vlist[q])
    if nthreads > 1 and nv >= BLUR_PAR_MIN:
        _composite_par(vb, vlist, nv, vmark, merged, acc, floor_colour, alpha_floor)
    else:
        for q in range(nv):
            _composite_tile(vb, vlist[q], vmark, merged, acc, floor_colour, alpha_floor)
    return nd


@njit(cache=True, inline="always")
def _normalise_tile(merged, acc, t, dmark):
    n_h = acc.shape[0]
    n_w = acc.shape[1]
    ntx = dmark.shape[1]
    ty = t // ntx
    tx = t - ty * ntx
    dmark[ty, tx] = 0
    for y in range(ty * TILE, min(n_h, ty * TILE + TILE)):
        for x in range(tx * TILE, min(n_w, tx * TILE + TILE)):
            a = acc[y, x]
            if a > 0.0:
                merged[y, x, 0] /= a
                merged[y, x, 1] /= a
                merged[y, x, 2] /= a
                acc[y, x] = 1.0


@njit(cache=True, parallel=True)
def _normalise_par(merged, acc, dmark, dlist, nd):
    for q in prange(nd):
        _normalise_tile(merged, acc, dlist[q], dmark)


@njit(cache=True)
def _normalise(merged, acc, dmark, dlist, nd, nthreads):
    """merged /= acc, acc = 1 where acc > 0, on the tiles changed since the last normalisation (every
    tile on its own: shared out between threads)."""
    if nthreads > 1 and nd >= BLUR_PAR_MIN:
        _normalise_par(merged, acc, dmark, dlist, nd)
    else:
        for q in range(nd):
            _normalise_tile(merged, acc, dlist[q], dmark)
    return 0
