"""Readers that yield plain :class:`bsrdata.sources.base.Record` objects.

``get_source(name, **options)`` builds one by name from :data:`SOURCES`, a
:class:`bsrdata.registry.Registry` ("source"). The shipped readers are pre-declared as ``"module:attr"``,
so their modules are imported only when asked for: ``import bsrdata.sources`` stays cheap and a missing
optional reader does not break the others. Another reader joins with ``@register_source("name")`` on its
class or factory. An unknown name is one :class:`~bsrdata.errors.BsrError` line
``unknown source 'x' (known: ...)``.
"""

from __future__ import annotations

from typing import Callable

from bsrdata.registry import Registry

SOURCES = Registry("source")
SOURCES.declare("synthetic", "bsrdata.sources.synthetic:SyntheticSource")
SOURCES.declare("middlebury", "bsrdata.sources.middlebury:MiddleburySource")
SOURCES.declare("demo", "bsrdata.sources.synthetic:demo_source")
SOURCES.declare("nyuv2", "bsrdata.sources.nyuv2:NYUv2Source")
SOURCES.declare("cityscapes", "bsrdata.sources.cityscapes:CityscapesSource")
SOURCES.declare("folder", "bsrdata.sources.folder:FolderSource")


def register_source(name: str) -> Callable:
    """Decorator: register a source class or factory ``f(**options) -> source`` under ``name``."""
    return SOURCES.register(name)


def get_source(name: str, **options):
    """Build the source called ``name`` (one of :data:`SOURCES`) with its keyword options."""
    return SOURCES.build(name, **options)
