"""Stereo benchmark on the Middlebury 2014 Motorcycle pair shipped with scikit-image.

Accuracy against the pair's ground truth (unknown pixels are inf/NaN and are not scored):
  - ``sgbm``: OpenCV SGBM (bsrdata.stereo.sgbm_disparity) on its own valid pixels, and after
    ``fill_disparity_holes`` on every scored pixel;
  - hole filling alone: holes punched into the ground truth (random discs with a fixed seed, or the
    pixels SGBM leaves invalid), filled with ``fill_disparity_holes``, scored on the hole pixels; a
    nearest-valid-pixel fill runs beside it as a reference;
  - CREStereo, when ``CRESTEREO_WEIGHTS`` names a weights file (crestereo_eth3d.pth), at the pair's
    own size (or ``CRESTEREO_SIZE=HxW``), 20 iterations per pass.
Metrics: EPE = mean |d - d_gt| in pixels; bad-2 = % of scored pixels with |d - d_gt| > 2 px.

Speed: CPU seconds per pair (two-pass inference, 20 iterations each) at 256x512 and 512x1024 with
random weights (the weights do not change the amount of work), and SGBM (max_disp 192, or w/2 for
small images) at the same sizes.

    python perf/stereo.py [--sizes 256x512,512x1024] [--iters 20] [--threads N] [--skip-timing] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bsrdata import stereo


def scores(disp, gt, mask):
    """(EPE px, bad-2 %, n scored) over ``mask`` (bool) where gt is finite."""
    m = mask & np.isfinite(gt) & np.isfinite(disp)
    err = np.abs(disp[m].astype(np.float64) - gt[m])
    return float(err.mean()), float(100.0 * (err > 2.0).mean()), int(m.sum())


def punch_holes(shape, rng, fraction=0.25):
    """bool mask of random discs (radius 3-20 px) covering about ``fraction`` of the image."""
    h, w = shape
    holes = np.zeros(shape, bool)
    yy, xx = np.mgrid[0:h, 0:w]
    while holes.mean() < fraction:
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, 21)
        holes |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return holes


def nearest_fill(disp, valid):
    """Reference fill: every invalid pixel takes the value of the nearest valid pixel."""
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return disp[iy, ix]


def accuracy(rows, crestereo_weights=None, crestereo_size=None, iters=20):
    from skimage.data import stereo_motorcycle

    left, right, gt = stereo_motorcycle()
    gt = gt.astype(np.float64)
    known = np.isfinite(gt)
    everywhere = np.ones(gt.shape, bool)

    t = time.process_time()
    d, v = stereo.sgbm_disparity(left, right, max_disp=80)
    dt = time.process_time() - t
    e, b, n = scores(d, gt, v)
    rows.append(("sgbm (its valid pixels)", e, b, f"{100.0 * n / known.sum():.1f} % of GT pixels", dt))
    filled = stereo.fill_disparity_holes(d, v)
    e, b, n = scores(filled, gt, everywhere)
    rows.append(("sgbm + fill_disparity_holes", e, b, "100 % of GT pixels", dt))

    # holes punched into the ground truth: random discs, and where SGBM fails (occlusions, low texture)
    rng = np.random.default_rng(0)
    for label, holes in (("random discs", punch_holes(gt.shape, rng) & known), ("SGBM-invalid pixels", known & ~v)):
        valid = known & ~holes
        sparse = np.where(valid, gt, 0.0)
        for name, fill in (("fill_disparity_holes", stereo.fill_disparity_holes),
                           ("nearest-valid fill (reference)", nearest_fill)):
            t = time.process_time()
            f = fill(sparse, valid)
            dt = time.process_time() - t
            e, b, n = scores(f, gt, holes)
            rows.append((f"{name}, GT with holes at {label}", e, b, f"{n} hole pixels", dt))

    if crestereo_weights:
        import torch

        from bsrdata.models.crestereo import load_crestereo, predict_disparity

        model = load_crestereo(crestereo_weights, "cpu")
        t = time.process_time()
        with torch.no_grad():
            d = predict_disparity(model, left[..., ::-1].copy(), right[..., ::-1].copy(), size=crestereo_size,
                                  iters=iters)
        dt = time.process_time() - t
        e, b, n = scores(d, gt, everywhere)
        size = "x".join(map(str, crestereo_size)) if crestereo_size else f"{gt.shape[0]}x{gt.shape[1]}"
        rows.append((f"CREStereo ({os.path.basename(crestereo_weights)}, {size}, {iters} it)", e, b,
                     "100 % of GT pixels", dt))
    return rows


def timing(sizes, iters):
    import torch

    from bsrdata.models.crestereo import CREStereo, crestereo_disparity

    torch.manual_seed(0)
    model = CREStereo().eval()
    rng = np.random.default_rng(0)
    out = []
    for h, w in sizes:
        left = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        right = np.roll(left, -8, axis=1)
        t = time.process_time()
        stereo.sgbm_disparity(left, right, max_disp=min(192, w // 2))
        sgbm_cpu = time.process_time() - t
        lt = torch.from_numpy(left.transpose(2, 0, 1).copy()).float()[None]
        rt = torch.from_numpy(right.transpose(2, 0, 1).copy()).float()[None]
        t, tw = time.process_time(), time.perf_counter()
        crestereo_disparity(model, lt, rt, iters=iters)
        out.append(((h, w), time.process_time() - t, time.perf_counter() - tw, sgbm_cpu))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256x512,512x1024")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's choice; 1 is steadier on a shared machine)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    weights = os.environ.get("CRESTEREO_WEIGHTS") or None
    size_env = os.environ.get("CRESTEREO_SIZE")
    csize = tuple(int(v) for v in size_env.split("x")) if size_env else None
    load0 = os.getloadavg()
    rows = accuracy([], weights, csize, args.iters)
    print("Middlebury 2014 Motorcycle (scikit-image), 741x500; EPE px, bad-2 %")
    print("| method | EPE (px) | bad-2 (%) | scored | CPU s |")
    print("|---|---|---|---|---|")
    for name, e, b, n, dt in rows:
        print(f"| {name} | {e:.2f} | {b:.1f} | {n} | {dt:.2f} |")
    if not weights:
        print("(CREStereo accuracy skipped: set CRESTEREO_WEIGHTS=/path/to/crestereo_eth3d.pth)")
    times = []
    if not args.skip_timing:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        times = timing(sizes, args.iters)
        print(f"\nCREStereo CPU time per pair (random weights, {args.iters} iterations x 2 passes, "
              f"torch threads {torch.get_num_threads()}, load average before {load0[0]:.1f}, "
              f"after {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
        print("| size (HxW) | CREStereo CPU s | CREStereo wall s | SGBM CPU s |")
        print("|---|---|---|---|")
        for (h, w), cpu, wall, sg in times:
            print(f"| {h}x{w} | {cpu:.1f} | {wall:.1f} | {sg:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"accuracy": [dict(zip(("method", "epe", "bad2", "scored", "cpu_s"), r)) for r in rows],
                       "timing": [{"size": list(s), "cpu_s": c, "wall_s": w, "sgbm_cpu_s": g}
                                  for s, c, w, g in times],
                       "torch_threads": torch.get_num_threads(), "loadavg_before": load0,
                       "loadavg_after": os.getloadavg()}, fh, indent=2)


if __name__ == "__main__":
    main()
