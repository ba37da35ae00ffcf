"""Layered (SYNDOF) defocus rendering, numba (docs/render.md; twin: ``reference.layered_reference``): the
public API, the layer plan and the driver.

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

The kernels, by role: :mod:`bsrdata.render.blur` (blur passes, compositing, normalisation on 8×8 tiles),
:mod:`bsrdata.render.fill` (band search and the adaptive red-black SOR fill); this module plans the layers
(a counting sort, the kernels and their trimmed and band radii) and runs them. Speed-ups against the twin
(the same result up to float rounding, except the fill's iterative-solver tolerance: ≤ 3e-5 on the bench
frames, budget 1e-4) are described in those modules. The work is split between numba's threads so that
every sum keeps its order: the output is bit-identical for any thread count (``threads=1`` never starts
the pool). The fill solvers kept only for comparison (SOR over the whole band, multigrid and Jacobi CG)
are in :mod:`bsrdata.render.fill_compare`. The kernels are cached on disk in a folder keyed on the render
sources (:mod:`bsrdata.render.kernel_cache`).
"""

from __future__ import annotations

import contextlib
import os

import numba
import numpy as np

from bsrdata.optics import check_max_coc
from bsrdata.render.blur import TILE, _composite, _hscatter, _mark, _normalise, _vscatter
from bsrdata.render.common import (
    ALPHA_FLOOR,
    BAND_FLOOR,
    TAP_TRIM,
    check_image,
    check_map,
    check_near,
)
from bsrdata.render.fill import FILL_TOL_SOR, _fill_sor_adaptive, _find_band, _layer_omega, _set_covered
from bsrdata.render.kernel_cache import njit


@njit(cache=True)
def _render_state(img, sigmas, gtab, rts):
    """Scratch arrays of one render, as a tuple (see the unpacking in :func:`_render`); merged float64
    (H, W, 3) and acc (H, W) start at 0; the fill's arrays are full size only when some layer has a fill
    (a blurred layer after the first in-focus one)."""
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
    has_fill = False
    focus_seen = False
    for li in range(sigmas.shape[0]):
        if sigmas[li] == 0.0:
            focus_seen = True
        elif focus_seen:
            has_fill = True
            break
    nf = n_h * n_w if has_fill else 1
    band = np.empty(nf, dtype=np.int64)
    gs0 = np.empty(nt + 1, dtype=np.int64)
    gmid = np.empty(nt, dtype=np.int64)
    gt = np.empty(nt, dtype=np.int64)
    guess = np.zeros((nf, 4), dtype=np.float32)
    fpad = np.zeros((n_h + 2 if has_fill else 1, n_w + 2 if has_fill else 1, 4), dtype=np.float32)
    gmap = np.full((nty, ntx), -1, dtype=np.int64)
    hsum = np.zeros((n_h if has_fill else 1, n_w if has_fill else 1))
    hflag = np.zeros((nty, ntx), dtype=np.uint8)
    pf = np.zeros((n_h if has_fill else 1, n_w + 2 * r if has_fill else 1))
    rowcnt = np.zeros((n_h if has_fill else 1, ntx if has_fill else 1), dtype=np.int64)
    bwork = (np.empty(nt, dtype=np.int64), np.empty(nt, dtype=np.int64), np.empty(nt * TILE * TILE, dtype=np.int64),
             np.empty(nt, dtype=np.int64), np.empty(nt, dtype=np.int64))
    return (merged, acc, hb, vb, gtab32, pm, hmark, vmark, dmark, hlist, vlist, dlist, vwork, cnt_p, cbox,
            tile_area, has_fill, band, gs0, gmid, gt, guess, fpad, gmap, hsum, hflag, pf, rowcnt, bwork)


# the names of _render_state's tuple, in order (for Python callers: dict(zip(STATE_FIELDS, st)))
STATE_FIELDS = ("merged", "acc", "hb", "vb", "gtab32", "pm", "hmark", "vmark", "dmark", "hlist", "vlist", "dlist",
                "vwork", "cnt_p", "cbox", "tile_area", "has_fill", "band", "gs0", "gmid", "gt", "guess", "fpad",
                "gmap", "hsum", "hflag", "pf", "rowcnt", "bwork")
FILL_MAXIT = 100000  # the fill's sweep cap (whole-band equivalents); never reached on the bench frames


