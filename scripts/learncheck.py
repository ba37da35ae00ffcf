"""What the learning-check scripts (``scripts/learn_*.py``) share: their common options and the demo build.

``parser(doc, ...)`` gives an ``argparse`` parser with ``--data``, ``--build`` (``--train``, ``--test``,
``--size``), ``--minutes``, ``--config`` (when a default is given), ``--set``, ``--threads`` (when asked) and
``--out``; a script adds its own options to it. ``build_if_asked(args)`` runs ``bsr build demo`` into
``--data`` when ``--build`` is given and no dataset is there, and returns the seconds it took.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parser(doc: str, *, minutes: float, minutes_help: str = "training budget (calibration included)",
           config: str | None = None, train: int | None = 120, test: int | None = 15, threads: bool = True,
           sets_help: str = "config override key=value") -> argparse.ArgumentParser:
    """The shared options; ``config`` is a file name in ``configs/``; ``train``/``test`` None = the demo's own
    frame counts."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", required=True, help="built dataset (or where --build puts it)")
    ap.add_argument("--build", action="store_true", help="build it first with `bsr build demo`")
    ap.add_argument("--train", type=int, default=train, help="--build: synthetic train frames")
    ap.add_argument("--test", type=int, default=test, help="--build: synthetic test frames")
    ap.add_argument("--size", default="240x320", help="--build: frame size HxW")
    ap.add_argument("--minutes", type=float, default=minutes, help=minutes_help)
    if config:
        ap.add_argument("--config", default=os.path.join(ROOT, "configs", config))
    ap.add_argument("--set", dest="sets", action="append", default=[], help=sets_help)
    if threads:
        ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", required=True, help="folder for the runs and the results")
    return ap


def build_if_asked(args) -> float:
    """``bsr build demo`` into ``args.data`` if ``--build`` and it holds no manifest; seconds spent."""
    t0 = time.perf_counter()
    if args.build and not os.path.isfile(os.path.join(args.data, "manifest.json")):
        cmd = [sys.executable, "-m", "bsrdata.cli.main", "build", "demo", "--out", args.data, "--size", args.size,
               "--workers", "2", "-q"]
        if args.train is not None:
            cmd += ["--train", str(args.train)]
        if args.test is not None:
            cmd += ["--test", str(args.test)]
        subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def bench(data, methods, out) -> tuple:
    """Score ``methods`` on ``data`` (a BenchData) afresh in ``out/bench`` -> (BenchResult, seconds)."""
    from bsrdata import benchmark as bm

    t0 = time.perf_counter()
    res = bm.run_bench(data, methods, os.path.join(out, "bench"), fresh=True)
    return res, time.perf_counter() - t0


def write_summary(out, name: str, summary: dict, md_lines) -> str:
    """Write ``out/<name>.json`` (``summary``) and ``out/<name>.md`` (the lines) atomically, print the Markdown
    and return it."""
    from bsrdata.fileio import write_json_atomic, write_text_atomic

    text = "\n".join(md_lines)
    write_json_atomic(os.path.join(out, f"{name}.json"), summary, indent=2, default=float)
    write_text_atomic(os.path.join(out, f"{name}.md"), text + "\n")
    print(text)
    return text
