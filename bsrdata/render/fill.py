"""The partial-occlusion fill of ``render_layered`` (numba): the band search and the adaptive red-black SOR.

For a blurred layer after the first in-focus layer: P = union of the farther layers' masks,
B = G_i * P floored at 1e-3, band = (B > 0) & (P ≠ 1); the background (merged/acc on P, 0 elsewhere) and
P are Laplace-filled inside the band from its border (4-neighbours inside the image) and written to
merged and acc (the twin: ``reference.laplace_fill``).

B is evaluated only on tiles within the distance where it can still reach 1e-3, as in-order tap sums over
a mirrored float plane of P, eight pixels at a time (horizontal sums shared by vertically neighbouring
tiles, rows whose window is all uncovered or all covered skipped). The fill is solved only on the band,
warm-started from the previous fill, by red-black SOR (float32, ω per layer from the band radius) swept
only over the 8×8 tiles that still move and their neighbours, until a sweep over the whole band finds no
Gauss-Seidel correction above 1e-5 (about 3e-5 in the output). The band search, the fill's set-up and
its half-sweeps run on numba's threads, split so that the result is bit-identical for any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from bsrdata.render.blur import PAR_MIN_PIXELS, PAR_MIN_TILES, TILE, _mark, _refl
from bsrdata.render.kernel_cache import njit

FILL_TOL_SOR = 1e-5  # SOR stops when the largest Gauss-Seidel correction is below this



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

