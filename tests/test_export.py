import json
import os
import shutil
import stat

import cv2
import numpy as np
import pytest

from bsrdata import open_dataset
from bsrdata.errors import BsrError
from bsrdata.export import blur_from_png, blur_to_png, export_dataset, seg_from_png, seg_to_png
from bsrdata.sources.folder import FolderSource

try:
    from tests import fakes
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import fakes


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from bsrdata.build import build_dataset
    from bsrdata.degrade import DegradeConfig

    base = tmp_path_factory.mktemp("exp")
    fakes.make_folder(base / "src", splits={"train": 5, "val": 5, "test": 10}, h=24, w=32)
    shutil.rmtree(base / "src" / "seg" / "test")  # test unlabelled, like Cityscapes
    src = FolderSource(base / "src", num_classes=5)
    build_dataset(src, base / "ds", DegradeConfig(max_coc=7), seed=3, shard_size=4, with_depth=True)
    return base


def read(path):
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert a is not None, path
    return a[..., ::-1] if a.ndim == 3 else a


def test_value_codecs():
    s = np.array([[0, 0.025, 1.234], [5.0, 14.99, 15.0]], np.float32)
    c = blur_to_png(s, "cmos")
    assert c.dtype == np.uint16 and c.shape == (2, 3, 3) and (c[..., 0] == c[..., 2]).all()
    np.testing.assert_array_equal(c[..., 0], [[0, 0, 12], [50, 150, 150]])
    assert np.abs(blur_from_png(c, "cmos") - s).max() <= 0.05 + 1e-6
    p = blur_to_png(s, "png")
    assert p.shape == (2, 3) and np.abs(blur_from_png(p, "png") - s).max() <= 0.0005 + 1e-6
    seg = np.array([[255, 0, 1], [18, 39, 255]], np.uint8)
    np.testing.assert_array_equal(seg_to_png(seg, "cmos"), [[0, 1, 2], [19, 40, 0]])
    np.testing.assert_array_equal(seg_from_png(seg_to_png(seg, "cmos"), "cmos"), seg)


def test_cmos_layout_round_trip(built, tmp_path):
    out = tmp_path / "cmos"
    summary = export_dataset(built / "ds", out, "cmos")
    assert summary["splits"] == {"train": 5, "val": 5, "test": 10}
    assert summary["groups"] == {str(g): 10 for g in range(1, 6)}
    # a folder source with train / val / test: the Cityscapes layout (splits under their own names)
    assert summary["layout"] == "cityscapes" and summary["folders"] == {"train": "train", "val": "val", "test": "test"}
    top = sorted(os.listdir(out))
    assert top == ["bsr_export.json", "cmos_test_datasets.yml", "test", "train", "val"]
    for split in ("train", "val"):
        assert sorted(os.listdir(out / split)) == ["GT", "LRx4", "blur", "semseg"]
    assert sorted(os.listdir(out / "test")) == ["GT"] + [f"Group{g}" for g in range(1, 6)]  # no semseg: unlabelled
    for split in ("train", "val"):
        view = open_dataset(built / "ds", split)
        names = [f"{k}.png" for k in view.keys]
        for sub in ("GT", "LRx4", "blur", "semseg"):
            assert sorted(os.listdir(out / split / sub)) == sorted(names)
        for i in range(len(view)):
            s = view[i]
            n = f"{s['key']}.png"
            np.testing.assert_array_equal(read(out / split / "GT" / n), s["hr"])
            np.testing.assert_array_equal(read(out / split / "LRx4" / n), s["lr"])
            b = cv2.imread(str(out / split / "blur" / n), cv2.IMREAD_UNCHANGED)
            assert b.dtype == np.uint16 and b.shape == s["hr"].shape
            assert np.abs(b[..., 0] / 10.0 - s["blur"]).max() <= 0.05 + 1e-6
            lab = read(out / split / "semseg" / n)  # three channels, each the class id, 255 void
            assert lab.shape == s["hr"].shape and lab.dtype == np.uint8
            for c in range(3):
                np.testing.assert_array_equal(lab[..., c], s["seg"])
    # groups: LR / blur per group, HR once; sorted order pairs GT with each group's files
    gt = sorted(os.listdir(out / "test" / "GT"))
    for g in range(1, 6):
        view = open_dataset(built / "ds", "test", group=g)
        assert sorted(os.listdir(out / "test" / f"Group{g}" / "LRx4")) == gt
        assert sorted(os.listdir(out / "test" / f"Group{g}" / "blur")) == gt
        n_inv = 0
        for i in range(len(view)):
            s = view[i]
            n = f"{s['key']}.png"
            np.testing.assert_array_equal(read(out / "test" / "GT" / n), s["hr"])
            np.testing.assert_array_equal(read(out / "test" / f"Group{g}" / "LRx4" / n), s["lr"])
            b = read(out / "test" / f"Group{g}" / "blur" / n)[..., 0] / 10.0
            assert np.abs(b - s["blur"]).max() <= 0.05 + 1e-6
            if s["invariant"]:
                n_inv += 1
                assert b.max() == b.min()
        assert n_inv == 10 // 5
    info = json.loads((out / "bsr_export.json").read_text())
    assert info["format"] == "cmos" and info["grouped_split"] == "test"
    assert info["cmos_layout"]["name"] == "cityscapes" and info["cmos_layout"]["chosen_by"] == "splits"


