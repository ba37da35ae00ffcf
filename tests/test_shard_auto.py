"""``--shard auto``: K/N from a SLURM job array or torchrun's RANK/WORLD_SIZE; a simulated 3-task array,
merged, is byte-identical to a one-machine build."""

import os

import pytest
from cli_run import bsr as _run

from bsrdata.build import parse_shard, shard_from_env
from bsrdata.errors import BsrError

TINY = ["--train", "3", "--test", "5", "--size", "32x48", "--no-middlebury", "--renderer", "gather", "-q",
        "--shard-size", "2"]
_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
         "SLURM_ARRAY_TASK_STEP", "RANK", "WORLD_SIZE")


@pytest.fixture
def clean_env(monkeypatch):
    for v in _VARS:
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


def _slurm(task, count, lo, **extra):
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count), "SLURM_ARRAY_TASK_MIN": str(lo)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_shard_from_env_values():
    assert shard_from_env(_slurm(0, 4, 0)) == (1, 4)
    assert shard_from_env(_slurm(7, 4, 4, SLURM_ARRAY_TASK_MAX=7)) == (4, 4)  # --array=4-7
    assert shard_from_env(_slurm(5, 3, 1, SLURM_ARRAY_TASK_MAX=5, SLURM_ARRAY_TASK_STEP=2)) == (3, 3)  # 1-5:2
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "0"}) == (3, 3)
    assert shard_from_env(dict(_slurm(1, 2, 0), RANK="1", WORLD_SIZE="2")) == (2, 2)  # both, agreeing


@pytest.mark.parametrize("env, msg", [
    ({}, "no SLURM job array .* or torchrun ranks"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN not set"),
    (_slurm(4, 4, 0), "SLURM_ARRAY_TASK_ID=4 is not one of the 4 ids"),
    (_slurm(0, 4, 1), "SLURM_ARRAY_TASK_ID=0 is not one of the 4 ids"),
    (_slurm(3, 3, 1, SLURM_ARRAY_TASK_MAX=7), "not one evenly spaced range"),  # --array=1,3,7
    (_slurm(2, 3, 1, SLURM_ARRAY_TASK_STEP=2), "SLURM_ARRAY_TASK_ID=2 is not one of"),
    (_slurm("x", 3, 1), "SLURM_ARRAY_TASK_ID='x' is not an integer"),
    ({"RANK": "2"}, "torchrun variables incomplete: WORLD_SIZE"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, r"RANK=2 must be in \[0, WORLD_SIZE=2\)"),
    (dict(_slurm(0, 2, 0), RANK="1", WORLD_SIZE="2"), "names two slices"),
])
def test_shard_from_env_errors(env, msg):
    with pytest.raises(BsrError, match="^--shard auto: .*" + msg):
        shard_from_env(env)


def test_parse_shard_auto_reads_the_environment(clean_env):
    with pytest.raises(BsrError, match="--shard auto"):
        parse_shard("auto")
    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "5")
    assert parse_shard("auto") == (2, 5) and parse_shard(" AUTO ") == (2, 5)


def _files(root):
    got = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if f.endswith(".h5") or f == "manifest.json":
                p = os.path.join(dp, f)
                with open(p, "rb") as fh:
                    got[os.path.relpath(p, root)] = fh.read()
    return got


@pytest.mark.parametrize("launcher", ["slurm", "torchrun"])
def test_simulated_array_merges_to_the_one_machine_build(launcher, clean_env, tmp_path, capsys):
    whole = tmp_path / "whole"
    code, _, err = _run(["build", "demo", "--out", str(whole), *TINY], capsys)
    assert code == 0, err
    n = 3
    parts = []
    for task in range(n):  # what each array task / node runs, told apart only by its environment
        if launcher == "slurm":  # sbatch --array=10-12
            env = _slurm(10 + task, n, 10, SLURM_ARRAY_TASK_MAX=10 + n - 1, SLURM_ARRAY_TASK_STEP=1)
        else:
            env = {"RANK": str(task), "WORLD_SIZE": str(n)}
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            part = tmp_path / f"part{task}"
            code, _, err = _run(["build", "demo", "--out", str(part), *TINY, "--shard", "auto"], capsys)
        assert code == 0, err
        assert (part / f"manifest-part-{task + 1}-of-{n}.json").exists() and not (part / "manifest.json").exists()
        parts.append(str(part))
    code, out, err = _run(["merge", str(tmp_path / "merged"), *parts], capsys)
    assert code == 0, err
    a, b = _files(whole), _files(tmp_path / "merged")
    assert sorted(a) == sorted(b) and len(a) > n + 1
    assert a == b  # every shard and the manifest, byte for byte


def test_cli_shard_auto_without_environment(clean_env, tmp_path, capsys):
    code, out, err = _run(["build", "demo", "--out", str(tmp_path / "o"), *TINY, "--shard", "auto"], capsys)
    assert code == 1 and err.startswith("bsr: error: --shard auto: no SLURM") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_slurm_example_script():
    import subprocess

    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "slurm", "build_array.sbatch")
    text = open(path).read()
    assert "--shard auto" in text and "bsr merge" in text and "#SBATCH --array=" in text
    assert subprocess.run(["bash", "-n", path]).returncode == 0
