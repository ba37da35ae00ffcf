"""Task names for ``bsr train TASK`` -> "module:Class" (imported only when used)."""

from __future__ import annotations

import importlib

from bsrdata.errors import BsrError

TASKS = {
    "cmos": "models.engine.task_cmos:CMOSTask",
    "rrdb-sft": "models.engine.task_sr:RRDBSFTTask",
    "blind": "models.engine.task_sr:BlindTask",
}


def get_task(name: str):
    """An instance of the task registered as ``name`` (BsrError for an unknown name)."""
    if name not in TASKS:
        raise BsrError(f"task: unknown {name!r} (known: {', '.join(sorted(TASKS))})")
    mod, cls = TASKS[name].split(":")
    try:
        module = importlib.import_module(mod)
    except ModuleNotFoundError as exc:
        if exc.name == mod:
            raise BsrError(f"task: {name!r} is not available in this checkout ({mod} missing)") from None
        raise
    return getattr(module, cls)()
