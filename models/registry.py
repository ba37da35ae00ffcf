"""Explicit model registry, timm style: ``create_model(name, **kw)``.

Each network file registers its constructors with ``@register_model("name")``. The table below lists
the module that defines each name so that ``create_model`` imports only what it needs; there is no file
scanning.
"""

from __future__ import annotations

import importlib
from typing import Callable

from bsrdata.errors import BsrError

# name -> module that registers it
_MODULES = {
    "hrnet_w18_small_v2": "bsrdata.models.hrnet",
    "cmos": "bsrdata.models.cmos",
    "cmos_blur": "bsrdata.models.cmos",
    "cmos_seg": "bsrdata.models.cmos",
    "rrdb_sft": "bsrdata.models.rrdb_sft",
    "rrdb_sft_noseg": "bsrdata.models.rrdb_sft",
    "blind_sr": "bsrdata.models.blind",
    "crestereo": "bsrdata.models.crestereo",
}
_REGISTRY: dict[str, Callable] = {}


def register_model(name: str):
    """Decorator: register ``fn(**kw) -> nn.Module`` under ``name``."""

    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_MODULES)


def create_model(name: str, **kwargs):
    """Build the network registered as ``name`` with keyword arguments ``kwargs``."""
    if name not in _MODULES:
        raise BsrError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    if name not in _REGISTRY:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        raise BsrError(f"model {name!r} is listed but {_MODULES[name]} did not register it")
    return _REGISTRY[name](**kwargs)