@njit(cache=True)
def _layer_blur(st, img, pix, li, sig, gtab, rts, nd, nthreads):
    """An in-focus layer (sig = 0): copied into merged, acc = 1, its tiles marked dirty; returns (nd, 0).
    A blurred one: its horizontal and vertical blur passes into vb; returns (nd, touched tile count)."""
    (merged, acc, hb, vb, gtab32, pm, hmark, vmark, dmark, hlist, vlist, dlist, vwork, cnt_p, cbox,
     tile_area, has_fill, band, gs0, gmid, gt, guess, fpad, gmap, hsum, hflag, pf, rowcnt, bwork) = st
    n_w = img.shape[1]
    ntx = hmark.shape[1]
    r = gtab.shape[1] // 2
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
        return nd, 0
    rt = rts[li]
    g32 = gtab32[li]
    nh = _hscatter(img, pix, n_w, g32, r, rt, hb, hmark, hlist, 0, nthreads)
    nv = _vscatter(hb, g32, r, rt, hlist, nh, hmark, vb, vmark, vlist, 0, vwork, nthreads)
    return nd, nv


@njit(cache=True)
def _layer_cover(st, pix, n_w, r):
    """Add the layer's pixels to P (pm, the mirrored plane pf, per-row and per-tile counts, tile boxes)."""
    (merged, acc, hb, vb, gtab32, pm, hmark, vmark, dmark, hlist, vlist, dlist, vwork, cnt_p, cbox,
     tile_area, has_fill, band, gs0, gmid, gt, guess, fpad, gmap, hsum, hflag, pf, rowcnt, bwork) = st
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


@njit(cache=True)
def _layer_band(st, li, gtab, rts, rbs, band_floor, nthreads):
    """The fill band of blurred layer li: (nb, ng) as :func:`fill._find_band` (in st's band, gs0, gmid, gt)."""
    (merged, acc, hb, vb, gtab32, pm, hmark, vmark, dmark, hlist, vlist, dlist, vwork, cnt_p, cbox,
     tile_area, has_fill, band, gs0, gmid, gt, guess, fpad, gmap, hsum, hflag, pf, rowcnt, bwork) = st
    r = gtab.shape[1] // 2
    return _find_band(pm, pf, rowcnt, cnt_p, cbox, tile_area, gtab[li], r, rts[li], rbs[li], band_floor, hsum,
                      hflag, band, gs0, gmid, gt, bwork, nthreads)


@njit(cache=True)
def _finish(merged, acc):
    """clip(merged / acc, 0, 1) as float32 (H, W, 3); 0 where acc = 0."""
    n_h = acc.shape[0]
    n_w = acc.shape[1]
    out = np.empty((n_h, n_w, 3), dtype=np.float32)
    for y in range(n_h):
        for x in range(n_w):
            a = acc[y, x]
            for c in range(3):
                v = merged[y, x, c] / a if a > 0.0 else 0.0
                out[y, x, c] = min(1.0, max(0.0, v))
    return out


@njit(cache=True)
def _render(img, order, starts, sigmas, gtab, rts, rbs, floor_colour, alpha_floor, band_floor, tol, maxit,
            omega, nthreads):
    """Far → near over the layers of the plan: blur, [normalise, band, SOR fill], composite, cover.
    Returns (out float32 (H, W, 3), band pixels summed over layers, SOR sweeps in whole-band equivalents).
    ``perf/render_phases.py`` repeats this loop in Python to time each phase; a change here goes there too
    (``tests/test_perf_render_phases.py`` fails until it does)."""
    st = _render_state(img, sigmas, gtab, rts)
    (merged, acc, hb, vb, gtab32, pm, hmark, vmark, dmark, hlist, vlist, dlist, vwork, cnt_p, cbox,
     tile_area, has_fill, band, gs0, gmid, gt, guess, fpad, gmap, hsum, hflag, pf, rowcnt, bwork) = st
    n_w = img.shape[1]
    r = gtab.shape[1] // 2
    nd = 0
    n_iter = 0
    n_band_total = 0
    seen_focus = False
    for li in range(sigmas.shape[0]):
        pix = order[starts[li]:starts[li + 1]]
        sig = sigmas[li]
        nd, nv = _layer_blur(st, img, pix, li, sig, gtab, rts, nd, nthreads)
        if sig != 0.0:
            if seen_focus:
                nd = _normalise(merged, acc, dmark, dlist, nd, nthreads)
                nb, ng = _layer_band(st, li, gtab, rts, rbs, band_floor, nthreads)
                if nb > 0:
                    nd, it = _fill_sor_adaptive(band, nb, gs0, gmid, gt, ng, pm, merged, acc, fpad, gmap, dmark,
                                                dlist, nd, tol, maxit, guess, _layer_omega(omega, rbs[li]), nthreads)
                    n_iter += it
                    n_band_total += nb
            nd = _composite(vb, vlist, nv, vmark, merged, acc, floor_colour, alpha_floor, dmark, dlist, nd,
                            nthreads)
        _layer_cover(st, pix, n_w, r)
        if sig == 0.0:
            seen_focus = True
    return _finish(merged, acc), n_band_total, n_iter



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
    """Process-wide default for ``render_layered(threads=None)``: None = automatic (numba's thread count,
    cut to the cores not taken by other running processes, :func:`auto_threads`), 1 = never start numba's
    thread pool (what build workers use: processes already fill the cores, and a process whose GNU OpenMP
    pool has started cannot safely fork). Returns the previous default."""
    prev = _DEFAULT_THREADS[0]
    _DEFAULT_THREADS[0] = None if n is None else max(1, int(n))
    return prev


