"""HDF5 shards (docs/API.md) and the read side, :func:`open_dataset`.

One file per shard, N samples of one split, all of one size (H, W). Datasets, N first:

- ``hr`` uint8 (N, H, W, 3) RGB; ``lr`` uint8 (N, H/s, W/s, 3) RGB
- ``blur`` float32 (N, H, W): σ in HR pixels
- ``seg`` uint8 (N, H, W): class index, 255 = ignore (absent when no sample of the shard has labels;
  when only some have, the others are all 255)
- ``depth`` float32 (N, H, W) metres (optional)
- ``key`` UTF-8 strings (N,); ``invariant`` bool (N,)
- ``params`` UTF-8 JSON strings (N,): the per-sample parameters (focus, focal length, aperture, IVA σ, seeds)
- file attributes ``scale, max_coc, sigma_max, renderer, downsample, noise, generator_version`` (+ others).

The per-sample arrays are the table :data:`FIELDS` (name, dtype, shape rule, compression, optional), which
the writer, :func:`check_shard` (and so ``bsr verify``) and the reader iterate.
Two shard formats (attribute ``shard_format``; absent = 1), both read by everything here:

- **1**: the table :data:`FIELDS`: one sample per chunk, gzip level 1.
- **2** (the default, :data:`FIELDS_V2`): Blosc LZ4HC level 5 (``hdf5plugin``, byte shuffle) instead
  of gzip (≈10x faster to decode, about the same size); ``hr``/``blur``/``seg``/``depth`` chunked in
  tiles of up to :data:`TILE` x :data:`TILE` pixels so a training crop decodes only the tiles it
  touches; ``blur`` may be stored as ``uint16`` codes into the float32 table ``blur_levels`` (σ on the
  CoC grid; exact: the writer checks that every σ is a table entry). The reader decodes the codes, so
  a sample dict is the same for both formats.

No timestamps in either (so equal content gives equal bytes).
Written to ``<path>.tmp<pid>`` (:func:`bsrdata.fileio.tmp_name`), fsynced, renamed: a file under its final
name is always complete; :func:`bsrdata.fileio.remove_temps` deletes the leftovers of killed writers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Sequence

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.fileio import atomic_open, remove_temps, tmp_name

REQUIRED_ATTRS = ("scale", "max_coc", "sigma_max", "renderer", "downsample", "noise", "generator_version")
# gzip level 1 everywhere: deterministic bytes (h5py's LZF filter is not: liblzf leaves its hash table
# uninitialised, so equal data can compress to different bytes), portable to any HDF5 reader, and fast to
# decode. The maps shrink 10-60x; photos only ~15 %.
_GZIP1 = {"compression": "gzip", "compression_opts": 1}
SHARD_FORMATS = (1, 2)
DEFAULT_SHARD_FORMAT = 2
TILE = 160  # format 2: HR-grid maps are chunked in tiles of at most TILE x TILE pixels
# format 2 codec: Blosc LZ4HC level 5, byte shuffle (a no-op for uint8; groups the bytes of uint16 codes
# and float32 depth). One Blosc thread: deterministic bytes (the block split does not depend on threads).
_BLOSC = {"cname": "lz4hc", "clevel": 5, "shuffle": 1}


@dataclasses.dataclass(frozen=True)
class ShardField:
    """One per-sample array of a shard, stored as an (N, ...) dataset chunked one sample per chunk.

    ``shape``: ``"hr"`` = (H, W, 3), ``"lr"`` = (H/s, W/s, 3), ``"map"`` = (H, W), for HR frame (H, W)
    and scale s. ``optional``: stored only when the shard asks for it (``with_seg`` / ``with_depth``).
    ``fill``: the value of a sample without this field in a shard that stores it (None = such a sample is
    an error). Float fields are cast to ``dtype`` on write; integer fields must already have it.
    """

    name: str
    dtype: type
    shape: str
    compression: dict
    optional: bool = False
    fill: int | None = None
    tiled: bool = False  # format 2: chunk the HR-grid maps in tiles (see TILE)

    def sample_shape(self, hw, lr_hw) -> tuple:
        """The per-sample shape for HR size ``hw`` = (H, W) and LR size ``lr_hw``."""
        return {"hr": (*hw, 3), "lr": (*lr_hw, 3), "map": tuple(hw)}[self.shape]

    def describe(self) -> str:
        return np.dtype(self.dtype).name

    def chunks(self, shp) -> tuple:
        """The chunk shape of the (N, *shp) dataset: one sample, tiled for ``tiled`` fields."""
        if not self.tiled:
            return (1, *shp)
        return (1, min(TILE, shp[0]), min(TILE, shp[1]), *shp[2:])

    def filter_kwargs(self) -> dict:
        """The create_dataset keyword arguments of the compression (format 2: the Blosc filter)."""
        if self.compression.get("compression") == "blosc":
            import hdf5plugin

            return dict(hdf5plugin.Blosc(**_BLOSC))
        return dict(self.compression)


# The one table of per-sample fields: the writer, the checker (and so verify) and the reader iterate it,
# in this order (it is also the order the datasets are created and written in, which fixes the bytes).
FIELDS = (
    ShardField("hr", np.uint8, "hr", _GZIP1),
    ShardField("lr", np.uint8, "lr", _GZIP1),
    ShardField("blur", np.float32, "map", _GZIP1),
    ShardField("seg", np.uint8, "map", _GZIP1, optional=True, fill=255),
    ShardField("depth", np.float32, "map", {**_GZIP1, "shuffle": True}, optional=True),
)
_BLOSC1 = {"compression": "blosc"}
# format 2: the same fields and order; Blosc, tiles. ``blur`` is float32 here or uint16 codes into
# ``blur_levels`` (BLUR_CODE_DTYPE), see ShardWriter.
FIELDS_V2 = (
    ShardField("hr", np.uint8, "hr", _BLOSC1, tiled=True),
    ShardField("lr", np.uint8, "lr", _BLOSC1),
    ShardField("blur", np.float32, "map", _BLOSC1, tiled=True),
    ShardField("seg", np.uint8, "map", _BLOSC1, optional=True, fill=255, tiled=True),
    ShardField("depth", np.float32, "map", _BLOSC1, optional=True, tiled=True),
)
BLUR_CODE_DTYPE = np.uint16
FIELD_NAMES = tuple(fd.name for fd in FIELDS)
COMPRESSION = {fd.name: dict(fd.compression) for fd in FIELDS}


def fields_for(version: int) -> tuple:
    """The field table of shard format ``version`` (1 or 2)."""
    if isinstance(version, bool):
        pass
    elif version == 1:
        return FIELDS
    if version == 2:
        return FIELDS_V2
    raise BsrError(f"shard_format: {version!r} is not a known shard format (known: 1, 2)")


def sigma_levels(attrs: dict):
    """The float32 σ table of the CoC grid of a build's ``attrs`` (``max_coc``, ``coc_step``): every σ
    :func:`bsrdata.degrade.synthesize` can produce, ascending, or None when the attrs lack the grid.

    σ = max(0, (rint(c / step) · step − 1) / 4) in float64, cast to float32 (the same expression as
    ``optics.sigma_from_coc(optics.quantise_coc(c, step))``)."""
    step, mc = attrs.get("coc_step"), attrs.get("max_coc")
    if not isinstance(step, (int, float)) or not isinstance(mc, (int, float)) or not step > 0:
        return None
    k = np.arange(0, int(np.ceil(float(mc) / float(step))) + 2, dtype=np.float64)
    lv = np.unique(np.maximum(0.0, (k * float(step) - 1.0) / 4.0).astype(np.float32))
    return lv if len(lv) <= np.iinfo(BLUR_CODE_DTYPE).max + 1 else None


def encode_blur(blur: np.ndarray, levels: np.ndarray, key="") -> np.ndarray:
    """σ map -> uint16 codes into ``levels`` (exact: a σ that is not a table entry is an error)."""
    code = np.searchsorted(levels, blur).astype(np.int64)
    np.clip(code, 0, len(levels) - 1, out=code)
    if not np.array_equal(levels[code], blur):
        bad = blur[levels[code] != blur].ravel()[0]
        raise BsrError(f"{key}: blur σ {float(bad)!r} is not on the shard's σ grid (blur_levels); "
                       "write it with blur_levels=None or shard_format=1")
    return code.astype(BLUR_CODE_DTYPE)


def _h5py():
    import h5py

    try:  # registers the Blosc filter of shard format 2 with HDF5 (not needed for format 1)
        import hdf5plugin  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency; reading format 2 then fails with one line
        pass
    return h5py


h5py_module = _h5py  # h5py with the format-2 filter registered: open shards through this


def read_blur(path):
    """Yield the float32 σ map of every sample of a shard (either format), in order."""
    with _open_h5(path) as f:
        meta = check_shard(f, path)
        d, levels = f["blur"], meta["blur_levels"]
        for i in range(meta["n"]):
            yield d[i] if levels is None else decode_blur(d[i], levels, path, i)


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
    ``shard_format``: 1 (:data:`FIELDS`) or 2 (:data:`FIELDS_V2`, the default); ``blur_levels``
    (format 2): an ascending float32 σ table (e.g. :func:`sigma_levels`) to store blur as uint16 codes
    into, exactly (a σ not in the table is an error); None stores float32.
    """

    def __init__(self, path, n: int, attrs: dict, *, with_seg: bool, with_depth: bool = False,
                 shard_format: int = DEFAULT_SHARD_FORMAT, blur_levels=None):
        self.path = os.fspath(path)
        self.tmp = tmp_name(self.path)
        self.n = int(n)
        self.attrs = dict(attrs)
        self.with_seg = bool(with_seg)
        self.with_depth = bool(with_depth)
        self.version = int(shard_format) if not isinstance(shard_format, bool) else -1
        table = fields_for(self.version)
        on = {"seg": self.with_seg, "depth": self.with_depth}
        self.fields = tuple(fd for fd in table if not fd.optional or on.get(fd.name, False))
        # format 2: blur as uint16 codes into this σ table (e.g. sigma_levels(attrs)); None: float32
        self.levels = None
        if self.version >= 2:
            self.attrs["shard_format"] = self.version
            if blur_levels is not None:
                self.levels = np.asarray(blur_levels, np.float32)
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
            # built in memory and written by Python at close: a full disk is then one OSError on a plain
            # write, not a failed HDF5 flush (which left the library half-closed and crashed the process
            # at exit); the bytes are the same as a file written directly (tests/test_shards.py)
            self.f = h5py.File(self.tmp, "w", driver="core", backing_store=False, track_order=False)
        except OSError as exc:
            raise BsrError(f"{self.path}: cannot write ({getattr(exc, 'strerror', None) or exc})") from None
        f, n = self.f, self.n
        self.shape = tuple(hr_shape)
        self.shapes = {}
        for fd in self.fields:
            shp = fd.sample_shape(self.shape, tuple(lr_shape))
            self.shapes[fd.name] = shp
            dt = BLUR_CODE_DTYPE if fd.name == "blur" and self.levels is not None else fd.dtype
            f.create_dataset(fd.name, (n, *shp), dt, chunks=fd.chunks(shp), track_times=False,
                             **fd.filter_kwargs())
        if self.levels is not None:
            f.create_dataset("blur_levels", data=self.levels, track_times=False)
        sdt = h5py.string_dtype("utf-8")
        f.create_dataset("key", (n,), sdt, track_times=False)
        f.create_dataset("invariant", (n,), np.bool_, track_times=False)
        f.create_dataset("params", (n,), sdt, track_times=False)
        for k in sorted(self.attrs):
            f.attrs[k] = _attr_value(self.attrs[k])

    def add(self, sample: dict) -> None:
        """Append one Sample dict (API.md); all samples must share (H, W)."""
        hr = np.asarray(sample["hr"])
        lr = np.asarray(sample["lr"])  # its (h, w) fixes the LR size of the shard
        key = str(sample["key"])
        if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
            raise BsrError(f"{key}: hr must be uint8 (H, W, 3), got {hr.dtype} {hr.shape}")
        if self.i >= self.n:
            raise BsrError(f"{self.path}: more than {self.n} samples for this shard")
        if self.f is None:
            self._open(hr.shape[:2], lr.shape[:2])
        if hr.shape[:2] != self.shape:
            raise BsrError(f"{key}: frame {hr.shape[0]}x{hr.shape[1]} differs from the other frames of "
                           f"{os.path.basename(self.path)} ({self.shape[0]}x{self.shape[1]}); "
                           "a shard needs equal sizes")
        f, i = self.f, self.i
        arrays = []
        for fd in self.fields:  # check every field first, then write them in table order
            shp = self.shapes[fd.name]
            v = sample.get(fd.name)
            if v is None:
                if fd.fill is None:
                    raise BsrError(f"{key}: {fd.name} missing (this shard stores it for every sample)")
                v = np.full(shp, fd.fill, fd.dtype)
            v = np.asarray(v, fd.dtype) if np.issubdtype(fd.dtype, np.floating) else np.asarray(v)
            if v.dtype != fd.dtype or v.shape != shp:
                raise BsrError(f"{key}: {fd.name} must be {fd.describe()} {shp}, got {v.dtype} {v.shape}")
            if fd.name == "blur" and self.levels is not None:
                v = encode_blur(v, self.levels, key)
            arrays.append((fd.name, v))
        try:
            for name, v in arrays:
                f[name][i] = v
            f["key"][i] = key
            f["invariant"][i] = bool(sample["invariant"])
            f["params"][i] = json.dumps(sample.get("params", {}), sort_keys=True)
        except _H5_ERRORS as exc:
            self._failed(exc)
        self.i += 1

    def _failed(self, exc):
        """A write HDF5 could not do (e.g. out of memory): drop the file and say so in one line."""
        msg = _os_reason(exc)
        self.abort()
        raise BsrError(f"{self.path}: cannot write ({msg})") from None

    def close(self) -> str:
        """Check the count, flush, fsync and rename into place; returns the final path."""
        if self.f is None:
            raise BsrError(f"{self.path}: no samples written")
        if self.i != self.n:
            self.abort()
            raise BsrError(f"{self.path}: {self.i} of {self.n} samples written")
        try:
            self.f.flush()
            image = self.f.id.get_file_image()
            self.f.close()
            self.f = None
        except _H5_ERRORS as exc:
            self._failed(exc)
        with atomic_open(self.path, "wb") as fh:  # <path>.tmp<pid>, fsync, rename; OSError -> one line
            fh.write(image)
        return self.path

    def abort(self) -> None:
        """Drop the in-memory file (nothing under the final name is touched)."""
        if self.f is not None:
            with contextlib.suppress(Exception):
                self.f.close()
            self.f = None
        with contextlib.suppress(OSError):
            os.remove(self.tmp)


