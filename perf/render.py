"""Benchmark of the blur operators (issue 2, item 8).

Times, in one process, on an NYUv2-size frame (640×480, max_coc 21) and a Cityscapes-size frame
(2048×1024, max_coc 61) with realistic depth (the Middlebury 2014 Motorcycle ground truth that ships in
scikit-image, resized; depth_mm = 994.978·193.001 / (disp + 31.086), unknown disparity -> nearest valid):

- ``render_layered`` (numba, on all numba threads and on one) against the straightforward implementation
  (full-frame OpenCV blur per layer, same compositing and fill: ``reference.layered_opencv``), with the
  max abs difference;
- ``render_gather_points`` at the ×4 LR points;
- with ``--compare-solver mg``: ``fill_compare.render_layered_compare`` with that fill solver too (the
  multigrid CG fill the default adaptive SOR replaced; also "sor-full", "jacobi"), timed beside the
  default in the same process.

The focus is drawn with ``optics.sample_focus``; like SYNDOF (which resamples the camera up to 20 times)
the bench redraws until the layer count is in the SYNDOF range (200–350 NYUv2, 600–1000 Cityscapes).
The time per frame depends strongly on the camera (frames focused far, with most of the scene in front of
the focus, need the partial-occlusion fill on many large bands), so sampled cases draw several cameras
(seeds seed, seed+1, ...) and also print the per-camera times. Prints a Markdown table. Numba is warmed
up (compiled) before timing.

    python perf/render.py [--cases nyu:sampled:20,city:0.5] [--repeat 3] [--skip-straightforward]
                           [--no-straightforward city:sampled,city:0.25] [--compare-solver mg] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".numba_cache"))

SIZES = {
    "nyu": dict(h=480, w=640, max_coc=21, layers=(200, 350)),
    "city": dict(h=1024, w=2048, max_coc=61, layers=(600, 1000)),
}


def middlebury_scene(h, w):
    """(img float32 (h,w,3) in [0,1], depth float64 (h,w) metres) from the Motorcycle pair, resized."""
    import cv2
    import skimage.data

    from bsrdata.optics import clean_depth

    left, _, disp = skimage.data.stereo_motorcycle()
    disp = np.asarray(disp, dtype=np.float64)
    depth_mm = 994.978 * 193.001 / (disp + 31.086)
    depth_mm[~np.isfinite(disp)] = np.nan
    depth_m, _ = clean_depth(depth_mm / 1000.0)
    img = cv2.resize(left, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    depth = cv2.resize(depth_m, (w, h), interpolation=cv2.INTER_NEAREST)
    return img, depth


def camera(depth, max_coc, layer_range, seed=0, rank=None):
    """Draw focus until the layer count falls in layer_range (at most 50 draws): (coc, near, focus, n).

    With ``rank`` (0..1) the focus is the depth at that fraction of the ranked unique depths instead
    (a fixed mid-depth focus, so that many layers lie in front of focus and the fill is exercised)."""
    from bsrdata import optics
    from bsrdata.render import count_layers

    rng = np.random.default_rng(seed)
    best = None
    uniq = np.unique(depth)
    for _ in range(50):
        if rank is None:
            focus = optics.sample_focus(depth, rng)
        else:
            focus = float(uniq[int(rank * (uniq.size - 1))])
        coc = optics.quantise_coc(optics.coc_normalised(depth, focus, max_coc), 0.1)
        near = depth < focus
        n = count_layers(coc, near)
        if best is None or abs(n - np.mean(layer_range)) < abs(best[3] - np.mean(layer_range)):
            best = (coc, near, focus, n)
        if layer_range[0] <= n <= layer_range[1]:
            return coc, near, focus, n
    return best


def timeit(fn, repeat):
    """Best wall-clock and best process-CPU seconds over ``repeat`` runs, and the last output."""
    ts, cs = [], []
    out = None
    for _ in range(repeat):
        c = time.process_time()
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return (min(ts), min(cs)), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="nyu:sampled:20,nyu:0.5,city:sampled:2,city:0.25",
                    help="comma list of SIZE:FOCUS[:DRAWS], FOCUS = 'sampled' (near-favouring draw; DRAWS "
                         "cameras, times averaged) or a depth rank in [0, 1]")
    ap.add_argument("--no-straightforward", default="city:0.25",
                    help="cases for which the straightforward run is skipped (too slow)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-straightforward", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="numba threads for render_layered (default: numba's count, all cores)")
    ap.add_argument("--compare-solver", default="",
                    help="also time fill_compare.render_layered_compare with this fill_solver (mg, the previous "
                         "default; sor-full; jacobi)")
    args = ap.parse_args(argv)

    from bsrdata.optics import sigma_from_coc
    from bsrdata.render import render_gather_points, render_layered
    from bsrdata.render.fill_compare import render_layered_compare
    from bsrdata.render.reference import layered_opencv

    # warm-up: compile (or load from the cache) every kernel on a tiny frame
    img0, d0 = middlebury_scene(48, 64)
    coc0, near0, _, _ = camera(d0, 9, (10, 400))
    render_layered(img0, coc0, 9, near=near0)
    render_gather_points(img0, sigma_from_coc(coc0), 9, 4)

    rows = []
    per_camera = []
    skip = set(args.no_straightforward.split(","))
    for case in args.cases.split(","):
        parts = case.split(":")
        name, rank = parts[0], parts[1]
        draws = int(parts[2]) if len(parts) > 2 else 1
        spec = SIZES[name]
        img, depth = middlebury_scene(spec["h"], spec["w"])
        acc = []
        for d in range(draws):
            coc, near, focus, n = camera(depth, spec["max_coc"], spec["layers"], args.seed + d,
                                         None if rank == "sampled" else float(rank))
            sigma = sigma_from_coc(coc)
            t_fast, (out, stats) = timeit(
                lambda: render_layered(img, coc, spec["max_coc"], near=near, return_stats=True,
                                       threads=args.threads), args.repeat)
            t_one, _ = timeit(lambda: render_layered(img, coc, spec["max_coc"], near=near, threads=1), args.repeat)
            t_pts, _ = timeit(lambda: render_gather_points(img, sigma, spec["max_coc"], 4), args.repeat)
            if args.compare_solver:
                t_cmp, _ = timeit(lambda: render_layered_compare(img, coc, spec["max_coc"], near=near,
                                                                       fill_solver=args.compare_solver),
                                        args.repeat)
            else:
                t_cmp = (float("nan"), float("nan"))
            if args.skip_straightforward or f"{name}:{rank}" in skip:
                t_ref, diff = (float("nan"), float("nan")), float("nan")
            else:
                t_ref, ref = timeit(lambda: layered_opencv(img, coc, spec["max_coc"], near=near), 1)
                diff = float(np.abs(out.astype(np.float64) - ref).max())
            acc.append((n, focus, stats["band_pixels"], t_fast, t_ref, diff, t_pts, t_cmp, t_one))
        mean = lambda k: float(np.mean([a[k] for a in acc]))  # noqa: E731
        pair = lambda k: tuple(float(np.mean([a[k][i] for a in acc])) for i in range(2))  # noqa: E731
        label = f"{name} {spec['w']}×{spec['h']}, focus {rank}" + (f" (mean of {draws} draws)" if draws > 1 else "")
        fmt_n = "/".join(str(a[0]) for a in acc)
        fmt_f = "/".join(f"{a[1]:.2f}" for a in acc)
        rows.append((label, spec, fmt_n, fmt_f, int(mean(2)), pair(3), pair(4), max(a[5] for a in acc), pair(6),
                     pair(7), pair(8)))
        if draws > 1:
            w = np.array([a[3][0] for a in acc])
            per_camera.append(f"{label}: wall s per camera " + " ".join(f"{t:.3f}" for t in w)
                              + f"; mean {w.mean():.3f}, median {np.median(w):.3f}, max {w.max():.3f}, "
                              f"mean of the first 5 {w[:5].mean():.3f}")

    import numba

    nthr = args.threads or numba.get_num_threads()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (shared machine); "
          f"best of {args.repeat} (numba) / 1 (straightforward) runs; seconds per frame as wall / process CPU; "
          f"render_layered on {nthr} numba threads ({numba.threading_layer()}), also on 1")
    print()
    cmp_col = f" layered, fill_solver={args.compare_solver} s (wall / cpu) |" if args.compare_solver else ""
    print(f"| frame | max_coc | layers | focus (m) | fill band px (sum over layers) | layered numba, {nthr} threads "
          "s (wall / cpu) | layered numba, 1 thread s (wall / cpu) | straightforward s (wall / cpu) "
          "| speed-up (wall / cpu) | max abs diff | gather_points ×4 s (wall / cpu) |" + cmp_col)
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.compare_solver else ""))
    for name, spec, n, focus, band, t_fast, t_ref, diff, t_pts, t_cmp, t_one in rows:
        print(f"| {name} | {spec['max_coc']} | {n} | {focus} | {band} | {t_fast[0]:.3f} / {t_fast[1]:.3f} "
              f"| {t_one[0]:.3f} / {t_one[1]:.3f} "
              f"| {t_ref[0]:.2f} / {t_ref[1]:.2f} | {t_ref[0] / t_fast[0]:.1f}× / {t_ref[1] / t_fast[1]:.1f}× "
              f"| {diff:.1e} | {t_pts[0]:.3f} / {t_pts[1]:.3f} |"
              + (f" {t_cmp[0]:.3f} / {t_cmp[1]:.3f} |" if args.compare_solver else ""))
    for line in per_camera:
        print()
        print(line)


if __name__ == "__main__":
    main()
