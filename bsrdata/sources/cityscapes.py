"""Cityscapes (fine set, stereo) as a source.

Layout (docs/sources.md), ``root`` is the folder holding the unpacked packages::

    root/leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png    8-bit RGB
    root/rightImg8bit/{split}/{city}/..._rightImg8bit.png                           (disparity="sgbm")
    root/disparity/{split}/{city}/..._disparity.png    16-bit, d = (p-1)/256, 0 invalid  ("provided")
    root/camera/{split}/{city}/..._camera.json         extrinsic.baseline (m), intrinsic.fx (px)
    root/gtFine/{split}/{city}/..._gtFine_labelIds.png 8-bit label ids (train/val only)

Keys are ``{city}_{seq:06d}_{frame:06d}``; each split lists its keys sorted. Records: rgb uint8 (H, W, 3),
depth float32 (H, W) metres = baseline·fx / d (per-image camera JSON; d clamped at ``min_disp`` px, so
depth <= baseline·fx/min_disp), seg uint8 (H, W) with the 19 train ids (cityscapesscripts' table) and 255
ignore; the ``test`` split has no public labels, its seg is None.

Disparity modes:
- ``"provided"``: the dataset's SGM disparity, holes filled (:func:`bsrdata.stereo.fill_disparity_holes`).
- ``"sgbm"``: OpenCV SGBM on the left/right pair (``max_disp`` px), holes filled the same way.
- ``"cache:DIR"``: disparities precomputed elsewhere (e.g. CREStereo, ``bsr depth``) in the Cityscapes
  encoding at ``DIR/{split}/{city}/{key}_disparity.png``; holes (if any) filled the same way.
"""

from __future__ import annotations

import os

import numpy as np

from bsrdata import stereo
from bsrdata.errors import BsrError
from bsrdata.sources.folder import read_image

N_CLASSES = 19
SPLITS = ("train", "val", "test")
_LABELLED = ("train", "val")


def label_lut():
    """uint8 (256,) label id -> train id (255 ignore), and bool (256,) ids present in the table."""
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, 255, np.uint8)
    known = np.zeros(256, bool)
    for lab in labels:
        if 0 <= lab.id < 256:
            known[lab.id] = True
            if 0 <= lab.trainId < 255:
                lut[lab.id] = lab.trainId
    return lut, known