def data_levels(samples) -> np.ndarray | None:
    """The σ table of in-memory samples: their distinct blur values (None if more than uint16 codes)."""
    vals = np.unique(np.concatenate([np.unique(np.asarray(s["blur"], np.float32)) for s in samples]))
    return vals if len(vals) <= np.iinfo(BLUR_CODE_DTYPE).max + 1 else None


def _levels_for(samples, attrs):
    if not all(s.get("blur") is not None for s in samples):
        return None
    grid = sigma_levels(attrs)
    if grid is not None:
        try:
            for s in samples:
                encode_blur(np.asarray(s["blur"], np.float32), grid)
            return grid
        except BsrError:
            pass
    return data_levels(samples)


def write_shard(path, samples: list, attrs: dict, *, with_depth: bool = False,
                shard_format: int = DEFAULT_SHARD_FORMAT) -> str:
    """Write ``samples`` (Sample dicts) as one shard at ``path`` (via a temporary name and a rename).

    Format 2 stores blur as codes into the attrs' CoC-grid table (:func:`sigma_levels`, as a build
    does) when every σ is on it, else into the samples' own distinct σ values (exact for any map)."""
    samples = list(samples)
    if not samples:
        raise BsrError(f"{path}: a shard needs at least one sample")
    with_seg = any(s.get("seg") is not None for s in samples)
    levels = _levels_for(samples, attrs) if shard_format == 2 else None
    with ShardWriter(path, len(samples), attrs, with_seg=with_seg, with_depth=with_depth,
                     shard_format=shard_format, blur_levels=levels) as w:
        for s in samples:
            w.add(s)
    return os.fspath(path)


