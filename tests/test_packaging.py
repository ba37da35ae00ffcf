"""The installed names: ``bsrdata``, ``bsrdata.models``, ``bsrdata.cli`` and nothing generic.

The repository keeps ``models/`` and ``cli/`` at the top level; setup.cfg maps them to ``bsrdata.models``
and ``bsrdata.cli``. These tests check the package list against the folders, and install the project
(non-editable, without dependencies) into a folder to show that ``bsr`` works and that a user's own
``models/`` package is not shadowed.
"""

import configparser
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_cfg():
    cp = configparser.ConfigParser()
    cp.read(os.path.join(ROOT, "setup.cfg"))
    packages = [p.strip() for p in cp["options"]["packages"].split() if p.strip()]
    dirs = dict(line.split("=") for line in cp["options"]["package_dir"].strip().splitlines())
    return packages, {k.strip(): v.strip() for k, v in dirs.items()}


def test_every_package_folder_is_listed():
    packages, dirs = _setup_cfg()
    found = set()
    for installed, top in dirs.items():
        for here, subdirs, files in os.walk(os.path.join(ROOT, top)):
            subdirs[:] = [s for s in subdirs if not s.startswith((".", "__"))]
            if "__init__.py" in files:
                rel = os.path.relpath(here, os.path.join(ROOT, top))
                found.add(installed if rel == "." else installed + "." + rel.replace(os.sep, "."))
    assert found == set(packages)
    assert not any(p.split(".")[0] != "bsrdata" for p in packages)


def test_no_module_imports_the_top_level_names():
    import re

    bad = []
    for top in ("bsrdata", "models", "cli", "scripts", "perf", "tests"):
        for here, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(here, f)
                    with open(path, encoding="utf-8") as fh:
                        for n, line in enumerate(fh, 1):
                            if re.match(r"\s*(from|import)\s+(models|cli)\b", line):
                                bad.append(f"{os.path.relpath(path, ROOT)}:{n}")
    assert bad == []


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "setup.cfg")), reason="needs the source tree")
def test_normal_install_beside_a_foreign_models_package(tmp_path):
    import shutil

    # build from a copy, so setuptools' build/ and egg-info folders never land in the working tree
    src = tmp_path / "src"
    for name in ("bsrdata", "models", "cli"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p for p in os.listdir(target) if not p.endswith((".dist-info", ".egg-info")) and p != "bin") \
        == ["bsrdata"]
    # a research repo with its own models/ and cli/ packages
    work = tmp_path / "research"
    for name in ("models", "cli"):
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(f"MINE = {name!r}\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import models, cli, bsrdata.models, bsrdata.cli.main as m, bsrdata.models.engine.trainer;"
            "assert models.MINE == 'models' and cli.MINE == 'cli';"
            "assert bsrdata.models.__file__.startswith(%r); print('ok')" % str(target))
    r = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = subprocess.run([str(target / "bin" / "bsr"), "--help"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "build" in r.stdout and "bench" in r.stdout, r.stderr


def test_editable_entry_point_from_another_folder(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("MINE = 1\n")
    bsr = os.path.join(os.path.dirname(sys.executable), "bsr")
    assert os.path.isfile(bsr), "bsr is installed by pip install -e . (make test does)"
    r = subprocess.run([bsr, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "verify" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-c", "import models, bsrdata.models.registry; print(models.MINE)"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
