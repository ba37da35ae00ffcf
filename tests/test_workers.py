"""bsr build --workers: the pool is capped (pending shards, CPUs), absurd counts are refused, and workers
die with the main process (SIGKILL of the build leaves no worker rendering)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bsrdata import workers as W
from bsrdata.build import build_dataset
from bsrdata.cli.main import main
from bsrdata.degrade import DegradeConfig
from bsrdata.errors import BsrError
from bsrdata.sources.synthetic import SyntheticSource

CFG = DegradeConfig(renderer="gather")
TINY = ["--train", "2", "--test", "3", "--size", "32x48", "--no-middlebury", "--renderer", "gather", "-q"]


def _shas(root):
    m = json.load(open(os.path.join(root, "manifest.json")))
    return {sh["path"]: sh["sha256"] for s in m["splits"].values() for sh in s["shards"]}


def test_pool_size_and_check():
    assert W.pool_size(1000, 3) == 3
    assert W.pool_size(2, 30) == 2
    assert W.pool_size(4096, 10 ** 6) == W.cpu_cap() == 4 * (os.cpu_count() or 1)
    assert W.pool_size(5, 0) == 0
    assert W.check_workers(4096) == 4096 and W.check_workers("3") == 3
    for bad in (0, -1, 4097, 100000, 2.5, "x", None):
        with pytest.raises(BsrError, match="^--workers: "):
            W.check_workers(bad)
    info = {"requested": 100000, "used": 2, "pending_shards": 2, "cpus": 2}
    assert W.describe(info) == "workers: 100000 requested, using 2 (2 pending shards)"
    assert W.describe(dict(info, requested=2)) is None
    assert "x 2 CPUs; 50 pending shards" in W.describe(dict(info, requested=100, used=8, pending_shards=50))


def test_capped_build_is_byte_identical(tmp_path):
    src = lambda: SyntheticSource(n_train=2, n_test=3, size=(32, 48), seed=3)  # noqa: E731
    one = build_dataset(src(), tmp_path / "one", CFG, seed=9, workers=1, shard_size=3)
    many = build_dataset(src(), tmp_path / "many", CFG, seed=9, workers=1000, shard_size=3)
    pending = many["workers"]["pending_shards"]
    assert pending == one["workers"]["pending_shards"] == many["rendered_shards"] > 0
    assert many["workers"]["requested"] == 1000 and 1 <= many["workers"]["used"] <= pending
    assert len(many["workers_peak_rss_mb"]) <= pending  # no more processes rendered than there were shards
    assert _shas(tmp_path / "one") == _shas(tmp_path / "many")
    m = json.load(open(tmp_path / "many" / "manifest.json"))
    assert "workers" not in m["summary"]  # the manifest does not depend on the worker count
    again = build_dataset(src(), tmp_path / "many", CFG, seed=9, workers=1000, shard_size=3)
    assert again["workers"]["used"] == again["workers"]["pending_shards"] == 0


def test_cli_says_once_how_many_workers(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["build", "demo", "--out", str(tmp_path / "d"), *TINY, "--workers", "1000", "--shard-size", "8"])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("workers:")]
    assert e.value.code == 0 and len(lines) == 1
    assert lines[0].startswith("workers: 1000 requested, using ") and "pending shard" in lines[0]


@pytest.mark.parametrize("n", ["0", "-3", "100000"])
def test_absurd_worker_counts_are_refused(tmp_path, capsys, n):
    out = tmp_path / "d"
    with pytest.raises(SystemExit) as e:
        main(["build", "demo", "--out", str(out), *TINY, "--workers", n])
    err = capsys.readouterr().err
    assert e.value.code == 1 and len(err.strip().splitlines()) == 1 and "--workers: " in err
    assert "Traceback" not in err and not out.exists()


_SLOW_BUILD = """
import os, sys, time
from bsrdata import build
from bsrdata.build import build_dataset
from bsrdata.degrade import DegradeConfig
from bsrdata.sources.synthetic import SyntheticSource

class Slow(SyntheticSource):
    def load(self, key):
        if os.getpid() != PARENT:  # a worker: say who we are, then render slowly
            open(os.path.join(PIDS, str(os.getpid())), "w").close()
            time.sleep(0.2)
        return super().load(key)

PARENT, out, PIDS = os.getpid(), sys.argv[1], sys.argv[2]
build._PDEATHSIG = sys.argv[3] == "1"
build_dataset(Slow(n_train=40, n_test=5, size=(32, 48), seed=3), out, DegradeConfig(renderer="gather"),
              seed=9, workers=2, shard_size=1)
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
@pytest.mark.parametrize("pdeathsig, sig", [("1", signal.SIGKILL), ("0", signal.SIGKILL), ("1", signal.SIGTERM)],
                         ids=["prctl-kill", "getppid-watch-kill", "prctl-term"])
def test_workers_die_with_a_killed_build(tmp_path, pdeathsig, sig):
    pids = tmp_path / "pids"
    pids.mkdir()
    p = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, str(tmp_path / "out"), str(pids), pdeathsig],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while len(os.listdir(pids)) < 2 and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        workers = [int(x) for x in os.listdir(pids)]
        assert len(workers) >= 2, p.stderr.read().decode()[-2000:] if p.poll() is not None else "no workers"
        assert all(_alive(w) for w in workers)
    finally:
        os.kill(p.pid, sig)
        p.wait(timeout=30)
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)  # do not leave them behind if the test fails
    assert not left, f"workers {left} outlived the killed build"
