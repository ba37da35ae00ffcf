"""A tiny built dataset in the real format (HDF5 shards + manifest.json) for the SR tests.

Test split: ``n_test`` keys; group g makes fold g space-invariant (disjoint folds of n_test // 5) and
references the shared VA rendering of every other key, exactly like ``bsrdata.plan``. The LR is the
HR sampled every 4th pixel after a small box blur, so bicubic and trained models have something to do.
"""

from __future__ import annotations

import os

import numpy as np

from bsrdata.shards import write_dataset

ATTRS = {"scale": 4, "max_coc": 21, "sigma_max": 5.0, "renderer": "gather", "downsample": "direct",
         "noise": 0.0, "generator_version": "test"}


def _frame(rng, h, w, num_classes):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4), rng.uniform(0, 6)
        img[..., c] = 0.5 + 0.35 * np.sin(fx * xx + ph) * np.cos(fy * yy)
    hr = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    seg = (((xx // 8) + (yy // 8)) % num_classes).astype(np.uint8)
    seg[:2] = 255
    return hr, seg


def _degrade(hr, invariant, rng):
    x = hr.astype(np.float64)
    k = 3 if invariant else 2
    pad = np.pad(x, ((k, k), (k, k), (0, 0)), mode="reflect")
    acc = np.zeros_like(x)
    for dy in range(-k + 1, k):
        for dx in range(-k + 1, k):
            acc += pad[k + dy: k + dy + x.shape[0], k + dx: k + dx + x.shape[1]]
    blurred = acc / (2 * k - 1) ** 2
    lr = np.clip(blurred[::4, ::4] + 0.5, 0, 255).astype(np.uint8)
    sigma = np.full(hr.shape[:2], 1.5 if invariant else 0.8, np.float32)
    if not invariant:
        sigma[:, : hr.shape[1] // 2] = 0.3
    return lr, sigma


def make_bench_dataset(root, n_test=5, n_train=0, h=32, w=40, num_classes=4, seed=0, groups=5):
    """Write the dataset (one shard per split, via bsrdata.shards.write_dataset); returns the manifest dict."""
    rng = np.random.default_rng(seed)
    root = os.fspath(root)
    fold = n_test // 5
    splits = {}
    if n_train:
        train = []
        for i in range(n_train):
            hr, seg = _frame(rng, h, w, num_classes)
            inv = i < n_train // 5
            lr, blur = _degrade(hr, inv, rng)
            train.append({"key": f"tr{i:03d}", "hr": hr, "lr": lr, "blur": blur, "seg": seg, "invariant": inv})
        splits["train"] = train
    frames = [_frame(rng, h, w, num_classes) for _ in range(n_test)]
    test = []
    for i, (hr, seg) in enumerate(frames):
        lr, blur = _degrade(hr, False, rng)
        test.append({"key": f"te{i:03d}", "hr": hr, "lr": lr, "blur": blur, "seg": seg, "invariant": False})
    for g in range(1, groups + 1):
        for i in range((g - 1) * fold, g * fold):
            hr, seg = frames[i]
            lr, blur = _degrade(hr, True, rng)
            test.append({"key": f"te{i:03d}", "hr": hr, "lr": lr, "blur": blur, "seg": seg, "invariant": True})
    splits["test"] = test
    members = {str(g): [(f"te{i:03d}", (g - 1) * fold <= i < g * fold) for i in range(n_test)]
               for g in range(1, groups + 1)}
    m = write_dataset(root, splits, attrs=ATTRS, groups=members,
                      source={"name": "sr-fake", "num_classes": num_classes}, seed=seed)
    return m.to_json()