def test_png_format_lossless(built, tmp_path):
    out = tmp_path / "png"
    export_dataset(built / "ds", out, "png")
    assert sorted(os.listdir(out / "train")) == ["blur", "depth", "hr", "lr", "seg"]
    view = open_dataset(built / "ds", "train")
    for i in range(len(view)):
        s = view[i]
        n = f"{s['key']}.png"
        np.testing.assert_array_equal(read(out / "train" / "hr" / n), s["hr"])
        np.testing.assert_array_equal(read(out / "train" / "seg" / n), s["seg"])
        b = read(out / "train" / "blur" / n)
        assert b.ndim == 2 and np.abs(b / 1000.0 - s["blur"]).max() <= 0.0005 + 1e-6
        d = read(out / "train" / "depth" / n)
        assert np.abs(d / 1000.0 - s["depth"]).max() <= 0.0005 + 1e-6
    assert sorted(os.listdir(out / "test" / "group3")) == ["blur", "lr"]


def test_refuses_existing_and_overwrites(built, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(BsrError, match="not empty"):
        export_dataset(built / "ds", out, "cmos")
    assert os.listdir(out) == ["keep.txt"]
    # --overwrite removes only files an earlier export recorded: a folder holding anything else is refused
    with pytest.raises(BsrError, match="no bsr_export.json"):
        export_dataset(built / "ds", out, "cmos", overwrite=True)
    assert os.listdir(out) == ["keep.txt"]
    os.remove(out / "keep.txt")
    export_dataset(built / "ds", out, "png")
    export_dataset(built / "ds", out, "cmos", overwrite=True)
    assert "train" in os.listdir(out) and "hr" not in os.listdir(out / "train")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".o.")]
    info = json.loads((out / "bsr_export.json").read_text())
    on_disk = sorted(os.path.relpath(os.path.join(dp, f), out).replace(os.sep, "/")
                     for dp, _, fs in os.walk(out) for f in fs)
    assert sorted(info["files"] + ["bsr_export.json"]) == on_disk and len(on_disk) > 100
    (out / "train" / "GT" / "notes.txt").write_text("mine")
    (out / "extra.csv").write_text("mine")
    with pytest.raises(BsrError, match=r"did not write \(extra.csv, train/GT/notes.txt\)"):
        export_dataset(built / "ds", out, "png", overwrite=True)
    assert (out / "extra.csv").read_text() == "mine" and (out / "train" / "GT" / "notes.txt").read_text() == "mine"
    assert "GT" in os.listdir(out / "train")  # the earlier export is still in place


@pytest.mark.parametrize("where", ["same", "contains", "inside"])
def test_out_apart_from_dataset(tmp_path_factory, where):
    from bsrdata.build import build_dataset
    from bsrdata.degrade import DegradeConfig
    from bsrdata.verify import verify_dataset

    base = tmp_path_factory.mktemp("apart")
    fakes.make_folder(base / "src", splits={"train": 2, "test": 5}, h=16, w=16)
    ds = base / "top" / "ds"
    build_dataset(FolderSource(base / "src", num_classes=5), ds, DegradeConfig(max_coc=3), seed=1)
    out = {"same": ds, "contains": base / "top", "inside": ds / "exp"}[where]
    os.symlink(out, base / "link")  # the check compares real paths: a link to the folder is the same folder
    for target in (out, base / "link"):
        with pytest.raises(BsrError, match="dataset folder"):
            export_dataset(ds, target, "cmos", overwrite=True)
    assert not verify_dataset(ds)["problems"]
    assert not (ds / "exp").exists()


def test_keys_with_one_file_name_refused(tmp_path):
    from bsrdata.build import build_dataset
    from bsrdata.degrade import DegradeConfig

    fakes.make_folder(tmp_path / "src", splits={"train": 2, "test": 5}, h=16, w=16)
    for sub in ("rgb", "depth", "seg"):
        d = tmp_path / "src" / sub / "train"
        os.rename(d / "trainimg00.png", d / "a b.png")
        os.rename(d / "trainimg01.png", d / "a_b.png")
    build_dataset(FolderSource(tmp_path / "src", num_classes=5), tmp_path / "ds", DegradeConfig(max_coc=3), seed=1)
    assert sorted(open_dataset(tmp_path / "ds", "train").keys) == ["a b", "a_b"]
    with pytest.raises(BsrError, match="'a b' and 'a_b' of train both become the file 'a_b.png'"):
        export_dataset(tmp_path / "ds", tmp_path / "out", "cmos")
    assert not (tmp_path / "out").exists()


def test_bad_inputs(built, tmp_path):
    with pytest.raises(BsrError, match="--format"):
        export_dataset(built / "ds", tmp_path / "x", "jpeg")
    with pytest.raises(BsrError):
        export_dataset(tmp_path / "nothing", tmp_path / "x", "cmos")
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out(built, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(BsrError, match="cannot write"):
            export_dataset(built / "ds", ro / "out", "cmos")
    finally:
        ro.chmod(stat.S_IRWXU)


def test_unwritable_out_path_is_a_file(built, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BsrError, match="cannot write|not a folder"):
        export_dataset(built / "ds", f / "out", "cmos")
    with pytest.raises(BsrError, match="not a folder"):
        export_dataset(built / "ds", f, "cmos")


def test_interrupted_export_leaves_nothing(built, tmp_path, monkeypatch):
    import bsrdata.export as ex

    calls = {"n": 0}
    real = ex._write

    def flaky(path, arr):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        real(path, arr)

    monkeypatch.setattr(ex, "_write", flaky)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(built / "ds", tmp_path / "int", "cmos")
    assert os.listdir(tmp_path) == []
