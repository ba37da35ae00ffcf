"""Benchmark: a whole NYUv2-size build (1449 frames of 640×480, 795 / 654 split) with 1 and 2 workers.

The input is a real-format ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 / HDF5 in MATLAB's axis order, with
``splits.mat`` and ``classMapping40.mat``) filled with synthetic RGB-D scenes (a pool of distinct frames,
cycled and mirrored), so the build runs through the real path: NYUv2Source -> plan -> synthesize (layered,
max_coc 21, the nyuv2-bsr-1.0 degradation) -> shards -> manifest.

Prints and writes (``--json``): total time per worker count, speed-up, peak RSS per worker process,
whether the two builds are byte-identical, shard read rate through ``bsrdata.open_dataset`` and through
``bsrdata.dataset.BSRDataset`` with a 2-worker torch DataLoader. ``--frames N`` runs a smaller build with
the same 795:654 proportion; the projection to 1449 frames scales by the number of renderings.

Budgets (the project's targets): ≤ 15 min with 2 workers for the whole build; ≥ 1.7× from 1 to 2 workers.

    python perf/build.py                 # full size (long)
    python perf/build.py --frames 120    # reduced
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

FULL_FRAMES, FULL_TRAIN = 1449, 795


def write_fake_nyuv2(folder, n_frames, size=(480, 640), pool=24, seed=0):
    """Real-format NYUv2 files with synthetic content; returns (mat, splits, class_map) paths."""
    import h5py
    import scipy.io

    from bsrdata.sources.synthetic import SyntheticSource

    h, w = size
    os.makedirs(folder, exist_ok=True)
    mat = os.path.join(folder, "nyu_depth_v2_labeled.mat")
    src = SyntheticSource(n_train=min(pool, n_frames), n_test=0, size=(h, w), seed=seed)
    frames = [src.load(k) for k in src.splits()["train"]]
    with h5py.File(mat, "w", userblock_size=512) as f:
        im = f.create_dataset("images", (n_frames, 3, w, h), np.uint8, chunks=(1, 3, w, h))
        de = f.create_dataset("depths", (n_frames, w, h), np.float32, chunks=(1, w, h))
        la = f.create_dataset("labels", (n_frames, w, h), np.uint16, chunks=(1, w, h))
        for i in range(n_frames):
            r = frames[i % len(frames)]
            flip = (i // len(frames)) % 2 == 1
            rgb, d, s = r.rgb, r.depth, r.seg.astype(np.uint16) + 1  # raw ids 1..8
            if flip:
                rgb, d, s = rgb[:, ::-1], d[:, ::-1], s[:, ::-1]
            im[i] = np.ascontiguousarray(rgb.transpose(2, 1, 0))
            de[i] = np.ascontiguousarray(d.T)
            la[i] = np.ascontiguousarray(s.T)
    with open(mat, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116, b" ")
                 + b"\x00" * 8 + (0x0200).to_bytes(2, "little") + b"IM")
    n_train = int(round(n_frames * FULL_TRAIN / FULL_FRAMES))
    idx = np.random.default_rng(seed).permutation(np.arange(1, n_frames + 1))
    splits = os.path.join(folder, "splits.mat")
    scipy.io.savemat(splits, {"trainNdxs": np.sort(idx[:n_train]).astype(np.float64).reshape(-1, 1),
                              "testNdxs": np.sort(idx[n_train:]).astype(np.float64).reshape(-1, 1)})
    cmap = os.path.join(folder, "classMapping40.mat")
    scipy.io.savemat(cmap, {"mapClass": ((np.arange(894) % 40) + 1).astype(np.float64).reshape(1, -1)})
    return mat, splits, cmap


def _cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def read_rate(root, split="train", max_items=400):
    """Samples/s reading through bsrdata.open_dataset (every array of each sample decoded)."""
    import bsrdata

    v = bsrdata.open_dataset(root, split)
    n = min(len(v), max_items)
    t = time.perf_counter()
    tot = 0
    for i in range(n):
        s = v[i]
        tot += s["hr"].nbytes + s["lr"].nbytes + s["blur"].nbytes
    dt = time.perf_counter() - t
    return n / dt


def torch_rate(root, split="train", workers=2, max_items=400):
    """Samples/s through bsrdata.dataset.BSRDataset and a torch DataLoader with ``workers`` processes."""
    try:
        import torch

        from bsrdata.dataset import BSRDataset
    except Exception as exc:
        return None, f"unavailable ({exc})"
    ds = BSRDataset(root, split)
    n = min(len(ds), max_items)
    sub = torch.utils.data.Subset(ds, list(range(n)))
    dl = torch.utils.data.DataLoader(sub, batch_size=8, num_workers=workers, persistent_workers=False)
    it = iter(dl)
    next(it)  # worker start-up is not part of the rate
    t = time.perf_counter()
    seen = 0
    for b in it:
        seen += b["lr"].shape[0]
    return seen / max(time.perf_counter() - t, 1e-9), None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=FULL_FRAMES, help="Frames in the fake .mat (1449 = full size).")
    ap.add_argument("--size", default="480x640", help="Frame size HxW.")
    ap.add_argument("--workers", default="1,2", help="Worker counts to time, comma separated.")
    ap.add_argument("--shard-size", type=int, default=32)
    ap.add_argument("--renderer", default="layered", choices=["layered", "gather"])
    ap.add_argument("--pool", type=int, default=24, help="Distinct synthetic frames cycled into the .mat.")
    ap.add_argument("--work", default=None, help="Working folder (default: a temporary one, removed).")
    ap.add_argument("--json", default=None, help="Write the results here as JSON.")
    ap.add_argument("--no-torch", action="store_true", help="Skip the torch DataLoader read rate.")
    a = ap.parse_args(argv)
    from bsrdata.build import build_dataset
    from bsrdata.degrade import DegradeConfig
    from bsrdata.fileio import write_json_atomic
    from bsrdata.manifest import read_manifest
    from bsrdata.recipes import load_recipe
    from bsrdata.sources import get_source

    h, w = (int(x) for x in a.size.lower().split("x"))
    work = a.work or tempfile.mkdtemp(prefix="bsr-bench-build-")
    own = a.work is None
    res = {"frames": a.frames, "size": [h, w], "renderer": a.renderer, "cpu_count": os.cpu_count(), "runs": {}}
    try:
        t = time.perf_counter()
        mat, splits, cmap = write_fake_nyuv2(os.path.join(work, "src"), a.frames, (h, w), pool=a.pool)
        res["write_fake_mat_s"] = time.perf_counter() - t
        rec = load_recipe("nyuv2-bsr-1.0")
        cfg = DegradeConfig.from_dict(dict(rec["degrade"], renderer=a.renderer))
        # warm up numba (compile / cache load) outside the timed runs
        src = get_source("nyuv2", mat=mat, splits=splits, class_map=cmap)
        build_dataset(src, os.path.join(work, "warm"), cfg, seed=rec["seed"], limit=1, shard_size=a.shard_size)
        renderings = None
        for nw in [int(x) for x in a.workers.split(",")]:
            out = os.path.join(work, f"out{nw}")
            shutil.rmtree(out, ignore_errors=True)
            src = get_source("nyuv2", mat=mat, splits=splits, class_map=cmap)
            c0, load0 = _cpu(), os.getloadavg()[0]
            t = time.perf_counter()
            s = build_dataset(src, out, cfg, seed=rec["seed"], workers=nw, shard_size=a.shard_size)
            dt = time.perf_counter() - t
            cpu = _cpu() - c0
            renderings = sum(v["renderings"] for v in s["splits"].values())
            res["runs"][nw] = {"seconds": dt, "cpu_seconds": cpu, "renderings": renderings,
                               "per_rendering_s": dt / renderings,
                               "loadavg_1min_before_after": [load0, os.getloadavg()[0]],
                               "peak_rss_mb_per_worker": sorted(s["workers_peak_rss_mb"].values())}
            print(f"workers={nw}: {dt:.1f} s wall, {cpu:.1f} s CPU for {renderings} renderings "
                  f"({dt / renderings * 1000:.0f} ms each), "
                  f"peak RSS per worker {', '.join(f'{x:.0f}' for x in sorted(s['workers_peak_rss_mb'].values()))} MB",
                  flush=True)
        ws = sorted(res["runs"])
        if len(ws) >= 2:
            t1, t2 = res["runs"][ws[0]]["seconds"], res["runs"][ws[1]]["seconds"]
            res["speedup"] = t1 / t2
            # on a shared machine wall time depends on other jobs; CPU time shows the work each run needed
            c1, c2 = res["runs"][ws[0]]["cpu_seconds"], res["runs"][ws[1]]["cpu_seconds"]
            res["cpu_ratio_2_vs_1"] = c2 / c1
            res["cpu_share_used"] = {nw: r["cpu_seconds"] / r["seconds"] for nw, r in res["runs"].items()}
            m1 = read_manifest(os.path.join(work, f"out{ws[0]}"))
            m2 = read_manifest(os.path.join(work, f"out{ws[1]}"))
            sh = lambda m: [x["sha256"] for sp in m["splits"].values() for x in sp["shards"]]  # noqa: E731
            res["byte_identical"] = sh(m1) == sh(m2)
        full_renderings = FULL_TRAIN + (FULL_FRAMES - FULL_TRAIN) + 5 * ((FULL_FRAMES - FULL_TRAIN) // 5)
        res["projected_full_s"] = {nw: r["seconds"] * full_renderings / r["renderings"]
                                   for nw, r in res["runs"].items()}
        last = os.path.join(work, f"out{ws[-1]}")
        res["read_rate_open_dataset"] = read_rate(last)
        rate, why = (None, "skipped") if a.no_torch else torch_rate(last)
        res["read_rate_torch_2workers"] = rate if rate is not None else why
        print(json.dumps(res, indent=1))
        if a.json:
            write_json_atomic(a.json, res)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
