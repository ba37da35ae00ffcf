"""build_dataset: worker-count independence, resume after a failure or a killed worker, --shard + merge."""

import json
import os

import numpy as np
import pytest

import bsrdata
from bsrdata.build import build_dataset, merge, parse_shard
from bsrdata.degrade import DegradeConfig
from bsrdata.errors import BsrError
from bsrdata.sources.synthetic import SyntheticSource

CFG = DegradeConfig(renderer="gather")


def _src():
    return SyntheticSource(n_train=6, n_test=10, size=(32, 48), seed=3)


def _shas(root):
    m = json.load(open(os.path.join(root, "manifest.json")))
    return {sh["path"]: sh["sha256"] for s in m["splits"].values() for sh in s["shards"]}, m


class FailingSource(SyntheticSource):
    """Raises on one key: an interrupted build."""

    def __init__(self, bad, mode="raise", **kw):
        super().__init__(**kw)
        self.bad, self.mode = bad, mode

    def load(self, key):
        if key == self.bad:
            if self.mode == "exit" and os.getpid() != self.parent:
                os._exit(3)  # a worker killed mid-shard
            raise BsrError(f"{key}: simulated failure")
        return super().load(key)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    s = build_dataset(_src(), root, CFG, seed=9, workers=1, shard_size=3)
    return root, s


def test_whole_build(whole):
    root, s = whole
    shas, m = _shas(root)
    assert s["splits"]["train"]["renderings"] == 6 and s["splits"]["test"]["renderings"] == 10 + 10
    assert len(shas) == 2 + 7 and m["complete"] and s["rendered_shards"] == 9
    assert abs(sum(s["sigma_hist"]["fraction"]) - 1) < 1e-9
    g = bsrdata.open_dataset(root, "test", group=4)
    assert len(g) == 10 and sum(g.invariant) == 2
    assert sum(bsrdata.open_dataset(root, "train").invariant) == 1


def test_two_workers_byte_identical(whole, tmp_path):
    root, _ = whole
    seen = []
    build_dataset(_src(), tmp_path, CFG, seed=9, workers=2, shard_size=3, progress=lambda d, t: seen.append((d, t)))
    a, ma = _shas(root)
    b, mb = _shas(tmp_path)
    assert a == b and ma["groups"] == mb["groups"]
    assert seen[-1] == (26, 26) and all(x[0] <= y[0] for x, y in zip(seen, seen[1:]))


def _assert_no_dataset(root):
    assert not os.path.exists(os.path.join(root, "manifest.json"))
    for dp, _, fs in os.walk(root):
        assert not [f for f in fs if ".tmp" in f], fs


@pytest.mark.parametrize("workers, mode", [(1, "raise"), (2, "exit")])
def test_interrupted_build_resumes(whole, tmp_path, workers, mode):
    bad = "synth-test-0006"
    src = FailingSource(bad, mode, n_train=6, n_test=10, size=(32, 48), seed=3)
    src.parent = os.getpid()
    with pytest.raises(BsrError) as e:
        build_dataset(src, tmp_path, CFG, seed=9, workers=workers, shard_size=3)
    assert ("simulated failure" in str(e.value)) if mode == "raise" else ("worker process died" in str(e.value))
    _assert_no_dataset(tmp_path)
    done = {os.path.relpath(os.path.join(dp, f), tmp_path): os.stat(os.path.join(dp, f)).st_mtime_ns
            for dp, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".h5")}
    assert done  # some shards finished before the failure
    s = build_dataset(_src(), tmp_path, CFG, seed=9, workers=workers, shard_size=3)
    assert s["skipped_shards"] == len(done) and s["rendered_shards"] == 9 - len(done)
    for rel, t in done.items():
        assert os.stat(os.path.join(tmp_path, rel)).st_mtime_ns == t  # never re-rendered
    assert _shas(tmp_path)[0] == _shas(whole[0])[0]


