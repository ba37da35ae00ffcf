"""One writer per output folder (bsrdata.lock): held across processes, released by the kernel when its
holder dies, shared only by the slices of one build plan, and taken by every command that writes a folder
(build, merge, export, bench --out, train --out, depth)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import fakes
import pytest

from bsrdata.errors import BsrError
from bsrdata.lock import LOCK_NAME, folder_lock, lock_path


def _holder(folder, command="build", share=None, beside=False):
    """A process that takes the lock of ``folder`` and waits; returns it once it holds the lock."""
    code = textwrap.dedent(f"""
        import sys, time
        from bsrdata.lock import folder_lock
        with folder_lock({str(folder)!r}, {command!r}, share={share!r}, beside={beside!r}):
            print("held", flush=True)
            time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "held", line
    return p


def _stop(p, sig=signal.SIGTERM):
    p.send_signal(sig)
    p.wait(timeout=30)


def test_second_writer_is_refused_with_the_owner_named(tmp_path):
    out = tmp_path / "ds"
    p = _holder(out, "build")
    try:
        with pytest.raises(BsrError) as e:
            with folder_lock(out, "merge"):
                pass
        msg = str(e.value)
        assert "\n" not in msg
        assert f"{out}: in use by another bsr process (build, pid {p.pid} on " in msg
    finally:
        _stop(p)
    with folder_lock(out, "merge"):  # released when its holder ends
        assert json.loads((out / LOCK_NAME).read_text())["command"] == "merge"
    assert not (out / LOCK_NAME).exists()  # a released lock leaves no file


def test_lock_of_a_killed_holder_is_stale_and_taken_over(tmp_path):
    out = tmp_path / "ds"
    p = _holder(out, "build")
    _stop(p, signal.SIGKILL)  # no cleanup ran: the file is still there, naming a dead pid
    assert (out / LOCK_NAME).exists()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == p.pid
    with folder_lock(out, "build"):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_same_process_cannot_take_it_twice(tmp_path):
    with folder_lock(tmp_path, "bench"):
        with pytest.raises(BsrError, match="in use by another bsr process"):
            with folder_lock(tmp_path, "bench"):
                pass


def test_slices_of_one_plan_share_a_folder_and_nothing_else_does(tmp_path):
    out = tmp_path / "ds"
    p = _holder(out, "build --shard 1/2", share=("planA", "1/2"))
    try:
        with folder_lock(out, "build --shard 2/2", share=("planA", "2/2")):
            pass  # the other slice of the same plan
        with pytest.raises(BsrError, match="build --shard 1/2"):
            with folder_lock(out, "build --shard 1/2", share=("planA", "1/2")):
                pass  # the same slice twice
        with pytest.raises(BsrError, match="in use"):
            with folder_lock(out, "build --shard 2/2", share=("planB", "2/2")):
                pass  # a slice of another plan (other seed / config)
        with pytest.raises(BsrError, match=r"\(build --shard 1/2, pid"):
            with folder_lock(out, "build"):
                pass  # an exclusive writer while a slice runs
    finally:
        _stop(p)
    with folder_lock(out, "build"):
        pass
    assert not any(n.startswith(LOCK_NAME) for n in os.listdir(out))


def test_shared_holder_is_refused_while_exclusive_held(tmp_path):
    p = _holder(tmp_path, "merge")
    try:
        with pytest.raises(BsrError, match=r"\(merge, pid"):
            with folder_lock(tmp_path, "build --shard 1/2", share=("p", "1/2")):
                pass
    finally:
        _stop(p)


def test_lock_beside_a_folder_that_is_swapped_in(tmp_path):
    out = tmp_path / "export"
    assert lock_path(out, beside=True) == str(tmp_path / f".export{LOCK_NAME}")
    with folder_lock(out, "export", beside=True):
        assert os.path.exists(lock_path(out, beside=True))
        assert not out.exists()  # the folder itself is not created
    assert not os.path.exists(lock_path(out, beside=True))


def test_a_folder_the_lock_created_and_nobody_used_is_removed(tmp_path):
    with folder_lock(tmp_path / "new", "train"):
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()
    with folder_lock(tmp_path / "used", "train"):
        (tmp_path / "used" / "x").write_text("kept")
    assert (tmp_path / "used" / "x").read_text() == "kept"


# ----------------------------------------------------------------------------- every writer takes it


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from bsrdata.build import build_dataset
    from bsrdata.degrade import DegradeConfig
    from bsrdata.sources.folder import FolderSource

    base = tmp_path_factory.mktemp("lockds")
    fakes.make_folder(base / "src", splits={"train": 2, "test": 5}, h=20, w=28)
    build_dataset(FolderSource(base / "src", num_classes=5), base / "ds", DegradeConfig(max_coc=5), seed=1,
                  shard_size=4)
    return base


def _listing(out):
    if not os.path.isdir(out):
        return None
    return sorted((n, os.path.getsize(os.path.join(out, n))) for n in os.listdir(out) if not n.startswith(LOCK_NAME))


def _refused(out, fn, *, beside=False, command="build"):
    before = _listing(out)
    p = _holder(out, command, beside=beside)
    try:
        with pytest.raises(BsrError, match="in use by another bsr process"):
            fn()
        assert _listing(out) == (None if beside else before or [])  # nothing touched
    finally:
        _stop(p)


def test_build_into_a_locked_folder_touches_nothing(dataset, tmp_path):
    from bsrdata.build import build_dataset
    from bsrdata.degrade import DegradeConfig
    from bsrdata.sources.folder import FolderSource

    out = tmp_path / "ds"
    shutil.copytree(dataset / "ds", out)
    before = (out / "manifest.json").read_bytes()
    src = FolderSource(dataset / "src", num_classes=5)
    _refused(out, lambda: build_dataset(src, out, DegradeConfig(max_coc=5), seed=2, shard_size=4))
    assert (out / "manifest.json").read_bytes() == before  # the running build's dataset is intact


def test_merge_export_bench_refuse_a_locked_target(dataset, tmp_path):
    from bsrdata import benchmark as bm
    from bsrdata.build import merge
    from bsrdata.export import export_dataset

    _refused(tmp_path / "m", lambda: merge(tmp_path / "m", [dataset / "ds"]))
    _refused(tmp_path / "x", lambda: export_dataset(dataset / "ds", tmp_path / "x", "png"), beside=True,
             command="export")
    data = bm.BenchData(dataset / "ds", "1-5")
    _refused(tmp_path / "b", lambda: bm.run_bench(data, [bm.get_method("bicubic")], tmp_path / "b"),
             command="bench")


def test_cli_says_one_line_for_a_locked_out(dataset, tmp_path):
    out = tmp_path / "ds"
    p = _holder(out, "build")
    try:
        r = subprocess.run([sys.executable, "-m", "bsrdata.cli.main", "build", "folder", "--root", str(dataset / "src"),
                            "--out", str(out), "--num-classes", "5", "-q"], capture_output=True, text=True)
    finally:
        _stop(p)
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bsr: error: {out}: in use by another bsr process (build, pid")
    assert "Traceback" not in r.stderr
