"""The plain record every source yields, and the source protocol.

A source is a picklable object (it may open files lazily, per process) with:

- ``name`` (str), ``num_classes`` (int or None when it has no labels)
- ``splits() -> dict[str, list[str]]``: split name -> keys, in a fixed order
- ``load(key) -> Record``
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bsrdata.errors import BsrError


@dataclasses.dataclass
class Record:
    """One source frame.

    - ``key``: unique string (``nyuv2-0001``, ``{city}_{seq}_{frame}``, ``synth-train-0000``)
    - ``rgb``: uint8 (H, W, 3)
    - ``depth``: float32 (H, W) metres; invalid pixels are 0, NaN, inf or negative
    - ``seg``: uint8 (H, W) class index with 255 = ignore, or None
    - ``notes``: what the source did to the file to make it so (``"grey"``, ``"RGBA (alpha dropped)"``,
      ``"16-bit RGB (rounded to 8 bits)"``, ``"cropped 480x640 -> 240x320"``); counted in the build summary
    """

    key: str
    rgb: np.ndarray
    depth: np.ndarray
    seg: np.ndarray | None = None
    notes: tuple = ()


class Source:
    """Base class for sources (optional: any object with the protocol above works)."""

    name = "source"
    num_classes = None

    def splits(self) -> dict:
        raise NotImplementedError

    def load(self, key: str) -> Record:
        raise NotImplementedError

    def key_index(self) -> dict:
        """key -> split name."""
        out = {}
        for split, keys in self.splits().items():
            for k in keys:
                out[k] = split
        return out


class CombinedSource(Source):
    """Several sources side by side: their splits concatenated (in the given order), keys must be unique."""

    def __init__(self, *sources, name=None):
        if not sources:
            raise BsrError("source: no sources to combine")
        self.sources = list(sources)
        self.name = name or "+".join(s.name for s in sources)
        ncs = {s.num_classes for s in sources if s.num_classes is not None}
        if len(ncs) > 1:
            raise BsrError(f"source: combined sources disagree on the number of classes ({sorted(ncs)})")
        self.num_classes = ncs.pop() if ncs else None
        self._owner = None

    def splits(self) -> dict:
        out: dict = {}
        seen = set()
        for s in self.sources:
            for split, keys in s.splits().items():
                for k in keys:
                    if k in seen:
                        raise BsrError(f"source: key '{k}' appears twice")
                    seen.add(k)
                out.setdefault(split, []).extend(keys)
        return out

    def load(self, key: str) -> Record:
        if self._owner is None:
            self._owner = {}
            for i, s in enumerate(self.sources):
                for keys in s.splits().values():
                    for k in keys:
                        self._owner[k] = i
        if key not in self._owner:
            raise BsrError(f"source: unknown key '{key}'")
        return self.sources[self._owner[key]].load(key)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_owner"] = None
        return d
