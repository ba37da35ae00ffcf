"""HDF5 shards (DESIGN.md contract) and the read side, :func:`open_dataset`.

One file per shard, N samples of one split, all of one size (H, W). Datasets, N first:

- ``hr`` uint8 (N, H, W, 3) RGB; ``lr`` uint8 (N, H/s, W/s, 3) RGB
- ``blur`` float32 (N, H, W): σ in HR pixels
- ``seg`` uint8 (N, H, W): class index, 255 = ignore (absent when no sample of the shard has labels;
  when only some have, the others are all 255)
- ``depth`` float32 (N, H, W) metres (optional)
- ``key`` UTF-8 strings (N,); ``invariant`` bool (N,)
- ``params`` UTF-8 JSON strings (N,): the per-sample parameters (focus, focal length, aperture, IVA σ, seeds)
- file attributes ``scale, max_coc, sigma_max, renderer, downsample, noise, generator_version`` (+ others).

Chunked one sample per chunk, gzip level 1, no timestamps (so equal content gives equal bytes).
Written to ``<path>.tmp<pid>`` (:func:`bsrdata.fileio.tmp_name`), fsynced, renamed: a file under its final
name is always complete; :func:`remove_temps` deletes the leftovers of killed writers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.fileio import tmp_name

REQUIRED_ATTRS = ("scale", "max_coc", "sigma_max", "renderer", "downsample", "noise", "generator_version")
# gzip level 1 everywhere: deterministic bytes (h5py's LZF filter is not: liblzf leaves its hash table
# uninitialised, so equal data can compress to different bytes), portable to any HDF5 reader, and fast to
# decode. The maps shrink 10-60x; photos only ~15 %.
COMPRESSION = {
    "hr": {"compression": "gzip", "compression_opts": 1},
    "lr": {"compression": "gzip", "compression_opts": 1},
    "blur": {"compression": "gzip", "compression_opts": 1},
    "seg": {"compression": "gzip", "compression_opts": 1},
    "depth": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
}


def _h5py():
    import h5py

    return h5py


def _attr_value(v):
    if isinstance(v, (bool, np.bool_)):
        return np.bool_(v)
    if v is None:
        return "null"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)
    return v


def _read_attrs(f) -> dict:
    out = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


class ShardWriter:
    """Writes one shard sample by sample into ``<path>.tmp<pid>``; :meth:`close` renames it into place.

    Use as a context manager; on an exception the temporary file is removed and nothing is renamed.
    ``n`` is the number of samples the shard will hold; the first sample fixes (H, W) and which
    optional datasets exist (``seg``: if ``with_seg``; ``depth``: if ``with_depth``).
    """

    def __init__(self, path, n: int, attrs: dict, *, with_seg: bool, with_depth: bool = False):
        self.path = os.fspath(path)
        self.tmp = tmp_name(self.path)
        self.n = int(n)
        self.attrs = dict(attrs)
        self.with_seg = bool(with_seg)
        self.with_depth = bool(with_depth)
        self.i = 0
        self.f = None
        self.shape = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def _open(self, hr_shape, lr_shape):
        h5py = _h5py()
        d = os.path.dirname(self.path)
        try:
            if d:
                os.makedirs(d, exist_ok=True)
            remove_temps(self.path)  # leftovers of killed writers of this shard (any pid)
            self.f = h5py.File(self.tmp, "w", track_order=False)
        except OSError as exc:
            raise BsrError(f"{self.path}: cannot write ({getattr(exc, 'strerror', None) or exc})") from None
        f, n = self.f, self.n
        h, w = hr_shape
        lh, lw = lr_shape
        def kw(name):
            return dict(track_times=False, **COMPRESSION[name])

        f.create_dataset("hr", (n, h, w, 3), np.uint8, chunks=(1, h, w, 3), **kw("hr"))
        f.create_dataset("lr", (n, lh, lw, 3), np.uint8, chunks=(1, lh, lw, 3), **kw("lr"))
        f.create_dataset("blur", (n, h, w), np.float32, chunks=(1, h, w), **kw("blur"))
        if self.with_seg:
            f.create_dataset("seg", (n, h, w), np.uint8, chunks=(1, h, w), **kw("seg"))
        if self.with_depth:
            f.create_dataset("depth", (n, h, w), np.float32, chunks=(1, h, w), **kw("depth"))
        sdt = h5py.string_dtype("utf-8")
        f.create_dataset("key", (n,), sdt, track_times=False)
        f.create_dataset("invariant", (n,), np.bool_, track_times=False)
        f.create_dataset("params", (n,), sdt, track_times=False)
        for k in sorted(self.attrs):
            f.attrs[k] = _attr_value(self.attrs[k])
        self.shape = (h, w)

    def add(self, sample: dict) -> None:
        """Append one Sample dict (API.md); all samples must share (H, W)."""
        hr = np.asarray(sample["hr"])
        lr = np.asarray(sample["lr"])
        key = str(sample["key"])
        if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
            raise BsrError(f"{key}: hr must be uint8 (H, W, 3), got {hr.dtype} {hr.shape}")
        if self.i >= self.n:
            raise BsrError(f"{self.path}: more than {self.n} samples for this shard")
        if self.f is None:
            self._open(hr.shape[:2], lr.shape[:2])
        if hr.shape[:2] != self.shape:
            raise BsrError(f"{key}: frame {hr.shape[0]}x{hr.shape[1]} differs from the other frames of "
                           f"{os.path.basename(self.path)} ({self.shape[0]}x{self.shape[1]}); a shard needs equal sizes")
        f, i = self.f, self.i
        if lr.shape != f["lr"].shape[1:] or lr.dtype != np.uint8:
            raise BsrError(f"{key}: lr must be uint8 {f['lr'].shape[1:]}, got {lr.dtype} {lr.shape}")
        blur = np.asarray(sample["blur"], dtype=np.float32)
        if blur.shape != self.shape:
            raise BsrError(f"{key}: blur map {blur.shape} differs from the frame {self.shape}")
        f["hr"][i] = hr
        f["lr"][i] = lr
        f["blur"][i] = blur
        if self.with_seg:
            seg = sample.get("seg")
            seg = np.full(self.shape, 255, np.uint8) if seg is None else np.asarray(seg)
            if seg.shape != self.shape or seg.dtype != np.uint8:
                raise BsrError(f"{key}: labels must be uint8 {self.shape}, got {seg.dtype} {seg.shape}")
            f["seg"][i] = seg
        if self.with_depth:
            dep = sample.get("depth")
            if dep is None:
                raise BsrError(f"{key}: depth requested but the sample has none")
            dep = np.asarray(dep, np.float32)
            if dep.shape != self.shape:
                raise BsrError(f"{key}: depth {dep.shape} differs from the frame {self.shape}")
            f["depth"][i] = dep
        f["key"][i] = key
        f["invariant"][i] = bool(sample["invariant"])
        f["params"][i] = json.dumps(sample.get("params", {}), sort_keys=True)
        self.i += 1

    def close(self) -> str:
        """Check the count, flush, fsync and rename into place; returns the final path."""
        if self.f is None:
            raise BsrError(f"{self.path}: no samples written")
        if self.i != self.n:
            self.abort()
            raise BsrError(f"{self.path}: {self.i} of {self.n} samples written")
        self.f.flush()
        self.f.close()
        self.f = None
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file (nothing under the final name is touched)."""
        if self.f is not None:
            try:
                self.f.close()
            except Exception:  # noqa: BLE001 - best effort on an already failing path
                pass
            self.f = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def write_shard(path, samples: list, attrs: dict, *, with_depth: bool = False) -> str:
    """Write ``samples`` (Sample dicts) as one shard at ``path`` (via a temporary name and a rename)."""
    samples = list(samples)
    if not samples:
        raise BsrError(f"{path}: a shard needs at least one sample")
    with_seg = any(s.get("seg") is not None for s in samples)
    with ShardWriter(path, len(samples), attrs, with_seg=with_seg, with_depth=with_depth) as w:
        for s in samples:
            w.add(s)
    return os.fspath(path)