def shard_entry(path, rel, keys, invariant) -> dict:
    """The manifest entry of the written shard file ``path`` (``rel``: its path relative to the dataset
    root): ``{"path": rel, "count", "bytes", "sha256", "keys", "invariant"}``."""
    from bsrdata.fileio import sha256_file

    keys, invariant = [str(k) for k in keys], [bool(x) for x in invariant]
    return {"path": rel, "count": len(keys), "bytes": os.path.getsize(path), "sha256": sha256_file(path),
            "keys": keys, "invariant": invariant}


def write_dataset(root, splits: dict, *, attrs: dict, groups: dict | None = None, shard_size: int | None = None,
                  source: dict | None = None, seed: int = 0, recipe: dict | None = None,
                  shard_format: int = DEFAULT_SHARD_FORMAT):
    """Write a complete dataset (shards + ``manifest.json``, written last) from in-memory samples.

    ``splits``: split name -> list of Sample dicts (``key``, ``hr`` uint8 (H, W, 3), ``lr`` uint8
    (H/s, W/s, 3), ``blur`` float32 (H, W) σ in HR pixels, optional ``seg`` uint8 (H, W), ``depth``
    float32 (H, W) metres, ``invariant`` bool, ``params`` dict), stored in that order as
    ``split/split-00000.h5``, ... of ``shard_size`` samples (None: one shard per split). A shard stores
    ``depth`` when every one of its samples has it, ``seg`` when any has. ``groups``: group name (``"1"``, ..)
    -> list of ``(key, invariant)``, each naming a stored sample. ``attrs``: the shard attributes
    (:data:`REQUIRED_ATTRS`); ``source``: e.g. ``{"name": ..., "num_classes": ...}``. Returns the
    :class:`~bsrdata.manifest.Manifest`; bad input is one BsrError line. ``shard_format``: 1 or 2 (the
    default; recorded as ``attrs["shard_format"]`` in the shards and the manifest).
    """
    from bsrdata.manifest import FORMAT, NAME, Manifest, write_manifest

    root = os.fspath(root)
    fields_for(shard_format)
    attrs = dict(attrs, shard_format=shard_format) if shard_format != 1 else dict(attrs)
    man_splits, where = {}, {}
    for split, samples in splits.items():
        samples = list(samples)
        size = shard_size or max(1, len(samples))
        entries = []
        for j, start in enumerate(range(0, len(samples), size)):
            chunk = samples[start:start + size]
            rel = f"{split}/{split}-{j:05d}.h5"
            path = write_shard(os.path.join(root, rel), chunk, attrs,
                               with_depth=all(s.get("depth") is not None for s in chunk), shard_format=shard_format)
            entries.append(shard_entry(path, rel, [s["key"] for s in chunk], [s["invariant"] for s in chunk]))
            for i, s in enumerate(chunk):
                where.setdefault((str(s["key"]), bool(s["invariant"])), (rel, i))
        man_splits[split] = {"shards": entries, "count": len(samples),
                             "images": len({str(s["key"]) for s in samples})}
    man_groups = {}
    for g, members in (groups or {}).items():
        lst = []
        for key, inv in members:
            if (str(key), bool(inv)) not in where:
                raise BsrError(f"groups: {g}: no stored sample {key!r} with invariant={bool(inv)}")
            rel, i = where[(str(key), bool(inv))]
            lst.append({"key": str(key), "invariant": bool(inv), "shard": rel, "index": i})
        man_groups[str(g)] = lst
    obj = {"format": FORMAT, "recipe": recipe, "attrs": dict(attrs)}
    if source is not None:
        obj["source"] = dict(source)
    obj.update(seed=int(seed), part=None, complete=True, splits=man_splits, groups=man_groups)
    m = Manifest.from_json(obj, os.path.join(root, NAME))
    write_manifest(root, m)
    return m


