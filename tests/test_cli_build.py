"""CLI: bsr build demo|folder, verify, preview, merge; bad input gives one line, exit 1, nothing complete."""

import os

import numpy as np
import pytest
from cli_run import bsr as run
from PIL import Image

from bsrdata.build import build_dataset
from bsrdata.degrade import DegradeConfig
from bsrdata.errors import BsrError
from bsrdata.sources.base import Record
from bsrdata.verify import verify_dataset

TINY = ["--train", "3", "--test", "5", "--size", "32x48", "--no-middlebury", "--renderer", "gather", "-q"]


def _nothing_complete(root):
    assert not os.path.exists(os.path.join(root, "manifest.json"))
    for dp, _, fs in os.walk(root):
        assert not [f for f in fs if ".tmp" in f]
    assert verify_dataset(root)["problems"]


def test_demo_verify_preview(tmp_path, capsys):
    d = str(tmp_path / "demo")
    code, out, err = run(["build", "demo", "--out", d, *TINY], capsys)
    assert code == 0, err
    assert "group 5: 5 members, 1 invariant" in out and "σ histogram" in out
    code, out, err = run(["verify", d, "--full", "-q"], capsys)
    assert code == 0 and "OK" in out
    code, out, err = run(["verify", d], capsys)  # the bar appears with its total: no empty 0-item bar first
    assert code == 0 and "verify: 0shard" not in err and " 0/2 " in err
    png = str(tmp_path / "panel.png")
    code, out, err = run(["preview", d, "--group", "3", "--n", "2", "--out", png], capsys)
    assert code == 0 and Image.open(png).size[0] > 200
    # corrupt it: verify fails with exit 1 and names the file
    m = os.path.join(d, "test", "test-00000.h5")
    with open(m, "r+b") as f:
        f.seek(os.path.getsize(m) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    code, out, err = run(["verify", d, "--full", "-q"], capsys)
    assert code == 1 and "test-00000.h5" in err and "sha256" in err


def test_shard_merge_cli(tmp_path, capsys):
    d = str(tmp_path / "parts")
    for k in (1, 2):
        code, _, err = run(["build", "demo", "--out", d, *TINY, "--shard", f"{k}/2", "--shard-size", "3"], capsys)
        assert code == 0, err
    code, out, err = run(["verify", d, "-q"], capsys)
    assert code == 1  # parts are not a dataset
    code, out, err = run(["merge", str(tmp_path / "m"), d], capsys)
    assert code == 0, err
    code, out, err = run(["verify", str(tmp_path / "m"), "--full", "-q"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("extra, msg", [
    (["--max-coc", "20"], "max_coc: 20 is even"),
    (["--max-coc", "1"], "max_coc: 1 is too small"),
    (["--shard", "5/2"], "--shard"),
    (["--size", "big"], "--size"),
    (["--noise", "-2"], "noise"),
])
def test_bad_options_one_line(tmp_path, capsys, extra, msg):
    d = str(tmp_path / "o")
    code, out, err = run(["build", "demo", "--out", d, *TINY, *extra], capsys)
    assert code == 1
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("bsr: error:") and msg in lines[0]
    assert not os.path.exists(os.path.join(d, "manifest.json"))


def test_unwritable_out(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    code, out, err = run(["build", "demo", "--out", str(f / "sub"), *TINY], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--out" in err


def _folder(root, depth_b=None, rgb_b=None):
    for sub in ("rgb/test", "depth/test"):
        os.makedirs(root / sub, exist_ok=True)
    r = np.random.default_rng(0)
    Image.fromarray((r.random((32, 48, 3)) * 255).astype(np.uint8)).save(root / "rgb/test/a.png")
    np.save(root / "depth/test/a.npy", (1 + r.random((32, 48))).astype(np.float32))
    Image.fromarray(rgb_b if rgb_b is not None else (r.random((32, 48, 3)) * 255).astype(np.uint8)).save(
        root / "rgb/test/b.png")
    np.save(root / "depth/test/b.npy", depth_b if depth_b is not None else np.full((32, 48), 2.0, np.float32))


@pytest.mark.parametrize("kind, msg", [("size", "differs from the image"), ("nodepth", "no valid depth")])
def test_folder_bad_input(tmp_path, capsys, kind, msg):
    src = tmp_path / "src"
    if kind == "size":
        _folder(src, depth_b=np.ones((30, 48), np.float32))
    else:
        _folder(src, depth_b=np.zeros((32, 48), np.float32))
    out = tmp_path / "out"
    code, _, err = run(["build", "folder", "--root", str(src), "--out", str(out), "-q", "--renderer", "gather"], capsys)
    assert code == 1 and msg in err and "b.npy" in err and len(err.strip().splitlines()) == 1
    _nothing_complete(out)
    assert not list(out.rglob("*.h5"))
    # with one image per shard, the good first shard may exist, but the dataset is not complete
    code, _, err = run(["build", "folder", "--root", str(src), "--out", str(out), "-q", "--renderer", "gather",
                        "--shard-size", "1", "--workers", "2"], capsys)
    assert code == 1
    _nothing_complete(out)


class _GreySource:
    name, num_classes = "grey", None

    def splits(self):
        return {"test": ["ok", "grey"]}

    def load(self, key):
        rgb = np.full((16, 16, 3), 100, np.uint8)
        return Record(key, rgb if key == "ok" else rgb[..., 0], np.ones((16, 16), np.float32), None)


def test_non_rgb_image_stops_build(tmp_path):
    with pytest.raises(BsrError, match="grey: image must be RGB"):
        build_dataset(_GreySource(), tmp_path, DegradeConfig(renderer="gather"))
    _nothing_complete(tmp_path)
    assert not list(tmp_path.rglob("*.h5"))


def test_rejected_rebuild_keeps_the_manifest(tmp_path, capsys):
    d = str(tmp_path / "demo")
    code, _, err = run(["build", "demo", "--out", d, *TINY], capsys)
    assert code == 0, err
    mpath = os.path.join(d, "manifest.json")
    with open(mpath, "rb") as f:
        before = f.read()
    for bad, opt in ((["--limit", "0"], "--limit"), (["--shard-size", "-1"], "--shard-size"),
                     (["--shard-size", "0"], "--shard-size"), (["--workers", "0"], "--workers")):
        code, _, err = run(["build", "demo", "--out", d, *TINY, *bad], capsys)
        assert code == 1 and err.startswith(f"bsr: error: {opt}") and len(err.strip().splitlines()) == 1, err
        with open(mpath, "rb") as f:
            assert f.read() == before, bad
    from bsrdata.sources.folder import FolderSource

    try:
        from tests import fakes
    except ImportError:
        import fakes
    fakes.make_folder(tmp_path / "src", splits={"train": 2, "test": 5}, h=16, w=16)
    src = FolderSource(tmp_path / "src", num_classes=5)
    for kw in ({"limit": 0}, {"shard_size": -1}, {"shard_size": 2.5}, {"seed": "x"}, {"n_groups": 0},
               {"shard": "3/2"}):
        with pytest.raises(BsrError, match="--limit|--shard-size|--seed|n_groups|--shard"):
            build_dataset(src, d, DegradeConfig(max_coc=3), **kw)
        with open(mpath, "rb") as f:
            assert f.read() == before, kw
    assert not verify_dataset(d)["problems"]
