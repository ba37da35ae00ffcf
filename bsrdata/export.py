"""Export a built dataset to plain image folders (numpy + OpenCV/Pillow; no torch).

``format="cmos"``: the folders the public CMOS code reads unchanged (docs/sources.md), files paired by
sorted order, in one of two layouts (:mod:`bsrdata.export_cmos`: ``nyuv2`` or ``cityscapes``, chosen from
the dataset's source or asked for with ``layout``)::

    out/{split}/GT/{key}.png          HR, 8-bit RGB                       (ungrouped splits: train, val)
    out/{split}/LRx4/{key}.png        LR, 8-bit RGB
    out/{split}/blur/{key}.png        σ map: uint16 round(σ·10), three identical channels, 16-bit PNG
    out/{split}/semseg/{key}.png      labels (only if labelled): nyuv2 uint8 single channel, 0 = void,
                                      k + 1 for class k; cityscapes three uint8 channels = class id, 255 void
    out/{T}/GT/{key}.png, out/{T}/semseg/{key}.png        the grouped split: HR and labels once
    out/{T}/Group{g}/LRx4/{key}.png, .../Group{g}/blur/{key}.png     g = 1..5, every test image

with ``T`` = ``val`` in the nyuv2 layout (the public NYUv2 option files read ``val/GT``, ``val/Group1``) and
the split's own name (``test``) in the cityscapes layout. ``cmos_test_datasets.yml`` holds the
``datasets:`` entries of a public test option file for every group (absolute paths, names that select the
loader's semseg rule).

``format="png"``: the same tree with plain names and lossless values: ``hr``, ``lr``, ``blur`` (uint16
single channel, round(σ·1000), i.e. σ in thousandths of an HR pixel), ``seg`` (uint8 as stored, 255 =
ignore), ``depth`` (uint16 mm, 0 = invalid; only if the dataset stores depth), groups as ``group{g}``.

Both write ``bsr_export.json`` at the top (format, scales, the dataset's recipe, attrs, counts and
``files``: every file written, relative ``/``-separated paths). ``out`` must be apart from the dataset
folder (not it, not inside it, not containing it); ``overwrite`` replaces only an earlier export whose
record lists every file in it, and refuses a folder holding anything else.
The export is written into a temporary sibling folder and renamed into place at the end, so an
interrupted export never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np

from bsrdata.errors import BsrError

FORMATS = ("cmos", "png")
RECORD = "bsr_export.json"  # the export record; "files" lists every file written (relative, "/"-separated)
BLUR_SCALE = {"cmos": 10.0, "png": 1000.0}
_NAMES = {"cmos": {"hr": "GT", "lr": "LRx4", "blur": "blur", "seg": "semseg", "group": "Group{}"},
          "png": {"hr": "hr", "lr": "lr", "blur": "blur", "seg": "seg", "group": "group{}"}}


def blur_to_png(blur, fmt):
    """σ float (H, W) -> uint16 PNG array: cmos (H, W, 3) round(σ·10); png (H, W) round(σ·1000)."""
    q = np.clip(np.round(np.asarray(blur, np.float64) * BLUR_SCALE[fmt]), 0, 65535).astype(np.uint16)
    return np.repeat(q[..., None], 3, axis=2) if fmt == "cmos" else q


def blur_from_png(arr, fmt):
    """Inverse of :func:`blur_to_png` (σ float32 (H, W)); for cmos takes the first channel."""
    a = np.asarray(arr)
    if a.ndim == 3:
        a = a[..., 0]
    return (a.astype(np.float64) / BLUR_SCALE[fmt]).astype(np.float32)


def seg_to_png(seg, fmt):
    """Labels uint8 (H, W), 255 = ignore -> cmos: 0 void, k -> k + 1; png: unchanged."""
    seg = np.asarray(seg, np.uint8)
    if fmt == "png":
        return seg
    if np.any((seg >= 254) & (seg != 255)):
        raise BsrError("export: class index 254 cannot be shifted to 1..C in 8 bits")
    return np.where(seg == 255, 0, seg.astype(np.int32) + 1).astype(np.uint8)


def seg_from_png(arr, fmt):
    """Inverse of :func:`seg_to_png`."""
    a = np.asarray(arr, np.uint8)
    if fmt == "png":
        return a
    return np.where(a == 0, 255, a.astype(np.int32) - 1).astype(np.uint8)


def _safe(key):
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _check_apart(root, out):
    """BsrError when ``out`` is the dataset folder ``root``, lies inside it or contains it (real paths)."""
    r, o = os.path.realpath(root), os.path.realpath(out)
    if o == r:
        raise BsrError(f"--out {out}: is the dataset folder {root} itself")
    if os.path.commonpath([o, r]) == r:
        raise BsrError(f"--out {out}: must not be inside the dataset folder {root}")
    if os.path.commonpath([o, r]) == o:
        raise BsrError(f"--out {out}: contains the dataset folder {root} (choose a folder of its own)")


def _check_only_ours(out):
    """Before ``--overwrite`` replaces ``out``: BsrError unless every file in it is listed in its
    ``bsr_export.json`` (relative paths under ``"files"``), i.e. only files this tool wrote get removed."""
    rec = os.path.join(out, RECORD)
    try:
        with open(rec) as fh:
            listed = json.load(fh).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        raise BsrError(f"--overwrite {out}: no {RECORD} listing its files, so it is not an export this tool "
                       "can replace (remove it yourself or choose another --out)")
    listed = set(listed) | {RECORD}
    foreign = []
    for dp, dns, fns in os.walk(out):
        rel = os.path.relpath(dp, out)
        for n in fns + [d for d in dns if os.path.islink(os.path.join(dp, d))]:
            r = n if rel == "." else f"{rel}/{n}".replace(os.sep, "/")
            if r not in listed:
                foreign.append(r)
    if foreign:
        foreign.sort()
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise BsrError(f"--overwrite {out}: holds files this export did not write ({', '.join(foreign[:3])}{more});"
                       " remove them or choose another --out")
    return sorted(listed)


def _remove_listed(folder, listed):
    """Remove the listed files (relative paths) under ``folder``, then its folders that became empty."""
    for rel in listed:
        try:
            os.remove(os.path.join(folder, *rel.split("/")))
        except FileNotFoundError:
            pass
        except OSError:
            return
    for dp, _, _ in os.walk(folder, topdown=False):  # children before their parents
        try:
            os.rmdir(dp)
        except OSError:
            pass


def _check_names(keys, where):
    """BsrError when two keys of one folder sanitise to the same file name (one would overwrite the other)."""
    seen = {}
    for k in keys:
        other = seen.setdefault(_safe(k) + ".png", k)
        if other != k:
            raise BsrError(f"export: keys '{other}' and '{k}' of {where} both become the file "
                           f"'{_safe(k)}.png'; rename one in the source")


def _grouped_split(m):
    """The split the test groups of Manifest ``m`` refer to (None without groups)."""
    if not m.groups:
        return None
    owner = {sh.path: split for split, info in m.splits.items() for sh in info.shards}
    first = next(iter(m.groups.values()))
    if not first:
        return None
    return owner.get(first[0].shard)


def _write(path, arr):
    from bsrdata.sources.folder import encode_png

    data = encode_png(arr)
    with open(path, "wb") as fh:
        fh.write(data)


def export_dataset(root, out, format="cmos", *, overwrite=False, progress=None, layout=None):
    """Export ``root`` to ``out`` (see :func:`_export`) holding the lock of ``out`` (kept beside it, as the
    finished export is swapped in whole): two exports into one folder cannot interleave."""
    from bsrdata.lock import folder_lock

    with folder_lock(os.path.abspath(os.fspath(out)), "export", beside=True):
        return _export(root, out, format, overwrite=overwrite, progress=progress, layout=layout)


def _export(root, out, format="cmos", *, overwrite=False, progress=None, layout=None):
    """Export the dataset at ``root`` (a folder with ``manifest.json``) to folders under ``out``.

    format: ``"cmos"`` or ``"png"`` (module docstring). layout (cmos only): ``None`` / ``"auto"``,
    ``"nyuv2"`` or ``"cityscapes"`` (:func:`bsrdata.export_cmos.choose_layout`). overwrite: replace an
    earlier export in ``out`` (only when every file there is listed in its ``bsr_export.json``; nothing
    else is ever removed).
    progress: optional ``callable(done, total)`` (images written). Returns a summary dict
    ``{"format", "out", "splits": {split: n_images}, "groups": {g: n}, "files": n, "folders": {split: top
    folder}, "layout": name or None}``.
    Reads through :func:`bsrdata.open_dataset`. Raises BsrError for a missing / incomplete dataset, an
    existing ``out`` (without overwrite, or holding files not in its record with it), an ``out`` that is,
    contains or lies inside the dataset folder, two keys that become one file name, or an unwritable ``out``."""
    from bsrdata import open_dataset
    from bsrdata.manifest import load_manifest

    if format not in FORMATS:
        raise BsrError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    root = os.fspath(root)
    out = os.path.abspath(os.fspath(out))
    m = load_manifest(root)
    if not m.is_complete:
        raise BsrError(f"{root}: the dataset is incomplete (an interrupted build or one --shard part)")
    _check_apart(root, out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise BsrError(f"{out}: exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise BsrError(f"{out}: exists and is not empty (choose another --out or pass --overwrite)")
        _check_only_ours(out)
    names = _NAMES[format]
    grouped = _grouped_split(m)
    folder, lay = {s: s for s in m.splits}, None  # split -> top folder; the cmos layout
    if format == "cmos":
        from bsrdata.export_cmos import choose_layout

        src = getattr(m.source, "name", None) if m.source else None
        lay = choose_layout(src if isinstance(src, str) else None, m.splits, grouped, layout)
        folder = dict(lay.folders)
    elif layout not in (None, "auto"):
        raise BsrError(f"--layout {layout}: applies to --format cmos only")
    views = {}
    gviews = {}
    try:
        for split in m.splits:
            views[split] = open_dataset(root, split)
        if grouped is not None:
            for g in sorted(m.groups, key=int):
                gviews[g] = open_dataset(root, grouped, group=g)
        for split, view in views.items():
            _check_names(view.keys, split)
        for g, view in gviews.items():
            _check_names(view.keys, f"{grouped} group {g}")
    except BaseException:
        _close(views, gviews)
        raise
    total = sum(len(v) for v in views.values()) + sum(len(v) for v in gviews.values())
    done = 0

    parent = os.path.dirname(out)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.partial-{os.getpid()}")
    try:
        os.makedirs(parent, exist_ok=True)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    except OSError as exc:
        raise BsrError(f"{out}: cannot write ({exc.strerror or exc})") from None

    summary = {"format": format, "out": out, "splits": {}, "groups": {}, "files": 0, "folders": folder,
               "layout": lay.name if lay else None}
    try:
        def tick():
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        written = []

        def put(rel, arr):
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write(path, arr)
            written.append(rel.replace(os.sep, "/"))
            summary["files"] += 1

        with_depth = False
        labelled = set()
        for split, view in views.items():
            seen = set()
            for i in range(len(view)):
                s = view[i]
                k = s["key"]
                name = _safe(k) + ".png"
                if k in seen:  # a grouped split stores a key twice (variant + its fold's invariant)
                    tick()
                    continue
                seen.add(k)
                top = folder[split]
                put(os.path.join(top, names["hr"], name), s["hr"])
                if s.get("seg") is not None:
                    labelled.add(split)
                    put(os.path.join(top, names["seg"], name),
                        lay.seg(s["seg"]) if lay else seg_to_png(s["seg"], format))
                if format == "png" and s.get("depth") is not None:
                    with_depth = True
                    mm = np.clip(np.round(np.nan_to_num(s["depth"], nan=0.0) * 1000.0), 0, 65535).astype(np.uint16)
                    put(os.path.join(top, "depth", name), mm)
                if split != grouped:
                    put(os.path.join(top, names["lr"], name), s["lr"])
                    put(os.path.join(top, names["blur"], name), blur_to_png(s["blur"], format))
                tick()
            summary["splits"][split] = len(seen)
        for g, view in gviews.items():
            gdir = os.path.join(folder[grouped], names["group"].format(g))
            for i in range(len(view)):
                s = view[i]
                name = _safe(s["key"]) + ".png"
                put(os.path.join(gdir, names["lr"], name), s["lr"])
                put(os.path.join(gdir, names["blur"], name), blur_to_png(s["blur"], format))
                tick()
            summary["groups"][g] = len(view)
        if lay is not None and gviews:
            from bsrdata.export_cmos import datasets_yaml

            yml = datasets_yaml(out, lay, sorted(gviews, key=int), grouped in labelled)
            with open(os.path.join(tmp, "cmos_test_datasets.yml"), "w") as fh:
                fh.write(yml)
            written.append("cmos_test_datasets.yml")
            summary["files"] += 1
        info = {"format": format, "blur_png": f"uint16 round(sigma*{BLUR_SCALE[format]:g})"
                + (", three identical channels" if format == "cmos" else ""),
                "seg_png": lay.to_json()["semseg"] if lay else "uint8, 255 = ignore",
                "cmos_layout": lay.to_json() if lay else None, "folders": folder,
                "depth_png": "uint16 millimetres, 0 = invalid" if with_depth else None,
                "grouped_split": grouped, "splits": summary["splits"], "groups": summary["groups"],
                "attrs": m.attrs, "recipe": m.recipe or None,
                "source": m.source.to_json() if m.source else None,
                "files": sorted(written)}
        with open(os.path.join(tmp, RECORD), "w") as fh:
            json.dump(info, fh, indent=2, sort_keys=True)
        summary["files"] += 1
        if os.path.isdir(out):
            old = os.path.join(parent, f".{os.path.basename(out)}.old-{os.getpid()}")
            listed = _check_only_ours(out) if os.listdir(out) else []  # again: only files its record lists go
            os.rename(out, old)
            os.rename(tmp, out)
            _remove_listed(old, listed)
        else:
            os.rename(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BsrError(f"{out}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _close(views, gviews)
    return summary


def _close(*groups):
    for d in groups:
        for v in d.values():
            close = getattr(v, "close", None)
            if close is not None:
                close()