# ------------------------------------------------------------------------------------------ read side
# Bounds checked before any data is read, so a crafted shard cannot make a reader allocate what its few
# bytes declare (a gzip chunk inflates ~1000x). A Cityscapes-size sample is 2048 x 1024 x 4 B = 8 MiB per
# map; the bounds leave 30x room over that.
MAX_SAMPLES = 1 << 16  # samples per shard
MAX_SAMPLE_BYTES = 1 << 28  # one sample of one dataset (256 MiB)
MAX_CHUNK_BYTES = 1 << 28  # one HDF5 chunk, the unit a read decompresses


def shard_path(root, rel) -> str:
    """``root/rel`` for a shard path of the manifest, refused when it resolves outside ``root`` (a
    symbolic link out of the dataset folder). The manifest already refuses absolute and ``..`` paths."""
    root = os.fspath(root)
    path = os.path.join(root, rel)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise BsrError(f"{path}: resolves outside the dataset folder {root} (a link?); shards must lie in it")
    return path


def _check_storage(f, path) -> None:
    """Every object of a shard is a plain dataset stored in the file itself: no soft or external links, no
    groups, no virtual datasets, no external raw storage (each would let a shard read bytes from other
    files, which neither the manifest's sha256 nor ``verify --full`` would see), and no dataset declaring
    more than the bounds above."""
    h5py = _h5py()
    for name in f:
        link = f.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise BsrError(f"{path}: '{name}' is a {type(link).__name__}; shards hold only their own datasets")
        obj = f.get(name)
        if not isinstance(obj, h5py.Dataset):
            raise BsrError(f"{path}: '{name}' is not a dataset")
        if obj.is_virtual:
            raise BsrError(f"{path}: '{name}' is a virtual dataset (data from other files); refused")
        if obj.external:
            raise BsrError(f"{path}: '{name}' keeps its data in external files; refused")
        shape = obj.shape or ()
        if shape and shape[0] > MAX_SAMPLES:
            raise BsrError(f"{path}: '{name}' declares {shape[0]} samples (more than {MAX_SAMPLES})")
        item = obj.dtype.itemsize
        per = item * int(np.prod(shape[1:], dtype=np.int64)) if shape else item
        if per > MAX_SAMPLE_BYTES:
            raise BsrError(f"{path}: '{name}' declares {per} bytes per sample (more than {MAX_SAMPLE_BYTES})")
        if obj.chunks is not None and item * int(np.prod(obj.chunks, dtype=np.int64)) > MAX_CHUNK_BYTES:
            raise BsrError(f"{path}: '{name}' has chunks {obj.chunks} larger than {MAX_CHUNK_BYTES} bytes")


