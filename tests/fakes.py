"""Writers of tiny fake inputs in the REAL file formats (reusable by any test).

- :func:`make_nyuv2`: ``nyu_depth_v2_labeled.mat`` as MATLAB v7.3 (HDF5 with the 512-byte MATLAB
  userblock header, variables in MATLAB's axis order so h5py shows them reversed), ``splits.mat`` and
  ``classMapping40.mat`` as MATLAB v5 (scipy.io.savemat).
- :func:`make_cityscapes`: a Cityscapes tree (leftImg8bit, rightImg8bit, disparity 16-bit PNG, camera
  JSON, gtFine labelIds).

The contents are designed so the usual mistakes show: frames are not square (H != W) and every pixel
value depends on (frame, row, column, channel) asymmetrically, so a transposed or swapped frame differs;
split indices are 1-based and non-contiguous; the class map is a non-identity permutation-like table;
each Cityscapes frame has its own baseline and fx and a non-constant disparity.
Every writer returns the ground truth in natural (H, W) order.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

N_RAW = 894


# ------------------------------------------------------------------------------------------------ NYUv2

def matlab73_header():
    """The 512-byte userblock MATLAB writes in front of a v7.3 (HDF5) .mat file."""
    text = ("MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
            + time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0)) + " HDF5 schema 1.00 .")
    head = text.encode("ascii").ljust(116, b" ")
    head += b"\x00" * 8  # subsystem data offset
    head += (0x0200).to_bytes(2, "little") + b"IM"
    return head.ljust(512, b"\x00")


def nyu_frames(n, h, w):
    """Ground truth for ``n`` fake frames of h×w: images uint8 (n,h,w,3), depths float32 (n,h,w) m,
    labels uint16 (n,h,w) in 0..894 (0 = unlabelled)."""
    i = np.arange(n)[:, None, None]
    r = np.arange(h)[None, :, None]
    c = np.arange(w)[None, None, :]
    images = np.stack([(i * 17 + r * 5 + c * 3 + ch * 71) % 256 for ch in range(3)], axis=-1).astype(np.uint8)
    depths = (1.0 + 0.5 * i + 0.05 * r + 0.002 * c).astype(np.float32)
    labels = ((i * 31 + r * 7 + c * 13) % (N_RAW + 1)).astype(np.uint16)
    labels[:, 0, :] = N_RAW  # the largest raw id appears
    return images, depths, labels


def write_nyu_mat(path, images, depths, labels, *, userblock=True, omit=()):
    """Write natural-order arrays as a MATLAB v7.3 file (h5py, MATLAB axis order).

    images (n,h,w,3) -> dataset (n,3,w,h); depths / labels (n,h,w) -> (n,w,h). ``omit`` names variables
    to leave out (for bad-input tests)."""
    import h5py

    path = os.fspath(path)
    kw = {"userblock_size": 512} if userblock else {}
    with h5py.File(path, "w", **kw) as f:
        for name, arr, cls in (("images", images.transpose(0, 3, 2, 1), "uint8"),
                               ("depths", depths.transpose(0, 2, 1), "single"),
                               ("rawDepths", depths.transpose(0, 2, 1), "single"),
                               ("labels", labels.transpose(0, 2, 1), "uint16")):
            if name in omit:
                continue
            chunks = (1,) + arr.shape[1:]
            d = f.create_dataset(name, data=np.ascontiguousarray(arr), chunks=chunks)
            d.attrs["MATLAB_class"] = np.bytes_(cls)
    if userblock:
        with open(path, "r+b") as fh:
            fh.write(matlab73_header())
    return path


def default_class_map():
    """mapClass (894,) with values 1..40, deliberately not monotone: k -> ((7k + 3) mod 40) + 1."""
    k = np.arange(1, N_RAW + 1)
    return ((7 * k + 3) % 40 + 1).astype(np.float64)


def write_splits_mat(path, train, test):
    """MATLAB v5 splits.mat with 1-based column vectors (double, like the real file)."""
    import scipy.io

    scipy.io.savemat(os.fspath(path), {"trainNdxs": np.asarray(train, np.float64).reshape(-1, 1),
                                       "testNdxs": np.asarray(test, np.float64).reshape(-1, 1)})
    return path


def write_class_map(path, map_class=None):
    """MATLAB v5 classMapping40.mat with mapClass 1×894 (double)."""
    import scipy.io

    mc = default_class_map() if map_class is None else np.asarray(map_class, np.float64)
    scipy.io.savemat(os.fspath(path), {"mapClass": mc.reshape(1, -1),
                                       "className": np.array([f"class{k}" for k in range(1, 41)], dtype=object)})
    return path


def make_nyuv2(folder, n=10, h=24, w=32, train=None, test=None, userblock=True):
    """Write the three NYUv2 files into ``folder``; returns a dict with paths and ground truth.

    Default split: frames 2,4,5,7,9,10 train and 1,3,6,8 test (1-based, interleaved, so an off-by-one
    index picks another frame)."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    images, depths, labels = nyu_frames(n, h, w)
    if train is None:
        train = [i for i in range(1, n + 1) if i not in (1, 3, 6, 8)]
    if test is None:
        test = [i for i in range(1, n + 1) if i in (1, 3, 6, 8)]
    paths = {"mat": os.path.join(folder, "nyu_depth_v2_labeled.mat"),
             "splits": os.path.join(folder, "splits.mat"),
             "class_map": os.path.join(folder, "classMapping40.mat")}
    write_nyu_mat(paths["mat"], images, depths, labels, userblock=userblock)
    write_splits_mat(paths["splits"], train, test)
    write_class_map(paths["class_map"])
    return {**paths, "images": images, "depths": depths, "labels": labels, "train": list(train),
            "test": list(test), "map_class": default_class_map()}


