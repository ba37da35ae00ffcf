"""Seeded fuzzing of the dataset readers (run by tests/test_fuzz_readers.py in a memory-limited process).

Each round copies a small valid dataset, applies one random mutation (manifest values, types, deletions
and bytes; shard attributes, datasets' dtypes and shapes, truncation, byte flips, links out of the folder,
missing files; with or without the manifest re-sealed to the new bytes), and runs every reader on it:
``verify_dataset`` (must never raise), ``open_dataset`` over every split and group, ``make_panel``
(``bsr preview``), ``export_dataset`` and a bicubic ``run_bench``. A reader may succeed or raise
``BsrError``; any other exception is a failure. Every file the readers open through Python or h5py is
recorded: none may lie in the ``outside`` folder next to the dataset (which holds a valid shard the
mutations point at). Prints one JSON line: rounds, outcome counts, failures (with the mutation).

    python tests/fuzz_readers.py --seed 0 --rounds 200 --work DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import traceback

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from sr_fakes import make_bench_dataset  # noqa: E402

from bsrdata.errors import BsrError  # noqa: E402
from bsrdata.fileio import sha256_file  # noqa: E402

OPENED: list[str] = []


def _audit(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.path.abspath(os.fsdecode(args[0])))


class _TracedFile(h5py.File):
    def __init__(self, name, *a, **kw):
        if isinstance(name, (str, bytes, os.PathLike)):
            OPENED.append(os.path.abspath(os.fsdecode(name)))
        super().__init__(name, *a, **kw)


VALUES = ["x", "", -1, 0, 1, 7, 2 ** 40, -(2 ** 63), 1.5, float("nan"), None, True, False, [], {}, ["a"], [1, 2],
          {"a": 1}, "../outside/test-00000.h5", "/etc/hostname", "test/../../outside/test-00000.h5",
          "test/test-00000.h5", "1", "255"]


def _nodes(obj, path=()):
    """Every (container, key) pair of a JSON tree."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k, path + (k,)))
            out.extend(_nodes(v, path + (k,)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i, path + (i,)))
            out.extend(_nodes(v, path + (i,)))
    return out


def _reseal(root):
    mp = os.path.join(root, "manifest.json")
    try:
        m = json.load(open(mp))
        for s in m["splits"].values():
            for sh in s["shards"]:
                p = os.path.join(root, sh["path"])
                if os.path.isfile(p):
                    sh["bytes"], sh["sha256"] = os.path.getsize(p), sha256_file(p)
        json.dump(m, open(mp, "w"))
    except Exception:
        pass  # the mutation already broke the manifest: leave it broken


def _shards(root):
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.join(d, f) for f in files if f.endswith(".h5")]
    return sorted(out)


