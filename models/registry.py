"""Explicit model registry, timm style: ``create_model(name, **kw)``.

One :class:`bsrdata.registry.Registry` ("model"). The shipped names are pre-declared with the module that
defines them, so ``create_model`` imports only what it needs (no file scanning); that module registers the
name itself with ``@register_model("name")`` when it is imported. A bare ``@register_model("x")`` in any
other imported module adds ``x`` as well: ``create_model("x")`` builds it and ``list_models()`` lists it.
A name registered twice (by two different functions) is refused; an unknown name is one
:class:`~bsrdata.errors.BsrError` line ``unknown model 'y' (known: ...)``.
"""

from __future__ import annotations

from typing import Callable

from bsrdata.errors import BsrError
from bsrdata.registry import Registry

MODELS = Registry("model")

# shipped names -> the module that registers them on import
for _name, _module in (
    ("hrnet_w18_small_v2", "bsrdata.models.hrnet"),
    ("cmos", "bsrdata.models.cmos"),
    ("cmos_blur", "bsrdata.models.cmos"),
    ("cmos_seg", "bsrdata.models.cmos"),
    ("rrdb_sft", "bsrdata.models.rrdb_sft"),
    ("rrdb_sft_noseg", "bsrdata.models.rrdb_sft"),
    ("blind_sr", "bsrdata.models.blind"),
    ("crestereo", "bsrdata.models.crestereo"),
    # baselines (docs/baselines.md): MANet
    ("manet_estimator", "bsrdata.models.manet"),
    ("manet_rrdb_sft", "bsrdata.models.manet"),
    ("manet", "bsrdata.models.manet"),

    # DAN
    ("dan_v1", "bsrdata.models.dan"),
    ("dan_v2", "bsrdata.models.dan"),

    # DCLS
    ("dcls", "bsrdata.models.dcls"),

    # KOALAnet
    ("koalanet_ds", "bsrdata.models.koalanet"),
    ("koalanet_us", "bsrdata.models.koalanet"),
    ("koalanet", "bsrdata.models.koalanet"),

    # KernelGAN + ZSSR
    ("kernelgan_g", "bsrdata.models.kernelgan"),
    ("kernelgan_d", "bsrdata.models.kernelgan"),
    ("zssr", "bsrdata.models.zssr"),

):
    MODELS.declare(_name, _module)
del _name, _module


def register_model(name: str) -> Callable:
    """Decorator: register ``fn(**kw) -> nn.Module`` under ``name`` (BsrError if the name is taken,
    also when it is pre-declared for another module)."""

    def deco(fn):
        target = MODELS.target(name) if name in MODELS else None
        module = (target or "").partition(":")[0]
        if module and getattr(fn, "__module__", module) != module:
            raise BsrError(f"model {name!r} is declared in {module}; {fn.__module__} cannot register it too")
        return MODELS.register(name)(fn)

    return deco


def list_models() -> list[str]:
    """Every model name, declared or registered, sorted."""
    return MODELS.names()


def create_model(name: str, **kwargs):
    """Build the network registered as ``name`` with keyword arguments ``kwargs``."""
    return MODELS.build(name, **kwargs)
