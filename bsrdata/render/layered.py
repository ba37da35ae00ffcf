"""Layered (SYNDOF) defocus rendering, numba (FACTS §2; twin: ``reference.layered_reference``).

Algorithm, far → near over layers (pixels with equal rounded CoC on one side of the focal plane)::

    α_i = G_i * m_i,  C_i = G_i * (I · m_i)      (fixed max_coc window, mirrored borders; c ≤ 1: no blur)
    α_i[α_i < 1e-4] = 0                          (floor_colour=True: C_i also 0 there)
    [partial-occlusion fill, for blurred layers after the first in-focus layer]
    merged = (1 − α_i) merged + C_i,  acc = (1 − α_i) acc + α_i
    image = clip(merged / acc, 0, 1)

The fill (for layer i in front of focus): P = union of farther masks, B = G_i * P floored at 1e-3,
band = (B > 0) & (P ≠ 1); merged and acc are normalised everywhere (merged/acc, acc → 1 where > 0); inside
the band the background bg (= merged/acc on P, 0 elsewhere) and P are Laplace-filled from the band's
border (4-neighbours inside the image; :func:`reference.laplace_fill`) and written to merged and acc.

Speed-ups (the same result up to float rounding, except the fill's iterative-solver tolerance: ≤ 3e-5
against the twin on the bench frames, budget 1e-4): taps below 1e-12 of the peak are dropped; the
horizontal pass scatters only the layer's own pixels; the vertical pass and compositing run only on 8×8
tiles the blurred layer touches (α = C = 0 elsewhere leaves merged unchanged); normalisation touches only
tiles changed since the previous normalisation (elsewhere acc is already 0 or 1); B is evaluated only on
tiles within the distance where it can still reach 1e-3, as in-order tap sums over a mirrored float plane
of P, eight pixels at a time (horizontal sums shared by vertically neighbouring tiles, rows whose window
is all uncovered or all covered skipped); the fill is solved only on the band, warm-started from the
previous fill, by red-black SOR (float32, ω per layer from the band radius) swept only over the 8×8 tiles
that still move and their neighbours, until a sweep over the whole band finds no Gauss-Seidel correction
above 1e-5 (about 3e-5 in the output). The band search, the fill's set-up and half-sweeps and the blur
passes run on numba's threads, split so that every sum keeps its order: the output is bit-identical for
any thread count (``threads=1`` never starts the pool). The multigrid-preconditioned CG
(fill_solver="mg") is kept for comparison.

All kernels live in this one file on purpose: numba's on-disk cache (cache=True) only notices edits to
the file of the function it compiled, so a helper in another module could leave a stale kernel behind.
"""

from __future__ import annotations

import numpy as np
import numba
from numba import njit, prange

from bsrdata.errors import BsrError
from bsrdata.optics import check_max_coc
from bsrdata.render.common import (
    ALPHA_FLOOR,
    BAND_FLOOR,
    check_image,
    check_map,
    check_near,
    TAP_TRIM,
)

TILE = 8
PAR_MIN_TILES = 16  # fewer tiles than this: one thread (a parallel launch costs a few µs)
PAR_MIN_PIXELS = 2048  # the same for per-pixel loops
# Loops shared out between threads come as three functions: X_range(k0, k1, ...) does items k0..k1-1,
# X_par runs it on contiguous chunks in a prange, X(..., nchunk) picks one (nchunk = 1: no thread pool).
# One generic chunker taking X_range as an argument would do, but numba cannot cache a function that
# takes another jitted function as an argument (every process would recompile), so each X has its own.
FILL_TOL_SOR = 1e-5  # SOR stops when the largest Gauss-Seidel correction is below this


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


@njit(cache=True)
def _set_covered(pf, r, y, x):
    """Mark pixel (y, x) as covered in the mirrored float plane pf (H, W + 2r): pf[y, j + r] = 1 for every
    j in [-r, W - 1 + r] with refl(j) == x."""
    n_w = pf.shape[1] - 2 * r
    mm = r // (2 * n_w) + 1
    for k in range(-mm, mm + 1):
        j = x + 2 * n_w * k
        if -r <= j <= n_w - 1 + r:
            pf[y, j + r] = 1.0
        j = 2 * n_w * k - 1 - x
        if -r <= j <= n_w - 1 + r:
            pf[y, j + r] = 1.0