class CityscapesSource:
    """Cityscapes stereo frames; see the module docstring.

    root: dataset root; disparity: ``"provided"`` | ``"sgbm"`` | ``"cache:DIR"``; splits: which of
    train/val/test to list (each must exist under ``root/leftImg8bit``); min_disp: depth clamp (px);
    max_disp: SGBM search range (px)."""

    name = "cityscapes"
    num_classes = N_CLASSES

    def __init__(self, root, disparity="provided", splits=SPLITS, *, min_disp=stereo.DEFAULT_MIN_DISP,
                 max_disp=192):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise BsrError(f"{self.root}: folder not found (the Cityscapes root)")
        disparity = str(disparity)
        self.cache_dir = None
        if disparity.startswith("cache:"):
            self.cache_dir = disparity[len("cache:"):]
            if not self.cache_dir or not os.path.isdir(self.cache_dir):
                raise BsrError(f"--disparity {disparity}: cache folder {self.cache_dir!r} not found")
            self.mode = "cache"
        elif disparity in ("provided", "sgbm"):
            self.mode = disparity
        else:
            raise BsrError(f"--disparity {disparity}: expected provided, sgbm or cache:DIR")
        self.disparity = disparity
        self.min_disp = float(min_disp)
        self.max_disp = int(max_disp)
        if isinstance(splits, str):
            splits = (splits,)
        self._splits = {}
        self._where = {}  # key -> (split, city)
        for split in splits:
            if split not in SPLITS:
                raise BsrError(f"splits: unknown Cityscapes split {split!r} (train, val, test)")
            sdir = os.path.join(self.root, "leftImg8bit", split)
            if not os.path.isdir(sdir):
                raise BsrError(f"{sdir}: folder not found")
            keys = []
            for city in sorted(os.listdir(sdir)):
                cdir = os.path.join(sdir, city)
                if not os.path.isdir(cdir):
                    continue
                for name in sorted(os.listdir(cdir)):
                    if name.endswith("_leftImg8bit.png"):
                        key = name[: -len("_leftImg8bit.png")]
                        parts = key.split("_")
                        if len(parts) < 3 or parts[0] != city or not (parts[-1].isdigit() and parts[-2].isdigit()):
                            raise BsrError(f"{os.path.join(cdir, name)}: name is not "
                                           "{city}_{seq:06d}_{frame:06d}_leftImg8bit.png")
                        if key in self._where:
                            raise BsrError(f"{os.path.join(cdir, name)}: key {key} also in split "
                                           f"{self._where[key][0]}")
                        self._where[key] = (split, city)
                        keys.append(key)
            if not keys:
                raise BsrError(f"{sdir}: no *_leftImg8bit.png images")
            self._splits[split] = sorted(keys)
        self._lut, self._known = label_lut()

    def splits(self):
        """split -> sorted keys, for the splits asked for."""
        return {s: list(k) for s, k in self._splits.items()}

    def path(self, kind, key):
        """Path of a file of ``key``: kind in leftImg8bit, rightImg8bit, disparity, camera, gtFine."""
        split, city = self._where[key]
        suffix = {"leftImg8bit": "_leftImg8bit.png", "rightImg8bit": "_rightImg8bit.png",
                  "disparity": "_disparity.png", "camera": "_camera.json",
                  "gtFine": "_gtFine_labelIds.png"}[kind]
        return os.path.join(self.root, kind, split, city, key + suffix)

    def _disparity(self, key, left):
        """(disp float32 px, valid bool, file the disparity came from)."""
        split, _city = self._where[key]
        if self.mode == "provided":
            p = self.path("disparity", key)
            disp, valid = stereo.read_disparity_png(p)
        elif self.mode == "cache":
            p = stereo.cache_disparity_path(self.cache_dir, split, key)
            disp, valid = stereo.read_disparity_png(p)
        else:
            p = self.path("rightImg8bit", key)
            right = read_image(p, kind="rgb")
            if right.shape != left.shape:
                raise BsrError(f"{p}: size {right.shape[1]}x{right.shape[0]} differs from the left image "
                               f"{left.shape[1]}x{left.shape[0]}")
            disp, valid = stereo.sgbm_disparity(left, right, max_disp=self.max_disp)
        if disp.shape != left.shape[:2]:
            raise BsrError(f"{p}: size {disp.shape[1]}x{disp.shape[0]} differs from the left image "
                           f"{left.shape[1]}x{left.shape[0]}")
        if not valid.any():
            raise BsrError(f"{p}: disparity has no valid pixel")
        return disp, valid, p

    def load(self, key):
        """Record for ``key``: rgb uint8 (H, W, 3), depth float32 (H, W) m, seg uint8 (H, W) or None."""
        from bsrdata.sources.base import Record

        if key not in self._where:
            raise BsrError(f"{self.root}: no frame with key {key!r}")
        split, _city = self._where[key]
        left = read_image(self.path("leftImg8bit", key), kind="rgb")
        baseline, fx = stereo.read_camera_json(self.path("camera", key))
        disp, valid, _p = self._disparity(key, left)
        filled = stereo.fill_disparity_holes(disp, valid)
        depth = stereo.disparity_to_depth(filled, baseline, fx, min_disp=self.min_disp)
        seg = None
        if split in _LABELLED:
            lp = self.path("gtFine", key)
            ids = read_image(lp, kind="u8")
            if ids.shape != left.shape[:2]:
                raise BsrError(f"{lp}: size {ids.shape[1]}x{ids.shape[0]} differs from the left image "
                               f"{left.shape[1]}x{left.shape[0]}")
            unknown = ~self._known[ids]
            if unknown.any():
                raise BsrError(f"{lp}: label id {int(ids[unknown].max())} is not in the Cityscapes label table")
            seg = self._lut[ids]
        return Record(key=key, rgb=left, depth=depth, seg=seg)
