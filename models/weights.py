"""Reading weight files and copying them into a network, with one mismatch report.

- :func:`read_weights` reads a ``.safetensors`` file, or any other file with
  ``torch.load(weights_only=True)`` (tensors and plain containers only: no arbitrary object is ever
  unpickled), and returns a flat ``{name: tensor}`` dict (unwrapping ``state_dict`` / ``model`` / ...
  nesting and a DataParallel ``module.`` prefix, see :func:`extract_state_dict`).
- :func:`load_state` compares that dict with a module's own state dict by name and shape, copies the
  tensors that fit, and returns a :class:`LoadReport`. With ``strict=True`` (the default) any missing,
  unexpected or wrong-shape key is one :class:`~bsrdata.errors.BsrError` line naming the file, with the
  count of each kind and the first few names, e.g.
  ``w.pth: weights do not fit CREStereo: 2 missing keys: a, b; 1 shape mismatches: c (7,)!=(2,)``.

Used by :mod:`bsrdata.models.checkpoint` (bsrdata checkpoints), :func:`bsrdata.models.hrnet.load_pretrained`
(ImageNet HRNet files, non-strict) and :func:`bsrdata.models.crestereo.load_crestereo` (the public
CREStereo file, strict).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn as nn

from bsrdata.errors import BsrError

__all__ = ["LoadReport", "read_weights", "extract_state_dict", "load_state", "key_list"]

NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net", "params")
KEY_EXAMPLES = 6  # names shown per kind of mismatch
SHAPE_EXAMPLES = 3


def key_list(keys, limit: int = KEY_EXAMPLES) -> str:
    """``"a, b, c, ... (+N more)"``: the first ``limit`` of the sorted ``keys``."""
    keys = sorted(keys)
    head = ", ".join(keys[:limit])
    return f"{head}, ... (+{len(keys) - limit} more)" if len(keys) > limit else head


@dataclass
class LoadReport:
    """What :func:`load_state` found. ``loaded``: names copied into the module; ``missing``: the module's
    names absent from the file; ``unexpected``: the file's names the module does not have; ``mismatched``:
    ``(name, file shape, module shape)`` for names present in both with different shapes."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line: the count and first names of each kind of mismatch ("" when everything fits)."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing keys: {key_list(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys: {key_list(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} {got}!={want}" for k, got, want in self.mismatched]
            parts.append(f"{len(shapes)} shape mismatches: {key_list(shapes, SHAPE_EXAMPLES)}")
        return "; ".join(parts)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def read_weights(path, *, what: str = "weights", expected: str | None = None) -> dict:
    """A flat ``{name: tensor}`` dict from the file ``path`` (CPU tensors).

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``.
    ``what`` names the expected content in the "not a ... state dict" message; ``expected`` (e.g.
    ``"crestereo_eth3d.pth"``) is added to the unreadable-file message. BsrError (one line naming the
    file) when it is missing, unreadable, holds arbitrary pickled objects, or has no tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BsrError(f"{path}: weights file not found")
    safetensors = path.endswith(".safetensors")
    try:
        if safetensors:
            from safetensors.torch import load_file

            obj = load_file(path)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        kind = "safetensors" if safetensors else "PyTorch weights"
        hint = f"; expected {expected}" if expected else ""
        safe = "" if safetensors else ", loaded without unpickling arbitrary objects"
        raise BsrError(f"{path}: cannot read weights: not a readable {kind} file ({_first_line(exc)}){hint}"
                       f"{safe}") from None
    return extract_state_dict(obj, path, what=what)


def extract_state_dict(obj, path: str = "weights", *, what: str = "weights") -> dict:
    """A flat name -> tensor dict from a loaded checkpoint object.

    Accepts a bare state dict or one nested (up to 3 levels) under ``state_dict``, ``model``,
    ``model_state_dict``, ``net`` or ``params``; strips a leading ``module.`` (DataParallel) from every key.
    BsrError ``"<path>: not a <what> state dict (...)"`` otherwise.
    """
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        raise BsrError(f"{path}: not a {what} state dict (found {type(obj).__name__} without tensors)")
    else:
        raise BsrError(f"{path}: not a {what} state dict (nesting too deep)")
    sd = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise BsrError(f"{path}: not a {what} state dict (key {k!r} is not a string)")
        sd[k[len("module."):] if k.startswith("module.") else k] = v
    return sd


def compare_state(state: Mapping, own: Mapping, rename=None) -> tuple:
    """Match ``state`` against the shapes of ``own`` -> ``(LoadReport, tensors that fit)``, keyed by
    ``own``'s names. ``rename(k)`` maps a key of ``state`` to one of ``own`` (None = unexpected); the
    report's names are ``state``'s. ``missing``: the ``own`` keys no ``state`` key maps to."""
    report = LoadReport()
    take, hit = {}, set()
    for k, v in state.items():
        o = k if rename is None else rename(k)
        if o is None or o not in own:
            report.unexpected.append(k)
        elif not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(own[o].shape):
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            report.mismatched.append((k, got, tuple(own[o].shape)))
            hit.add(o)
        else:
            take[o] = v
            hit.add(o)
    report.missing = [o for o in own if o not in hit]
    return report, take


def load_state(module: nn.Module, state: Mapping, *, source: str, strict: bool = True,
               key_map: Callable[[str], str | None] | Mapping[str, str] | None = None,
               target: str = "the model") -> LoadReport:
    """Copy the tensors of ``state`` whose name and shape fit into ``module``; return a :class:`LoadReport`.

    ``source`` names the file in messages; ``target`` names the network ("CREStereo", "the model in config.json").
    ``key_map`` renames the file's keys first (a dict (keys not in it unchanged), or a function; a key mapped to
    None is dropped). ``strict``: any missing, unexpected or wrong-shape key raises one BsrError line ``"<source>:
    weights do not fit <target>: <summary>"`` and nothing is copied; otherwise the tensors that fit are copied and
    the rest reported. Values are cast to the module's dtypes by ``load_state_dict``.
    """
    if key_map is not None:
        rename = (lambda k: key_map.get(k, k)) if isinstance(key_map, Mapping) else key_map
        state = {k2: v for k2, v in ((rename(k), v) for k, v in state.items()) if k2 is not None}
    report, take = compare_state(state, module.state_dict())
    if strict and not report.ok:
        raise BsrError(f"{source}: weights do not fit {target}: {report.summary()}")
    module.load_state_dict(take, strict=strict)
    report.loaded = list(take)
    return report
