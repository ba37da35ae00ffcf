"""Worker-pool limits and lifetime for ``bsr build``.

A pool is never larger than the work it has: :func:`pool_size` caps the requested count at the number of
pending shards and at ``CPU_FACTOR`` × the CPU count (more processes only compete for the cores and each one
holds a copy of the renderer's buffers). :func:`check_workers` refuses counts outside 1..``MAX_WORKERS``.

Workers die with the process that started them: :func:`die_with_parent`, called in each worker's
initializer, asks Linux to SIGKILL the worker when its parent dies (``prctl(PR_SET_PDEATHSIG)``) and, on
every platform, starts a daemon thread that exits the worker once its parent process id changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

from bsrdata.errors import BsrError

MAX_WORKERS = 4096
CPU_FACTOR = 4
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
WATCH_INTERVAL_S = 0.5


def check_workers(workers) -> int:
    """Return ``workers`` as an int in 1..MAX_WORKERS; otherwise one BsrError line naming ``--workers``."""
    try:
        n = int(workers)
    except (TypeError, ValueError):
        raise BsrError(f"--workers: expected an integer, got {workers!r}") from None
    if n != workers and not isinstance(workers, str):
        raise BsrError(f"--workers: expected an integer, got {workers!r}")
    if n < 1 or n > MAX_WORKERS:
        raise BsrError(f"--workers: must be between 1 and {MAX_WORKERS}, got {workers}")
    return n


def cpu_cap() -> int:
    """The largest useful pool: CPU_FACTOR × ``os.cpu_count()`` (at least 1)."""
    return CPU_FACTOR * max(1, os.cpu_count() or 1)


def pool_size(requested: int, pending: int) -> int:
    """Processes to start for ``pending`` shards: min(requested, pending, cpu_cap()), and 0 with no work."""
    if pending <= 0:
        return 0
    return max(1, min(int(requested), int(pending), cpu_cap()))


def describe(info: dict) -> str | None:
    """One line saying why fewer workers than requested were used (``None`` when all were used)."""
    req, used, pending = info["requested"], info["used"], info["pending_shards"]
    if used >= req or used == 0:
        return None
    why = f"{pending} pending shard{'s' if pending != 1 else ''}"
    if used < pending:
        why = f"at most {CPU_FACTOR} x {info['cpus']} CPUs; {why}"
    return f"workers: {req} requested, using {used} ({why})"


def _watch(parent_pid: int, interval: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # orphaned: the build that wanted our shard is gone
        time.sleep(interval)


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int, *, pdeathsig: bool = True, interval: float = WATCH_INTERVAL_S) -> None:
    """Make this (worker) process end when process ``parent_pid`` dies, however it dies.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; everywhere: a daemon thread polling ``os.getppid()`` every
    ``interval`` seconds that calls ``os._exit(1)`` once it changed (the worker was re-parented)."""
    if pdeathsig:
        _set_pdeathsig()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid, interval), daemon=True, name="bsr-parent-watch").start()
