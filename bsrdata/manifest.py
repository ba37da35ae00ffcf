"""``manifest.json`` at a dataset root: splits -> shards, test groups -> members (numpy-free, JSON only).

Layout (API.md)::

    {"format": "bsrdata-manifest/1", "generator_version": str, "recipe": {...} | null, "attrs": {...},
     "source": {"name", "num_classes", "files_sha256"}, "seed": int, "limit": int | null,
     "with_depth": bool, "shard_size": int, "part": null | "K/N", "complete": bool,
     "splits": {split: {"shards": [{"path", "count", "bytes", "sha256", "keys", "invariant"}], "count": N,
                        "images": n_images, "planned_shards": int, "planned_count": int}},
     "groups": {"1": [{"key", "invariant", "shard", "index"}], ...},
     "plan_id": str, "summary": {...}}

Only ``format``, ``attrs`` (with the numbers ``scale``, ``max_coc`` and ``sigma_max`` every reader
computes with; their types are checked here), ``splits`` (each with ``shards`` and ``count``; each shard with ``path``,
``count``, ``keys``, ``invariant``) and ``groups`` (members with all four keys) are required; the rest is
optional. Shard paths are relative to the root (``"test/test-00000.h5"``). Written atomically
(:mod:`bsrdata.fileio`), last.

:class:`Manifest` is the typed, validated form: ``Manifest.from_json(obj, where)`` checks every field's
type and range (a group member's ``shard`` must be listed in the splits and its ``index`` inside that
shard's ``count``) and raises one BsrError line ``"<where>: <field path>: <problem>"``, e.g.
``out/manifest.json: groups.1[3].index: 7 is out of range (shard test/test-00000.h5 has 5 samples)``.
``to_json()`` gives back the same dict, keys in the same order (unknown keys are kept as they were), so a
manifest read and written again is byte-identical.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any

from bsrdata.errors import BsrError

# re-exported: other modules import these two from here
from bsrdata.fileio import sha256_file, write_json_atomic

FORMAT = "bsrdata-manifest/1"
NAME = "manifest.json"

__all__ = ["FORMAT", "NAME", "Manifest", "Split", "ShardEntry", "GroupMember", "SourceInfo", "ABSENT",
           "load_manifest", "read_manifest", "write_manifest", "validate_manifest", "sha256_file",
           "write_json_atomic"]


class _Absent:
    """Marks an optional key that the JSON object did not have (so ``to_json`` leaves it out)."""

    _inst = None

    def __new__(cls):
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self):
        return "ABSENT"

    def __bool__(self):
        return False


ABSENT = _Absent()


# ------------------------------------------------------------------------------------------ checks
def _fail(where, field, msg):
    raise BsrError(f"{where}: {field}: {msg}")


def _tname(v):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _int(v, where, field, lo=None):
    if not isinstance(v, int) or isinstance(v, bool):
        _fail(where, field, f"expected an integer, got {_tname(v)} {json.dumps(v)[:40]}")
    if lo is not None and v < lo:
        _fail(where, field, f"{v} is below {lo}")
    return v


def _str(v, where, field):
    if not isinstance(v, str):
        _fail(where, field, f"expected a string, got {_tname(v)} {json.dumps(v)[:40]}")
    return v


def _bool(v, where, field):
    if not isinstance(v, bool):
        _fail(where, field, f"expected true or false, got {_tname(v)} {json.dumps(v)[:40]}")
    return v


# the shard attributes the readers compute with: their types are checked where the manifest is read
_ATTR_NUMBERS = {"scale": 1, "max_coc": 0, "sigma_max": 0, "num_classes": None}


def _check_attr_types(attrs, where):
    for k, lo in _ATTR_NUMBERS.items():
        if k not in attrs:
            if k != "num_classes":  # every reader computes with the other three
                _fail(where, f"attrs.{k}", "missing")
            continue
        v = attrs[k]
        if k in ("scale", "num_classes"):
            _int(v, where, f"attrs.{k}", lo)
        elif not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < lo:
            _fail(where, f"attrs.{k}", f"expected a finite number >= {lo}, got {_tname(v)} {json.dumps(v)[:40]}")


def _obj(v, where, field):
    if not isinstance(v, dict):
        _fail(where, field, f"expected an object, got {_tname(v)}")
    return v


def _list(v, where, field):
    if not isinstance(v, list):
        _fail(where, field, f"expected a list, got {_tname(v)}")
    return v


def _req(obj, key, where, field):
    if key not in obj:
        _fail(where, f"{field}.{key}" if field else key, "missing")
    return obj[key]


def _opt(obj, key, check, where, field, *args):
    if key not in obj:
        return ABSENT
    return check(obj[key], where, f"{field}.{key}" if field else key, *args)


def _nullable(check):
    def f(v, where, field, *args):
        return None if v is None else check(v, where, field, *args)

    return f


def _any(v, where, field):
    return v


def _emit(obj, known: tuple, order: tuple, extra: dict) -> dict:
    """Known fields (not ABSENT) and extra keys, in ``order`` (the source's) and else ``known`` order."""
    vals = {k: v for k, v in known if v is not ABSENT}
    vals.update(extra)
    out = {}
    for k in order:
        if k in vals:
            out[k] = vals.pop(k)
    out.update(vals)
    return out


def _extra(obj: dict, known) -> dict:
    return {k: v for k, v in obj.items() if k not in known}


_F = dict(compare=False, repr=False)


# ------------------------------------------------------------------------------------------ types
@dataclasses.dataclass(frozen=True)
class ShardEntry:
    """One shard file: ``path`` relative to the root, ``count`` samples, their ``keys`` and ``invariant``
    flags (lists of length ``count``), file size ``bytes`` and hex ``sha256`` (both optional)."""

    path: str
    count: int
    keys: tuple
    invariant: tuple
    bytes: Any = ABSENT
    sha256: Any = ABSENT
    extra: dict = dataclasses.field(default_factory=dict, **_F)
    order: tuple = dataclasses.field(default=(), **_F)

    KEYS = ("path", "count", "bytes", "sha256", "keys", "invariant")

    @classmethod
    def from_json(cls, obj, where, field="shard") -> "ShardEntry":
        _obj(obj, where, field)
        path = _str(_req(obj, "path", where, field), where, f"{field}.path")
        if os.path.isabs(path) or ".." in path.replace("\\", "/").split("/") or not path:
            _fail(where, f"{field}.path", f"shard path '{path}' escapes the dataset folder")
        count = _int(_req(obj, "count", where, field), where, f"{field}.count", 0)
        keys = _list(_req(obj, "keys", where, field), where, f"{field}.keys")
        inv = _list(_req(obj, "invariant", where, field), where, f"{field}.invariant")
        for i, k in enumerate(keys):
            _str(k, where, f"{field}.keys[{i}]")
        for i, v in enumerate(inv):
            _bool(v, where, f"{field}.invariant[{i}]")
        for name, lst in (("keys", keys), ("invariant", inv)):
            if len(lst) != count:
                _fail(where, f"{field}.{name}", f"shard '{path}' lists {len(lst)} {name} for count {count}")
        return cls(path, count, tuple(keys), tuple(inv),
                   _opt(obj, "bytes", _int, where, field, 0), _opt(obj, "sha256", _str, where, field),
                   _extra(obj, cls.KEYS), tuple(obj))

    def to_json(self) -> dict:
        return _emit(self, (("path", self.path), ("count", self.count), ("bytes", self.bytes),
                            ("sha256", self.sha256), ("keys", list(self.keys)),
                            ("invariant", list(self.invariant))), self.order, self.extra)


@dataclasses.dataclass(frozen=True)
class Split:
    """A split: its ``shards`` in order, ``count`` renderings stored, and (optional) ``images`` distinct
    keys, ``planned_shards`` / ``planned_count`` of the whole plan (a ``--shard`` part holds fewer)."""

    shards: tuple
    count: int
    images: Any = ABSENT
    planned_shards: Any = ABSENT
    planned_count: Any = ABSENT
    extra: dict = dataclasses.field(default_factory=dict, **_F)
    order: tuple = dataclasses.field(default=(), **_F)

    KEYS = ("shards", "count", "images", "planned_shards", "planned_count")

    @classmethod
    def from_json(cls, obj, where, field) -> "Split":
        _obj(obj, where, field)
        shards = _list(_req(obj, "shards", where, field), where, f"{field}.shards")
        shards = tuple(ShardEntry.from_json(sh, where, f"{field}.shards[{i}]") for i, sh in enumerate(shards))
        count = _int(_req(obj, "count", where, field), where, f"{field}.count", 0)
        opt = [_opt(obj, k, _int, where, field, 0) for k in ("images", "planned_shards", "planned_count")]
        return cls(shards, count, *opt, _extra(obj, cls.KEYS), tuple(obj))

    def to_json(self) -> dict:
        return _emit(self, (("shards", [s.to_json() for s in self.shards]), ("count", self.count),
                            ("images", self.images), ("planned_shards", self.planned_shards),
                            ("planned_count", self.planned_count)), self.order, self.extra)


@dataclasses.dataclass(frozen=True)
class GroupMember:
    """One member of a test group: image ``key``, its ``invariant`` rendering or not, stored as sample
    ``index`` of shard ``shard`` (a relative path listed in the splits)."""

    key: str
    invariant: bool
    shard: str
    index: int
    extra: dict = dataclasses.field(default_factory=dict, **_F)
    order: tuple = dataclasses.field(default=(), **_F)

    KEYS = ("key", "invariant", "shard", "index")

    @classmethod
    def from_json(cls, obj, where, field, shard_counts: dict, part: bool = False) -> "GroupMember":
        """``shard_counts``: shard path -> count of every listed shard. In a ``--shard`` part (``part``)
        a member may point at a shard another part holds; then only its path is checked."""
        _obj(obj, where, field)
        key = _str(_req(obj, "key", where, field), where, f"{field}.key")
        inv = _bool(_req(obj, "invariant", where, field), where, f"{field}.invariant")
        shard = _str(_req(obj, "shard", where, field), where, f"{field}.shard")
        index = _int(_req(obj, "index", where, field), where, f"{field}.index")
        if shard not in shard_counts:
            if not part:
                _fail(where, f"{field}.shard", f"'{shard}' is not a shard listed in the splits")
            if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/") or index < 0:
                _fail(where, field, f"shard '{shard}' [{index}] is not inside the dataset folder")
            return cls(key, inv, shard, index, _extra(obj, cls.KEYS), tuple(obj))
        n = shard_counts[shard]
        if not 0 <= index < n:
            _fail(where, f"{field}.index", f"{index} is out of range (shard {shard} has {n} samples)")
        return cls(key, inv, shard, index, _extra(obj, cls.KEYS), tuple(obj))

    def to_json(self) -> dict:
        return _emit(self, (("key", self.key), ("invariant", self.invariant), ("shard", self.shard),
                            ("index", self.index)), self.order, self.extra)


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """Where the images came from: source ``name``, ``num_classes`` (None = no labels) and the
    ``files_sha256`` of its input files (optional; whatever the source recorded)."""

    name: Any = ABSENT
    num_classes: Any = ABSENT
    files_sha256: Any = ABSENT
    extra: dict = dataclasses.field(default_factory=dict, **_F)
    order: tuple = dataclasses.field(default=(), **_F)

    KEYS = ("name", "num_classes", "files_sha256")

    @classmethod
    def from_json(cls, obj, where, field="source") -> "SourceInfo":
        _obj(obj, where, field)
        return cls(_opt(obj, "name", _str, where, field),
                   _opt(obj, "num_classes", _nullable(_int), where, field, 1),
                   _opt(obj, "files_sha256", _any, where, field), _extra(obj, cls.KEYS), tuple(obj))

    def to_json(self) -> dict:
        return _emit(self, (("name", self.name), ("num_classes", self.num_classes),
                            ("files_sha256", self.files_sha256)), self.order, self.extra)


def _part(v, where, field):
    _str(v, where, field)
    m = re.fullmatch(r"(\d+)/(\d+)", v)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        _fail(where, field, f"expected 'K/N' with 1 <= K <= N, got '{v}'")
    return v


_TOP = ("format", "generator_version", "recipe", "attrs", "source", "seed", "limit", "with_depth",
        "shard_size", "part", "complete", "splits", "groups", "plan_id", "summary")


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A dataset's ``manifest.json``, validated (see the module docstring for the layout).

    ``splits``: split name -> :class:`Split`; ``groups``: group name (``"1"``..) -> tuple of
    :class:`GroupMember`; ``attrs``/``recipe``/``summary`` stay plain JSON dicts. Optional fields that the
    file lacks are :data:`ABSENT` (falsy). ``where`` is the file it came from (for messages).
    """

    attrs: dict
    splits: dict
    groups: dict
    format: str = FORMAT
    generator_version: Any = ABSENT
    recipe: Any = ABSENT
    source: Any = ABSENT
    seed: Any = ABSENT
    limit: Any = ABSENT
    with_depth: Any = ABSENT
    shard_size: Any = ABSENT
    part: Any = ABSENT
    complete: Any = ABSENT
    plan_id: Any = ABSENT
    summary: Any = ABSENT
    extra: dict = dataclasses.field(default_factory=dict, **_F)
    order: tuple = dataclasses.field(default=(), **_F)
    where: str = dataclasses.field(default=NAME, **_F)

    @classmethod
    def from_json(cls, obj, where=NAME) -> "Manifest":
        """Validate a parsed ``manifest.json``; one BsrError line naming ``where`` and the field."""
        where = os.fspath(where)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise BsrError(f"{where}: not a {FORMAT} manifest")
        attrs = _obj(_req(obj, "attrs", where, ""), where, "attrs")
        _check_attr_types(attrs, where)
        splits = _obj(_req(obj, "splits", where, ""), where, "splits")
        splits = {name: Split.from_json(s, where, f"splits.{name}") for name, s in splits.items()}
        counts = {}
        for name, s in splits.items():
            for i, sh in enumerate(s.shards):
                if sh.path in counts:
                    _fail(where, f"splits.{name}.shards[{i}].path", f"shard '{sh.path}' is listed twice")
                counts[sh.path] = sh.count
        groups = _obj(_req(obj, "groups", where, ""), where, "groups")
        part = bool(obj.get("part")) or obj.get("complete") is False
        groups = {g: tuple(GroupMember.from_json(e, where, f"groups.{g}[{i}]", counts, part)
                           for i, e in enumerate(_list(mem, where, f"groups.{g}")))
                  for g, mem in groups.items()}
        return cls(
            attrs, splits, groups, FORMAT,
            _opt(obj, "generator_version", _str, where, ""),
            _opt(obj, "recipe", _nullable(_obj), where, ""),
            SourceInfo.from_json(obj["source"], where) if "source" in obj else ABSENT,
            _opt(obj, "seed", _int, where, ""),
            _opt(obj, "limit", _nullable(_int), where, "", 1),
            _opt(obj, "with_depth", _bool, where, ""),
            _opt(obj, "shard_size", _int, where, "", 1),
            _opt(obj, "part", _nullable(_part), where, ""),
            _opt(obj, "complete", _bool, where, ""),
            _opt(obj, "plan_id", _str, where, ""),
            _opt(obj, "summary", _obj, where, ""),
            _extra(obj, _TOP), tuple(obj), where)

    def to_json(self) -> dict:
        """The JSON object (``to_json(from_json(x)) == x``, same key order)."""
        vals = [(k, getattr(self, k)) for k in _TOP]
        conv = {"splits": {n: s.to_json() for n, s in self.splits.items()},
                "groups": {g: [e.to_json() for e in mem] for g, mem in self.groups.items()},
                "source": self.source.to_json() if isinstance(self.source, SourceInfo) else self.source}
        vals = [(k, conv.get(k, v)) for k, v in vals]
        return _emit(self, tuple(vals), self.order, self.extra)

    # ------------------------------------------------------------------ conveniences
    @property
    def is_complete(self) -> bool:
        """True unless the manifest says it is a ``--shard`` part (``complete`` false or ``part`` set)."""
        return self.complete is not False and not self.part

    @property
    def num_classes(self):
        """``source.num_classes``, else ``attrs["num_classes"]``, else None."""
        if isinstance(self.source, SourceInfo) and self.source.num_classes not in (None, ABSENT):
            return self.source.num_classes
        v = self.attrs.get("num_classes")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def shard(self, path) -> ShardEntry:
        for s in self.splits.values():
            for sh in s.shards:
                if sh.path == path:
                    return sh
        raise BsrError(f"{self.where}: no shard '{path}'")

    def get(self, key, default=None):
        """dict-style read of a top-level key (as in the JSON), for code written against the dict."""
        return self.to_json().get(key, default)


# ------------------------------------------------------------------------------------------ files
def write_manifest(root, manifest) -> str:
    """Write ``root/manifest.json`` atomically (a :class:`Manifest` or its JSON dict); returns its path."""
    path = os.path.join(os.fspath(root), NAME)
    obj = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    write_json_atomic(path, obj)
    return path


def load_json_manifest(path) -> Manifest:
    """Read and validate the manifest file ``path`` (e.g. a ``manifest-part-K-of-N.json``)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BsrError(f"{path}: unreadable manifest ({exc})") from None
    return Manifest.from_json(m, path)


def load_manifest(root) -> Manifest:
    """Read and validate ``root/manifest.json`` (structure only; files are checked by verify)."""
    root = os.fspath(root)
    path = os.path.join(root, NAME)
    if not os.path.isdir(root):
        raise BsrError(f"{root}: no such dataset folder")
    if not os.path.isfile(path):
        raise BsrError(f"{path}: missing (not a built dataset, or the build did not finish)")
    return load_json_manifest(path)


def read_manifest(root) -> dict:
    """``load_manifest(root).to_json()``: the validated manifest as its JSON dict."""
    return load_manifest(root).to_json()


def validate_manifest(m, path=NAME) -> None:
    """Raise BsrError if ``m`` (a parsed JSON object) is not a valid manifest."""
    Manifest.from_json(m, path)
