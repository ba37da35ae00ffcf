"""Fill solvers kept only for comparison with the product's adaptive SOR (numba): red-black SOR over the
whole band (``"sor-full"``), conjugate gradients preconditioned by an aggregation-multigrid V-cycle
(``"mg"``, float64, the earlier default) or by Jacobi (``"jacobi"``); and ``"none"`` (the band search
without a fill, for profiling).

:func:`render_layered_compare` is ``render_layered`` with one of them as the partial-occlusion fill (the
same plan, blur, band search and compositing kernels; only the fill differs). The tests check that every
solver stays within 1e-4 of the twin; ``perf/render.py --compare-solver`` times them. Not used by the
product path (``render_layered``, dataset builds).
"""

from __future__ import annotations

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.optics import check_max_coc
from bsrdata.render.blur import PAR_MIN_PIXELS, TILE, _composite, _mark, _normalise
from bsrdata.render.common import ALPHA_FLOOR, BAND_FLOOR, check_image, check_map, check_near
from bsrdata.render.fill import FILL_TOL_SOR, _band_system, _band_writeback, _layer_omega, _sor_range
from bsrdata.render.kernel_cache import njit
from bsrdata.render.layered import (
    FILL_MAXIT,
    _finish,
    _layer_band,
    _layer_blur,
    _layer_cover,
    _render_state,
    _resolve_threads,
    numba_threads,
    plan_layers,
    render_layered,
)

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
def _render_compare(img, order, starts, sigmas, gtab, rts, rbs, floor_colour, alpha_floor, band_floor, tol,
                    maxit, solver, omega, nthreads):
    """``layered._render`` with the fill by ``solver`` (0 Jacobi CG, 1 multigrid CG, 2 SOR over the whole
    band, -1 none: the band search only, for profiling); returns (out, band pixels, CG iterations or SOR
    sweeps, summed over layers)."""
    st = _render_state(img, sigmas, gtab, rts)
    (merged, acc, hb, vb, gtab32, pm, hmark, vmark, dmark, hlist, vlist, dlist, vwork, cnt_p, cbox,
     tile_area, has_fill, band, gs0, gmid, gt, guess, fpad, gmap, hsum, hflag, pf, rowcnt, bwork) = st
    n_h = img.shape[0]
    n_w = img.shape[1]
    r = gtab.shape[1] // 2
    use_cg = solver == 0 or solver == 1
    index = np.full(n_h * n_w if (has_fill and use_cg) else 1, -1, dtype=np.int64)
    cmaps = [np.full((1, 1), -1, dtype=np.int64)]
    for lev in range(1, MG_MAX_LEVELS):
        if has_fill and use_cg:
            cmaps.append(np.full(((n_h >> lev) + 1, (n_w >> lev) + 1), -1, dtype=np.int64))
        else:
            cmaps.append(np.full((1, 1), -1, dtype=np.int64))
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
                if nb > 0 and solver >= 0:
                    if solver == 2:
                        nd, it = _fill_sor(band, nb, pm, merged, acc, fpad, dmark, dlist, nd, tol, maxit, guess,
                                           _layer_omega(omega, rbs[li]), nthreads)
                    else:
                        nd, it = _fill_band(band, nb, pm, merged, acc, index, dmark, dlist, nd, tol, maxit, guess,
                                            cmaps, solver == 1)
                    n_iter += it
                    n_band_total += nb
            nd = _composite(vb, vlist, nv, vmark, merged, acc, floor_colour, alpha_floor, dmark, dlist, nd,
                            nthreads)
        _layer_cover(st, pix, n_w, r)
        if sig == 0.0:
            seen_focus = True
    return _finish(merged, acc), n_band_total, n_iter


SOLVERS = {"none": -1, "jacobi": 0, "mg": 1, "sor-full": 2, "sor": 3}


def render_layered_compare(img, coc, max_coc, *, fill_solver, near=None, floor_colour=False, coc_step=0.1,
                           return_stats=False, fill_tol=None, fill_omega=None, threads=None):
    """``render_layered`` with the partial-occlusion fill by ``fill_solver``.

    Args:
        fill_solver: "sor" (the product's adaptive SOR: calls ``render_layered``), "sor-full" (red-black SOR
            over the whole band every sweep, float32), "mg" (multigrid-preconditioned CG, float64),
            "jacobi" (Jacobi-preconditioned CG), "none" (no fill, the band search only: for profiling;
            not the layered result).
        fill_tol: None = 1e-5 (largest Gauss-Seidel correction) for the SOR solvers, 1e-6 (max residual
            relative to the right-hand side) for the CG solvers.
        The other arguments and the result (float32 (H, W, 3) in [0, 1], and with ``return_stats`` the dict
        of ``render_layered``, whose cg_iterations are CG iterations for "mg" / "jacobi", SOR sweeps in
        whole-band equivalents for "sor" / "sor-full") as ``render_layered``.
    """
    if fill_solver not in SOLVERS:
        raise BsrError(f"fill_solver: expected one of {sorted(SOLVERS)}, got {fill_solver!r}")
    if fill_solver == "sor":
        return render_layered(img, coc, max_coc, near=near, floor_colour=floor_colour, coc_step=coc_step,
                              return_stats=return_stats, fill_tol=fill_tol, fill_omega=fill_omega, threads=threads)
    a = check_image(img)
    m = check_max_coc(max_coc)
    c = check_map(coc, a.shape[:2], "coc")
    n = check_near(near, a.shape[:2])
    order, starts, sigmas, gtab, rts, rbs = plan_layers(c, n, m, coc_step)
    nt = _resolve_threads(threads)
    if fill_tol is None:
        fill_tol = FILL_TOL_SOR if fill_solver.startswith("sor") else 1e-6
    with numba_threads(nt):
        out, nband, niter = _render_compare(a, order, starts, sigmas, gtab, rts, rbs, bool(floor_colour),
                                            ALPHA_FLOOR, BAND_FLOOR, float(fill_tol), FILL_MAXIT,
                                            SOLVERS[fill_solver], -1.0 if fill_omega is None else float(fill_omega),
                                            nt)
    if return_stats:
        return out, {"n_layers": int(sigmas.size), "band_pixels": int(nband), "cg_iterations": int(niter)}
    return out