def _running_total():
    """Runnable threads on the machine right now (/proc/loadavg's fourth field, this reader included);
    None where it cannot be read."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _running_here():
    """This process's threads in state R (the reader itself and, just after a threaded render, numba's
    workers still spinning at their barrier), at least 1."""
    own = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        if stat[stat.rindex(")") + 2:][:1] == "R":
            own += 1
    return max(1, own)


def auto_threads(n_max):
    """Threads for an automatic render: at most ``n_max`` and no more than the cores that other processes'
    running threads leave free (at least 1), read at the call from /proc (the 1-minute load average where
    /proc is not readable). On a busy machine a thread that waits for a core stalls every one of the
    renderer's many short parallel regions at its barrier (2 threads took 2–6× longer than 1 at load ~5
    on 2 cores, docs/render.md), so the renderer then runs on one thread."""
    n_max = max(1, int(n_max))
    try:
        ncpu = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ncpu = os.cpu_count() or 1
    total = _running_total()
    if total is None:
        try:
            others = int(os.getloadavg()[0])  # includes this process when it has been busy: conservative
        except OSError:
            others = 0
    elif ncpu - (total - 1) >= n_max:  # enough free cores even if every other runnable thread is foreign
        return n_max
    else:
        others = max(0, total - _running_here())
    return max(1, min(n_max, ncpu - others))


def _resolve_threads(threads):
    t = _DEFAULT_THREADS[0] if threads is None else threads
    if t is None:
        n = auto_threads(numba.config.NUMBA_NUM_THREADS)  # 1 on a busy machine: numba's pool is not touched
        return n if n == 1 else min(n, numba.get_num_threads())
    return max(1, min(int(t), numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def numba_threads(nt):
    """Run the parallel regions inside on ``nt`` numba threads (fewer than numba's count only; the work split
    depends on nt alone, so the output does not change, only how many threads share it); restored after."""
    prev = numba.get_num_threads() if nt > 1 else 1
    if nt < prev:
        numba.set_num_threads(nt)
    try:
        yield
    finally:
        if nt < prev:
            numba.set_num_threads(prev)


def render_layered(img, coc, max_coc, *, near=None, floor_colour=False, coc_step=0.1, return_stats=False,
                   fill_tol=None, fill_omega=None, threads=None):
    """Layered defocus rendering (SYNDOF's model, docs/render.md), numba.

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
        return_stats: also return a dict (n_layers, band_pixels: fill-band pixels summed over layers,
            cg_iterations: the fill's SOR sweeps in whole-band equivalents, summed over layers, threads:
            the numba threads used).
        fill_tol: the partial-occlusion fill's stopping tolerance (red-black SOR over the 8×8 tiles where
            the iterate still moves, float32): the largest Gauss-Seidel correction; None = 1e-5. The
            output error against the exact fill is about 3× this (≤ 3e-5 on the bench frames).
        fill_omega: SOR over-relaxation factor; None (default) = per layer, the optimum for a strip as wide
            as the layer's band, 2 / (1 + sin(π / (1.75·rb + 2))) with rb the band radius (23 % fewer sweeps
            than a fixed 1.75 on the fill-heaviest NYUv2 bench frame, 73 % on a Cityscapes one).
        threads: numba threads for the band search, the fill's set-up and its sweeps (the work is split
            so that the result is bit-identical for any count); None = the process default
            (:func:`set_render_threads`), else automatic: numba's thread count cut to the cores that other
            running processes leave free, read at the call (:func:`auto_threads`; one thread on a busy
            machine); 1 = no thread pool at all.

    Returns:
        float32 (H, W, 3) in [0, 1] (clipped, as SYNDOF writes it).
    """
    a = check_image(img)
    m = check_max_coc(max_coc)
    c = check_map(coc, a.shape[:2], "coc")
    n = check_near(near, a.shape[:2])
    order, starts, sigmas, gtab, rts, rbs = plan_layers(c, n, m, coc_step)
    nt = _resolve_threads(threads)
    if fill_tol is None:
        fill_tol = FILL_TOL_SOR
    with numba_threads(nt):
        out, nband, niter = _render(a, order, starts, sigmas, gtab, rts, rbs, bool(floor_colour), ALPHA_FLOOR,
                                    BAND_FLOOR, float(fill_tol), FILL_MAXIT,
                                    -1.0 if fill_omega is None else float(fill_omega), nt)
    if return_stats:
        return out, {"n_layers": int(sigmas.size), "band_pixels": int(nband), "cg_iterations": int(niter),
                     "threads": int(nt)}
    return out
