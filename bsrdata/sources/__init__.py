"""Readers that yield plain :class:`bsrdata.sources.base.Record` objects.

``get_source(name, **options)`` builds one by name; the modules are imported only when asked for, so
``import bsrdata.sources`` stays cheap and a missing optional reader does not break the others.
"""

from __future__ import annotations

import importlib

from bsrdata.errors import BsrError

# name -> "module:class"
SOURCES = {
    "synthetic": "bsrdata.sources.synthetic:SyntheticSource",
    "middlebury": "bsrdata.sources.middlebury:MiddleburySource",
    "demo": "bsrdata.sources.synthetic:demo_source",
    "nyuv2": "bsrdata.sources.nyuv2:NYUv2Source",
    "cityscapes": "bsrdata.sources.cityscapes:CityscapesSource",
    "folder": "bsrdata.sources.folder:FolderSource",
}


def get_source(name: str, **options):
    """Build the source called ``name`` (one of :data:`SOURCES`) with its keyword options."""
    target = SOURCES.get(name)
    if target is None:
        raise BsrError(f"source: unknown source '{name}' (known: {', '.join(sorted(SOURCES))})")
    mod_name, attr = target.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name == mod_name:
            raise BsrError(f"source: '{name}' is not available in this installation") from None
        raise
    return getattr(mod, attr)(**options)
