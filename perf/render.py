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
  default in the same process;
- with ``--contend K``: the same frames with K competing busy processes started by this script, timing
  in turn (alternating, best of ``--repeat``) one thread, numba's thread count forced (the old default)
  and the default (automatic: the thread count from the running load, ``render.layered.auto_threads``).

The focus is drawn with ``optics.sample_focus``; like SYNDOF (which resamples the camera up to 20 times)
the bench redraws until the layer count is in the SYNDOF range (200–350 NYUv2, 600–1000 Cityscapes).
The time per frame depends strongly on the camera (frames focused far, with most of the scene in front of
the focus, need the partial-occlusion fill on many large bands), so sampled cases draw several cameras
(seeds seed, seed+1, ...) and also print the per-camera times. Prints a Markdown table. Numba is warmed
up (compiled) before timing.

    python perf/render.py [--cases nyu:sampled:20,city:0.5] [--repeat 3] [--skip-straightforward]
                           [--no-straightforward city:sampled,city:0.25] [--compare-solver mg] [--threads N]
                           [--contend 4 --contend-cases nyu:sampled:1@3,nyu:sampled:1@0]
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


def _busy():  # a competing process: one core's worth of pure-Python work
    while True:
        pass


def distribution(w):
    """'mean, median, p95, max' of the per-camera seconds."""
    w = np.asarray(w, dtype=np.float64)
    return (f"mean {w.mean():.3f}, median {np.median(w):.3f}, p95 {np.percentile(w, 95):.3f}, "
            f"max {w.max():.3f}")


