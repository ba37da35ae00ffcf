"""``manifest.json`` at a dataset root: splits -> shards, test groups -> members (numpy-free, JSON only).

Layout (API.md)::

    {"format": "bsrdata-manifest/1", "recipe": {...} | null, "attrs": {...},
     "source": {"name", "num_classes"}, "seed": int, "part": null | "K/N", "complete": bool,
     "splits": {split: {"shards": [{"path", "count", "bytes", "sha256", "keys", "invariant"}], "count": N,
                        "images": n_images}},
     "groups": {"1": [{"key", "invariant", "shard", "index"}], ...},
     "summary": {...}}

Shard paths are relative to the root (``"test/test-00000.h5"``). Written atomically (temp + rename), last.
"""

from __future__ import annotations

import hashlib
import json
import os

from bsrdata.errors import BsrError

FORMAT = "bsrdata-manifest/1"
NAME = "manifest.json"


def sha256_file(path, bufsize: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def write_json_atomic(path, obj) -> None:
    """Write JSON to ``path + '.tmp'``, fsync, rename over ``path``."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise BsrError(f"{path}: cannot write ({exc.strerror or exc})") from None


def write_manifest(root, manifest: dict) -> str:
    """Write ``root/manifest.json`` atomically; returns its path."""
    path = os.path.join(os.fspath(root), NAME)
    write_json_atomic(path, manifest)
    return path


def read_manifest(root) -> dict:
    """Read and validate ``root/manifest.json`` (structure only; files are checked by verify)."""
    root = os.fspath(root)
    path = os.path.join(root, NAME)
    if not os.path.isdir(root):
        raise BsrError(f"{root}: no such dataset folder")
    if not os.path.isfile(path):
        raise BsrError(f"{path}: missing (not a built dataset, or the build did not finish)")
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BsrError(f"{path}: unreadable manifest ({exc})") from None
    validate_manifest(m, path)
    return m


def validate_manifest(m, path="manifest.json") -> None:
    """Raise BsrError if ``m`` does not have the manifest structure."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BsrError(f"{path}: not a {FORMAT} manifest")
    for k in ("attrs", "splits", "groups"):
        if not isinstance(m.get(k), dict):
            raise BsrError(f"{path}: '{k}' missing or not an object")
    for split, s in m["splits"].items():
        if not isinstance(s, dict) or not isinstance(s.get("shards"), list) or not isinstance(s.get("count"), int):
            raise BsrError(f"{path}: split '{split}' malformed")
        for sh in s["shards"]:
            if not isinstance(sh, dict):
                raise BsrError(f"{path}: split '{split}' has a malformed shard entry")
            for k, t in (("path", str), ("count", int), ("keys", list), ("invariant", list)):
                if not isinstance(sh.get(k), t):
                    raise BsrError(f"{path}: split '{split}' shard entry lacks '{k}'")
            p = sh["path"]
            if os.path.isabs(p) or ".." in p.replace("\\", "/").split("/"):
                raise BsrError(f"{path}: shard path '{p}' escapes the dataset folder")
            if len(sh["keys"]) != sh["count"] or len(sh["invariant"]) != sh["count"]:
                raise BsrError(f"{path}: shard '{p}' lists {len(sh['keys'])} keys for count {sh['count']}")
    for g, members in m["groups"].items():
        if not isinstance(members, list):
            raise BsrError(f"{path}: group '{g}' malformed")
        for e in members:
            if not isinstance(e, dict) or not {"key", "invariant", "shard", "index"} <= set(e):
                raise BsrError(f"{path}: group '{g}' has a malformed member")