# ------------------------------------------------------------------------------------------- Cityscapes

CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",), "test": ("berlin",)}


def camera_json(baseline, fx):
    """A Cityscapes camera JSON document (all the real fields)."""
    return {"extrinsic": {"baseline": baseline, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": 0.0195,
                          "z": 1.22},
            "intrinsic": {"fx": fx, "fy": fx + 3.1, "u0": 1050.0, "v0": 520.0}}


def city_disparity(j, h, w):
    """True disparity (float px, H×W) of fake frame j, values exact in the 1/256 encoding, plus a hole
    mask: the left 3 columns (as the real left border) and a small block."""
    r = np.arange(h)[:, None]
    c = np.arange(w)[None, :]
    disp = 2.0 + 0.25 * j + (r * 3 + c) / 16.0  # multiples of 1/256
    valid = np.ones((h, w), bool)
    valid[:, :3] = False
    valid[h // 2: h // 2 + 3, w // 2: w // 2 + 4] = False
    return disp.astype(np.float64), valid


def textured(rng, h, w):
    """Random-texture uint8 RGB (h, w, 3) (smoothed noise, good for stereo matching)."""
    import cv2

    base = rng.integers(0, 256, (h, w, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(base, (3, 3), 0.8) * 1.2 - 20, 0, 255).astype(np.uint8)


def make_cityscapes(root, counts=None, h=32, w=64, seed=0, shift=6, test_labels=True):
    """Write a Cityscapes tree under ``root``; returns {key: truth dict} with split, city, rgb, right,
    disp, valid, baseline, fx, ids (label ids) and the paths.

    The right image is the left shifted by a constant ``shift`` px (right[r, c] = left[r, c + shift]),
    so SGBM should find disparity ``shift``; the provided disparity PNG holds :func:`city_disparity`.
    Label ids cycle through all table ids 0..33 in an asymmetric pattern."""
    from bsrdata.sources.folder import write_png_atomic
    from bsrdata.stereo import encode_cityscapes_disparity

    root = os.fspath(root)
    counts = counts or {"train": 3, "val": 2, "test": 2}
    rng = np.random.default_rng(seed)
    truth = {}
    j = 0
    for split, n in counts.items():
        cities = CITIES[split]
        for t in range(n):
            city = cities[t % len(cities)]
            key = f"{city}_{t:06d}_{(19 + 7 * t):06d}"
            left = textured(rng, h, w + shift)
            right = np.zeros_like(left)
            right[:, : w + shift - shift] = left[:, shift:]
            left, right = left[:, :w].copy(), right[:, :w].copy()
            disp, valid = city_disparity(j, h, w)
            baseline, fx = 0.2 + 0.01 * j, 2000.0 + 50.0 * j
            r = np.arange(h)[:, None]
            c = np.arange(w)[None, :]
            ids = ((r * 5 + c * 3 + j) % 34).astype(np.uint8)

            def p(kind, suffix):
                return os.path.join(root, kind, split, city, f"{key}_{suffix}")

            write_png_atomic(p("leftImg8bit", "leftImg8bit.png"), left)
            write_png_atomic(p("rightImg8bit", "rightImg8bit.png"), right)
            write_png_atomic(p("disparity", "disparity.png"), encode_cityscapes_disparity(np.where(valid, disp, 0)))
            os.makedirs(os.path.dirname(p("camera", "camera.json")), exist_ok=True)
            with open(p("camera", "camera.json"), "w") as fh:
                json.dump(camera_json(baseline, fx), fh, indent=2)
            if split != "test" or test_labels:
                write_png_atomic(p("gtFine", "gtFine_labelIds.png"), ids)
            truth[key] = {"split": split, "city": city, "rgb": left, "right": right, "disp": disp,
                          "valid": valid, "baseline": baseline, "fx": fx, "ids": ids,
                          "paths": {k: p(k, s) for k, s in (("leftImg8bit", "leftImg8bit.png"),
                                                            ("rightImg8bit", "rightImg8bit.png"),
                                                            ("disparity", "disparity.png"),
                                                            ("camera", "camera.json"),
                                                            ("gtFine", "gtFine_labelIds.png"))}}
            j += 1
    return truth


# ---------------------------------------------------------------------------------------------- folder

def make_folder(root, splits=None, h=20, w=28, seed=0, labels=True, npy_split=None):
    """A FolderSource tree: rgb/<split>/<name>.png, depth/<split>/<name>.png (16-bit mm) or .npy
    (metres) for ``npy_split``, seg/<split>/<name>.png (labels 0..4, some 255). Returns truth by key."""
    from bsrdata.sources.folder import write_png_atomic

    root = os.fspath(root)
    splits = splits or {"train": 3, "test": 2}
    rng = np.random.default_rng(seed)
    truth = {}
    for split, n in splits.items():
        for t in range(n):
            key = f"{split}img{t:02d}"
            rgb = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
            mm = (1000 + 37 * t + np.arange(h)[:, None] * 11 + np.arange(w)[None, :] * 3).astype(np.uint16)
            mm[0, 0] = 0  # one invalid pixel
            seg = ((np.arange(h)[:, None] + 2 * np.arange(w)[None, :] + t) % 5).astype(np.uint8)
            seg[1, :] = 255
            write_png_atomic(os.path.join(root, "rgb", split, key + ".png"), rgb)
            if split == npy_split:
                os.makedirs(os.path.join(root, "depth", split), exist_ok=True)
                np.save(os.path.join(root, "depth", split, key + ".npy"), mm.astype(np.float32) / 1000.0)
            else:
                write_png_atomic(os.path.join(root, "depth", split, key + ".png"), mm)
            if labels:
                write_png_atomic(os.path.join(root, "seg", split, key + ".png"), seg)
            truth[key] = {"split": split, "rgb": rgb, "depth": mm.astype(np.float64) / 1000.0, "seg": seg}
    return truth