def test_identical_builds_write_identical_manifests(tmp_path):
    """Times, resumed shards and workers go to build-log.jsonl: the manifest depends only on the dataset."""
    a, b = tmp_path / "a", tmp_path / "b"
    build_dataset(_src(), a, CFG, seed=9, shard_size=3, limit=2)
    build_dataset(_src(), b, CFG, seed=9, shard_size=3, limit=2, workers=2)
    first = (a / "manifest.json").read_bytes()
    assert first == (b / "manifest.json").read_bytes()
    s = build_dataset(_src(), a, CFG, seed=9, shard_size=3, limit=2)  # a resume: every shard kept
    assert s["rendered_shards"] == 0 and (a / "manifest.json").read_bytes() == first
    log = [json.loads(x) for x in (a / "build-log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log] == ["build", "build"] and log[1]["skipped_shards"] == s["skipped_shards"]
    assert "seconds" not in json.loads(first)["summary"]


def test_changed_config_rebuilds(whole, tmp_path):
    build_dataset(_src(), tmp_path, CFG, seed=9, shard_size=3, limit=2)
    s = build_dataset(_src(), tmp_path, CFG, seed=10, shard_size=3, limit=2)
    assert s["skipped_shards"] == 0  # another seed: nothing reused


def test_shard_slices_and_merge(whole, tmp_path):
    parts = []
    for k in (1, 2, 3):
        d = tmp_path / f"p{k}"
        build_dataset(_src(), d, CFG, seed=9, shard_size=3, shard=f"{k}/3")
        assert not (d / "manifest.json").exists() and (d / f"manifest-part-{k}-of-3.json").exists()
        parts.append(d)
    with pytest.raises(BsrError, match="part is missing"):
        merge(tmp_path / "m0", parts[:2])
    merge(tmp_path / "m", parts)
    a, ma = _shas(whole[0])
    b, mb = _shas(tmp_path / "m")
    assert a == b and ma["groups"] == mb["groups"] and mb["complete"]
    # the merged summary describes the whole dataset, not part 1
    assert mb["summary"]["splits"] == ma["summary"]["splits"] and mb["summary"]["groups"] == ma["summary"]["groups"]
    assert not set(mb["summary"]) & {"seconds", "rendered_shards", "skipped_shards"}
    with open(tmp_path / "m" / "build-log.jsonl") as fh:
        assert json.loads(fh.read().splitlines()[-1])["event"] == "merge"
    np.testing.assert_allclose(mb["summary"]["sigma_hist"]["fraction"], ma["summary"]["sigma_hist"]["fraction"],
                               atol=1e-3)
    assert len(bsrdata.open_dataset(tmp_path / "m", "test", group=1)) == 10
    # slices built into one shared folder merge in place
    shared = tmp_path / "shared"
    for k in (1, 2):
        build_dataset(_src(), shared, CFG, seed=9, shard_size=3, shard=f"{k}/2")
    merge(shared, [shared])
    assert _shas(shared)[0] == a
    # a part from another build is refused
    other = tmp_path / "other"
    build_dataset(_src(), other, CFG, seed=8, shard_size=3, shard="2/3")
    with pytest.raises(BsrError, match="different build"):
        merge(tmp_path / "m2", [parts[0], other])


def test_bad_arguments(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BsrError, match="--out"):
        build_dataset(_src(), f / "sub", CFG)
    with pytest.raises(BsrError, match="--out"):
        build_dataset(_src(), f, CFG)
    for spec in ("3/2", "0/1", "a/b", "1-2"):
        with pytest.raises(BsrError, match="--shard"):
            parse_shard(spec)
    with pytest.raises(BsrError, match="--workers"):
        build_dataset(_src(), tmp_path / "o", CFG, workers=0)
    recipe = {"name": "x", "version": "1", "expected": {"splits": {"train": 795, "test": 654}}}
    with pytest.raises(BsrError, match="795"):
        build_dataset(_src(), tmp_path / "r", CFG, recipe=recipe)
    assert not list((tmp_path / "r").glob("*/*.h5"))


_FORK_AFTER_THREADS = """
import json, os, sys
import numpy as np
from bsrdata.build import build_dataset
from bsrdata.degrade import DegradeConfig
from bsrdata.render import render_layered
from bsrdata.sources.synthetic import SyntheticSource

rng = np.random.default_rng(0)
img = rng.random((40, 48, 3)).astype(np.float32)
coc = np.repeat(np.linspace(0, 9, 48)[None], 40, axis=0).round(1)
near = np.zeros((40, 48), bool); near[:, 24:] = True
render_layered(img, coc, 9, near=near, threads=2)  # starts numba's OpenMP pool in this process
cfg = DegradeConfig(renderer="layered")
src = lambda: SyntheticSource(n_train=4, n_test=5, size=(32, 48), seed=3)
out1, out2 = sys.argv[1], sys.argv[2]
build_dataset(src(), out1, cfg, seed=9, workers=1, shard_size=3)
build_dataset(src(), out2, cfg, seed=9, workers=2, shard_size=3)  # must not fork this process
def sha(r):
    m = json.load(open(os.path.join(r, "manifest.json")))
    return {s["path"]: s["sha256"] for sp in m["splits"].values() for s in sp["shards"]}
print(int(sha(out1) == sha(out2)))
"""


def test_workers_after_a_threaded_render(tmp_path):
    # a forked child of a process whose GNU OpenMP pool has started aborts if it enters the pool: the
    # workers render with one thread, so a build after a threaded render still works and is byte-identical
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", _FORK_AFTER_THREADS, str(tmp_path / "a"), str(tmp_path / "b")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1] == "1"


def test_leftover_temp_of_killed_process_is_removed(whole, tmp_path):
    # a writer killed mid-shard leaves <shard>.tmp<its pid>; the next build neither counts nor keeps it
    stale = tmp_path / "train" / "train-00000.h5.tmp999999"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a shard")
    s = build_dataset(_src(), tmp_path, CFG, seed=9, shard_size=3)
    assert s["skipped_shards"] == 0 and not stale.exists()
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs if ".tmp" in f]
    assert _shas(tmp_path)[0] == _shas(whole[0])[0]
