"""The numpy data toolkit never imports torch or the models (no cycle between ``bsrdata`` and ``bsrdata.models``).

Every module of ``bsrdata/*.py``, ``bsrdata/render`` and ``bsrdata/sources`` except ``bsrdata.dataset`` and
``bsrdata.loader`` (the PyTorch wrappers) is checked twice: statically (every ``import``/``from ... import``
anywhere in the file, module level or inside functions, and every string that names a torch/models module, as
passed to ``importlib.import_module``) and at run time (a fresh interpreter imports each module and looks at
``sys.modules``). The installed ``bsrdata.models.*`` / ``bsrdata.cli.*`` packages are the torch side and are
not checked.
"""

import ast
import json
import os
import re
import subprocess
import sys

import pytest

import bsrdata

PKG = os.path.dirname(bsrdata.__file__)
EXEMPT = {"bsrdata.dataset", "bsrdata.loader"}
FORBIDDEN = ("torch", "bsrdata.models", "bsrdata.cli")
_NAMES_MODULE = re.compile(r"(torch|bsrdata\.models|bsrdata\.cli)(\.[A-Za-z0-9_.]+)?(:[A-Za-z0-9_]+)?")


def _modules():
    """(module name, file path) of the numpy-side modules."""
    out = []
    for name in sorted(os.listdir(PKG)):
        if name.endswith(".py"):
            mod = "bsrdata" if name == "__init__.py" else f"bsrdata.{name[:-3]}"
            out.append((mod, os.path.join(PKG, name)))
    for sub in ("render", "sources"):
        for dirpath, _, files in os.walk(os.path.join(PKG, sub)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), os.path.dirname(PKG))[:-3]
                parts = rel.split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out.append((".".join(parts), os.path.join(dirpath, name)))
    return [(m, p) for m, p in out if m not in EXEMPT]


MODULES = _modules()


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _imports(path: str, module: str):
    """Every imported module name in the file (absolute; relative imports resolved), with line numbers,
    and every string constant that names a forbidden module."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    is_pkg = os.path.basename(path) == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAMES_MODULE.fullmatch(node.value):
            found.append((node.value.partition(":")[0], node.lineno))
    return found


def test_module_list_covers_the_toolkit():
    names = {m for m, _ in MODULES}
    assert {"bsrdata", "bsrdata.benchmark", "bsrdata.metrics", "bsrdata.tables", "bsrdata.registry",
            "bsrdata.render", "bsrdata.sources", "bsrdata.sources.nyuv2"} <= names
    assert "bsrdata.dataset" not in names


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_no_torch_or_models_import_statically(module, path):
    bad = [f"{path}:{line}: {name}" for name, line in _imports(path, module) if _forbidden(name)]
    assert not bad, "the numpy toolkit must not import torch or the models:\n" + "\n".join(bad)


def test_static_scan_catches_function_level_and_string_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import os\n\ndef f():\n    from bsrdata.models import checkpoint\n"
                 "    import importlib\n    importlib.import_module('bsrdata.models.bench_methods')\n"
                 "    import torch.nn\n")
    names = [n for n, _ in _imports(str(p), "bsrdata.m") if _forbidden(n)]
    assert "bsrdata.models" in names and "bsrdata.models.bench_methods" in names and "torch.nn" in names


_PROBE = r"""
import importlib, json, sys
forbidden = ("torch", "bsrdata.models", "bsrdata.cli")
def bad():
    return sorted(k for k in sys.modules if any(k == f or k.startswith(f + ".") for f in forbidden))
out = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    out[name] = bad()
    if out[name]:
        break
# the harness builds its own methods without touching the models
from bsrdata import benchmark
benchmark.get_method("bicubic")
benchmark.get_method("command:prog {in} {out}")
out["get_method"] = bad()
print(json.dumps(out))
"""


def test_no_torch_or_models_at_run_time():
    names = [m for m, _ in MODULES]
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(PKG), ".numba_cache"))
    proc = subprocess.run([sys.executable, "-c", _PROBE, *names], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    offenders = {k: v for k, v in res.items() if v}
    assert not offenders, f"importing these pulled in torch or the models: {offenders}"
    assert set(names) <= set(res)