@njit(cache=True, inline="always")
def _dot8(src, y, xb, g, r, rt, i0):
    """Eight in-order tap sums Σ_{d=-rt..rt} g[r+d]·src[y + i0·d, xb + k + (1 - i0)·d], k = 0..7, in eight
    independent accumulators (i0 = 0: along the row; i0 = 1: down the column, y already the first row)."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    s5 = 0.0
    s6 = 0.0
    s7 = 0.0
    for d in range(-rt, rt + 1):
        w = g[r + d]
        yy = y + i0 * d
        xx = xb + (1 - i0) * d
        s0 += w * src[yy, xx]
        s1 += w * src[yy, xx + 1]
        s2 += w * src[yy, xx + 2]
        s3 += w * src[yy, xx + 3]
        s4 += w * src[yy, xx + 4]
        s5 += w * src[yy, xx + 5]
        s6 += w * src[yy, xx + 6]
        s7 += w * src[yy, xx + 7]
    return s0, s1, s2, s3, s4, s5, s6, s7


@njit(cache=True)
def _hsum_tiles_range(k0, k1, pf, rowcnt, r, g, rt, gsum, hlist, nh, ntx, hsum):
    """hsum[y, x] = Σ_{d=-rt..rt} g[r+d]·P[y, refl(x+d)] on the tiles hlist[:nh] (pf: the mirrored float
    plane of P). Terms in the order of d, so the value equals the sparse sum over covered pixels. Rows whose
    window lies in tile columns with no covered pixel (``rowcnt`` (H, ntx): covered pixels per row and
    tile column) are 0; rows whose window lies in fully covered tile columns are gsum."""
    n_h = hsum.shape[0]
    n_w = hsum.shape[1]
    ht = (rt + TILE - 1) // TILE
    for q in range(k0, k1):
        ty = hlist[q] // ntx
        tx = hlist[q] - ty * ntx
        x0 = tx * TILE
        x1 = min(n_w, x0 + TILE)
        c0 = max(0, tx - ht)
        c1 = min(ntx, tx + ht + 1)
        span = min(n_w, c1 * TILE) - c0 * TILE
        exact_test = n_w > 2 * rt + TILE  # a single mirror at each side: the window stays in [c0, c1)
        for y in range(ty * TILE, min(n_h, ty * TILE + TILE)):
            if exact_test:
                cnt = 0
                for c in range(c0, c1):
                    cnt += rowcnt[y, c]
                if cnt == 0:
                    for x in range(x0, x1):
                        hsum[y, x] = 0.0
                    continue
                if cnt == span:
                    for x in range(x0, x1):
                        hsum[y, x] = gsum
                    continue
            if x1 - x0 == TILE:
                s0, s1, s2, s3, s4, s5, s6, s7 = _dot8(pf, y, x0 + r, g, r, rt, 0)
                hsum[y, x0] = s0
                hsum[y, x0 + 1] = s1
                hsum[y, x0 + 2] = s2
                hsum[y, x0 + 3] = s3
                hsum[y, x0 + 4] = s4
                hsum[y, x0 + 5] = s5
                hsum[y, x0 + 6] = s6
                hsum[y, x0 + 7] = s7
            else:
                for x in range(x0, x1):
                    sm = 0.0
                    for d in range(-rt, rt + 1):
                        sm += g[r + d] * pf[y, x + r + d]
                    hsum[y, x] = sm


@njit(cache=True, parallel=True)
def _hsum_tiles_par(nchunk, pf, rowcnt, r, g, rt, gsum, hlist, nh, ntx, hsum):
    for c in prange(nchunk):
        _hsum_tiles_range(c * nh // nchunk, (c + 1) * nh // nchunk, pf, rowcnt, r, g, rt, gsum, hlist, nh, ntx, hsum)


@njit(cache=True)
def _hsum_tiles(pf, rowcnt, r, g, rt, gsum, hlist, nh, ntx, hsum, nchunk):
    """_hsum_tiles_range over all items, in nchunk contiguous chunks on the numba threads (1: here)."""
    if nchunk > 1:
        _hsum_tiles_par(nchunk, pf, rowcnt, r, g, rt, gsum, hlist, nh, ntx, hsum)
    else:
        _hsum_tiles_range(0, nh, pf, rowcnt, r, g, rt, gsum, hlist, nh, ntx, hsum)



@njit(cache=True)
def _vsum_tiles_range(k0, k1, pm, hsum, g, r, rt, band_floor, clist, nc, ntx, slots, nred, nblk):
    """For the candidate tiles clist[:nc]: the pixels with P = 0 and Σ_d g[r+d]·hsum[refl(y+d), x] ≥ floor,
    as flat indices in slots[k·TILE², ...]: red ((y + x) even) first (nred[k]), then black (nblk[k]), each
    in raster order."""
    n_h = pm.shape[0]
    n_w = pm.shape[1]
    for k in range(k0, k1):
        ty = clist[k] // ntx
        tx = clist[k] - ty * ntx
        x0 = tx * TILE
        x1 = min(n_w, x0 + TILE)
        base = k * TILE * TILE
        nr = 0
        nbk = 0
        for y in range(ty * TILE, min(n_h, ty * TILE + TILE)):
            # bit x - x0 of m: B ≥ floor at (y, x)
            if x1 - x0 == TILE and y - rt >= 0 and y + rt < n_h:
                s0, s1, s2, s3, s4, s5, s6, s7 = _dot8(hsum, y, x0, g, r, rt, 1)
                m = ((s0 >= band_floor) | ((s1 >= band_floor) << 1) | ((s2 >= band_floor) << 2)
                     | ((s3 >= band_floor) << 3) | ((s4 >= band_floor) << 4) | ((s5 >= band_floor) << 5)
                     | ((s6 >= band_floor) << 6) | ((s7 >= band_floor) << 7))
            else:
                m = 0
                for x in range(x0, x1):
                    sm = 0.0
                    for d in range(-rt, rt + 1):
                        yy = y + d
                        if yy < 0 or yy >= n_h:
                            yy = _refl(yy, n_h)
                        sm += g[r + d] * hsum[yy, x]
                    if sm >= band_floor:
                        m |= 1 << (x - x0)
            # written out here rather than in a helper: an inlined helper returning (nr, nbk) made this
            # function ~4x slower (measured)
            for x in range(x0, x1):
                if (m >> (x - x0)) & 1 and pm[y, x] == 0:
                    if ((y + x) & 1) == 0:  # red from the front
                        slots[base + nr] = y * n_w + x
                        nr += 1
                    else:  # black from the back (reversed)
                        slots[base + TILE * TILE - 1 - nbk] = y * n_w + x
                        nbk += 1
        # black pixels: from the back (reversed) to right after the red ones, in raster order
        lo = base + TILE * TILE - nbk
        hi = base + TILE * TILE - 1
        while lo < hi:
            t = slots[lo]
            slots[lo] = slots[hi]
            slots[hi] = t
            lo += 1
            hi -= 1
        for j in range(nbk):  # destination before source: a forward copy is safe
            slots[base + nr + j] = slots[base + TILE * TILE - nbk + j]
        nred[k] = nr
        nblk[k] = nbk


@njit(cache=True, parallel=True)
def _vsum_tiles_par(nchunk, pm, hsum, g, r, rt, band_floor, clist, nc, ntx, slots, nred, nblk):
    for c in prange(nchunk):
        _vsum_tiles_range(c * nc // nchunk, (c + 1) * nc // nchunk, pm, hsum, g, r, rt, band_floor, clist, nc,
                          ntx, slots, nred, nblk)


@njit(cache=True)
def _vsum_tiles(pm, hsum, g, r, rt, band_floor, clist, nc, ntx, slots, nred, nblk, nchunk):
    """_vsum_tiles_range over all items, in nchunk contiguous chunks on the numba threads (1: here)."""
    if nchunk > 1:
        _vsum_tiles_par(nchunk, pm, hsum, g, r, rt, band_floor, clist, nc, ntx, slots, nred, nblk)
    else:
        _vsum_tiles_range(0, nc, pm, hsum, g, r, rt, band_floor, clist, nc, ntx, slots, nred, nblk)



@njit(cache=True)
def _find_band(pm, pf, rowcnt, cnt_p, cbox, tile_area, g, r, rt, rb, band_floor, hsum, hflag, band, gs0, gmid,
               gt, work, nthreads):
    """Pixels with P = 0 and (G * P) ≥ band_floor, as flat indices in band; returns (count, tiles).

    The band is listed tile by tile (row-major tiles); within a tile the red pixels ((y + x) even) come
    first: tile group j is band[gs0[j]:gs0[j+1]], red up to gmid[j], tile index gt[j] (ty·ntx + tx).

    Only tiles with uncovered pixels and a covered pixel within rb (tile-level test) are evaluated: the
    horizontal sums of P once per tile (into ``hsum`` (H, W), on the tiles flagged in ``hflag``, which is
    cleared again), shared by the vertically neighbouring tiles, then the vertical sums; both in the
    order of the kernel taps, so B equals the plain separable blur's value (terms of 0 add nothing).
    ``work`` is a tuple of scratch arrays (clist, hlist, slots, nred, nblk)."""
    clist, hlist, slots, nred, nblk = work
    n_h = pm.shape[0]
    n_w = pm.shape[1]
    nty = cnt_p.shape[0]
    ntx = cnt_p.shape[1]
    rtile = (rb + TILE - 1) // TILE
    vtile = (rt + TILE - 1) // TILE
    # prefix sums of "tile has a covered pixel"
    pre = np.zeros((nty + 1, ntx + 1), dtype=np.int64)
    for ty in range(nty):
        for tx in range(ntx):
            pre[ty + 1, tx + 1] = pre[ty, tx + 1] + pre[ty + 1, tx] - pre[ty, tx] + (1 if cnt_p[ty, tx] > 0 else 0)
    gsum = 0.0
    for d in range(-rt, rt + 1):
        gsum += g[r + d]
    nc = 0
    nh = 0
    for ty in range(nty):
        for tx in range(ntx):
            if cnt_p[ty, tx] == tile_area[ty, tx]:
                continue
            a0 = max(0, ty - rtile)
            a1 = min(nty, ty + rtile + 1)
            b0 = max(0, tx - rtile)
            b1 = min(ntx, tx + rtile + 1)
            if pre[a1, b1] - pre[a0, b1] - pre[a1, b0] + pre[a0, b0] == 0:
                continue
            # finer: a covered pixel within Chebyshev distance rb of the tile, from the covered pixels'
            # bounding box per tile (mirror images are never nearer than the pixel itself)
            y0 = ty * TILE
            y1 = min(n_h, y0 + TILE) - 1
            x0 = tx * TILE
            x1 = min(n_w, x0 + TILE) - 1
            near_cover = False
            for a in range(a0, a1):
                for b in range(b0, b1):
                    if cnt_p[a, b] > 0:
                        dy = max(0, max(cbox[a, b, 0] - y1, y0 - cbox[a, b, 1]))
                        dx = max(0, max(cbox[a, b, 2] - x1, x0 - cbox[a, b, 3]))
                        if max(dy, dx) <= rb:
                            near_cover = True
                            break
                if near_cover:
                    break
            if not near_cover:
                continue
            clist[nc] = ty * ntx + tx
            nc += 1
            for tyy in range(max(0, ty - vtile), min(nty, ty + vtile + 1)):
                if hflag[tyy, tx] == 0:
                    hflag[tyy, tx] = 1
                    hlist[nh] = tyy * ntx + tx
                    nh += 1
    _hsum_tiles(pf, rowcnt, r, g, rt, gsum, hlist, nh, ntx, hsum, nthreads if nh >= PAR_MIN_TILES else 1)
    _vsum_tiles(pm, hsum, g, r, rt, band_floor, clist, nc, ntx, slots, nred, nblk,
                nthreads if nc >= PAR_MIN_TILES else 1)
    for q in range(nh):
        hflag[hlist[q] // ntx, hlist[q] % ntx] = 0
    nb = 0
    ng = 0
    for k in range(nc):
        n_k = nred[k] + nblk[k]
        if n_k == 0:
            continue
        base = k * TILE * TILE
        gs0[ng] = nb
        gmid[ng] = nb + nred[k]
        gt[ng] = clist[k]
        ng += 1
        for j in range(n_k):
            band[nb + j] = slots[base + j]
        nb += n_k
    gs0[ng] = nb
    return nb, ng


MG_MIN_NODES = 16
MG_MAX_LEVELS = 14


@njit(cache=True)
def _mg_setup(band, nb, n_w, nbr0, deg0, cmaps):
    """Aggregation hierarchy for the band Laplacian: level l+1 merges 2×2 cells of level l.

    Galerkin coarse operators with piecewise-constant prolongation: each level is a weighted 4-neighbour
    graph Laplacian plus a diagonal (Dirichlet contacts). Returns flat arrays
    (off (L+1,), nbr (N,4), w (N,4), diag (N,), agg (N,), ys, xs) over all levels."""
    cap = 3 * nb + 64
    nbr = np.full((cap, 4), -1, dtype=np.int64)
    w = np.zeros((cap, 4))
    diag = np.zeros(cap)
    agg = np.full(cap, -1, dtype=np.int64)
    ys = np.empty(cap, dtype=np.int64)
    xs = np.empty(cap, dtype=np.int64)
    off = np.zeros(MG_MAX_LEVELS + 1, dtype=np.int64)
    for i in range(nb):
        ys[i] = band[i] // n_w
        xs[i] = band[i] - ys[i] * n_w
        diag[i] = deg0[i]
        for k in range(4):
            nbr[i, k] = nbr0[i, k]
            if nbr0[i, k] >= 0:
                w[i, k] = 1.0
    off[1] = nb
    nlev = 1
    while nlev < MG_MAX_LEVELS and off[nlev] - off[nlev - 1] > MG_MIN_NODES:
        a0 = off[nlev - 1]
        a1 = off[nlev]
        if a1 + (a1 - a0) > cap:
            break
        cm = cmaps[nlev]
        n = a1
        for i in range(a0, a1):
            cy = ys[i] >> 1
            cx = xs[i] >> 1
            j = cm[cy, cx]
            if j < 0:
                j = n
                cm[cy, cx] = j
                ys[n] = cy
                xs[n] = cx
                n += 1
            agg[i] = j
        if 5 * (n - a1) > 4 * (a1 - a0):  # poor coarsening (scattered pixels): stop here
            for i in range(a1, n):
                cm[ys[i], xs[i]] = -1
            break
        for i in range(a0, a1):
            big = agg[i]
            diag[big] += diag[i]
            for k in range(4):
                j = nbr[i, k]
                if j < 0:
                    continue
                bj = agg[j]
                if bj == big:
                    diag[big] -= w[i, k]
                else:
                    nbr[big, k] = bj
                    w[big, k] += w[i, k]
        for i in range(a1, n):
            cm[ys[i], xs[i]] = -1
        nlev += 1
        off[nlev] = n
    ntot = off[nlev]
    return off[:nlev + 1].copy(), nbr, w, diag, agg, np.zeros((ntot, 4)), np.zeros((ntot, 4))


@njit(cache=True)
def _gs(lo, hi, nbr, w, diag, x, b, forward):
    if forward:
        i = lo
        step = 1
    else:
        i = hi - 1
        step = -1
    for _ in range(hi - lo):
        d = diag[i]
        s0 = b[i, 0]
        s1 = b[i, 1]
        s2 = b[i, 2]
        s3 = b[i, 3]
        for k in range(4):
            j = nbr[i, k]
            if j >= 0:
                wk = w[i, k]
                s0 += wk * x[j, 0]
                s1 += wk * x[j, 1]
                s2 += wk * x[j, 2]
                s3 += wk * x[j, 3]
        x[i, 0] = s0 / d
        x[i, 1] = s1 / d
        x[i, 2] = s2 / d
        x[i, 3] = s3 / d
        i += step


@njit(cache=True)
def _precondition(mg, r, z, deg, use_mg):
    """z = M⁻¹ r: a symmetric V-cycle (forward Gauss-Seidel down, backward up) or Jacobi."""
    nb = r.shape[0]
    if not use_mg:
        for i in range(nb):
            inv = 1.0 / deg[i]
            for c in range(4):
                z[i, c] = r[i, c] * inv
        return
    off, nbr, w, diag, agg, x, b = mg
    nlev = off.shape[0] - 1
    x[:] = 0.0
    b[:] = 0.0
    for i in range(nb):
        for c in range(4):
            b[i, c] = r[i, c]
    for lev in range(nlev - 1):
        lo = off[lev]
        hi = off[lev + 1]
        _gs(lo, hi, nbr, w, diag, x, b, True)
        for i in range(lo, hi):
            big = agg[i]
            for c in range(4):
                s = b[i, c] - diag[i] * x[i, c]
                for k in range(4):
                    j = nbr[i, k]
                    if j >= 0:
                        s += w[i, k] * x[j, c]
                b[big, c] += s
    lo = off[nlev - 1]
    hi = off[nlev]
    for _ in range(8):
        _gs(lo, hi, nbr, w, diag, x, b, True)
        _gs(lo, hi, nbr, w, diag, x, b, False)
    for lev in range(nlev - 2, -1, -1):
        lo = off[lev]
        hi = off[lev + 1]
        for i in range(lo, hi):
            big = agg[i]
            for c in range(4):
                x[i, c] += x[big, c]
        _gs(lo, hi, nbr, w, diag, x, b, False)
    for i in range(nb):
        for c in range(4):
            z[i, c] = x[i, c]


@njit(cache=True)
def _fill_band(band, nb, pm, merged, acc, index, dmark, dlist, nd, tol, maxit, guess, cmaps, use_mg):
    """Laplace-fill bg (merged on P, 0 elsewhere) and P inside the band; write to merged / acc.

    Conjugate gradients (preconditioner: one aggregation-multigrid V-cycle, or Jacobi) on
    deg·u_p − Σ_band u_q = Σ_border values, started
    from ``guess`` (H·W, 4): the last fill's values at each pixel (0 where never filled); the solution
    is stored back into it. Returns (nd, iterations)."""
    n_h = pm.shape[0]
    n_w = pm.shape[1]
    ntx = dmark.shape[1]
    for i in range(nb):
        index[band[i]] = i
    nbr = np.full((nb, 4), -1, dtype=np.int64)
    deg = np.zeros(nb)
    rhs = np.zeros((nb, 4))
    for i in range(nb):
        p = band[i]
        y = p // n_w
        x = p - y * n_w
        for k in range(4):
            if k == 0:
                yy, xx = y - 1, x
            elif k == 1:
                yy, xx = y + 1, x
            elif k == 2:
                yy, xx = y, x - 1
            else:
                yy, xx = y, x + 1
            if yy < 0 or yy >= n_h or xx < 0 or xx >= n_w:
                continue
            deg[i] += 1.0
            j = index[yy * n_w + xx]
            if j >= 0:
                nbr[i, k] = j
            elif pm[yy, xx] != 0:
                rhs[i, 0] += merged[yy, xx, 0]
                rhs[i, 1] += merged[yy, xx, 1]
                rhs[i, 2] += merged[yy, xx, 2]
                rhs[i, 3] += 1.0
    # four right-hand sides (3 colours, P) in lockstep; each stops when its residual is small enough
    mg = _mg_setup(band, nb, n_w, nbr, deg, cmaps)
    sol = np.zeros((nb, 4))
    rr = np.empty((nb, 4))
    zz = np.empty((nb, 4))
    pp = np.zeros((nb, 4))
    ap = np.empty((nb, 4))
    bnorm = np.zeros(4)
    active = np.zeros(4, dtype=np.bool_)
    rz = np.zeros(4)
    for i in range(nb):
        for c in range(4):
            bnorm[c] = max(bnorm[c], abs(rhs[i, c]))
            sol[i, c] = guess[band[i], c]
    rmax = np.zeros(4)
    for i in range(nb):
        for c in range(4):
            s = deg[i] * sol[i, c]
            for k in range(4):
                j = nbr[i, k]
                if j >= 0:
                    s -= sol[j, c]
            rr[i, c] = rhs[i, c] - s
            rmax[c] = max(rmax[c], abs(rr[i, c]))
    n_active = 0
    for c in range(4):
        if bnorm[c] == 0.0:
            for i in range(nb):
                sol[i, c] = 0.0
        elif rmax[c] > tol * bnorm[c]:
            active[c] = True
            n_active += 1
    _precondition(mg, rr, zz, deg, use_mg)
    for i in range(nb):
        for c in range(4):
            pp[i, c] = zz[i, c]
            rz[c] += rr[i, c] * zz[i, c]
    iters = 0
    pap = np.zeros(4)
    alpha = np.zeros(4)
    rzn = np.zeros(4)
    while n_active > 0 and iters < maxit:
        iters += 1
        pap[:] = 0.0
        for i in range(nb):
            d = deg[i]
            s0 = d * pp[i, 0]
            s1 = d * pp[i, 1]
            s2 = d * pp[i, 2]
            s3 = d * pp[i, 3]
            for k in range(4):
                j = nbr[i, k]
                if j >= 0:
                    s0 -= pp[j, 0]
                    s1 -= pp[j, 1]
                    s2 -= pp[j, 2]
                    s3 -= pp[j, 3]
            ap[i, 0] = s0
            ap[i, 1] = s1
            ap[i, 2] = s2
            ap[i, 3] = s3
            pap[0] += pp[i, 0] * s0
            pap[1] += pp[i, 1] * s1
            pap[2] += pp[i, 2] * s2
            pap[3] += pp[i, 3] * s3
        for c in range(4):
            alpha[c] = rz[c] / pap[c] if (active[c] and pap[c] > 0.0) else 0.0
        rmax[:] = 0.0
        for i in range(nb):
            for c in range(4):
                sol[i, c] += alpha[c] * pp[i, c]
                rr[i, c] -= alpha[c] * ap[i, c]
                rmax[c] = max(rmax[c], abs(rr[i, c]))
        for c in range(4):
            if active[c] and rmax[c] <= tol * bnorm[c]:
                active[c] = False
                n_active -= 1
        if n_active == 0:
            break
        _precondition(mg, rr, zz, deg, use_mg)
        rzn[:] = 0.0
        for i in range(nb):
            for c in range(4):
                rzn[c] += rr[i, c] * zz[i, c]
        for c in range(4):
            if active[c] and rzn[c] == 0.0:
                active[c] = False
                n_active -= 1
        for c in range(4):
            beta = rzn[c] / rz[c] if (active[c] and rz[c] > 0.0) else 0.0
            rz[c] = rzn[c]
            if active[c]:
                for i in range(nb):
                    pp[i, c] = zz[i, c] + beta * pp[i, c]
            else:
                for i in range(nb):
                    pp[i, c] = 0.0
    for i in range(nb):
        p = band[i]
        index[p] = -1
        y = p // n_w
        x = p - y * n_w
        merged[y, x, 0] = sol[i, 0]
        merged[y, x, 1] = sol[i, 1]
        merged[y, x, 2] = sol[i, 2]
        acc[y, x] = sol[i, 3]
        for c in range(4):
            guess[p, c] = sol[i, c]
        nd = _mark(dmark, dlist, nd, (y // TILE) * ntx + x // TILE)
    return nd, iters


@njit(cache=True, fastmath=True)
def _sor_range(ff, qs, inv, rhs, k0, k1, wp, omega):
    """SOR updates of band entries k0..k1-1 (float32 iterate ``ff`` (N, 4), padded-frame indices ``qs``);
    returns the largest Gauss-Seidel correction (before the ω scaling)."""
    omega = np.float32(omega)
    dmax = 0.0
    for k in range(k0, k1):
        q = qs[k]
        iv = inv[k]
        t0 = (rhs[k, 0] + ff[q - 1, 0] + ff[q + 1, 0] + ff[q - wp, 0] + ff[q + wp, 0]) * iv - ff[q, 0]
        t1 = (rhs[k, 1] + ff[q - 1, 1] + ff[q + 1, 1] + ff[q - wp, 1] + ff[q + wp, 1]) * iv - ff[q, 1]
        t2 = (rhs[k, 2] + ff[q - 1, 2] + ff[q + 1, 2] + ff[q - wp, 2] + ff[q + wp, 2]) * iv - ff[q, 2]
        t3 = (rhs[k, 3] + ff[q - 1, 3] + ff[q + 1, 3] + ff[q - wp, 3] + ff[q + wp, 3]) * iv - ff[q, 3]
        ff[q, 0] += omega * t0
        ff[q, 1] += omega * t1
        ff[q, 2] += omega * t2
        ff[q, 3] += omega * t3
        m = max(max(abs(t0), abs(t1)), max(abs(t2), abs(t3)))
        if m > dmax:
            dmax = m
    return dmax


SOR_PAR_MIN = 24  # fewer active tiles than this: one thread (a parallel launch costs more than the work)


@njit(cache=True, parallel=True)
def _sor_par(ff, qs, inv, rhs, gs0, gmid, al, nal, moved, wp, omega, tol, red):
    for k in prange(nal):
        g = al[k]
        if red:
            d = _sor_range(ff, qs, inv, rhs, gs0[g], gmid[g], wp, omega)
        else:
            d = _sor_range(ff, qs, inv, rhs, gmid[g], gs0[g + 1], wp, omega)
        if d > tol:
            moved[g] = 1


@njit(cache=True)
def _sor_pass(ff, qs, inv, rhs, gs0, gmid, al, nal, moved, wp, omega, tol, red, nthreads):
    """One colour's half-sweep over the tile groups al[:nal], marking moved[g] = 1 where the largest
    correction exceeds tol. A half-sweep reads only the other colour, so the tiles are independent and
    the result does not depend on the order or the number of threads."""
    if nthreads < 2 or nal < SOR_PAR_MIN:
        for k in range(nal):
            g = al[k]
            if red:
                d = _sor_range(ff, qs, inv, rhs, gs0[g], gmid[g], wp, omega)
            else:
                d = _sor_range(ff, qs, inv, rhs, gmid[g], gs0[g + 1], wp, omega)
            if d > tol:
                moved[g] = 1
    else:
        _sor_par(ff, qs, inv, rhs, gs0, gmid, al, nal, moved, wp, omega, tol, red)


@njit(cache=True)
def _band_system_range(k0, k1, band, nb, pm, merged, ff, guess, wp, qs, inv, rhs):
    """Set up the band's linear system for SOR: for band entry k (pixel p = band[k]), qs[k] its index in
    the padded frame ff ((H+2)(W+2), 4), inv[k] 1 / (number of 4-neighbours inside the image), rhs[k] the
    sum of its covered neighbours' (bg, 1) values; ff at the band starts from guess (H·W, 4)."""
    n_h = pm.shape[0]
    n_w = pm.shape[1]
    for k in range(k0, k1):
        p = band[k]
        y = p // n_w
        x = p - y * n_w
        q = p + wp + 1 + 2 * y
        qs[k] = q
        d = 0.0
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for j in range(4):
            if j == 0:
                yy, xx = y - 1, x
            elif j == 1:
                yy, xx = y + 1, x
            elif j == 2:
                yy, xx = y, x - 1
            else:
                yy, xx = y, x + 1
            if yy < 0 or yy >= n_h or xx < 0 or xx >= n_w:
                continue
            d += 1.0
            if pm[yy, xx] != 0:
                s0 += merged[yy, xx, 0]
                s1 += merged[yy, xx, 1]
                s2 += merged[yy, xx, 2]
                s3 += 1.0
        inv[k] = 1.0 / d
        rhs[k, 0] = s0
        rhs[k, 1] = s1
        rhs[k, 2] = s2
        rhs[k, 3] = s3
        for c in range(4):
            ff[q, c] = guess[p, c]