def mutate(root, outside, rng) -> str:
    """Apply one random mutation to the dataset at ``root``; returns its description."""
    mp = os.path.join(root, "manifest.json")
    kind = rng.choice(["value", "value", "value", "delete", "manifest_bytes", "attr", "dataset", "dataset",
                       "truncate", "flip", "symlink", "missing", "none"])
    shards = _shards(root)
    shard = shards[rng.integers(len(shards))]
    reseal = bool(rng.integers(2))
    desc = kind
    if kind == "value":
        m = json.load(open(mp))
        nodes = _nodes(m)
        parent, key, path = nodes[rng.integers(len(nodes))]
        val = copy.deepcopy(VALUES[rng.integers(len(VALUES))])
        parent[key] = val
        json.dump(m, open(mp, "w"))
        desc = f"value {'.'.join(map(str, path))} = {val!r}"
        reseal = False
    elif kind == "delete":
        m = json.load(open(mp))
        nodes = _nodes(m)
        parent, key, path = nodes[rng.integers(len(nodes))]
        del parent[key]
        json.dump(m, open(mp, "w"))
        desc = f"delete {'.'.join(map(str, path))}"
        reseal = False
    elif kind == "manifest_bytes":
        data = bytearray(open(mp, "rb").read())
        if rng.integers(2):
            data = data[: rng.integers(len(data))]
            desc = f"manifest truncated to {len(data)}"
        else:
            i = int(rng.integers(len(data)))
            data[i] = int(rng.integers(256))
            desc = f"manifest byte {i} = {data[i]}"
        open(mp, "wb").write(bytes(data))
        reseal = False
    elif kind == "attr":
        with h5py.File(shard, "r+") as f:
            names = list(f.attrs)
            name = names[rng.integers(len(names))]
            if rng.integers(3) == 0:
                del f.attrs[name]
                desc = f"attr {name} deleted in {os.path.basename(shard)}"
            else:
                val = [np.int64(0), np.int64(-3), np.float64(1e30), "text", np.array([1, 2]), np.bool_(True)][
                    rng.integers(6)]
                f.attrs[name] = val
                desc = f"attr {name} = {val!r} in {os.path.basename(shard)}"
    elif kind == "dataset":
        with h5py.File(shard, "r+") as f:
            names = list(f)
            name = names[rng.integers(len(names))]
            old = f[name][()]
            del f[name]
            how = rng.integers(5)
            if how == 0 and old.dtype.kind in "uif":
                new = old.astype([np.float64, np.int16, np.uint8, np.float32][rng.integers(4)])
            elif how == 1 and old.ndim >= 1 and old.shape[0] > 1:
                new = old[: old.shape[0] - 1]
            elif how == 2 and old.ndim >= 2:
                new = old[:, : max(1, old.shape[1] // 2)]
            elif how == 3:
                new = old[..., None] if old.ndim else np.array([old])
            else:
                new = np.zeros((2,), np.int8)
            f.create_dataset(name, data=new)
            desc = f"dataset {name} {old.dtype}{old.shape} -> {new.dtype}{new.shape} in {os.path.basename(shard)}"
    elif kind == "truncate":
        size = os.path.getsize(shard)
        n = int(rng.integers(size))
        with open(shard, "r+b") as fh:
            fh.truncate(n)
        desc = f"{os.path.basename(shard)} truncated to {n} of {size}"
    elif kind == "flip":
        data = bytearray(open(shard, "rb").read())
        idx = rng.integers(len(data), size=int(rng.integers(1, 9)))
        for i in idx:
            data[i] ^= 1 << int(rng.integers(8))
        open(shard, "wb").write(bytes(data))
        desc = f"{os.path.basename(shard)} bytes {sorted(int(i) for i in idx)} flipped"
    elif kind == "symlink":
        os.remove(shard)
        os.symlink(os.path.join(outside, "test-00000.h5"), shard)
        desc = f"{os.path.basename(shard)} -> outside"
    elif kind == "missing":
        os.remove(shard)
        desc = f"{os.path.basename(shard)} removed"
    if reseal:
        _reseal(root)
        desc += " (resealed)"
    return desc


def run_readers(root, work) -> dict:
    """Every reader on ``root``; returns {reader: "ok" | "BsrError" | "FAIL: <traceback tail>"}."""
    from bsrdata import open_dataset
    from bsrdata.benchmark import BenchData, get_method, run_bench
    from bsrdata.export import export_dataset
    from bsrdata.manifest import load_manifest
    from bsrdata.preview import make_panel
    from bsrdata.verify import verify_dataset

    def views():
        m = load_manifest(root)
        for split in m.splits:
            v = open_dataset(root, split)
            try:
                for i in range(len(v)):
                    v[i]
                    v.read(i)  # the training read (crop windows, dataset handles kept open)
            finally:
                v.close()
        for g in m.groups:
            v = open_dataset(root, "test", group=g)
            try:
                for i in range(len(v)):
                    v[i]
            finally:
                v.close()

    def bench():
        data = BenchData(root, "1-5")
        res = run_bench(data, [get_method("bicubic")], os.path.join(work, "bench"))
        if res.errors:
            raise BsrError(res.errors[0])

    def verify():
        problems = verify_dataset(root, full=True)["problems"]  # never raises: findings are lines
        if problems:
            raise BsrError(problems[0])

    readers = {
        "verify": verify,
        "open_dataset": views,
        "preview": lambda: make_panel(root, os.path.join(work, "panel.png"), split="test", n=3),
        "export": lambda: export_dataset(root, os.path.join(work, "export"), "png", overwrite=True),
        "bench": bench,
    }
    out = {}
    for name, fn in readers.items():
        try:
            fn()
            out[name] = "ok"
        except BsrError:
            out[name] = "BsrError"
        except Exception:
            out[name] = "FAIL: " + " | ".join(traceback.format_exc().strip().splitlines()[-3:])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--work", required=True)
    a = ap.parse_args(argv)
    h5py.File = _TracedFile
    sys.addaudithook(_audit)
    base = os.path.abspath(a.work)
    pristine = os.path.join(base, "pristine")
    make_bench_dataset(pristine, n_test=5, n_train=2, h=16, w=24)
    outside = os.path.join(base, "outside")
    os.makedirs(outside)
    shutil.copy(os.path.join(pristine, "test", "test-00000.h5"), outside)
    rng = np.random.default_rng(a.seed)
    counts, failures = {}, []
    for r in range(a.rounds):
        root = os.path.join(base, f"r{r}", "ds")
        work = os.path.join(base, f"r{r}", "work")
        shutil.copytree(pristine, root, symlinks=True)
        os.makedirs(work)
        desc = "untouched" if r == 0 else mutate(root, outside, rng)
        OPENED.clear()
        res = run_readers(root, work)
        leaked = sorted({p for p in OPENED if p.startswith(outside + os.sep)})
        for name, v in res.items():
            counts[f"{name}:{v if not v.startswith('FAIL') else 'FAIL'}"] = counts.get(
                f"{name}:{v if not v.startswith('FAIL') else 'FAIL'}", 0) + 1
            if v.startswith("FAIL") or (r == 0 and v != "ok"):
                failures.append({"round": r, "mutation": desc, "reader": name, "result": v})
        if leaked:
            failures.append({"round": r, "mutation": desc, "reader": "any", "result": f"opened {leaked}"})
        shutil.rmtree(os.path.join(base, f"r{r}"), ignore_errors=True)
    print(json.dumps({"rounds": a.rounds, "seed": a.seed, "counts": counts, "failures": failures}))


if __name__ == "__main__":
    main()
