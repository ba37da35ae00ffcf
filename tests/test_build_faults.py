"""A build that cannot write (disk full, quota, file-size limit) ends with one line and leaves nothing
that looks built; the first run says it is compiling instead of showing a wild ETA; no empty bar first."""

import os
import resource
import signal
import subprocess
import sys

import fakes
import pytest

from bsrdata.cli.main import main


def _no_space(limit):
    def pre():
        # writes past `limit` bytes fail with EFBIG, as they fail with ENOSPC on a full disk (the signal
        # that would kill the process instead is ignored, as a full disk sends none)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("full") / "src"
    fakes.make_folder(root, splits={"train": 4, "test": 5}, h=48, w=64)
    # one unlimited build first, so the renderer's kernels for these frames are in numba's cache and the
    # limited runs below fail at the shard write, not at numba's cache write (that case is one line too)
    r = subprocess.run(_cmd(root, tmp_path_factory.mktemp("warm") / "o", 1), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return root


def _cmd(src, out, workers):
    return [sys.executable, "-m", "bsrdata.cli.main", "build", "folder", "--root", str(src), "--out", str(out),
            "--num-classes", "5", "--shard-size", "2", "--workers", str(workers), "-q"]


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_is_one_line_and_leaves_nothing(src, tmp_path, workers):
    out = tmp_path / "out"
    r = subprocess.run(_cmd(src, out, workers), capture_output=True, text=True, preexec_fn=_no_space(12000),
                       timeout=900)
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower() or "Traceback" in ln]
    assert len(errors) == 1 and errors[0].startswith("bsr: error: ") and "cannot write (File too large)" in errors[0], \
        r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    left = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
    assert not any(".tmp" in f or f.endswith("manifest.json") or f.endswith(".h5") for f in left), left
    # with room again the same command builds the dataset
    ok = subprocess.run(_cmd(src, out, workers), capture_output=True, text=True, timeout=900)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (out / "manifest.json").is_file()


def test_first_run_says_compiling_before_the_bar(src, tmp_path, capsys, monkeypatch):
    import bsrdata.render.kernel_cache as kc

    monkeypatch.setattr(kc, "cache_is_warm", lambda: False)
    with pytest.raises(SystemExit) as e:
        main(["build", "folder", "--root", str(src), "--out", str(tmp_path / "o"), "--num-classes", "5"])
    assert e.value.code in (0, None)
    err = capsys.readouterr().err
    assert err.startswith("bsr build: compiling the renderer (first run"), err[:300]
    assert "build: 0img" not in err and "| 0/0 [" not in err  # no empty bar drawn before the real one
    monkeypatch.setattr(kc, "cache_is_warm", lambda: True)
    with pytest.raises(SystemExit):
        main(["build", "folder", "--root", str(src), "--out", str(tmp_path / "p"), "--num-classes", "5"])
    assert "compiling" not in capsys.readouterr().err
