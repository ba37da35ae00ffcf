"""Check a built dataset against its manifest (and its recipe): ``bsr verify DIR [--full]``.

Checks, each problem reported as one line naming the file:

- ``manifest.json`` present, well-formed, complete (not a ``--shard`` part), counts per split add up to
  the plan (planned shards, planned renderings) and, for a full recipe build, to the recipe's expected
  counts (Table 1 rule);
- every shard present, of the recorded size (catches truncation), a readable HDF5 file with the contract's
  datasets, shapes and dtypes (shard format 1 or 2, docs/pipeline.md; the format is the ``shard_format``
  attribute, so the manifest's attrs check covers it), the manifest's keys / invariant flags / attributes;
- data of every sample: σ finite and within [0, σ_max] (format 2's blur codes decoded through
  ``blur_levels``; a code past the table is a problem); invariant samples' blur map constant; labels
  within ``0..num_classes-1`` or 255; depth finite and > 0 when stored;
- test groups: every test image once per group, in split order, pointing at a stored rendering with the
  right key and invariant flag; folds disjoint with ⌊n/5⌋ invariant members each;
- ``full=True``: the sha256 of every shard file (catches any flipped byte).
"""

from __future__ import annotations

import os

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.manifest import ABSENT
from bsrdata.shards import FIELD_NAMES, decode_blur, shard_path

SIGMA_TOL = 1e-5


def _check_attrs(meta_attrs, man_attrs, path, problems):
    for k, v in man_attrs.items():
        got = meta_attrs.get(k)
        if isinstance(v, float) or isinstance(got, float):
            ok = got is not None and abs(float(got) - float(v)) <= 1e-9
        else:
            ok = got == v
        if not ok:
            problems.append(f"{path}: attribute {k} = {got!r}, manifest says {v!r}")


def _check_samples(f, path, attrs, entry, problems, levels=None):
    sigma_max = float(attrs["sigma_max"])
    nc = int(attrs.get("num_classes", -1))
    n = f["hr"].shape[0]
    bad = 0
    for i in range(n):
        if bad >= 5:
            problems.append(f"{path}: more problems not listed")
            return
        key = entry.keys[i]
        b = f["blur"][i]
        if levels is not None:
            try:
                b = decode_blur(b, levels, path, i)
            except BsrError as exc:
                problems.append(f"{exc} ({key})")
                bad += 1
                continue
        if not np.all(np.isfinite(b)):
            problems.append(f"{path}: sample {i} ({key}) blur map has NaN/inf")
            bad += 1
            continue
        lo, hi = float(b.min()), float(b.max())
        if lo < -SIGMA_TOL or hi > sigma_max + SIGMA_TOL:
            problems.append(f"{path}: sample {i} ({key}) σ in [{lo:.4g}, {hi:.4g}] outside [0, {sigma_max}]")
            bad += 1
        if entry.invariant[i] and hi != lo:
            problems.append(f"{path}: sample {i} ({key}) is invariant but its blur map is not constant")
            bad += 1
        if "seg" in f and nc > 0:
            s = f["seg"][i]
            wrong = (s >= nc) & (s != 255)
            if wrong.any():
                problems.append(f"{path}: sample {i} ({key}) has labels outside 0..{nc - 1} and 255 "
                                f"(e.g. {int(s[wrong][0])})")
                bad += 1
        if "depth" in f:
            d = f["depth"][i]
            if not (np.all(np.isfinite(d)) and np.all(d > 0)):
                problems.append(f"{path}: sample {i} ({key}) depth not finite and > 0")
                bad += 1
        for name in FIELD_NAMES:  # decode the fields not read above (catches corrupt chunks)
            if name in f and name not in ("blur", "seg", "depth"):
                f[name][i]


