"""Where ``render_layered``'s time goes: the same layer loop as ``bsrdata.render.layered._render``, driven
from Python with a timer around each phase (for whoever works on the renderer's budgets, docs/render.md).

Phases per layer, far → near: ``blur`` (an in-focus layer's copy or a blurred layer's two scatter passes),
``norm`` (merged/acc normalisation before a fill), ``band`` (the fill band's search), ``fill`` (the
adaptive red-black SOR, set-up and write-back included), ``comp`` (compositing), ``cover`` (adding the
layer to P). The kernels are the renderer's own; only the loop around them is repeated here, and
:func:`render_phases` checks its image is bit-identical to ``render_layered``'s
(``tests/test_perf_render_phases.py`` keeps the two loops equal). One Python call per phase and layer
adds a few microseconds each (a few ms per frame), below the run-to-run spread, so the phase sum and one
``render_layered`` call agree within noise. Seconds are the best of ``--repeat`` runs per phase, on the
thread count given (default 1: no parallel regions, the clearest split).

    python perf/render_phases.py [--cases 3,8,0] [--threads 1] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".numba_cache"))

PHASES = ("blur", "norm", "band", "fill", "comp", "cover")


def render_phases(img, coc, near, max_coc, threads=1, coc_step=0.1):
    """One render of ``render_layered``'s default settings with per-phase wall seconds.

    Returns (image float32 (H, W, 3), seconds {phase: s}, stats {n_layers, band_pixels, cg_iterations})."""
    from bsrdata.optics import check_max_coc
    from bsrdata.render import blur, fill, layered
    from bsrdata.render.common import ALPHA_FLOOR, BAND_FLOOR, check_image, check_map, check_near

    img = check_image(img)  # the conversions render_layered makes
    max_coc = check_max_coc(max_coc)
    c = check_map(coc, img.shape[:2], "coc")
    order, starts, sigmas, gtab, rts, rbs = layered.plan_layers(c, check_near(near, img.shape[:2]), max_coc,
                                                                coc_step)
    st = layered._render_state(img, sigmas, gtab, rts)
    f = dict(zip(layered.STATE_FIELDS, st))
    merged, acc, dmark, dlist, pm = f["merged"], f["acc"], f["dmark"], f["dlist"], f["pm"]
    sec = dict.fromkeys(PHASES, 0.0)
    nd = n_iter = n_band = 0
    seen_focus = False
    n_w = img.shape[1]
    r = gtab.shape[1] // 2
    clock = time.perf_counter
    for li in range(sigmas.shape[0]):
        pix = order[starts[li]:starts[li + 1]]
        sig = sigmas[li]
        t = clock()
        nd, nv = layered._layer_blur(st, img, pix, li, sig, gtab, rts, nd, threads)
        sec["blur"] += clock() - t
        if sig != 0.0:
            if seen_focus:
                t = clock()
                nd = blur._normalise(merged, acc, dmark, dlist, nd, threads)
                sec["norm"] += clock() - t
                t = clock()
                nb, ng = layered._layer_band(st, li, gtab, rts, rbs, BAND_FLOOR, threads)
                sec["band"] += clock() - t
                if nb > 0:
                    t = clock()
                    nd, it = fill._fill_sor_adaptive(f["band"], nb, f["gs0"], f["gmid"], f["gt"], ng, pm, merged,
                                                     acc, f["fpad"], f["gmap"], dmark, dlist, nd, fill.FILL_TOL_SOR,
                                                     layered.FILL_MAXIT, f["guess"],
                                                     fill._layer_omega(-1.0, rbs[li]), threads)
                    sec["fill"] += clock() - t
                    n_iter += it
                    n_band += nb
            t = clock()
            nd = blur._composite(f["vb"], f["vlist"], nv, f["vmark"], merged, acc, False, ALPHA_FLOOR, dmark, dlist,
                                 nd, threads)
            sec["comp"] += clock() - t
        t = clock()
        layered._layer_cover(st, pix, n_w, r)
        sec["cover"] += clock() - t
        if sig == 0.0:
            seen_focus = True
    stats = {"n_layers": int(sigmas.size), "band_pixels": int(n_band), "cg_iterations": int(n_iter)}
    return layered._finish(merged, acc), sec, stats


def profile_camera(img, coc, near, max_coc, threads, repeat):
    """Best-of-``repeat`` seconds per phase and of one whole ``render_layered`` call, checked bit-identical:
    {"phases": {...}, "phase_sum": s, "render_layered": s, "stats": {...}}."""
    from bsrdata.render import layered, render_layered

    ref, ref_stats = render_layered(img, coc, max_coc, near=near, threads=threads, return_stats=True)
    render_phases(img, coc, near, max_coc, threads)  # untimed: loads each phase's compiled entry point
    best = dict.fromkeys(PHASES, float("inf"))
    whole = float("inf")
    stats = None
    for _ in range(repeat):
        with layered.numba_threads(threads):  # the pool size render_layered gives its parallel regions
            out, sec, stats = render_phases(img, coc, near, max_coc, threads)
        if not np.array_equal(out, ref):
            raise SystemExit("render_phases: the phase loop no longer matches render_layered (update it)")
        best = {k: min(best[k], sec[k]) for k in PHASES}
        t = time.perf_counter()
        render_layered(img, coc, max_coc, near=near, threads=threads)
        whole = min(whole, time.perf_counter() - t)
    if stats["band_pixels"] != ref_stats["band_pixels"] or stats["cg_iterations"] != ref_stats["cg_iterations"]:
        raise SystemExit("render_phases: fill statistics differ from render_layered's")
    return {"phases": best, "phase_sum": sum(best.values()), "render_layered": whole, "stats": stats}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="3,8,0", help="NYUv2-size camera seeds (perf/render.py's sampled cameras)")
    ap.add_argument("--size", default="nyu", choices=("nyu", "city"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    from render import SIZES, camera, middlebury_scene

    from bsrdata.fileio import write_json_atomic

    spec = SIZES[a.size]
    img, depth = middlebury_scene(spec["h"], spec["w"])
    res = {"threads": a.threads, "repeat": a.repeat, "size": a.size, "load_before": os.getloadavg()[0],
           "cameras": {}}
    print("| camera (seed) | layers | " + " | ".join(PHASES) + " | phase sum | render_layered |")
    print("|---" * (len(PHASES) + 4) + "|")
    for seed in (int(s) for s in a.cases.split(",")):
        coc, near, focus, _ = camera(depth, spec["max_coc"], spec["layers"], seed)
        p = profile_camera(img, coc, near, spec["max_coc"], a.threads, a.repeat)
        p["focus_m"] = float(focus)
        res["cameras"][str(seed)] = p
        cells = " | ".join(f"{p['phases'][k]:.3f} ({100 * p['phases'][k] / p['phase_sum']:.0f} %)" for k in PHASES)
        print(f"| {seed} ({focus:.2f} m) | {p['stats']['n_layers']} | {cells} | {p['phase_sum']:.3f} | "
              f"{p['render_layered']:.3f} |", flush=True)
    res["load_after"] = os.getloadavg()[0]
    print(f"seconds, best of {a.repeat} per phase; {a.threads} thread(s); load {res['load_before']:.1f} -> "
          f"{res['load_after']:.1f}")
    if a.json:
        write_json_atomic(a.json, res)
    return res


if __name__ == "__main__":
    main()
