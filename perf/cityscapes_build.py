"""Benchmark: a Cityscapes-size build (2048×1024, the cityscapes-bsr-1.0 degradation) through the real path.

Writes a Cityscapes tree in the real layout (``leftImg8bit``, ``disparity`` 16-bit PNG in the Cityscapes
encoding with holes, ``camera`` JSON, ``gtFine`` label ids; docs/sources.md) filled with fake content:
the Middlebury 2014 Motorcycle photo and its ground-truth depth (shipped with scikit-image), resized to
2048×1024 and varied per frame (zoom-crop at a random offset, mirror, depth scaled into a street range
of ~4–60 m), so that every frame has its own real-looking depth structure. Then builds it with
``CityscapesSource(disparity="provided")`` -> plan (five test groups) -> synthesize (layered, max_coc 61,
direct ×4) -> shards -> manifest, with ``--workers`` processes (default 2), and reports:

- wall and CPU seconds per rendering (the build's wall time over its renderings; CPU of all processes),
- peak RSS per worker process (budget ≤ 2 GB),
- bytes per stored sample (shard bytes / renderings, per split),
- the projection to the whole Cityscapes-BSR (2975 / 500 / 1525 images = 6525 renderings with the test
  groups' extra invariant renderings, from the recipe) on 2 cores (this run's wall time per rendering) and
  on 16 cores (CPU seconds per rendering / 16: an estimate assuming 16 workers scale linearly, as 1 → 2
  workers did for NYUv2, docs/pipeline.md).

The split sizes default to train 10 / val 5 / test 5 (20 frames, 25 renderings, 32 % of them
space-invariant, the recipe's 34 %). On a shared machine wall time depends on the other jobs: the load
average is printed.

    python perf/cityscapes_build.py [--train 10 --val 5 --test 5] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".numba_cache"))

H, W = 1024, 2048
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",), "test": ("berlin",)}


def _scene():
    """Motorcycle left image (uint8) and depth (m, holes filled) at full resolution."""
    import skimage.data

    from bsrdata.optics import clean_depth

    left, _, disp = skimage.data.stereo_motorcycle()
    disp = np.asarray(disp, dtype=np.float64)
    depth_mm = 994.978 * 193.001 / (disp + 31.086)  # the Middlebury calibration of this pair
    depth_mm[~np.isfinite(disp)] = np.nan
    depth_m, _ = clean_depth(depth_mm / 1000.0)
    return left, depth_m


def fake_frame(rgb, depth, j, H=H, W=W):
    """Frame j: (rgb uint8 (H, W, 3), disparity float px with holes as 0, baseline m, fx px, label ids)."""
    import cv2

    rng = np.random.default_rng(1000 + j)
    h0, w0 = depth.shape
    zoom = 1.0 + 0.35 * rng.random()
    ch, cw = int(h0 / zoom), int(w0 / zoom)
    y0 = int(rng.integers(0, h0 - ch + 1))
    x0 = int(rng.integers(0, w0 - cw + 1))
    img = cv2.resize(rgb[y0:y0 + ch, x0:x0 + cw], (W, H), interpolation=cv2.INTER_LINEAR)
    d = cv2.resize(depth[y0:y0 + ch, x0:x0 + cw], (W, H), interpolation=cv2.INTER_NEAREST)
    if j % 2:
        img, d = img[:, ::-1], d[:, ::-1]
    # the Motorcycle spans ~1.4-3.5 m; map it to a street range, near/far varying per frame
    near, far = 4.0 + 4.0 * rng.random(), 30.0 + 30.0 * rng.random()
    lo, hi = float(d.min()), float(d.max())
    street = near + (d - lo) / max(hi - lo, 1e-9) * (far - near)
    baseline, fx = 0.209 + 0.002 * (j % 5), 2262.5 + 5.0 * (j % 7)  # Cityscapes-like cameras
    disp = baseline * fx / street
    disp[:, :3] = 0  # holes: the left border, as in the real disparity maps, and a block
    disp[H // 2: H // 2 + 40, W // 3: W // 3 + 60] = 0
    ids = ((np.arange(H)[:, None] // 64 + np.arange(W)[None, :] // 128 + j) % 34).astype(np.uint8)
    return np.ascontiguousarray(img), disp, baseline, fx, ids


def write_fake_cityscapes(root, counts, size=(H, W)):
    """A Cityscapes tree under ``root`` with counts {split: frames}; returns the number of frames."""
    from bsrdata.sources.folder import write_png_atomic
    from bsrdata.stereo import encode_cityscapes_disparity

    rgb, depth = _scene()
    j = 0
    for split, n in counts.items():
        for t in range(n):
            city = CITIES[split][t % len(CITIES[split])]
            key = f"{city}_{t:06d}_{19 + 7 * t:06d}"
            img, disp, baseline, fx, ids = fake_frame(rgb, depth, j, *size)

            def p(kind, suffix, split=split, city=city, key=key):
                return os.path.join(root, kind, split, city, f"{key}_{suffix}")

            write_png_atomic(p("leftImg8bit", "leftImg8bit.png"), img)
            write_png_atomic(p("disparity", "disparity.png"), encode_cityscapes_disparity(disp))
            os.makedirs(os.path.dirname(p("camera", "camera.json")), exist_ok=True)
            with open(p("camera", "camera.json"), "w") as fh:
                json.dump({"extrinsic": {"baseline": baseline, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1,
                                         "yaw": 0.0195, "z": 1.22},
                           "intrinsic": {"fx": fx, "fy": fx, "u0": 1050.0, "v0": 520.0}}, fh)
            if split != "test":
                write_png_atomic(p("gtFine", "gtFine_labelIds.png"), ids)
            j += 1
    return j


def _cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=10)
    ap.add_argument("--val", type=int, default=5)
    ap.add_argument("--test", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", default=f"{H}x{W}", help="Frame size HxW (smaller only to try the script).")
    ap.add_argument("--shard-size", type=int, default=4, help="Renderings per shard (small: the workers share "
                                                               "a small build evenly; 32 in a real build).")
    ap.add_argument("--work", default=None, help="Working folder (default: a temporary one, removed).")
    ap.add_argument("--json", default=None, help="Write the results here as JSON.")
    a = ap.parse_args(argv)
    from bsrdata.build import build_dataset
    from bsrdata.degrade import DegradeConfig
    from bsrdata.fileio import write_json_atomic
    from bsrdata.recipes import load_recipe
    from bsrdata.sources import get_source

    rec = load_recipe("cityscapes-bsr-1.0")
    cfg = DegradeConfig.from_dict(rec["degrade"])
    plan = rec["plan"]
    work = a.work or tempfile.mkdtemp(prefix="bsr-bench-city-")
    own = a.work is None
    size = tuple(int(x) for x in a.size.lower().split("x"))
    res = {"size": list(size), "workers": a.workers, "cpu_count": os.cpu_count()}
    try:
        t = time.perf_counter()
        counts = {"train": a.train, "val": a.val, "test": a.test}
        res["frames"] = write_fake_cityscapes(os.path.join(work, "src"), counts, size)
        res["write_fake_tree_s"] = time.perf_counter() - t
        src = get_source("cityscapes", root=os.path.join(work, "src"), disparity="provided",
                         min_disp=rec["source"]["min_disp"], max_disp=rec["source"]["max_disp"])
        # warm up numba (compile / cache load) outside the timed run, on a tiny tree of the same layout
        write_fake_cityscapes(os.path.join(work, "tiny"), {"train": 1, "val": 1, "test": 1}, (128, 256))
        build_dataset(get_source("cityscapes", root=os.path.join(work, "tiny"), disparity="provided"),
                      os.path.join(work, "warm"), cfg, seed=rec["seed"], shard_size=1,
                      grouped=tuple(plan["grouped"]), n_groups=plan["n_groups"])
        out = os.path.join(work, "out")
        load0 = os.getloadavg()[0]
        c0 = _cpu()
        t = time.perf_counter()
        s = build_dataset(src, out, cfg, seed=rec["seed"], workers=a.workers, shard_size=a.shard_size,
                          grouped=tuple(plan["grouped"]), n_groups=plan["n_groups"])
        dt = time.perf_counter() - t
        cpu = _cpu() - c0
        with open(os.path.join(out, "manifest.json")) as fh:
            man = json.load(fh)
        n_r = sum(v["renderings"] for v in s["splits"].values())
        n_inv = sum(sum(1 for sh in sp["shards"] for x in sh["invariant"] if x) for sp in man["splits"].values())
        bytes_split = {k: sum(sh["bytes"] for sh in v["shards"]) for k, v in man["splits"].items()}
        count_split = {k: v["count"] for k, v in man["splits"].items()}
        full = rec["expected"]["renderings"]
        full_n = sum(full.values())
        full_inv = sum(rec["expected"]["stored_invariant"].values())
        per_r = dt / n_r
        cpu_r = cpu / n_r
        res.update({
            "renderings": n_r, "invariant_renderings": n_inv, "seconds": dt, "cpu_seconds": cpu,
            "wall_per_rendering_s": per_r, "cpu_per_rendering_s": cpu_r,
            "cpu_share_used": cpu / dt / max(1, min(a.workers, os.cpu_count() or 1)),
            "loadavg_1min_before_after": [load0, os.getloadavg()[0]],
            "peak_rss_mb_per_worker": sorted(s["workers_peak_rss_mb"].values()),
            "bytes_per_sample": {k: bytes_split[k] / max(1, count_split[k]) for k in bytes_split},
            "bytes_per_sample_all": sum(bytes_split.values()) / n_r,
            "full": {"renderings": full, "total": full_n, "invariant_share": full_inv / full_n},
            "projected_full_hours": {
                f"{a.workers} workers here (wall)": full_n * per_r / 3600,
                "16 cores (cpu per rendering / 16)": full_n * cpu_r / 16 / 3600,
            },
            "projected_full_bytes_gb": sum(full[k] * bytes_split[k] / max(1, count_split[k]) / 1e9
                                           for k in full if k in bytes_split),
        })
        print(f"{n_r} renderings ({n_inv} invariant) of {res['frames']} frames at {size[1]}x{size[0]}, "
              f"{a.workers} workers: "
              f"{dt:.1f} s wall, {cpu:.1f} s CPU; {per_r:.2f} s wall and {cpu_r:.2f} s CPU per rendering; "
              f"peak RSS per worker {', '.join(f'{x:.0f}' for x in res['peak_rss_mb_per_worker'])} MB; "
              f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
        print(json.dumps(res, indent=1))
        if a.json:
            write_json_atomic(a.json, res)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