def _os_reason(exc) -> str:
    """The OS reason inside an h5py error (``errno = 28, error message = 'No space left on device'``)."""
    text = str(exc)
    m = re.search(r"error message = '([^']+)'", text)
    if m:
        return m.group(1)
    return getattr(exc, "strerror", None) or (text.splitlines() or [type(exc).__name__])[0][:160]


# what h5py raises for a damaged file (a flipped byte can surface as any of these)
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, UnicodeDecodeError)


def _open_h5(path):
    h5py = _h5py()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BsrError(f"{path}: shard missing")
    try:
        # no chunk cache: a chunk holds one sample (or one tile of it) and reads never revisit one, so the
        # cache only adds a copy (whole-frame training reads are ~18 % faster without it)
        return h5py.File(path, "r", rdcc_nbytes=0)
    except _H5_ERRORS as exc:
        raise BsrError(f"{path}: not a readable HDF5 shard ({exc})") from None


def check_shard(f, path, count: int | None = None) -> dict:
    """Validate an open shard's structure against :data:`FIELDS`; returns its metadata (n, shape, attrs,
    keys, invariant, with_seg, with_depth, fields = the stored field names in table order).

    Links, virtual or external storage and declared sizes are checked first (:func:`_check_storage`), and
    ``count`` (the manifest's sample count, when given) before the keys are read."""
    try:
        return _check_shard(f, path, count)
    except _H5_ERRORS as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BsrError(f"{path}: unreadable shard structure ({first[:160]})") from None


