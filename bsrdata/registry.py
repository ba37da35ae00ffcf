"""One registry helper for every named kind of thing: sources, tasks, CLI commands, bench methods, models.

A :class:`Registry` maps a name to an object (a class, a factory function, a click command). Entries come
in two ways:

- ``reg.register("name")`` as a decorator (or ``reg.register("name", obj)``) where the object is defined;
- ``reg.declare("name", "package.module:attr")`` beforehand, so ``reg.get("name")`` imports only the one
  module it needs (nothing is scanned, and ``import`` of the registry's home stays cheap).

A declared module may instead register the name itself with the decorator when it is imported; ``get``
then returns what it registered. A name registered twice with different objects, or declared twice with
different targets, is refused (:class:`~bsrdata.errors.BsrError`). An unknown name is one line:
``unknown model 'x' (known: a, b, c)``.

This module never imports torch or any optional package.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterator

from bsrdata.errors import BsrError

__all__ = ["Registry"]


class Registry:
    """Names -> objects, with lazy ``"module:attr"`` pre-declarations.

    ``kind`` names the kind of thing in messages ("model", "source", "task", "bench method", "command").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._objects: dict[str, Any] = {}
        self._declared: dict[str, str] = {}
        self._aliases: dict[str, str] = {}

    # ------------------------------------------------------------------------------------------ adding
    def register(self, name: str, obj: Any = None):
        """Register ``obj`` under ``name``; without ``obj``, a decorator that registers what it wraps."""
        if obj is None:
            def deco(o):
                self._add(name, o)
                return o

            return deco
        self._add(name, obj)
        return obj

    def _add(self, name: str, obj: Any) -> None:
        _check_name(self.kind, name)
        if name in self._aliases:
            raise BsrError(f"{self.kind} {name!r} is already an alias of {self._aliases[name]!r}")
        old = self._objects.get(name)
        if old is not None and old is not obj and _qualname(old) != _qualname(obj):
            raise BsrError(f"{self.kind} {name!r} is registered twice ({_qualname(old)} and {_qualname(obj)})")
        self._objects[name] = obj

    def declare(self, name: str, target: str) -> None:
        """Pre-declare ``name`` as ``"package.module:attr"`` (or ``"package.module"`` when the module
        registers ``name`` itself on import)."""
        _check_name(self.kind, name)
        old = self._declared.get(name)
        if old is not None and old != target:
            raise BsrError(f"{self.kind} {name!r} is declared twice ({old} and {target})")
        self._declared[name] = target

    def alias(self, name: str, target: str) -> None:
        """Make ``name`` another name for the entry ``target`` (listed by :meth:`aliases`, not :meth:`names`)."""
        _check_name(self.kind, name)
        if name in self._objects or name in self._declared:
            raise BsrError(f"{self.kind} {name!r} exists; it cannot also be an alias of {target!r}")
        self._aliases[name] = target

    # ----------------------------------------------------------------------------------------- looking up
    def names(self) -> list[str]:
        """Every known name (declared or registered), sorted; aliases excluded."""
        return sorted(set(self._objects) | set(self._declared))

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def target(self, name: str) -> str | None:
        """The ``"module:attr"`` that ``name`` was declared with, or None."""
        return self._declared.get(self.resolve(name))

    def __contains__(self, name: object) -> bool:
        return name in self._objects or name in self._declared or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def resolve(self, name: str) -> str:
        """The entry's own name for ``name`` (follows an alias)."""
        return self._aliases.get(name, name)

    def get(self, name: str) -> Any:
        """The object registered as ``name``, importing its declared module on first use."""
        key = self.resolve(name)
        if key in self._objects:
            return self._objects[key]
        target = self._declared.get(key)
        if target is None:
            raise BsrError(self.unknown(name))
        mod_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                raise BsrError(f"{self.kind} {name!r} is not available in this installation "
                               f"({mod_name} is missing)") from None
            raise
        if key in self._objects:  # the module registered it with the decorator
            return self._objects[key]
        if not attr:
            raise BsrError(f"{self.kind} {name!r} is declared in {mod_name}, which did not register it")
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise BsrError(f"{self.kind} {name!r}: {mod_name} has no {attr!r}") from None
        self._objects[key] = obj
        return obj

    def build(self, name: str, *args, **kwargs) -> Any:
        """``get(name)(*args, **kwargs)``."""
        return self.get(name)(*args, **kwargs)

    def unknown(self, name: str) -> str:
        """The one-line message for an unknown name."""
        known = self.names() + sorted(self._aliases)
        return f"unknown {self.kind} {name!r} (known: {', '.join(known) or 'none'})"

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise BsrError(f"{kind} name must be a non-empty string without surrounding spaces, got {name!r}")


def _qualname(obj: Any) -> str:
    mod = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or getattr(obj, "name", None) or type(obj).__qualname__
    return f"{mod}.{name}"

