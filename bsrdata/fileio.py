"""Files written so that a kill never leaves one that looks complete, and file hashes.

The one atomic-write rule of the toolkit (docs/CONTRIBUTING.md): write to a temporary name in the same
folder (``<name>.tmp<pid>``, so two processes never share one), flush and ``fsync`` it, then
``os.replace`` it over the final name. A file under its final name is therefore always whole. An
``OSError`` becomes one :class:`~bsrdata.errors.BsrError` line naming the final path, and the temporary
file is removed.

Folders (checkpoints) use :func:`replace_dir`: build the folder under a temporary name, then swap it in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from typing import IO, Iterator

from bsrdata.errors import BsrError

__all__ = ["atomic_open", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "replace_dir",
           "sha256_file", "tmp_name", "remove_temps"]


def tmp_name(path) -> str:
    """The temporary name used for ``path`` by this process."""
    return f"{os.fspath(path)}.tmp{os.getpid()}"


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO]:
    """``with atomic_open(p) as f: f.write(...)``: the file appears under ``p`` only when the block ends
    without an exception (flushed, fsynced, renamed). ``mode`` is ``"w"`` or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    tmp = tmp_name(path)
    enc = None if "b" in mode else encoding
    try:
        with open(tmp, mode, encoding=enc) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        raise BsrError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        _unlink(tmp)
        raise


def write_bytes_atomic(path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return os.fspath(path)


def write_text_atomic(path, text: str) -> str:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return os.fspath(path)


def write_json_atomic(path, obj, *, indent: int = 1, sort_keys: bool = False, default=None) -> str:
    """Write ``obj`` as JSON plus a final newline to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=indent, sort_keys=sort_keys, default=default)
        fh.write("\n")
    return os.fspath(path)


def replace_dir(tmp_dir, final_dir) -> str:
    """Move the finished folder ``tmp_dir`` to ``final_dir``, replacing an older one.

    The old folder is first renamed to ``final_dir + ".old"`` and removed only after the swap, so at every
    moment either the old or the new folder is under the final name.
    """
    tmp_dir, final_dir = os.fspath(tmp_dir), os.fspath(final_dir)
    old = final_dir + ".old"
    shutil.rmtree(old, ignore_errors=True)
    try:
        if os.path.exists(final_dir):
            os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
    except OSError as exc:
        raise BsrError(f"{final_dir}: cannot replace ({exc.strerror or exc})") from None
    shutil.rmtree(old, ignore_errors=True)
    return final_dir


def remove_temps(path) -> int:
    """Delete leftover temporary files of ``path`` (``<name>.tmp*``, from any process, e.g. killed runs)
    in its folder; returns how many were removed. A missing or unreadable folder removes nothing."""
    folder, name = os.path.split(os.fspath(path))
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return 0
    n = 0
    for f in names:
        if f.startswith(name + ".tmp"):
            try:
                os.remove(os.path.join(folder, f))
                n += 1
            except OSError:
                pass
    return n


def sha256_file(path, bufsize: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(bufsize), b""):
            h.update(block)
    return h.hexdigest()


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