def _check_shard(f, path, count) -> dict:
    _check_storage(f, path)
    for k in [fd.name for fd in FIELDS if not fd.optional] + ["key", "invariant"]:
        if k not in f:
            raise BsrError(f"{path}: dataset '{k}' missing")
    hr = f["hr"]
    if hr.dtype != np.uint8 or hr.ndim != 4 or hr.shape[3] != 3:
        raise BsrError(f"{path}: hr must be uint8 (N, H, W, 3), is {hr.dtype} {hr.shape}")
    n, h, w = hr.shape[:3]
    if count is not None and n != count:
        raise BsrError(f"{path}: {n} samples, manifest says {count}")
    attrs = _read_attrs(f)
    for k in REQUIRED_ATTRS:
        if k not in attrs:
            raise BsrError(f"{path}: attribute '{k}' missing")
    s = attrs["scale"]
    if not isinstance(s, int) or s < 1 or h % s or w % s:
        raise BsrError(f"{path}: scale attribute {s!r} does not divide the frame {h}x{w}")
    version = attrs.get("shard_format", 1)
    if isinstance(version, bool) or version not in SHARD_FORMATS:
        raise BsrError(f"{path}: shard_format attribute {version!r} is not a known shard format (known: 1, 2)")
    levels = None
    stored = []
    for fd in fields_for(version):
        if fd.name not in f:
            continue
        d, want = f[fd.name], (n, *fd.sample_shape((h, w), (h // s, w // s)))
        if fd.name == "blur" and version >= 2 and d.dtype == BLUR_CODE_DTYPE and d.shape == want:
            levels = _check_levels(f, path)
        elif d.dtype != fd.dtype or d.shape != want:
            raise BsrError(f"{path}: {fd.name} must be {fd.describe()} {want}, is {d.dtype} {d.shape}")
        stored.append(fd.name)
    if f["key"].shape != (n,) or f["invariant"].shape != (n,):
        raise BsrError(f"{path}: key/invariant lengths differ from {n} samples")
    if "params" in f and f["params"].shape != (n,):
        raise BsrError(f"{path}: params length differs from {n} samples")
    keys = [k.decode("utf-8") if isinstance(k, bytes) else str(k) for k in f["key"][()]]
    return {
        "n": n, "shape": (h, w), "attrs": attrs, "keys": keys,
        "invariant": [bool(x) for x in f["invariant"][()]],
        "with_seg": "seg" in f, "with_depth": "depth" in f, "fields": tuple(stored),
        "format": version, "blur_levels": levels,
    }


def _check_levels(f, path) -> np.ndarray:
    """Format 2's ``blur_levels`` table (float32 (L,), 1 <= L <= 65536), read."""
    if "blur_levels" not in f:
        raise BsrError(f"{path}: blur is stored as codes but dataset 'blur_levels' is missing")
    d = f["blur_levels"]
    if d.dtype != np.float32 or d.ndim != 1 or not 1 <= d.shape[0] <= np.iinfo(BLUR_CODE_DTYPE).max + 1:
        raise BsrError(f"{path}: blur_levels must be float32 (L,) with 1 <= L <= 65536, is {d.dtype} {d.shape}")
    return d[()]


def decode_blur(codes: np.ndarray, levels: np.ndarray, path="", i=None) -> np.ndarray:
    """uint16 codes -> float32 σ (``levels[codes]``); a code past the table is an error naming the shard."""
    from bsrdata.blurcodes import gather, padded_table

    if codes.size and int(codes.max()) >= len(levels):
        where = f" sample {i}" if i is not None else ""
        raise BsrError(f"{path}:{where} blur code {int(codes.max())} is past the {len(levels)}-entry blur_levels")
    return gather(codes, padded_table(levels))


SAMPLE_FIELDS = ("key", *FIELD_NAMES, "invariant", "params")


def _sample_from(f, i, path, fields=None, levels=None) -> dict:
    """Sample ``i`` of an open shard as a dict. ``fields`` (names from SAMPLE_FIELDS) limits what is read
    and decoded; the others are left out of the dict (decoding ``depth`` costs about as much as ``hr``).
    Format 2 blur codes are decoded through ``blur_levels`` (``levels``: that table, if already read).
    A chunk HDF5 cannot decode (a flipped byte) is one BsrError line."""
    try:
        return _sample_fields(f, i, path, fields, levels)
    except _H5_ERRORS as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BsrError(f"{path}: sample {i} unreadable ({first[:160]}); `bsr verify --full` finds corrupt "
                       "shards") from None


def _sample_fields(f, i, path, fields, levels) -> dict:
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
        elif name == "blur" and "blur" in f and f["blur"].dtype == BLUR_CODE_DTYPE:
            levels = _check_levels(f, path) if levels is None else levels
            out[name] = decode_blur(f["blur"][i], levels, path, i)
        elif name in FIELD_NAMES:
            out[name] = f[name][i] if name in f else None
        else:
            raise BsrError(f"fields: unknown sample field {name!r} (known: {', '.join(SAMPLE_FIELDS)})")
    return out


def read_sample(path, index: int, *, count: int | None = None) -> dict:
    """Read one Sample dict (API.md) from a shard file, validating the file's structure (and its sample
    count against ``count``, the manifest's, when given)."""
    with _open_h5(path) as f:
        meta = check_shard(f, path, count)
        if not 0 <= index < meta["n"]:
            raise BsrError(f"{path}: sample {index} out of range (0..{meta['n'] - 1})")
        return _sample_from(f, index, path)


def read_shard_meta(path) -> dict:
    """Validated metadata of a shard (see :func:`check_shard`)."""
    with _open_h5(path) as f:
        return check_shard(f, path)


def _table(levels):
    if levels is None:
        return None
    from bsrdata.blurcodes import padded_table

    return padded_table(levels)


class DatasetView(Sequence):
    """A read-only sequence of Sample dicts over a built dataset's shards.

    ``len(view)``, ``view[i]`` (a dict: key, hr, lr, blur, seg or None, depth or None, invariant, params),
    ``view.keys`` (list of str), ``view.invariant`` (list of bool), ``view.attrs`` (dict), ``view.manifest``
    (a :class:`bsrdata.manifest.Manifest`).
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
        self._meta = {}  # shard relpath -> (H, W), blur_levels or None (kept across a fork)
        self._dsets = {}  # shard relpath -> {field: open h5py Dataset} (this process only)
        self._pid = os.getpid()
        self._counts = {sh.path: sh.count for sp in manifest.splits.values() for sh in sp.shards}

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
            self._dsets = {}
            self._pid = os.getpid()
        f = self._files.get(rel)
        if f is None:
            path = shard_path(self.root, rel)
            f = _open_h5(path)
            if rel not in self._checked:
                try:
                    meta = check_shard(f, path, self._counts.get(rel))
                    self._check_against(meta, rel, path)
                except BaseException:
                    f.close()
                    raise
                self._checked.add(rel)
                self._meta[rel] = (meta["shape"], _table(meta["blur_levels"]))
            self._files[rel] = f
        return f

    def frame_shape(self, i) -> tuple:
        """(H, W) of sample ``i`` (its shard's frame size; opens and checks the shard once)."""
        return self._shard_meta(self._entries[i][0])[0]

    def _shard_meta(self, rel):
        f = self._file(rel)
        if rel not in self._meta:
            meta = check_shard(f, os.path.join(self.root, rel))
            self._meta[rel] = (meta["shape"], _table(meta["blur_levels"]))
        return self._meta[rel]

    def read(self, i, fields=("hr", "lr", "blur", "seg"), window=None) -> dict:
        """The training read: arrays of sample ``i`` for ``fields`` (of hr, lr, blur, seg, depth; a field
        the shard lacks is None), plus ``key`` and ``invariant`` from the manifest (checked against the
        shard when it is first opened, so not re-read per item).

        ``window`` = (y0, y1, x0, x1) in HR pixels, multiples of the scale: only that box is read (``lr``
        gets the box divided by the scale); with format 2's tiles only the tiles it touches are decoded.
        The dataset handles of a shard are opened once per process. Equal to slicing :meth:`get`'s arrays.
        """
        rel, idx, key, inv = self._entries[self._index(i)]
        try:
            return self._read(rel, idx, key, inv, fields, window)
        except _H5_ERRORS as exc:  # a chunk HDF5 cannot decode: one line, as in get()
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise BsrError(f"{os.path.join(self.root, rel)}: sample {idx} unreadable ({first[:160]}); "
                           "`bsr verify --full` finds corrupt shards") from None

    def _index(self, i) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return i

    def _read(self, rel, idx, key, inv, fields, window) -> dict:
        f = self._file(rel)
        ds = self._dsets.get(rel)
        if ds is None:
            ds = self._dsets[rel] = {name: f[name] for name in FIELD_NAMES if name in f}
        levels = self._shard_meta(rel)[1]
        out = {"key": key, "invariant": inv}
        s = int(self.attrs.get("scale", 1))
        for name in fields:
            d = ds.get(name)
            if d is None:
                if name not in FIELD_NAMES:
                    raise BsrError(f"fields: unknown array field {name!r} (known: {', '.join(FIELD_NAMES)})")
                out[name] = None
                continue
            if window is None:
                v = d[idx]
            elif name == "lr":
                y0, y1, x0, x1 = window
                v = d[idx, y0 // s:y1 // s, x0 // s:x1 // s]
            else:
                y0, y1, x0, x1 = window
                v = d[idx, y0:y1, x0:x1]
            if name == "blur" and levels is not None:
                from bsrdata.blurcodes import gather

                v = gather(v, levels)  # codes past the table read as NaN (verify reports them)
            out[name] = v
        return out

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
        rel, idx, key, inv = self._entries[self._index(i)]
        return _sample_from(self._file(rel), idx, os.path.join(self.root, rel), fields)

    def close(self):
        self._dsets = {}
        for f in self._files.values():
            try:
                f.close()
            except Exception:
                pass
        self._files = {}

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_files"] = {}
        d["_dsets"] = {}
        return d

    def __del__(self):
        try:
            self.close()
        except Exception:
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
