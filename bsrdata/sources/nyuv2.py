"""NYU Depth v2 labelled set (``nyu_depth_v2_labeled.mat``, 1449 RGB-D frames) as a source.

Files (docs/sources.md):
- ``nyu_depth_v2_labeled.mat``: MATLAB v7.3 = HDF5, read with h5py one frame at a time (the 2.8 GB file
  is never loaded whole; the handle opens lazily, once per process, so the source pickles to workers).
  h5py shows MATLAB's axes reversed: ``images`` (N, 3, W, H) uint8 -> frame ``images[i].transpose(2, 1, 0)``
  = (H, W, 3); ``depths`` (N, W, H) float32 metres -> ``[i].T``; ``labels`` (N, W, H) uint16, 0 =
  unlabelled, 1..894 -> ``[i].T``.
- ``splits.mat`` (MATLAB v5): ``trainNdxs`` (795) and ``testNdxs`` (654), 1-based frame indices.
- ``classMapping40.mat`` (MATLAB v5): ``mapClass`` 1×894, values 1..40 (label k -> mapClass[k-1]).

Records: key ``nyuv2-{i:04d}`` with the 1-based index i; rgb uint8 (480, 640, 3); depth float32 (480, 640)
metres; seg uint8 (480, 640): 40 classes 0..39 (= mapClass - 1), 255 = unlabelled.

Registration border (our decision): the RGB frames carry a thin invalid band along the edges from the
depth-to-colour registration. We keep the full 480×640 frame (Table 1's HR size, as CMOS does) and
its RGB unchanged, and inside a band of ``border_px`` pixels (default 8) on every side we set the label
to 255 (ignored by training and mIoU: the band's pixels are not real scene content) and mark the depth
invalid (0), so the renderer takes the depth of the nearest valid pixel inside the frame (optics
``clean_depth``) and the band's blur continues the adjacent scene instead of the band's raw values.
``border_px=0`` keeps everything as stored in the .mat.
"""

from __future__ import annotations

import os
import re

import numpy as np

from bsrdata.errors import BsrError

N_RAW_CLASSES = 894
N_CLASSES = 40
_KEY = re.compile(r"^nyuv2-(\d{4,})$")


