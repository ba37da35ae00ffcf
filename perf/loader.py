"""Benchmark: reading NYUv2-size training items (480×640: hr, lr, blur, seg) through ``BSRDataset`` and a
torch DataLoader, shard format 2 + compact (uint8) items against the first reader (format 1 shards, float
items: what ``BSRDataset`` did before format 2), in the same process, for 1, 2 and 4 workers; and the same
format-2 items through :class:`bsrdata.loader.RingLoader` (batches handed over in reused shared slots
instead of a fresh shared-memory segment per batch).

The samples are real photographs (scikit-image's astronaut, coffee, chelsea, rocket, Middlebury
motorcycle, resized to the frame) with ``lr`` = every 4th pixel, a σ map on the CoC grid (max_coc 21,
step 0.1) from a synthetic depth (a room-like ramp with boxes, ``optics.coc_normalised``), and labels from
depth bands; cycled and mirrored to ``--items`` items in shards of 32. Both datasets are written once into
a temporary folder (in the page cache, as after the first epoch of training). Not rendered (defocus would
make the photos a little smoother, so a little more compressible in both formats).

Rates are items/s over ``--passes`` passes of the items after the first ``--skip`` batches of each
DataLoader (worker start-up and first touches excluded: the steady state of a training run), batch 8. The
readers alternate inside each repeat, so load from other processes hits all; each ratio is taken within a
repeat, and the spread over repeats is printed. Also: the one-process decode rate, 192×192 crops
(RRDB-SFT training) and the bytes per item of both formats at NYUv2 and Cityscapes (1024×2048) size.

    python perf/loader.py                      # 1, 2, 4 workers, 3 repeats
    python perf/loader.py --repeats 5 --json /tmp/loader.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".numba_cache"))

RING = "ring: format 2, uint8 items, RingLoader"
NEW_TF = "new + to_float in the main process"
ATTRS = {"scale": 4, "max_coc": 21, "sigma_max": 5.0, "coc_step": 0.1, "renderer": "layered",
         "downsample": "direct", "noise": 0.0, "floor_colour": False, "generator_version": "perf",
         "num_classes": 40}


def _photos():
    from skimage import data as skd

    m = skd.stereo_motorcycle()
    return [skd.astronaut(), skd.coffee(), skd.chelsea(), skd.rocket(), m[0], m[1]]


def make_samples(size=(480, 640), n_distinct=6, seed=0, max_coc=21):
    """``n_distinct`` samples of frame ``size``: photo hr, direct ×4 lr, grid σ map, depth-band labels."""
    import cv2

    from bsrdata import optics

    h, w = size
    rng = np.random.default_rng(seed)
    out = []
    photos = _photos()
    for i in range(n_distinct):
        ph = photos[i % len(photos)]
        hr = cv2.resize(ph, (w, h), interpolation=cv2.INTER_AREA if ph.shape[0] >= h else cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        depth = 1.0 + 6.0 * (1 - yy / h) + 0.5 * np.sin(xx / w * 3 + i)
        for _ in range(5):  # boxes in front
            y0, x0 = int(rng.integers(0, h - h // 4)), int(rng.integers(0, w - w // 4))
            depth[y0:y0 + int(rng.integers(h // 8, h // 4)), x0:x0 + int(rng.integers(w // 8, w // 4))] = \
                rng.uniform(0.7, 4.0)
        focus = float(np.quantile(depth, rng.uniform(0.1, 0.9)))
        coc = optics.quantise_coc(optics.coc_normalised(depth, focus, max_coc), 0.1)
        blur = np.asarray(optics.sigma_from_coc(coc), dtype=np.float32)
        seg = np.minimum(np.floor(depth * 4), 39).astype(np.uint8)
        out.append({"key": f"p{i}", "hr": np.ascontiguousarray(hr), "lr": np.ascontiguousarray(hr[::4, ::4]),
                    "blur": blur, "seg": seg, "invariant": False, "params": {"focus_m": focus}})
    return out


def write_both(folder, samples, n_items, shard_size=32):
    """The same ``n_items`` items (the samples cycled, every other cycle mirrored) in format 1 and 2."""
    from bsrdata.shards import write_dataset

    items = []
    for j in range(n_items):
        s = samples[j % len(samples)]
        if (j // len(samples)) % 2:
            s = {k: (np.ascontiguousarray(v[:, ::-1]) if isinstance(v, np.ndarray) else v) for k, v in s.items()}
        items.append(dict(s, key=f"{s['key']}-{j:05d}"))
    out = {}
    for fmt in (1, 2):
        root = os.path.join(folder, f"format{fmt}")
        t = time.perf_counter()
        write_dataset(root, {"train": items}, attrs=ATTRS, shard_size=shard_size, shard_format=fmt)
        dt = time.perf_counter() - t
        nbytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs
                     if f.endswith(".h5"))
        out[fmt] = {"root": root, "bytes_per_item": nbytes / n_items, "write_s_per_item": dt / n_items}
    return out


def loader_rate(root, workers, output, n_items, crop=None, to_float=False, batch=8, ring=False, passes=1,
                skip=1):
    """Items/s through BSRDataset + a DataLoader (``ring``: :class:`bsrdata.loader.RingLoader`) with
    ``workers``, over ``passes`` passes of the first ``n_items`` items, after the first ``skip`` batches."""
    import torch

    from bsrdata.dataset import BSRDataset
    from bsrdata.dataset import to_float as tf
    from bsrdata.loader import RingLoader

    ds = BSRDataset(root, "train", output=output, crop=crop, hflip=crop is not None)
    sub = torch.utils.data.Subset(ds, list(range(min(len(ds), n_items))) * passes)
    cls = RingLoader if ring else torch.utils.data.DataLoader
    dl = cls(sub, batch_size=batch, num_workers=workers, persistent_workers=False)
    it = iter(dl)
    for _ in range(skip):
        next(it)
    t = time.perf_counter()
    seen = 0
    for b in it:
        if to_float:
            b = tf(b)
        seen += b["lr"].shape[0]
    rate = seen / max(time.perf_counter() - t, 1e-9)
    del it, dl
    return rate


def inprocess_rate(root, output, n_items):
    """Items/s of BSRDataset in this process (decode + item assembly, no DataLoader)."""
    from bsrdata.dataset import BSRDataset

    ds = BSRDataset(root, "train", output=output)
    ds[0]
    n = min(len(ds), n_items)
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    return n / (time.perf_counter() - t)


def _spread(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=320, help="Items in each dataset (default 320).")
    ap.add_argument("--workers", default="1,2,4", help="DataLoader worker counts (comma separated).")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--passes", type=int, default=3,
                    help="Passes over the items in each timed DataLoader run (default 3: steady state).")
    ap.add_argument("--skip", type=int, default=5, help="Batches not timed at the start of each run (default 5).")
    ap.add_argument("--size", default="480x640", help="NYUv2 frame HxW (default 480x640).")
    ap.add_argument("--city-size", default="1024x2048", help="Cityscapes frame HxW for the size report.")
    ap.add_argument("--city-items", type=int, default=8, help="Items of the Cityscapes-size dataset.")
    ap.add_argument("--json", default=None, help="Write the results here.")
    a = ap.parse_args(argv)
    from bsrdata.fileio import write_json_atomic
    from bsrdata.plan import parse_hw

    size, city = parse_hw(a.size), parse_hw(a.city_size)
    ws = [int(x) for x in a.workers.split(",") if x.strip()]
    work = tempfile.mkdtemp(prefix="bsr_loader_")
    res = {"size": list(size), "items": a.items, "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    try:
        sets = write_both(os.path.join(work, "nyu"), make_samples(size), a.items)
        res["nyuv2_bytes_per_item"] = {f"format{k}": v["bytes_per_item"] for k, v in sets.items()}
        res["nyuv2_write_s_per_item"] = {f"format{k}": v["write_s_per_item"] for k, v in sets.items()}
        csets = write_both(os.path.join(work, "city"), make_samples(city, n_distinct=4, max_coc=61),
                           a.city_items, shard_size=8)
        res["cityscapes_bytes_per_item"] = {f"format{k}": v["bytes_per_item"] for k, v in csets.items()}
        for name, d in (("nyuv2", res["nyuv2_bytes_per_item"]), ("cityscapes", res["cityscapes_bytes_per_item"])):
            print(f"{name}: {d['format1'] / 1e3:.0f} kB/item format 1, {d['format2'] / 1e3:.0f} kB/item format 2 "
                  f"({d['format2'] / d['format1']:.2f}x)", flush=True)
        old, new = sets[1]["root"], sets[2]["root"]
        # (label, root, output, to_float, ring) -- "old" is the first reader's configuration
        configs = [("old: format 1, float items", old, "float", False, False),
                   ("new: format 2, uint8 items", new, "uint8", False, False),
                   (RING, new, "uint8", False, True),
                   ("ring + to_float in the main process", new, "uint8", True, True),
                   (NEW_TF, new, "uint8", True, False),
                   ("format 2, float items", new, "float", False, False),
                   ("format 2, float items, RingLoader", new, "float", False, True)]
        rates = {c[0]: {w: [] for w in ws} for c in configs}
        crop_rates = {"old": [], "new": [], "ring": []}
        inproc = {"old": [], "new": []}
        for r in range(a.repeats):
            inproc["old"].append(inprocess_rate(old, "float", min(a.items, 96)))
            inproc["new"].append(inprocess_rate(new, "uint8", min(a.items, 96)))
            for w in ws:
                for label, root, output, tf, ring in configs:
                    rates[label][w].append(loader_rate(root, w, output, a.items, to_float=tf, ring=ring,
                                                       passes=a.passes, skip=a.skip))
            crop = min(192, *size)
            for k, root, output, ring in (("old", old, "float", False), ("new", new, "uint8", False),
                                          ("ring", new, "uint8", True)):
                crop_rates[k].append(loader_rate(root, 2, output, a.items, crop=crop, ring=ring, passes=a.passes,
                                                 skip=a.skip))
            print(f"repeat {r + 1}/{a.repeats}: " + ", ".join(
                f"{w}w {rates[configs[0][0]][w][-1]:.0f} -> {rates[configs[1][0]][w][-1]:.0f} -> "
                f"{rates[RING][w][-1]:.0f}" for w in ws)
                + f" items/s (old -> new -> ring); load {os.getloadavg()[0]:.1f}", flush=True)
        res["rates"] = {label: {str(w): _spread(v) for w, v in d.items()} for label, d in rates.items()}
        res["ratio_new_over_old"] = {
            str(w): _spread([n / o for n, o in zip(rates[configs[1][0]][w], rates[configs[0][0]][w])]) for w in ws}
        res["ratio_ring_over_old"] = {
            str(w): _spread([n / o for n, o in zip(rates[RING][w], rates[configs[0][0]][w])]) for w in ws}
        res["ratio_ring_over_new"] = {
            str(w): _spread([n / o for n, o in zip(rates[RING][w], rates[configs[1][0]][w])]) for w in ws}
        res["ratio_new_to_float_over_old"] = {
            str(w): _spread([n / o for n, o in zip(rates[NEW_TF][w], rates[configs[0][0]][w])]) for w in ws}
        res["crop192_2workers"] = {k: _spread(v) for k, v in crop_rates.items()}
        res["crop192_ratio"] = _spread([n / o for n, o in zip(crop_rates["new"], crop_rates["old"])])
        res["crop192_ring_ratio"] = _spread([n / o for n, o in zip(crop_rates["ring"], crop_rates["old"])])
        res["in_process"] = {k: _spread(v) for k, v in inproc.items()}
        res["in_process_ratio"] = _spread([n / o for n, o in zip(inproc["new"], inproc["old"])])
        res["load_after"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nNYUv2-size items/s (median, min-max over {a.repeats} repeats; batch 8; load "
          f"{res['load_before'][0]:.1f} -> {res['load_after'][0]:.1f} on {res['cpus']} CPUs)")
    print(f"{'reader':40s}" + "".join(f"{str(w) + ' workers':>22s}" for w in ws))
    for label, d in res["rates"].items():
        print(f"{label:40s}" + "".join(
            f"{d[str(w)]['median']:8.0f} ({d[str(w)]['min']:.0f}-{d[str(w)]['max']:.0f})".rjust(22) for w in ws))
    for name in ("ratio_new_over_old", "ratio_ring_over_old", "ratio_ring_over_new", "ratio_new_to_float_over_old"):
        rr = {str(w): res[name][str(w)] for w in ws}
        print(f"{name:40s}" + "".join(
            f"{rr[str(w)]['median']:7.2f}x ({rr[str(w)]['min']:.2f}-{rr[str(w)]['max']:.2f})".rjust(22) for w in ws))
    c = res["crop192_2workers"]
    cr = res["crop192_ratio"]
    crr = res["crop192_ring_ratio"]
    print(f"192x192 crops, 2 workers: old {c['old']['median']:.0f}, new {c['new']['median']:.0f} items/s "
          f"({cr['median']:.2f}x, {cr['min']:.2f}-{cr['max']:.2f}), ring {c['ring']['median']:.0f} items/s "
          f"({crr['median']:.2f}x, {crr['min']:.2f}-{crr['max']:.2f})")
    p = res["in_process"]
    print(f"one process (no DataLoader): old {p['old']['median']:.0f}, new {p['new']['median']:.0f} items/s "
          f"({res['in_process_ratio']['median']:.2f}x)")
    if a.json:
        write_json_atomic(a.json, res)
    return res


if __name__ == "__main__":
    main()
