"""Every shipped config in configs/ is valid for the task it names, and every path in it is one this tool
writes (a run folder's ``last/`` checkpoint made by another shipped config's usage line)."""

import glob
import os
import re

import pytest

from bsrdata.models.engine.config import read_yaml
from bsrdata.models.engine.task import get_task
from bsrdata.models.engine.trainer import LAST

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
NAMES = [os.path.splitext(os.path.basename(p))[0] for p in CONFIGS]
# which task writes the checkpoint a path key needs
PRODUCER = {"init.cmos_ckpt": "cmos", "init.sr_ckpt": "rrdb-sft"}
USAGE = re.compile(r"^#\s*bsr train (\S+) .*--config (\S+) .*--out (\S+)", re.M)


def _usage(path):
    """(task, --config, --out) of the config's ``# bsr train ...`` comment line, or None."""
    with open(path, encoding="utf-8") as f:
        m = USAGE.search(f.read())
    return m.groups() if m else None


def _paths(d, prefix=""):
    """(dotted key, value) of every path-like string: ``*_ckpt``, ``*_weights``, or containing a slash."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _paths(v, key + ".")
        elif isinstance(v, str) and (k.endswith(("_ckpt", "_weights")) or "/" in v):
            yield key, v


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 10 and "blind_nyuv2" in NAMES and "cmos_nyuv2" in NAMES


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_config_valid_for_its_task(path):
    user = read_yaml(path)
    assert "task" in user, f"{path}: names no task"
    cfg = get_task(user["task"]).config(user, where=path)  # no disk reads: checkpoints need not exist
    assert cfg["task"] == user["task"]
    use = _usage(path)
    if use is not None:  # the usage line trains this file with its own task
        assert use[0] == user["task"] and use[1] == f"configs/{os.path.basename(path)}"


@pytest.mark.parametrize("name", ["cmos_nyuv2", "cmos_cityscapes", "cmos_cpu_small", "cmos_demo"])
def test_shipped_configs_are_valid(name):
    from bsrdata.models.engine.task_cmos import CMOSTask

    cfg = CMOSTask().config(read_yaml(os.path.join(ROOT, "configs", f"{name}.yaml")), where=name)
    assert cfg["task"] == "cmos"


def test_paths_in_configs_are_written_by_this_tool():
    """A checkpoint path must be ``RUN/last`` (what the trainer writes) with RUN the ``--out`` of a shipped
    config of the task that produces that checkpoint."""
    outs = {}
    for p in CONFIGS:
        use = _usage(p)
        if use:
            outs[use[2]] = use[0]
    seen = 0
    for p in CONFIGS:
        for key, value in _paths(read_yaml(p)):
            seen += 1
            run, leaf = os.path.split(value.rstrip("/"))
            assert leaf == LAST, f"{p}: {key} = {value} is not a RUN/{LAST} folder (bsr train writes RUN/{LAST})"
            assert run in outs, f"{p}: {key} = {value}: no shipped config trains --out {run}"
            assert outs[run] == PRODUCER[key], f"{p}: {key} = {value} is a {outs[run]} run, needs {PRODUCER[key]}"
    assert seen >= 4  # the two blind configs' init paths at least


def test_path_check_can_fail():
    assert list(_paths({"init": {"cmos_ckpt": "runs/cmos_nyuv2/best"}})) == [("init.cmos_ckpt", "runs/cmos_nyuv2/best")]
    assert os.path.split("runs/cmos_nyuv2/best")[1] != LAST


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_config_validation_reads_no_file(path, monkeypatch):
    """``task.config`` looks only at the dict: opening or probing any file while it runs is a failure."""
    import builtins

    user = read_yaml(path)
    task = get_task(user["task"])

    def refuse(*a, **k):
        raise AssertionError(f"config validation touched the disk: {a[:1]}")

    with monkeypatch.context() as mp:
        for mod, name in ((builtins, "open"), (os.path, "exists"), (os.path, "isfile"), (os.path, "isdir"),
                          (os, "stat"), (os, "listdir")):
            mp.setattr(mod, name, refuse)
        try:
            cfg = task.config(user, where=path)
        except AssertionError as exc:
            err = str(exc)
        else:
            err = None
    assert err is None, err
    assert cfg["task"] == user["task"]


def test_read_yaml_and_overrides_are_library_functions(tmp_path):
    """YAML loading and ``--set`` live in bsrdata.models.engine.config; the scripts import only the library."""
    from bsrdata.errors import BsrError
    from bsrdata.models.engine.config import apply_overrides, load_user_config

    with pytest.raises(BsrError, match=r"nope.yaml: file not found$"):
        read_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train:\n  lr: [1\n")
    with pytest.raises(BsrError, match=r"bad.yaml: not valid YAML \(line \d+\)$"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(BsrError, match="list.yaml: top level must be a mapping of sections"):
        read_yaml(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}
    (tmp_path / "ok.yaml").write_text("train:\n  lr: 1.0e-3\n")
    assert load_user_config(tmp_path / "ok.yaml", ["train.iterations=5", "model.gia={flow: false}"]) == {
        "train": {"lr": 1e-3, "iterations": 5}, "model": {"gia": {"flow": False}}}
    assert load_user_config(None, []) == {}
    with pytest.raises(BsrError, match="--set: expected key=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(BsrError, match="--set: train.lr.x goes through a value"):
        apply_overrides({"train": {"lr": 1}}, ["train.lr.x=2"])
    with pytest.raises(BsrError, match="--set: cannot parse the value of train.lr"):
        apply_overrides({}, ["train.lr=[1"])
    for script in ("learn_cmos.py", "learn_sr.py"):
        with open(os.path.join(ROOT, "scripts", script), encoding="utf-8") as f:
            src = f.read()
        assert "bsrdata.cli.train" not in src and "bsrdata.models.engine.config import" in src, script
