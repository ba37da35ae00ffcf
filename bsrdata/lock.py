"""One writer per output folder: an exclusive, self-releasing lock file.

Every command that writes a folder (``bsr build``, ``merge``, ``export``, ``depth``, ``bench --out``,
``train --out``) holds :func:`folder_lock` on it for as long as it writes. The lock is
``<folder>/.bsr-lock``, a small JSON file naming the owner (pid, host, command, start time) and held with
``flock(2)``. The kernel drops an ``flock`` when its holder dies, however it dies (SIGKILL included), so a
lock file left behind by a killed run is stale by construction and the next run simply takes it over; no
pid guessing is needed on a local disk. Where the filesystem refuses ``flock`` the lock falls back to
exclusive creation with a liveness check of the recorded pid on the same host.

A second writer gets one line::

    bsr: error: out: in use by another bsr process (build, pid 4242 on host-a, since 2026-12-02T06:10:00Z);
    wait for it to finish, or stop it

Forked worker processes inherit the lock (same open file description), so the folder stays locked while a
build's workers are still writing, and is released when the last of them exits.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from typing import Iterator

from bsrdata.errors import BsrError

__all__ = ["LOCK_NAME", "folder_lock", "lock_owner", "lock_path"]

LOCK_NAME = ".bsr-lock"


def lock_path(folder, *, beside: bool = False) -> str:
    """Where the lock file of ``folder`` lives: ``folder/.bsr-lock``, or ``parent/.<name>.bsr-lock``."""
    folder = os.path.abspath(os.fspath(folder))
    if beside:
        return os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}{LOCK_NAME}")
    return os.path.join(folder, LOCK_NAME)


def lock_owner(folder, *, beside: bool = False) -> dict | None:
    """The owner recorded in ``folder``'s lock file (``{"pid", "host", "command", "since"}``), or ``None``
    when there is none or it cannot be read. Says nothing about whether the lock is held."""
    return _read_record(lock_path(folder, beside=beside))


def _read_record(path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def _busy(folder, info: dict | None) -> BsrError:
    if info:
        who = (f"{info.get('command', '?')}, pid {info.get('pid', '?')} on {info.get('host', '?')}, "
               f"since {info.get('since', '?')}")
    else:
        who = "owner unknown"
    return BsrError(f"{folder}: in use by another bsr process ({who}); wait for it to finish, or stop it")


def _record(command: str) -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode() + b"\n"


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # exists but not ours, or unreadable: assume alive
    return True


@contextlib.contextmanager
def folder_lock(folder, command: str, *, share: tuple[str, str] | None = None,
                beside: bool = False) -> Iterator[str]:
    """Hold the lock of ``folder`` (created if missing) for the ``with`` block.

    Args:
        folder: the output folder. command: what holds it (``"build"``, ``"export"``, ...), shown to a
            second writer.
        share: ``None`` for an exclusive lock. ``(group, slot)`` for a shared one: holders with the same
            ``group`` and different ``slot`` may write the folder at the same time (the slices
            ``--shard K/N`` of one build plan: group = the plan, slot = ``K/N``); anything else is refused.
        beside: keep the lock file next to the folder (``.<name>.bsr-lock`` in its parent) instead of in
            it, for writers that swap the whole folder in at the end (``bsr export``).
    Raises:
        BsrError: another live process holds it incompatibly, or the folder cannot be created / written.
    Yields:
        the lock file's path.
    """
    folder = os.fspath(folder)
    path = lock_path(folder, beside=beside)
    created = not beside and not os.path.isdir(folder)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        raise BsrError(f"{folder}: cannot write ({exc.strerror or exc})") from None
    fd = _acquire(folder, path, command, shared=share is not None)
    mine = None
    try:
        if share is not None:
            mine = _join_share(folder, path, command, share)
        yield path
    finally:
        if mine is not None:
            _release(*mine)
        if share is None:
            _release(path, fd)
        else:
            _release_shared(path, fd)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # a folder we made and nobody wrote into goes again


def _holders(path) -> list[str]:
    """The shared holders' files of the lock file ``path`` (``<path>.<pid>``)."""
    folder, name = os.path.split(path)
    try:
        return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(name + "."))
    except OSError:
        return []


def _live_record(path) -> dict | None:
    """The record of a shared holder's file if its owner still holds it; a stale one is removed."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with open(path, encoding="utf-8") as fh:
                try:
                    info = json.load(fh)
                except ValueError:
                    info = {}
            return info if isinstance(info, dict) else {}
        except OSError:
            return {}
        with contextlib.suppress(OSError):
            os.unlink(path)  # its owner died
        return None
    finally:
        os.close(fd)


def _join_share(folder, lock, command, share):
    """Write our own holder file first, then look at the others: of two that start together, at least one
    sees the other (both may refuse; neither can miss a conflict)."""
    group, slot = share
    path = f"{lock}.{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    rec = json.loads(_record(command))
    rec.update(group=group, slot=slot)
    os.write(fd, json.dumps(rec).encode() + b"\n")
    for other in _holders(lock):
        if other == path:
            continue
        info = _live_record(other)
        if info is None:
            continue
        if info.get("group") != group or info.get("slot") == slot:
            _release(path, fd)
            raise _busy(folder, info)
    return path, fd


def _acquire(folder, path, command, shared=False) -> int:
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BsrError(f"{folder}: cannot write a lock file ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            live = (_live_record(h) for h in _holders(path))
            raise _busy(folder, next((r for r in live if r), None) or _read_record(path)) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL) and not shared:
                return _acquire_by_pid(folder, path, command)
            raise BsrError(f"{folder}: cannot lock ({exc.strerror or exc})") from None
        # the previous holder unlinks the file as it releases: if we locked an unlinked inode, start over
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if not same:
            os.close(fd)
            continue
        if not shared:
            os.ftruncate(fd, 0)
            os.write(fd, _record(command))
            for stale in _holders(path):  # nobody shares an exclusive lock: these are of dead slices
                with contextlib.suppress(OSError):
                    os.unlink(stale)
        return fd
    raise BsrError(f"{folder}: cannot take the lock (it keeps changing hands)")


def _acquire_by_pid(folder, path, command) -> int:
    """Fallback without ``flock``: exclusive creation; a file whose pid is dead on this host is stale."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            info = _read_record(path)
            if info and info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid")):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            raise _busy(folder, info) from None
        except OSError as exc:
            raise BsrError(f"{folder}: cannot write a lock file ({exc.strerror or exc})") from None
        os.write(fd, _record(command))
        return -fd - 1  # negative: no flock held, only the file
    raise _busy(folder, _read_record(path))


def _release_shared(path, fd: int) -> None:
    """The last shared holder removes the main file (it can upgrade to exclusive); the others leave it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        return
    _release(path, fd)


def _release(path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)  # while still holding it, so nobody can take the old inode after us
    with contextlib.suppress(OSError):
        os.close(fd if fd >= 0 else -fd - 1)