@njit(cache=True, parallel=True)
def _band_system_par(nchunk, band, nb, pm, merged, ff, guess, wp, qs, inv, rhs):
    for c in prange(nchunk):
        _band_system_range(c * nb // nchunk, (c + 1) * nb // nchunk, band, nb, pm, merged, ff, guess, wp, qs, inv, rhs)


@njit(cache=True)
def _band_system(band, nb, pm, merged, ff, guess, wp, qs, inv, rhs, nchunk):
    """_band_system_range over all items, in nchunk contiguous chunks on the numba threads (1: here)."""
    if nchunk > 1:
        _band_system_par(nchunk, band, nb, pm, merged, ff, guess, wp, qs, inv, rhs)
    else:
        _band_system_range(0, nb, band, nb, pm, merged, ff, guess, wp, qs, inv, rhs)



@njit(cache=True)
def _band_writeback_range(k0, k1, band, nb, qs, ff, merged, acc, guess):
    """merged, acc ← the solution at the band; guess ← it too (the next fill's start); ff back to 0."""
    n_w = merged.shape[1]
    for k in range(k0, k1):
        q = qs[k]
        p = band[k]
        y = p // n_w
        x = p - y * n_w
        merged[y, x, 0] = ff[q, 0]
        merged[y, x, 1] = ff[q, 1]
        merged[y, x, 2] = ff[q, 2]
        acc[y, x] = ff[q, 3]
        for c in range(4):
            guess[p, c] = ff[q, c]
            ff[q, c] = 0.0


@njit(cache=True, parallel=True)
def _band_writeback_par(nchunk, band, nb, qs, ff, merged, acc, guess):
    for c in prange(nchunk):
        _band_writeback_range(c * nb // nchunk, (c + 1) * nb // nchunk, band, nb, qs, ff, merged, acc, guess)


@njit(cache=True)
def _band_writeback(band, nb, qs, ff, merged, acc, guess, nchunk):
    """_band_writeback_range over all items, in nchunk contiguous chunks on the numba threads (1: here)."""
    if nchunk > 1:
        _band_writeback_par(nchunk, band, nb, qs, ff, merged, acc, guess)
    else:
        _band_writeback_range(0, nb, band, nb, qs, ff, merged, acc, guess)



@njit(cache=True)
def _fill_sor(band, nb, pm, merged, acc, fpad, dmark, dlist, nd, tol, maxit, guess, omega, nthreads):
    """Laplace-fill bg and P inside the band by red-black SOR on the frame grid; write to merged / acc.

    ``fpad`` (H+2, W+2, 4) float32 is a zero scratch frame with a one-pixel margin: it holds the current
    iterate at band pixels and 0 everywhere else (so P neighbours enter only through the constant
    right-hand side and uncovered non-band neighbours as 0), and is zero again on return. Started from
    ``guess`` (H·W, 4), the last fill's values at each pixel; the solution is stored back into it.
    Sweeps until the largest Gauss-Seidel correction (mean of the neighbours minus the value) over the
    four fields is ≤ tol, at most ``maxit`` sweeps. Returns (nd, sweeps)."""
    n_w = pm.shape[1]
    ntx = dmark.shape[1]
    wp = n_w + 2
    ff = fpad.reshape((-1, 4))
    # red pixels first, then black
    order = np.empty(nb, dtype=np.int64)
    nred = 0
    for i in range(nb):
        p = band[i]
        if ((p // n_w + p % n_w) & 1) == 0:
            order[nred] = p
            nred += 1
    k = nred
    for i in range(nb):
        p = band[i]
        if ((p // n_w + p % n_w) & 1) != 0:
            order[k] = p
            k += 1
    qs = np.empty(nb, dtype=np.int64)
    inv = np.empty(nb, dtype=np.float32)
    rhs = np.zeros((nb, 4), dtype=np.float32)
    nchunk = nthreads if nb >= PAR_MIN_PIXELS else 1
    _band_system(order, nb, pm, merged, ff, guess, wp, qs, inv, rhs, nchunk)
    sweeps = 0
    while sweeps < maxit:
        sweeps += 1
        dmax = max(_sor_range(ff, qs, inv, rhs, 0, nred, wp, omega),
                   _sor_range(ff, qs, inv, rhs, nred, nb, wp, omega))
        if dmax <= tol:
            break
    _band_writeback(order, nb, qs, ff, merged, acc, guess, nchunk)
    for i in range(nb):
        p = order[i]
        nd = _mark(dmark, dlist, nd, (p // n_w // TILE) * ntx + (p % n_w) // TILE)
    return nd, sweeps


@njit(cache=True)
def _fill_sor_adaptive(band, nb, gs0, gmid, gt, ng, pm, merged, acc, fpad, gmap, dmark, dlist, nd, tol, maxit,
                       guess, omega, nthreads):
    """As :func:`_fill_sor`, but sweeping only the 8×8 tiles where the iterate still moves.

    The band comes in tile groups with the red pixels first (see :func:`_find_band`) and is swept
    red-black: the first sweep over every tile, then only over the *active* tiles: those whose largest
    Gauss-Seidel correction in the previous sweep exceeded tol, and their 4-neighbour tiles. When no tile
    is active, a sweep over the whole band checks the stopping criterion (largest correction ≤ tol
    everywhere) and re-activates the tiles that fail it. ``gmap`` (tiles) is a −1 scratch map, −1 again
    on return. Returns (nd, sweeps counted in whole-band equivalents, rounded up)."""
    n_w = pm.shape[1]
    ntx = dmark.shape[1]
    wp = n_w + 2
    ff = fpad.reshape((-1, 4))
    qs = np.empty(nb, dtype=np.int64)
    inv = np.empty(nb, dtype=np.float32)
    rhs = np.zeros((nb, 4), dtype=np.float32)
    for g in range(ng):
        gmap[gt[g] // ntx, gt[g] % ntx] = g
    nchunk = nthreads if nb >= PAR_MIN_PIXELS else 1
    _band_system(band, nb, pm, merged, ff, guess, wp, qs, inv, rhs, nchunk)
    # tile neighbours
    gnb = np.full((ng, 4), -1, dtype=np.int64)
    nty = dmark.shape[0]
    for g in range(ng):
        ty = gt[g] // ntx
        tx = gt[g] - ty * ntx
        if ty > 0:
            gnb[g, 0] = gmap[ty - 1, tx]
        if ty < nty - 1:
            gnb[g, 1] = gmap[ty + 1, tx]
        if tx > 0:
            gnb[g, 2] = gmap[ty, tx - 1]
        if tx < ntx - 1:
            gnb[g, 3] = gmap[ty, tx + 1]
    for g in range(ng):
        gmap[gt[g] // ntx, gt[g] % ntx] = -1
    act = np.zeros(ng, dtype=np.uint8)
    al = np.empty(ng, dtype=np.int64)
    moved = np.ones(ng, dtype=np.uint8)  # first sweep: everything
    work = 0
    full_check = False
    while work < maxit * nb:
        n_act = 0
        for g in range(ng):
            a = moved[g]
            if a == 0:
                for j in range(4):
                    h = gnb[g, j]
                    if h >= 0 and moved[h] != 0:
                        a = 1
                        break
            act[g] = a
            n_act += a
        if n_act == 0:
            if full_check:
                break
            full_check = True
            for g in range(ng):
                act[g] = 1
        else:
            full_check = False
        nal = 0
        for g in range(ng):
            moved[g] = 0
            if act[g] != 0:
                al[nal] = g
                nal += 1
                work += gs0[g + 1] - gs0[g]
        _sor_pass(ff, qs, inv, rhs, gs0, gmid, al, nal, moved, wp, omega, tol, True, nthreads)
        _sor_pass(ff, qs, inv, rhs, gs0, gmid, al, nal, moved, wp, omega, tol, False, nthreads)
        if full_check:
            n_moved = 0
            for g in range(ng):
                n_moved += moved[g]
            if n_moved == 0:
                break
    for g in range(ng):
        nd = _mark(dmark, dlist, nd, gt[g])
    _band_writeback(band, nb, qs, ff, merged, acc, guess, nchunk)
    return nd, (work + nb - 1) // nb


OMEGA_WIDTH = 1.75  # auto ω: the band is taken as OMEGA_WIDTH · rb + 1 pixels wide


@njit(cache=True)
def _layer_omega(omega, rb):
    """SOR factor for a layer: ``omega`` if > 0, else the optimum for a strip w = OMEGA_WIDTH·rb + 1 pixels
    wide between Dirichlet sides, 2 / (1 + sin(π / (w + 1))) (rb: the layer's band radius)."""
    if omega > 0.0:
        return omega
    w = OMEGA_WIDTH * rb + 1.0
    return 2.0 / (1.0 + np.sin(np.pi / (w + 1.0)))


@njit(cache=True)
def _render(img, order, starts, sigmas, gtab, rts, rbs, floor_colour, alpha_floor, band_floor, tol, maxit,
            solver, omega, nthreads):
    n_h = img.shape[0]
    n_w = img.shape[1]
    nty = (n_h + TILE - 1) // TILE
    ntx = (n_w + TILE - 1) // TILE
    nt = nty * ntx
    r = gtab.shape[1] // 2
    merged = np.zeros((n_h, n_w, 3))
    acc = np.zeros((n_h, n_w))
    hb = np.zeros((n_h, n_w, 4), dtype=np.float32)
    vb = np.zeros((n_h, n_w, 4), dtype=np.float32)
    gtab32 = gtab.astype(np.float32)
    pm = np.zeros((n_h, n_w), dtype=np.uint8)
    hmark = np.zeros((nty, ntx), dtype=np.uint8)
    vmark = np.zeros((nty, ntx), dtype=np.uint8)
    dmark = np.zeros((nty, ntx), dtype=np.uint8)
    hlist = np.empty(nt, dtype=np.int64)
    vlist = np.empty(nt, dtype=np.int64)
    dlist = np.empty(nt, dtype=np.int64)
    vwork = (np.zeros(ntx, dtype=np.int64), np.empty(ntx, dtype=np.int64), np.empty(nt, dtype=np.int64),
             np.empty(ntx, dtype=np.int64), np.empty(ntx, dtype=np.int64))
    cnt_p = np.zeros((nty, ntx), dtype=np.int64)
    cbox = np.empty((nty, ntx, 4), dtype=np.int64)  # covered pixels' bounding box per tile: y0, y1, x0, x1
    cbox[:, :, 0] = n_h
    cbox[:, :, 1] = -1
    cbox[:, :, 2] = n_w
    cbox[:, :, 3] = -1
    tile_area = np.zeros((nty, ntx), dtype=np.int64)
    for ty in range(nty):
        for tx in range(ntx):
            tile_area[ty, tx] = (min(n_h, ty * TILE + TILE) - ty * TILE) * (min(n_w, tx * TILE + TILE) - tx * TILE)
    # the fill's arrays only when some layer has a fill (a blurred layer after the first in-focus one)
    has_fill = False
    focus_seen = False
    for li in range(sigmas.shape[0]):
        if sigmas[li] == 0.0:
            focus_seen = True
        elif focus_seen:
            has_fill = True
            break
    nf = n_h * n_w if has_fill else 1
    use_cg = solver == 0 or solver == 1
    index = np.full(nf if use_cg else 1, -1, dtype=np.int64)
    band = np.empty(nf, dtype=np.int64)
    gs0 = np.empty(nt + 1, dtype=np.int64)
    gmid = np.empty(nt, dtype=np.int64)
    gt = np.empty(nt, dtype=np.int64)
    guess = np.zeros((nf, 4), dtype=np.float32)
    fpad = np.zeros((n_h + 2 if has_fill else 1, n_w + 2 if has_fill else 1, 4), dtype=np.float32)
    gmap = np.full((nty, ntx), -1, dtype=np.int64)
    cmaps = [np.full((1, 1), -1, dtype=np.int64)]
    for lev in range(1, MG_MAX_LEVELS):
        if has_fill and use_cg:
            cmaps.append(np.full(((n_h >> lev) + 1, (n_w >> lev) + 1), -1, dtype=np.int64))
        else:
            cmaps.append(np.full((1, 1), -1, dtype=np.int64))
    n_iter = 0
    rmax = 0
    for li in range(rts.shape[0]):
        rmax = max(rmax, rts[li])
    hsum = np.zeros((n_h if has_fill else 1, n_w if has_fill else 1))
    hflag = np.zeros((nty, ntx), dtype=np.uint8)
    pf = np.zeros((n_h if has_fill else 1, n_w + 2 * r if has_fill else 1))
    rowcnt = np.zeros((n_h if has_fill else 1, ntx if has_fill else 1), dtype=np.int64)
    bwork = (np.empty(nt, dtype=np.int64), np.empty(nt, dtype=np.int64), np.empty(nt * TILE * TILE, dtype=np.int64),
             np.empty(nt, dtype=np.int64), np.empty(nt, dtype=np.int64))
    nd = 0
    seen_focus = False
    n_band_total = 0
    for li in range(sigmas.shape[0]):
        pix = order[starts[li]:starts[li + 1]]
        sig = sigmas[li]
        if sig == 0.0:
            for q in range(pix.shape[0]):
                p = pix[q]
                y = p // n_w
                x = p - y * n_w
                merged[y, x, 0] = img[y, x, 0]
                merged[y, x, 1] = img[y, x, 1]
                merged[y, x, 2] = img[y, x, 2]
                acc[y, x] = 1.0
                nd = _mark(dmark, dlist, nd, (y // TILE) * ntx + x // TILE)
        else:
            g = gtab[li]
            rt = rts[li]
            g32 = gtab32[li]
            nh = _hscatter(img, pix, n_w, g32, r, rt, hb, hmark, hlist, 0, nthreads)
            nv = _vscatter(hb, g32, r, rt, hlist, nh, hmark, vb, vmark, vlist, 0, vwork, nthreads)
            if seen_focus:
                nd = _normalise(merged, acc, dmark, dlist, nd, nthreads)
                nb, ng = _find_band(pm, pf, rowcnt, cnt_p, cbox, tile_area, g, r, rt, rbs[li], band_floor, hsum, hflag,
                                    band, gs0, gmid, gt, bwork, nthreads)
                if nb > 0 and solver >= 0:  # solver < 0: band search only (profiling)
                    if solver == 3:
                        nd, it = _fill_sor_adaptive(band, nb, gs0, gmid, gt, ng, pm, merged, acc, fpad, gmap,
                                                    dmark, dlist, nd, tol, maxit, guess, _layer_omega(omega, rbs[li]),
                                                    nthreads)
                    elif solver == 2:
                        nd, it = _fill_sor(band, nb, pm, merged, acc, fpad, dmark, dlist, nd, tol, maxit, guess,
                                           _layer_omega(omega, rbs[li]), nthreads)
                    else:
                        nd, it = _fill_band(band, nb, pm, merged, acc, index, dmark, dlist, nd, tol, maxit, guess,
                                            cmaps, solver == 1)
                    n_iter += it
                    n_band_total += nb
            nd = _composite(vb, vlist, nv, vmark, merged, acc, floor_colour, alpha_floor, dmark, dlist, nd,
                            nthreads)
        for q in range(pix.shape[0]):
            p = pix[q]
            y = p // n_w
            x = p - y * n_w
            pm[y, x] = 1
            if has_fill:
                _set_covered(pf, r, y, x)
                rowcnt[y, x // TILE] += 1
            ty = y // TILE
            tx = x // TILE
            cnt_p[ty, tx] += 1
            cbox[ty, tx, 0] = min(cbox[ty, tx, 0], y)
            cbox[ty, tx, 1] = max(cbox[ty, tx, 1], y)
            cbox[ty, tx, 2] = min(cbox[ty, tx, 2], x)
            cbox[ty, tx, 3] = max(cbox[ty, tx, 3], x)
        if sig == 0.0:
            seen_focus = True
    out = np.empty((n_h, n_w, 3), dtype=np.float32)
    for y in range(n_h):
        for x in range(n_w):
            a = acc[y, x]
            for c in range(3):
                v = merged[y, x, c] / a if a > 0.0 else 0.0
                out[y, x, c] = min(1.0, max(0.0, v))
    return out, n_band_total, n_iter


def _band_radii(gtab, band_floor):
    """Per kernel row: the smallest d such that a pixel with no covered pixel within Chebyshev distance d
    has G*P < floor/2 (2·(1-D tail beyond d) < floor/2), else r."""
    m = gtab.shape[1]
    r = m // 2
    # tail(d) = Σ_{|k| > d} g[r + k] for d = 0..r
    side = np.cumsum(gtab[:, ::-1], axis=1)[:, :r][:, ::-1]  # side[:, d] = Σ_{k > d} g[r + k] (symmetric g)
    tail = np.concatenate([2.0 * side, np.zeros((gtab.shape[0], 1))], axis=1)
    ok = 2.0 * tail < 0.5 * band_floor
    return np.where(ok.any(axis=1), ok.argmax(axis=1), r).astype(np.int64)


@njit(cache=True)
def _counting_order(lab, n_lab):
    """Pixel indices grouped by label (ascending), ascending within a label: (order, starts (n_lab+1,))."""
    starts = np.zeros(n_lab + 1, dtype=np.int64)
    for i in range(lab.size):
        starts[lab[i] + 1] += 1
    for k in range(n_lab):
        starts[k + 1] += starts[k]
    pos = starts[:-1].copy()
    order = np.empty(lab.size, dtype=np.int64)
    for i in range(lab.size):
        k = lab[i]
        order[pos[k]] = i
        pos[k] += 1
    return order, starts


def plan_layers(coc, near, max_coc, coc_step):
    """Layer order and kernels: (order int64, starts int64 (L+1), sigmas (L,), gtab (L, m), rts, rbs).

    The same layers and order as ``common.layer_labels`` (far → near: behind focus c descending, then in
    front of focus c ascending), by a counting sort; kernels as ``common.gaussian_kernel_1d`` row by row."""
    q = np.rint(np.asarray(coc, dtype=np.float64) / float(coc_step)).astype(np.int64)
    qmax = int(q.max())
    # key: far side qmax - q in [0, qmax]; near side qmax + 1 + q; ascending key = far -> near
    key = np.where(near, qmax + 1 + q, qmax - q).ravel()
    counts = np.bincount(key, minlength=2 * qmax + 2)
    present = np.nonzero(counts)[0]
    lut = np.full(counts.size, -1, dtype=np.int64)
    lut[present] = np.arange(present.size)
    order, starts = _counting_order(lut[key], present.size)
    cidx = np.where(present > qmax, present - qmax - 1, qmax - present)
    sigmas = np.maximum(0.0, (cidx * float(coc_step) - 1.0) / 4.0)
    m = check_max_coc(max_coc)
    r = m // 2
    gtab = np.zeros((sigmas.size, m))
    blur = sigmas > 0.0
    x = np.arange(-r, r + 1, dtype=np.float64)
    s = sigmas[blur][:, None]
    g = np.exp(-(x * x) / (2.0 * s * s))
    gtab[blur] = g / g.sum(axis=1, keepdims=True)
    gtab[~blur, r] = 1.0
    keep = gtab >= TAP_TRIM * gtab.max(axis=1, keepdims=True)
    rts = (r - keep.argmax(axis=1)).astype(np.int64)
    rbs = _band_radii(gtab, BAND_FLOOR)
    return order, starts, sigmas, gtab, rts, rbs


_DEFAULT_THREADS = [None]


def set_render_threads(n):
    """Process-wide default for ``render_layered(threads=None)``: None = numba's thread count, 1 = never
    start numba's thread pool (what build workers use: processes already fill the cores, and a process
    whose GNU OpenMP pool has started cannot safely fork). Returns the previous default."""
    prev = _DEFAULT_THREADS[0]
    _DEFAULT_THREADS[0] = None if n is None else max(1, int(n))
    return prev


def _resolve_threads(threads):
    t = _DEFAULT_THREADS[0] if threads is None else threads
    if t is None:
        return numba.get_num_threads()
    return max(1, min(int(t), numba.config.NUMBA_NUM_THREADS))


def render_layered(img, coc, max_coc, *, near=None, floor_colour=False, coc_step=0.1, return_stats=False,
                   fill_tol=None, fill_solver="sor", fill_omega=None, threads=None):
    """Layered defocus rendering (FACTS §2, SYNDOF), numba.

    Args:
        img: float (H, W, 3) RGB in [0, 1].
        coc: (H, W) CoC diameter px ≥ 0 (normally already quantised); layers are formed by
            rint(c / coc_step) and blurred with σ = max(0, (c − 1) / 4) of the rounded c.
        max_coc: odd int ≥ 3, the fixed kernel window.
        near: bool (H, W), True where the pixel is in front of the focal plane (depth < focus); decides
            the far → near order (behind focus: large c first; in front: small c first). None = every
            pixel behind focus (correct only if nothing is nearer than the focus).
        floor_colour: also zero the blurred colour where the blurred mask is floored (no overshoot).
        coc_step: CoC rounding step in px.
        return_stats: also return a dict (n_layers, band_pixels, cg_iterations: CG iterations for "mg" /
            "jacobi", SOR sweeps in whole-band equivalents for "sor" / "sor-full", summed over layers).
        fill_solver: the partial-occlusion fill's solver: "sor" (default: red-black SOR over the 8×8 tiles
            where the iterate still moves, float32), "sor-full" (red-black SOR over the whole band),
            "mg" (multigrid-preconditioned CG, float64), "jacobi" (Jacobi-preconditioned CG).
        fill_tol: stopping tolerance; None = 1e-5 (largest Gauss-Seidel correction) for the SOR solvers,
            1e-6 (max residual relative to the right-hand side) for the CG solvers. The output error
            against the exact fill is about 3× this (≤ 3e-5 on the bench frames).
        fill_omega: SOR over-relaxation factor; None (default) = per layer, the optimum for a strip as wide
            as the layer's band, 2 / (1 + sin(π / (1.75·rb + 2))) with rb the band radius (23 % fewer sweeps
            than a fixed 1.75 on the fill-heaviest NYUv2 bench frame, 73 % on a Cityscapes one).
        threads: numba threads for the band search, the fill's set-up and its sweeps (the work is split
            so that the result is bit-identical for any count); None = the process default
            (:func:`set_render_threads`, else numba's thread count), 1 = no thread pool at all.

    Returns:
        float32 (H, W, 3) in [0, 1] (clipped, as SYNDOF writes it).
    """
    a = check_image(img)
    m = check_max_coc(max_coc)
    c = check_map(coc, a.shape[:2], "coc")
    n = check_near(near, a.shape[:2])
    order, starts, sigmas, gtab, rts, rbs = plan_layers(c, n, m, coc_step)
    nt = _resolve_threads(threads)
    solvers = {"jacobi": 0, "mg": 1, "sor-full": 2, "sor": 3}
    if fill_solver not in solvers:
        raise BsrError(f"fill_solver: expected one of {sorted(solvers)}, got {fill_solver!r}")
    if fill_tol is None:
        fill_tol = FILL_TOL_SOR if fill_solver.startswith("sor") else 1e-6
    out, nband, niter = _render(a, order, starts, sigmas, gtab, rts, rbs, bool(floor_colour), ALPHA_FLOOR,
                                BAND_FLOOR, float(fill_tol), 100000, solvers[fill_solver],
                                -1.0 if fill_omega is None else float(fill_omega), nt)
    if return_stats:
        return out, {"n_layers": int(sigmas.size), "band_pixels": int(nband), "cg_iterations": int(niter)}
    return out