def remove_temps(path) -> int:
    """Delete every leftover temporary file of ``path`` (``<path>.tmp<pid>`` of any process); count."""
    path = os.fspath(path)
    d, name = os.path.split(path)
    n = 0
    try:
        names = os.listdir(d or ".")
    except OSError:
        return 0
    for f in names:
        if f.startswith(name + ".tmp"):
            try:
                os.remove(os.path.join(d, f))
                n += 1
            except OSError:
                pass
    return n


# ------------------------------------------------------------------------------------------ read side
def _open_h5(path):
    h5py = _h5py()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BsrError(f"{path}: shard missing")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise BsrError(f"{path}: not a readable HDF5 shard ({exc})") from None


def check_shard(f, path) -> dict:
    """Validate an open shard's structure; returns its metadata (n, shape, attrs, keys, invariant, with_*)."""
    for k in ("hr", "lr", "blur", "key", "invariant"):
        if k not in f:
            raise BsrError(f"{path}: dataset '{k}' missing")
    hr, lr, blur = f["hr"], f["lr"], f["blur"]
    if hr.dtype != np.uint8 or hr.ndim != 4 or hr.shape[3] != 3:
        raise BsrError(f"{path}: hr must be uint8 (N, H, W, 3), is {hr.dtype} {hr.shape}")
    n, h, w = hr.shape[:3]
    attrs = _read_attrs(f)
    for k in REQUIRED_ATTRS:
        if k not in attrs:
            raise BsrError(f"{path}: attribute '{k}' missing")
    s = attrs["scale"]
    if not isinstance(s, int) or s < 1 or h % s or w % s:
        raise BsrError(f"{path}: scale attribute {s!r} does not divide the frame {h}x{w}")
    if lr.dtype != np.uint8 or lr.shape != (n, h // s, w // s, 3):
        raise BsrError(f"{path}: lr must be uint8 {(n, h // s, w // s, 3)}, is {lr.dtype} {lr.shape}")
    if blur.dtype != np.float32 or blur.shape != (n, h, w):
        raise BsrError(f"{path}: blur must be float32 {(n, h, w)}, is {blur.dtype} {blur.shape}")
    for k, dt in (("seg", np.uint8), ("depth", np.float32)):
        if k in f and (f[k].dtype != dt or f[k].shape != (n, h, w)):
            raise BsrError(f"{path}: {k} must be {np.dtype(dt)} {(n, h, w)}, is {f[k].dtype} {f[k].shape}")
    if f["key"].shape != (n,) or f["invariant"].shape != (n,):
        raise BsrError(f"{path}: key/invariant lengths differ from {n} samples")
    if "params" in f and f["params"].shape != (n,):
        raise BsrError(f"{path}: params length differs from {n} samples")
    keys = [k.decode("utf-8") if isinstance(k, bytes) else str(k) for k in f["key"][()]]
    return {
        "n": n, "shape": (h, w), "attrs": attrs, "keys": keys,
        "invariant": [bool(x) for x in f["invariant"][()]],
        "with_seg": "seg" in f, "with_depth": "depth" in f,
    }


SAMPLE_FIELDS = ("key", "hr", "lr", "blur", "seg", "depth", "invariant", "params")


def _sample_from(f, i, path, fields=None) -> dict:
    """Sample ``i`` of an open shard as a dict. ``fields`` (names from SAMPLE_FIELDS) limits what is read
    and decoded; the others are left out of the dict (decoding ``depth`` costs about as much as ``hr``)."""
    want = SAMPLE_FIELDS if fields is None else fields
    out = {}
    for name in want:
        if name == "key":
            key = f["key"][i]
            out["key"] = key.decode("utf-8") if isinstance(key, bytes) else str(key)
        elif name == "params":
            params = {}
            if "params" in f:
                p = f["params"][i]
                p = p.decode("utf-8") if isinstance(p, bytes) else str(p)
                try:
                    params = json.loads(p)
                except json.JSONDecodeError:
                    raise BsrError(f"{path}: sample {i} has unreadable params") from None
            out["params"] = params
        elif name == "invariant":
            out["invariant"] = bool(f["invariant"][i])
        elif name in ("hr", "lr", "blur", "seg", "depth"):
            out[name] = f[name][i] if name in f else None
        else:
            raise BsrError(f"fields: unknown sample field {name!r} (known: {', '.join(SAMPLE_FIELDS)})")
    return out


def read_sample(path, index: int) -> dict:
    """Read one Sample dict (API.md) from a shard file, validating the file's structure."""
    with _open_h5(path) as f:
        meta = check_shard(f, path)
        if not 0 <= index < meta["n"]:
            raise BsrError(f"{path}: sample {index} out of range (0..{meta['n'] - 1})")
        return _sample_from(f, index, path)


def read_shard_meta(path) -> dict:
    """Validated metadata of a shard (see :func:`check_shard`)."""
    with _open_h5(path) as f:
        return check_shard(f, path)


class DatasetView(Sequence):
    """A read-only sequence of Sample dicts over a built dataset's shards.

    ``len(view)``, ``view[i]`` (a dict: key, hr, lr, blur, seg or None, depth or None, invariant, params),
    ``view.keys`` (list of str), ``view.invariant`` (list of bool), ``view.attrs`` (dict), ``view.manifest`` (a :class:`bsrdata.manifest.Manifest`).
    HDF5 files are opened lazily and re-opened in a forked process (safe for DataLoader workers).
    """

    def __init__(self, root, entries, attrs, manifest, split, group):
        self.root = os.fspath(root)
        self._entries = entries  # list of (shard relpath, index, key, invariant)
        self.attrs = dict(attrs)
        self.manifest = manifest
        self.split = split
        self.group = group
        self._files = {}
        self._checked = set()
        self._pid = os.getpid()

    @property
    def keys(self):
        return [e[2] for e in self._entries]

    @property
    def invariant(self):
        return [e[3] for e in self._entries]

    def __len__(self):
        return len(self._entries)

    def _file(self, rel):
        if self._pid != os.getpid():
            self._files = {}
            self._pid = os.getpid()
        f = self._files.get(rel)
        if f is None:
            path = os.path.join(self.root, rel)
            f = _open_h5(path)
            if rel not in self._checked:
                meta = check_shard(f, path)
                self._checked.add(rel)
                self._check_against(meta, rel, path)
            self._files[rel] = f
        return f

    def _check_against(self, meta, rel, path):
        for e in self._entries:
            if e[0] == rel:
                idx, key = e[1], e[2]
                if idx >= meta["n"] or meta["keys"][idx] != key:
                    raise BsrError(f"{path}: sample {idx} is not '{key}' as the manifest says")

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.get(i)

    def get(self, i, fields=None) -> dict:
        """Sample ``i`` with only ``fields`` read (None = all of SAMPLE_FIELDS)."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        rel, idx, key, inv = self._entries[i]
        return _sample_from(self._file(rel), idx, os.path.join(self.root, rel), fields)

    def close(self):
        for f in self._files.values():
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
        self._files = {}

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_files"] = {}
        return d

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def open_dataset(root, split, group=None) -> DatasetView:
    """Open ``split`` of the dataset at ``root`` (a folder with ``manifest.json``).

    ``group`` (1..5, int or str) selects a test group: its members in key order (the split's order),
    fold g's images invariant, the others their shared variant rendering.
    """
    from bsrdata.manifest import load_manifest

    root = os.fspath(root)
    m = load_manifest(root)
    if split not in m.splits:
        raise BsrError(f"{root}: no split '{split}' (has {', '.join(sorted(m.splits)) or 'none'})")
    if group is None:
        entries = []
        for sh in m.splits[split].shards:
            for i, (k, inv) in enumerate(zip(sh.keys, sh.invariant)):
                entries.append((sh.path, i, k, bool(inv)))
    else:
        g = str(group)
        if g not in m.groups:
            raise BsrError(f"group: {group} not in {root} (has {', '.join(sorted(m.groups)) or 'none'})")
        entries = [(e.shard, e.index, e.key, e.invariant) for e in m.groups[g]]
    return DatasetView(root, entries, m.attrs, m, split, group)
