"""Facts about the authors' released CMOS networks for the tests (tests/data/cmos_public_keys.json: every
state-dict name and shape in order), and deterministic random weights in that layout.

``public_weights(keys, seed)`` is the recipe the golden files in tests/data/cmos_golden/ were produced with
(the public code run outside this repository on these weights, float64, eval mode; docs/cmos.md): numpy
PCG64 draws in state-dict order -- BN running_var U(0.5, 1.5), running_mean N(0, 0.1²), BN weight
U(0.8, 1.2), other 1-D tensors N(0, 0.1²), the scalar gates c1, c2, s1, s2 U(0.1, 0.3), every other tensor
N(0, 1/fan_in); num_batches_tracked 0.
"""

from __future__ import annotations

import functools
import json
import math
import os

import numpy as np
import torch

DATA = os.path.join(os.path.dirname(__file__), "data")
GOLDEN = os.path.join(DATA, "cmos_golden")
GATES = ("c1", "c2", "s1", "s2")
SEEDS = {"cmos_40": 1, "cmos_19": 2, "rrdb_sft": 3, "blind_sr_40": 4}


@functools.lru_cache(maxsize=1)
def _facts() -> dict:
    with open(os.path.join(DATA, "cmos_public_keys.json"), encoding="utf-8") as f:
        return json.load(f)


def keys(kind: str) -> dict:
    """Ordered {public name: shape} of ``cmos_40``, ``cmos_19``, ``rrdb_sft``, ``blind_sr_40``, ``blind_sr_19``
    or ``hrnet_w18_small_v2_imagenet``."""
    f = _facts()
    if kind.startswith("blind_sr_"):
        return {**keys("cmos_" + kind.rsplit("_", 1)[1]), **keys("rrdb_sft")}
    if kind == "cmos_19":
        return {k: tuple(f["cmos_19_differs"].get(k, v)) for k, v in keys("cmos_40").items()}
    return {k: tuple(v) for k, v in f[kind]}


def params(kind: str) -> int:
    return _facts()["params"][kind]


def public_weights(keys: dict, seed: int = 0, dtype=torch.float64) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in keys.items():
        shape = tuple(shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[name] = torch.tensor(0, dtype=torch.int64)
            continue
        if leaf == "running_var":
            a = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_mean":
            a = rng.normal(0.0, 0.1, shape)
        elif leaf in GATES:
            a = rng.uniform(0.1, 0.3, shape)
        elif len(shape) == 1 and leaf == "weight":
            a = rng.uniform(0.8, 1.2, shape)
        elif len(shape) == 1:
            a = rng.normal(0.0, 0.1, shape)
        else:
            a = rng.normal(0.0, 1.0 / math.sqrt(math.prod(shape[1:])), shape)
        out[name] = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
    return out


def golden(name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(GOLDEN, name))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b| (float64)."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())