def _loadmat_v5(path, what):
    """Read a small MATLAB file (v5 via scipy.io; v7.3 via h5py) into {name: ndarray}."""
    import h5py
    import scipy.io

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BsrError(f"{path}: file not found ({what})")
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                return {k: np.asarray(f[k]) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        except OSError as exc:
            raise BsrError(f"{path}: cannot read MATLAB v7.3 file ({exc})") from None
    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError on garbage
        raise BsrError(f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from None


def _index_vector(path, mat, name, n_frames):
    if name not in mat:
        raise BsrError(f"{path}: no variable {name!r}")
    v = np.asarray(mat[name]).ravel()
    if v.size == 0:
        raise BsrError(f"{path}: {name} is empty")
    if not np.issubdtype(v.dtype, np.number) or not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
        raise BsrError(f"{path}: {name} must hold integer frame indices")
    v = v.astype(np.int64)
    if v.min() < 1 or v.max() > n_frames:
        bad = int(v.min()) if v.min() < 1 else int(v.max())
        raise BsrError(f"{path}: {name} has index {bad}, outside 1..{n_frames} (1-based; the .mat has "
                       f"{n_frames} frames)")
    if len(np.unique(v)) != v.size:
        raise BsrError(f"{path}: {name} repeats a frame index")
    return [int(i) for i in v]


class NYUv2Source:
    """The NYUv2 labelled set; see the module docstring for formats and the border rule.

    mat, splits, class_map: paths of ``nyu_depth_v2_labeled.mat``, ``splits.mat``,
    ``classMapping40.mat``. All three are validated here (one-line BsrError naming the file)."""

    name = "nyuv2"
    num_classes = N_CLASSES

    def __init__(self, mat, splits, class_map, *, border_px=8):
        import h5py

        self.mat = os.fspath(mat)
        self.border_px = int(border_px)
        if self.border_px < 0:
            raise BsrError(f"border_px: must be >= 0, got {border_px}")
        if not os.path.isfile(self.mat):
            raise BsrError(f"{self.mat}: file not found (the NYUv2 labelled .mat)")
        if not h5py.is_hdf5(self.mat):
            with open(self.mat, "rb") as fh:
                head = fh.read(20)
            what = "a MATLAB v5 .mat" if head.startswith(b"MATLAB 5.0") else "not an HDF5 file"
            raise BsrError(f"{self.mat}: {what}; expected MATLAB v7.3 (HDF5) nyu_depth_v2_labeled.mat")
        try:
            with h5py.File(self.mat, "r") as f:
                shapes = {}
                for var in ("images", "depths", "labels"):
                    if var not in f or not isinstance(f[var], h5py.Dataset):
                        raise BsrError(f"{self.mat}: no variable {var!r}")
                    shapes[var] = (f[var].shape, f[var].dtype)
        except OSError as exc:
            raise BsrError(f"{self.mat}: cannot read HDF5 ({exc})") from None
        (ishape, idt), (dshape, ddt), (lshape, ldt) = shapes["images"], shapes["depths"], shapes["labels"]
        if len(ishape) != 4 or ishape[1] != 3:
            raise BsrError(f"{self.mat}: images has shape {ishape}, expected (N, 3, W, H)")
        if idt != np.uint8:
            raise BsrError(f"{self.mat}: images has dtype {idt}, expected uint8")
        n, _, w, h = ishape
        for var, shp in (("depths", dshape), ("labels", lshape)):
            if tuple(shp) != (n, w, h):
                raise BsrError(f"{self.mat}: {var} has shape {tuple(shp)}, images need {(n, w, h)} "
                               "(frames of unequal size or count)")
        if not np.issubdtype(ddt, np.floating):
            raise BsrError(f"{self.mat}: depths has dtype {ddt}, expected float (metres)")
        if not np.issubdtype(ldt, np.integer):
            raise BsrError(f"{self.mat}: labels has dtype {ldt}, expected an integer type")
        self.n_frames, self.size = int(n), (int(h), int(w))

        sp = _loadmat_v5(splits, "splits.mat")
        self.splits_path = os.fspath(splits)
        train = _index_vector(self.splits_path, sp, "trainNdxs", self.n_frames)
        test = _index_vector(self.splits_path, sp, "testNdxs", self.n_frames)
        both = set(train) & set(test)
        if both:
            raise BsrError(f"{self.splits_path}: frame {min(both)} is in both trainNdxs and testNdxs")
        self._splits = {"train": [f"nyuv2-{i:04d}" for i in sorted(train)],
                        "test": [f"nyuv2-{i:04d}" for i in sorted(test)]}

        cm = _loadmat_v5(class_map, "classMapping40.mat")
        self.class_map_path = os.fspath(class_map)
        if "mapClass" not in cm:
            raise BsrError(f"{self.class_map_path}: no variable 'mapClass'")
        mc = np.asarray(cm["mapClass"]).ravel()
        if mc.size != N_RAW_CLASSES:
            raise BsrError(f"{self.class_map_path}: mapClass has {mc.size} entries, expected {N_RAW_CLASSES}")
        if not np.issubdtype(mc.dtype, np.number) or np.any(mc != np.round(mc)) or mc.min() < 1 \
                or mc.max() > N_CLASSES:
            raise BsrError(f"{self.class_map_path}: mapClass values must be integers in 1..{N_CLASSES}")
        lut = np.full(N_RAW_CLASSES + 1, 255, np.uint8)
        lut[1:] = mc.astype(np.int64) - 1
        self._lut = lut
        self._h5 = None
        self._pid = None

    # pickling: never carry an open HDF5 handle to another process
    def __getstate__(self):
        st = self.__dict__.copy()
        st["_h5"] = None
        st["_pid"] = None
        return st

    def _file(self):
        import h5py

        if self._h5 is None or self._pid != os.getpid():
            try:
                self._h5 = h5py.File(self.mat, "r")
            except OSError as exc:
                raise BsrError(f"{self.mat}: cannot read HDF5 ({exc})") from None
            self._pid = os.getpid()
        return self._h5

    def close(self):
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def splits(self):
        """{"train": [795 keys], "test": [654 keys]} in increasing frame index."""
        return {s: list(k) for s, k in self._splits.items()}

    def index(self, key):
        m = _KEY.match(key)
        if not m or not 1 <= int(m.group(1)) <= self.n_frames:
            raise BsrError(f"{self.mat}: no frame with key {key!r} (nyuv2-0001..nyuv2-{self.n_frames:04d})")
        return int(m.group(1))

    def load(self, key):
        """Record for ``nyuv2-{i:04d}``: rgb uint8 (H, W, 3), depth float32 (H, W) m, seg uint8 (H, W)."""
        from bsrdata.sources.base import Record

        i = self.index(key) - 1
        f = self._file()
        try:
            rgb = np.ascontiguousarray(f["images"][i].transpose(2, 1, 0))
            depth = np.ascontiguousarray(f["depths"][i].T).astype(np.float32)
            raw = np.ascontiguousarray(f["labels"][i].T)
        except OSError as exc:
            raise BsrError(f"{self.mat}: cannot read frame {i + 1} ({exc})") from None
        if raw.size and (raw.min() < 0 or raw.max() > N_RAW_CLASSES):
            raise BsrError(f"{self.mat}: frame {i + 1} has label {int(raw.max())}, outside 0..{N_RAW_CLASSES}")
        seg = self._lut[raw.astype(np.int64)]
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        b = self.border_px
        if b > 0:
            h, w = seg.shape
            band = np.zeros((h, w), bool)
            band[:b, :] = band[h - b:, :] = True
            band[:, :b] = band[:, w - b:] = True
            seg[band] = 255
            depth[band] = 0.0
        if not np.any(depth > 0):
            raise BsrError(f"{self.mat}: frame {i + 1} has no valid depth pixel")
        return Record(key=key, rgb=rgb, depth=depth, seg=seg)