def verify_dataset(root, full: bool = False, progress=None) -> dict:
    """Verify the dataset at ``root``. Returns {"problems": [str], "shards": n, "samples": n, "root"}.

    ``progress``: optional ``callable(done_shards, total_shards)``. Never raises for a bad dataset: every
    finding is a line in ``problems`` (an empty list means it passed). ``warnings``: lines about a valid
    dataset that is probably not what was meant (test groups without an invariant member).
    """
    from bsrdata.manifest import load_manifest, sha256_file
    from bsrdata.shards import check_shard, h5py_module

    h5py = h5py_module()

    root = os.fspath(root)
    problems: list[str] = []
    out = {"root": root, "problems": problems, "shards": 0, "samples": 0, "full": bool(full), "warnings": []}
    try:
        m = load_manifest(root)
    except BsrError as exc:
        parts = []
        if os.path.isdir(root):
            parts = [n for n in os.listdir(root) if n.startswith("manifest-part-")]
        problems.append(str(exc) + (f" (found {', '.join(sorted(parts))}: a --shard slice; run `bsr merge`)"
                                    if parts else ""))
        return out
    mpath = os.path.join(root, "manifest.json")
    if m.complete is not True or m.part:
        problems.append(f"{mpath}: describes part {m.part or None} of a sliced build, not a complete dataset")
    attrs = m.attrs
    for k in ("scale", "max_coc", "sigma_max"):
        if k not in attrs:
            problems.append(f"{mpath}: attrs lack '{k}'")
            return out
    total = sum(len(s.shards) for s in m.splits.values())
    done = 0
    stored = {}  # (path, index) -> (key, invariant)
    counts = {}
    for split, s in m.splits.items():
        n_sh = len(s.shards)
        if s.planned_shards is not ABSENT and n_sh != s.planned_shards:
            problems.append(f"{mpath}: split '{split}' lists {n_sh} of {s.planned_shards} shards")
        csum = sum(sh.count for sh in s.shards)
        if csum != s.count:
            problems.append(f"{mpath}: split '{split}' count {s.count} but its shards hold {csum}")
        if s.planned_count is not ABSENT and s.count != s.planned_count:
            problems.append(f"{mpath}: split '{split}' has {s.count} of {s.planned_count} renderings")
        keys_all = [k for sh in s.shards for k in sh.keys]
        inv_all = [i for sh in s.shards for i in sh.invariant]
        counts[split] = {"images": len(set(keys_all)), "renderings": len(keys_all), "invariant": sum(inv_all)}
        if s.images is not ABSENT and counts[split]["images"] != s.images:
            problems.append(f"{mpath}: split '{split}' holds {counts[split]['images']} images, "
                            f"manifest says {s.images}")
        for sh in s.shards:
            for i, (k, inv) in enumerate(zip(sh.keys, sh.invariant)):
                stored[(sh.path, i)] = (k, inv)
            done += 1
            try:
                path = shard_path(root, sh.path)
            except BsrError as exc:
                problems.append(str(exc))
                continue
            if not os.path.isfile(path):
                problems.append(f"{path}: shard missing")
                continue
            size = os.path.getsize(path)
            if sh.bytes is not ABSENT and size != sh.bytes:
                problems.append(f"{path}: {size} bytes, manifest says {sh.bytes} (truncated or replaced)")
                continue
            if full and sha256_file(path) != sh.sha256:
                problems.append(f"{path}: sha256 differs from the manifest (corrupted file)")
                continue
            try:
                with h5py.File(path, "r") as f:
                    meta = check_shard(f, path, sh.count)
                    if meta["keys"] != list(sh.keys):
                        problems.append(f"{path}: keys differ from the manifest")
                    if meta["invariant"] != list(sh.invariant):
                        problems.append(f"{path}: invariant flags differ from the manifest")
                    _check_attrs(meta["attrs"], attrs, path, problems)
                    if meta["shape"][0] % attrs["scale"] or meta["shape"][1] % attrs["scale"]:
                        problems.append(f"{path}: frame {meta['shape']} not a multiple of scale {attrs['scale']}")
                    if meta["n"] == sh.count and meta["keys"] == list(sh.keys):
                        _check_samples(f, path, meta["attrs"], sh, problems, meta["blur_levels"])
                    out["samples"] += meta["n"]
            except BsrError as exc:
                problems.append(str(exc))
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else ""
                problems.append(f"{path}: unreadable ({type(exc).__name__}: {first})")
            out["shards"] += 1
            if progress is not None:
                progress(done, total)
    _check_groups(m, stored, mpath, problems)
    if m.groups and not any(e.invariant for mem in m.groups.values() for e in mem):
        n = len(next(iter(m.groups.values())))
        out["warnings"].append(f"{mpath}: the test split has {n} images, fewer than its {len(m.groups)} groups "
                               "need: all groups are the same and none holds an invariant image")
    recipe = m.recipe
    if isinstance(recipe, dict) and not m.limit and isinstance(recipe.get("expected"), dict):
        from bsrdata.recipes import check_counts

        gcounts = {g: {"members": len(mem), "invariant": sum(1 for e in mem if e.invariant)}
                   for g, mem in m.groups.items()}
        skip = ()
        if m.extra.get("invariant_fraction") is not None:  # --invariant-fraction: training IVA counts differ
            grouped = (recipe.get("plan") or {}).get("grouped", ["test"])
            skip = tuple(k for k in counts if k not in grouped)
        try:
            check_counts(recipe, {"splits": counts, "groups": gcounts}, skip_invariant=skip)
        except BsrError as exc:
            problems.append(f"{mpath}: {exc}")
    return out


def _check_groups(m, stored, mpath, problems):
    groups = m.groups
    if not groups:
        return
    test = None
    for split, s in m.splits.items():
        paths = {sh.path for sh in s.shards}
        if all(e.shard in paths for e in groups[next(iter(groups))]):
            test = split
            break
    if test is None:
        problems.append(f"{mpath}: group members point at shards of no single split")
        return
    order = []
    for sh in m.splits[test].shards:
        for k in sh.keys:
            if k not in order:
                order.append(k)
    n = len(order)
    inv_sets = []
    for g, mem in sorted(groups.items()):
        keys = [e.key for e in mem]
        if keys != order:
            problems.append(f"{mpath}: group {g} does not list every {test} image once in split order")
        for e in mem:
            got = stored.get((e.shard, e.index))
            if got != (e.key, e.invariant):
                problems.append(f"{mpath}: group {g} member {e.key} points at {e.shard}[{e.index}] "
                                f"which holds {got}")
                break
        inv = {e.key for e in mem if e.invariant}
        want = n // max(5, len(groups))
        if len(inv) != want:
            problems.append(f"{mpath}: group {g} has {len(inv)} invariant members, expected {want} (⌊n/5⌋)")
        inv_sets.append(inv)
    for i in range(len(inv_sets)):
        for j in range(i + 1, len(inv_sets)):
            if inv_sets[i] & inv_sets[j]:
                problems.append(f"{mpath}: groups {i + 1} and {j + 1} share invariant images (folds not disjoint)")
