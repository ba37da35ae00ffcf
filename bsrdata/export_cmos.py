"""The two folder layouts the public CMOS code reads (``bsr export --format cmos``; docs/sources.md "Export
for existing code"). Numpy only.

The public loader (its ``data/CMOS_dataset.py`` with the shipped option files) pairs files by sorted path
in four folders per dataset entry (``GT``, ``LRx4``, ``blur``, ``semseg``) and reads them as:

- GT and LR: 8-bit RGB PNG;
- blur: ``imread(UNCHANGED) / 10``, **channel 1**, so a 16-bit PNG with three channels of round(σ·10), σ in
  HR pixels;
- semseg, chosen by the **dataset name in the option file**:

  - a name containing ``NYUv2``: a single-channel PNG, 0 = void, class k stored as k + 1;
  - any other name (Cityscapes): a PNG of **>= 3 channels** whose channel 0 is the class (train) id,
    255 = void (a single-channel file fails there).

Two layouts follow from the shipped option files:

``nyuv2``
    The grouped test split is written as **``val/``**: ``val/GT``, ``val/semseg`` once, and
    ``val/Group{g}/{LRx4,blur}`` (the NYUv2 option files read ``val/GT`` and ``val/Group1/...``); other
    splits (``train``) under their own names. Semseg single-channel, k + 1 (0 = void). A dataset with an
    ungrouped split of its own named ``val`` cannot use it (two splits would share ``val/``).
``cityscapes``
    Every split under its own name: ``train/``, ``val/`` (ungrouped, the training-time validation),
    ``test/GT`` + ``test/Group{g}/{LRx4,blur}``. Semseg as three identical uint8 channels holding the class
    id, 255 = void.

:func:`choose_layout` picks the layout from the dataset's source (``nyuv2`` / ``cityscapes``), else from its
splits (no ungrouped ``val`` split: ``nyuv2``; one: ``cityscapes``), unless one is asked for.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from bsrdata.errors import BsrError

__all__ = ["LAYOUTS", "CmosLayout", "choose_layout", "seg_to_cmos", "datasets_yaml"]

LAYOUTS = ("nyuv2", "cityscapes")
_BY_SOURCE = {"nyuv2": "nyuv2", "cityscapes": "cityscapes"}


@dataclasses.dataclass(frozen=True)
class CmosLayout:
    """One layout: ``name`` (``nyuv2`` / ``cityscapes``), ``folders`` (split -> top folder), ``grouped``
    (the grouped split or None), ``chosen`` (why: ``"asked"``, ``"source"`` or ``"splits"``)."""

    name: str
    folders: dict
    grouped: str | None
    chosen: str

    def seg(self, seg) -> np.ndarray:
        """Stored labels (uint8, 255 = void) -> the semseg PNG array of this layout."""
        return seg_to_cmos(seg, self.name)

    def dataset_name(self) -> str:
        """A dataset name for the option file that selects this layout's semseg rule."""
        return "NYUv2-BSR" if self.name == "nyuv2" else "Cityscapes-BSR"

    def to_json(self) -> dict:
        rule = ("single channel uint8, 0 = void, class k stored as k+1; the option file's dataset name must "
                "contain 'NYUv2'" if self.name == "nyuv2" else
                "three identical uint8 channels holding the class id, 255 = void; the option file's dataset "
                "name must not contain 'NYUv2'")
        return {"name": self.name, "chosen_by": self.chosen, "folders": dict(self.folders),
                "grouped_split": self.grouped,
                "grouped_folder": self.folders.get(self.grouped) if self.grouped else None, "semseg": rule}


def choose_layout(source_name, splits, grouped, layout=None) -> CmosLayout:
    """The layout for a dataset whose source is ``source_name`` with split names ``splits`` and grouped
    split ``grouped`` (None without test groups). ``layout``: ``None`` / ``"auto"`` or one of
    :data:`LAYOUTS`. BsrError for an unknown layout or for ``nyuv2`` when an ungrouped ``val`` split
    exists besides the grouped one."""
    splits = list(splits)
    if layout in (None, "auto"):
        if source_name in _BY_SOURCE:
            name, chosen = _BY_SOURCE[source_name], "source"
        else:
            has_val = "val" in splits and grouped != "val"
            name, chosen = ("cityscapes" if has_val else "nyuv2"), "splits"
    elif layout in LAYOUTS:
        name, chosen = layout, "asked"
    else:
        raise BsrError(f"--layout {layout}: expected auto or one of {', '.join(LAYOUTS)}")
    folders = {s: s for s in splits}
    if name == "nyuv2" and grouped is not None:
        if "val" in splits and grouped != "val":
            raise BsrError(f"--layout nyuv2: the grouped split '{grouped}' is written as val/, but the dataset "
                           "also has a split named 'val' (use --layout cityscapes)")
        folders[grouped] = "val"
    return CmosLayout(name, folders, grouped, chosen)


def seg_to_cmos(seg, layout: str) -> np.ndarray:
    """Labels uint8 (H, W), 255 = void -> nyuv2: (H, W) uint8, 0 void, k -> k + 1;
    cityscapes: (H, W, 3) uint8, the label in every channel, 255 void."""
    seg = np.asarray(seg, np.uint8)
    if layout == "nyuv2":
        if np.any((seg >= 254) & (seg != 255)):
            raise BsrError("export: class index 254 cannot be shifted to 1..C in 8 bits")
        return np.where(seg == 255, 0, seg.astype(np.int32) + 1).astype(np.uint8)
    if layout == "cityscapes":
        return np.repeat(seg[..., None], 3, axis=2)
    raise BsrError(f"--layout {layout}: expected one of {', '.join(LAYOUTS)}")


def datasets_yaml(out, layout: CmosLayout, groups, labelled: bool) -> str:
    """The ``datasets:`` entries of a public test option file for every test group of the export at
    ``out`` (absolute paths; ``labelled``: whether the grouped split has semseg). Text, YAML (strings
    JSON-quoted)."""
    lines = ["# test dataset entries for the public CMOS option files (paste under `datasets:`);",
             f"# layout {layout.name}: the names select the loader's semseg rule", "datasets:"]
    if layout.grouped is None:
        return "\n".join(lines + ["  {}"]) + "\n"
    top = f"{out}/{layout.folders[layout.grouped]}"
    q = json.dumps
    for i, g in enumerate(groups, start=1):
        seg = q(f"{top}/semseg") if labelled else "~"
        lines += [f"  test_{i}:", f"    name: {q(layout.dataset_name() + f'-Group{g}')}",
                  f"    dataroot_GT: {q(top + '/GT')}", f"    dataroot_LR: {q(f'{top}/Group{g}/LRx4')}",
                  f"    dataroot_blur: {q(f'{top}/Group{g}/blur')}", f"    dataroot_seg: {seg}"]
    return "\n".join(lines) + "\n"
