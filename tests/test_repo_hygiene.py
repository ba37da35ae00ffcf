"""The repository stands on its own: no citation of the team's private design notes, and the lint can fail."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "out", "runs", "__pycache__", "build", "dist"}
PRIVATE = re.compile(r"\bFACTS\b|\bDESIGN\.md\b|\.\./shared\b")


def _text_files():
    for here, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith((".numba", ".")) and
                   not d.endswith(".egg-info")]
        for f in files:
            if f.endswith((".py", ".md", ".yaml", ".json", ".cfg", ".toml", ".sh")) or f in ("Makefile", "run"):
                yield os.path.join(here, f)


def test_no_private_design_notes_cited():
    me = os.path.abspath(__file__)
    hits = []
    for path in _text_files():
        if os.path.abspath(path) == me:
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if PRIVATE.search(line):
                    hits.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()[:80]}")
    assert hits == []


def test_lint_catches_an_unused_import(tmp_path):
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    assert os.path.isfile(ruff), "ruff is part of the test extra: pip install -e .[test] (make test does)"
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    r = subprocess.run([ruff, "check", "--config", os.path.join(ROOT, "pyproject.toml"), str(bad)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "F401" in r.stdout