def contention(args, cases, k):
    """The frames of ``cases`` with k competing busy processes: 1 thread / numba's count forced / automatic,
    run in turn (alternating) and best of args.repeat; returns Markdown lines."""
    import multiprocessing as mp

    import numba

    from bsrdata.render import render_layered

    n_all = numba.get_num_threads()
    frames = []
    for case in cases.split(","):
        spec_s, _, seed = case.partition("@")
        name, rank = spec_s.split(":")[:2]
        spec = SIZES[name]
        img, depth = middlebury_scene(spec["h"], spec["w"])
        coc, near, focus, n = camera(depth, spec["max_coc"], spec["layers"], int(seed or args.seed),
                                     None if rank == "sampled" else float(rank))
        frames.append((f"{name} {spec['w']}×{spec['h']}, focus {rank} (seed {seed or args.seed}, {focus:.2f} m)",
                       img, coc, near, spec["max_coc"]))
    ctx = mp.get_context("spawn")  # never fork a process whose OpenMP pool may have started
    procs = [ctx.Process(target=_busy, daemon=True) for _ in range(k)]
    for p in procs:
        p.start()
    lines = []
    try:
        time.sleep(1.0)
        for label, img, coc, near, m in frames:
            modes = {"1 thread": 1, f"{n_all} threads forced": n_all, "default (auto)": None}
            best = {mname: (float("inf"), float("inf")) for mname in modes}
            picks = []
            ref = None
            for _ in range(args.repeat):
                for mname, th in modes.items():  # alternating: each mode sees the same load drift
                    c = time.process_time()
                    t = time.perf_counter()
                    out, st = render_layered(img, coc, m, near=near, threads=th, return_stats=True)
                    dt, dc = time.perf_counter() - t, time.process_time() - c
                    if th is None:
                        picks.append(st["threads"])
                    best[mname] = (min(best[mname][0], dt), min(best[mname][1], dc))
                    if ref is None:
                        ref = out
                    elif not np.array_equal(ref, out):
                        raise SystemExit(f"{label}: {mname} is not bit-identical to the first run")
            one = best["1 thread"][0]
            cells = [f"{best[mn][0]:.3f} / {best[mn][1]:.3f} ({best[mn][0] / one:.2f}×)" for mn in modes]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {'/'.join(str(x) for x in picks)} |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
    head = (f"With {k} competing busy processes started by this script (plus whatever else ran; load average "
            f"{os.getloadavg()[0]:.1f} at the end), {os.cpu_count()} CPUs, best of {args.repeat}, modes run in "
            "turn; seconds wall / process CPU (wall ratio to 1 thread); every output bit-identical")
    cols = "| frame | 1 thread | " + f"{n_all} threads forced (old default) | default (auto) | auto's thread counts |"
    return [head, "", cols, "|---|---|---|---|---|", *lines]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="nyu:sampled:20,nyu:0.5,city:sampled:2,city:0.25",
                    help="comma list of SIZE:FOCUS[:DRAWS], FOCUS = 'sampled' (near-favouring draw; DRAWS "
                         "cameras, times averaged) or a depth rank in [0, 1]; '' = none")
    ap.add_argument("--no-straightforward", default="city:0.25",
                    help="cases for which the straightforward run is skipped (too slow)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-straightforward", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="numba threads for the 'forced' column (default: numba's count, all cores); 0 = no "
                         "forced column (the default, automatic thread count, is always timed)")
    ap.add_argument("--compare-solver", default="",
                    help="also time fill_compare.render_layered_compare with this fill_solver (mg, the previous "
                         "default; sor-full; jacobi)")
    ap.add_argument("--contend", type=int, default=0,
                    help="also time --contend-cases with this many competing busy processes")
    ap.add_argument("--contend-cases", default="nyu:sampled@3,nyu:sampled@0,nyu:sampled@8",
                    help="SIZE:FOCUS@SEED frames for --contend (seed 3: the far-focused NYUv2 camera)")
    args = ap.parse_args(argv)

    import numba

    from bsrdata.optics import sigma_from_coc
    from bsrdata.render import render_gather_points, render_layered
    from bsrdata.render.fill_compare import render_layered_compare
    from bsrdata.render.reference import layered_opencv

    # warm-up: compile (or load from the cache) every kernel on a tiny frame
    img0, d0 = middlebury_scene(48, 64)
    coc0, near0, _, _ = camera(d0, 9, (10, 400))
    render_layered(img0, coc0, 9, near=near0)
    render_gather_points(img0, sigma_from_coc(coc0), 9, 4)

    nthr = numba.get_num_threads() if args.threads is None else args.threads
    rows = []
    per_camera = []
    skip = set(args.no_straightforward.split(","))
    nan2 = (float("nan"), float("nan"))
    for case in [c for c in args.cases.split(",") if c]:
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
            t_auto, (out, stats) = timeit(
                lambda: render_layered(img, coc, spec["max_coc"], near=near, return_stats=True), args.repeat)
            picked = stats["threads"]  # the automatic count of the last default run
            if nthr:
                t_fast, _ = timeit(lambda: render_layered(img, coc, spec["max_coc"], near=near, threads=nthr),
                                   args.repeat)
            else:
                t_fast = nan2
            t_one, _ = timeit(lambda: render_layered(img, coc, spec["max_coc"], near=near, threads=1), args.repeat)
            t_pts, _ = timeit(lambda: render_gather_points(img, sigma, spec["max_coc"], 4), args.repeat)
            if args.compare_solver:
                t_cmp, _ = timeit(lambda: render_layered_compare(img, coc, spec["max_coc"], near=near,
                                                                 fill_solver=args.compare_solver), args.repeat)
            else:
                t_cmp = nan2
            if args.skip_straightforward or f"{name}:{rank}" in skip:
                t_ref, diff = nan2, float("nan")
            else:
                t_ref, ref = timeit(lambda: layered_opencv(img, coc, spec["max_coc"], near=near), 1)
                diff = float(np.abs(out.astype(np.float64) - ref).max())
            acc.append((n, focus, stats["band_pixels"], t_fast, t_ref, diff, t_pts, t_cmp, t_one, t_auto, picked,
                        stats["cg_iterations"]))
            print(f"# {name} camera {d}: focus {focus:.2f} m, {n} layers, default {t_auto[0]:.3f} s "
                  f"(auto threads {picked}), forced {nthr}: {t_fast[0]:.3f} s, 1 thread {t_one[0]:.3f} s, "
                  f"SOR sweeps {stats['cg_iterations']}, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        mean = lambda k: float(np.mean([a[k] for a in acc]))  # noqa: E731
        pair = lambda k: tuple(float(np.mean([a[k][i] for a in acc])) for i in range(2))  # noqa: E731
        label = f"{name} {spec['w']}×{spec['h']}, focus {rank}" + (f" (mean of {draws} draws)" if draws > 1 else "")
        fmt_n = "/".join(str(a[0]) for a in acc)
        fmt_f = "/".join(f"{a[1]:.2f}" for a in acc)
        rows.append((label, spec, fmt_n, fmt_f, int(mean(2)), pair(9), pair(3), pair(8), pair(4),
                     max(a[5] for a in acc), pair(6), pair(7)))
        if draws > 1:
            for k, what in ((9, "default"), (8, "1 thread"), (3, f"{nthr} threads forced")):
                w = np.array([a[k][0] for a in acc])
                if np.isnan(w).all():
                    continue
                per_camera.append(f"{label}, {what}: wall s per camera " + " ".join(f"{t:.3f}" for t in w)
                                  + f"; {distribution(w)}")
            per_camera.append(f"{label}: SOR sweeps (whole-band equivalents, summed over layers) per camera "
                              + " ".join(str(a[11]) for a in acc) + "; auto thread counts "
                              + "/".join(str(a[10]) for a in acc))

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (shared machine); "
          f"best of {args.repeat} (numba) / 1 (straightforward) runs; seconds per frame as wall / process CPU; "
          "render_layered by default (automatic thread count), "
          + (f"on {nthr} numba threads forced ({numba.threading_layer() if nthr > 1 else 'no pool'}), " if nthr
             else "")
          + "and on 1")
    print()
    cmp_col = f" layered, fill_solver={args.compare_solver} s (wall / cpu) |" if args.compare_solver else ""
    print(f"| frame | max_coc | layers | focus (m) | fill band px (sum over layers) | layered numba, default s "
          f"(wall / cpu) | {nthr} threads forced s (wall / cpu) | 1 thread s (wall / cpu) | straightforward s "
          "(wall / cpu) | speed-up of the default (wall / cpu) | max abs diff | gather_points ×4 s (wall / cpu) |"
          + cmp_col)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.compare_solver else ""))
    for name, spec, n, focus, band, t_auto, t_fast, t_one, t_ref, diff, t_pts, t_cmp in rows:
        print(f"| {name} | {spec['max_coc']} | {n} | {focus} | {band} | {t_auto[0]:.3f} / {t_auto[1]:.3f} "
              f"| {t_fast[0]:.3f} / {t_fast[1]:.3f} | {t_one[0]:.3f} / {t_one[1]:.3f} "
              f"| {t_ref[0]:.2f} / {t_ref[1]:.2f} | {t_ref[0] / t_auto[0]:.1f}× / {t_ref[1] / t_auto[1]:.1f}× "
              f"| {diff:.1e} | {t_pts[0]:.3f} / {t_pts[1]:.3f} |"
              + (f" {t_cmp[0]:.3f} / {t_cmp[1]:.3f} |" if args.compare_solver else ""))
    for line in per_camera:
        print()
        print(line)
    if args.contend:
        print()
        for line in contention(args, args.contend_cases, args.contend):
            print(line)


if __name__ == "__main__":
    main()
