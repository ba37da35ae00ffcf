"""Which renderings a dataset stores: splits, space-invariant (IVA) samples, the five test groups.

A pure function of the seed and the key lists (docs/pipeline.md):

- Ungrouped split of n keys (train, Cityscapes val): ⌊n·f⌋ keys, chosen by the seed, are rendered
  invariant, the rest variant; each key is stored once. f = ``invariant_fraction``, default 1/5 (the
  paper's datasets); 1 gives the all-invariant training set of the paper's Table 4, 0 an all-variant one.
- Grouped split (test): the keys are shuffled by the seed and cut into ``n_groups`` disjoint folds of
  ⌊n/5⌋ keys (the n − 5·⌊n/5⌋ left over are in no fold). Every key is stored once variant (shared by every
  group) and, if it is in fold g, once more invariant (rendered with ``group=g``). Group g lists every
  key in split order: fold g's keys as their invariant rendering, all others as the shared variant one.

``Plan.items[split]``: list of ``(key, invariant)`` renderings in storage order (split order; in a grouped
split a key's invariant rendering follows its variant one). ``Plan.groups[g]`` (g = 1..n_groups): list of
``(key, invariant)``. ``Plan.fold[split][key] = g`` for keys in a fold; :meth:`Plan.render_group` gives
the ``group`` argument for :func:`bsrdata.degrade.synthesize` (g for a fold's invariant rendering, else 0).
"""

from __future__ import annotations

import dataclasses
import hashlib
from fractions import Fraction

import numpy as np

from bsrdata.errors import BsrError


def _rng(seed, split):
    h = hashlib.sha256(f"bsrdata-plan\x1f{int(seed)}\x1f{split}".encode()).digest()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [int.from_bytes(h[i:i + 4], "little") for i in range(0, 32, 4)])))


@dataclasses.dataclass
class Plan:
    seed: int
    items: dict  # split -> list[(key, invariant)]
    groups: dict  # int g -> list[(key, invariant)]
    fold: dict  # split -> {key: g}
    grouped: tuple
    test_split: str

    def render_group(self, split: str, key: str, invariant: bool) -> int:
        """``group`` for synthesize: the fold number for a grouped split's invariant rendering, else 0."""
        if invariant and split in self.fold:
            return int(self.fold[split][key])
        return 0

    def counts(self) -> dict:
        """{split: {"images", "renderings", "invariant"}} plus {"groups": {g: {"members", "invariant"}}}."""
        out = {}
        for split, items in self.items.items():
            out[split] = {
                "images": len({k for k, _ in items}),
                "renderings": len(items),
                "invariant": sum(1 for _, inv in items if inv),
            }
        return {"splits": out, "groups": {str(g): {"members": len(m), "invariant": sum(1 for _, i in m if i)}
                                          for g, m in self.groups.items()}}


DEFAULT_INVARIANT_FRACTION = Fraction(1, 5)


def invariant_fraction(value, option: str = "--invariant-fraction") -> Fraction:
    """``None`` -> 1/5; a number or text (``0.5``, ``1/3``, ``1``) in [0, 1] -> the exact Fraction."""
    if value is None:
        return DEFAULT_INVARIANT_FRACTION
    try:
        f = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise BsrError(f"{option}: cannot read {value!r} (use a fraction in [0, 1], e.g. 0.2, 1/5 or 1)") from None
    if not 0 <= f <= 1:
        raise BsrError(f"{option}: must be in [0, 1], got {value!r}")
    return f


_invariant_fraction = invariant_fraction


def make_plan(splits: dict, seed: int, *, test_split: str = "test", n_groups: int = 5,
              grouped=("test",), invariant_fraction=None) -> Plan:
    """Make the plan for ``splits`` (split name -> keys in a fixed order).

    ``invariant_fraction`` (ungrouped splits only; default 1/5): the share of keys rendered invariant.
    Raises BsrError on a duplicate key (within or across splits) or a non-positive ``n_groups``.
    """
    frac = _invariant_fraction(invariant_fraction)
    if int(n_groups) < 1:
        raise BsrError(f"n_groups: must be >= 1, got {n_groups}")
    n_groups = int(n_groups)
    seen = {}
    for split, keys in splits.items():
        for k in keys:
            if k in seen:
                raise BsrError(f"splits: key '{k}' appears in '{seen[k]}' and '{split}'")
            seen[k] = split
    grouped = tuple(grouped)
    items, groups, fold = {}, {}, {}
    for split, keys in splits.items():
        keys = [str(k) for k in keys]
        n = len(keys)
        m = n // max(5, n_groups) if split in grouped else int(n * frac.numerator // frac.denominator)
        rng = _rng(seed, split)
        if split in grouped:
            perm = rng.permutation(n)
            f = {}
            for g in range(1, n_groups + 1):
                for j in perm[(g - 1) * m: g * m]:
                    f[keys[int(j)]] = g
            fold[split] = f
            its = []
            for k in keys:
                its.append((k, False))
                if k in f:
                    its.append((k, True))
            items[split] = its
            if split == test_split:
                for g in range(1, n_groups + 1):
                    groups[g] = [(k, f.get(k) == g) for k in keys]
        else:
            inv = {keys[int(j)] for j in rng.choice(n, size=m, replace=False)} if m else set()
            items[split] = [(k, k in inv) for k in keys]
    return Plan(seed=int(seed), items=items, groups=groups, fold=fold, grouped=grouped, test_split=test_split)


def parse_hw(text, *, option: str = "--size", example: str = "240x320", min_side: int = 1):
    """``"HxW"`` (also ``"H X W"``, ``"H×W"``) -> ``(H, W)`` ints in pixels; None -> None.

    Anything else is one BsrError line naming ``option`` (with ``example`` as a hint); a side below
    ``min_side`` is refused likewise.
    """
    import re

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not m:
        raise BsrError(f"{option}: expected HxW (e.g. {example}), got '{text}'")
    h, w = int(m.group(1)), int(m.group(2))
    if h < min_side or w < min_side:
        raise BsrError(f"{option} {text}: both sides must be at least {min_side}")
    return h, w
