"""Numba's on-disk cache for the render kernels, in a folder keyed on the render sources.

numba (``cache=True``) decides whether a cached kernel is still valid from the timestamp and size of the
file that *defines* the function. The render kernels are split over several files and call (and inline)
helpers and module constants from each other, so an edit to one file could leave a stale compiled kernel
of another behind. Here the cache folder is named by a short sha256 of the bytes of every
``bsrdata/render/*.py`` file: any edit to any of them gives a fresh folder, so no kernel compiled from
other sources is ever loaded.

- ``NUMBA_CACHE_DIR`` set by the user: the base folder; the kernels go to ``$NUMBA_CACHE_DIR/render-<hash>``.
- unset: ``bsrdata/render/__pycache__/numba-<hash>`` when that is writable (numba's own default is the
  source file's ``__pycache__``), else ``~/.cache/bsrdata/numba-<hash>``.

numba takes ``numba.config.CACHE_DIR`` when a function is decorated (not when it compiles or saves), so
the render kernels are decorated with this module's :func:`njit`, which sets it for the decoration only and
restores it: other numba code in the process keeps the user's setting. Folders of earlier source
versions are left in place (delete them by hand).
"""

from __future__ import annotations

import glob
import hashlib
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def sources_hash(render_dir=_HERE):
    """Hex sha256 (first 16 digits) over the names and bytes of ``render_dir/*.py``, sorted by name."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(render_dir, "*.py"))):
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            data = f.read()
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


SOURCES_HASH = sources_hash()
_BASE = os.environ.get("NUMBA_CACHE_DIR", "")


def _writable(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _cache_dir():
    if _BASE:
        return os.path.join(_BASE, "render-" + SOURCES_HASH)
    tree = os.path.join(_HERE, "__pycache__", "numba-" + SOURCES_HASH)
    if _writable(tree):
        return tree
    return os.path.join(os.path.expanduser("~"), ".cache", "bsrdata", "numba-" + SOURCES_HASH)


CACHE_DIR = _cache_dir()


def cache_is_warm() -> bool:
    """True when :data:`CACHE_DIR` already holds compiled kernels (numba's ``*.nbi`` index files), so this
    run loads them instead of compiling."""
    return bool(glob.glob(os.path.join(CACHE_DIR, "*.nbi")))


def njit(**options):
    """``numba.njit(**options)`` with ``cache=True`` kernels cached in :data:`CACHE_DIR`."""
    import numba

    def deco(fn):
        prev = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = CACHE_DIR
        try:
            return numba.njit(**options)(fn)
        finally:
            numba.config.CACHE_DIR = prev

    return deco
