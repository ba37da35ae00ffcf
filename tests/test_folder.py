import os
import pickle

import numpy as np
import pytest

from bsrdata.errors import BsrError
from bsrdata.sources.folder import FolderSource, read_image, write_png_atomic

try:
    from tests import fakes
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import fakes


def test_split_folders_png_and_npy(tmp_path):
    truth = fakes.make_folder(tmp_path, npy_split="test")
    src = pickle.loads(pickle.dumps(FolderSource(tmp_path)))
    assert src.splits() == {"test": ["testimg00", "testimg01"], "train": ["trainimg00", "trainimg01", "trainimg02"]}
    assert src.num_classes == 5
    for key, t in truth.items():
        rec = src.load(key)
        np.testing.assert_array_equal(rec.rgb, t["rgb"])
        assert rec.depth.dtype == np.float32
        np.testing.assert_allclose(rec.depth, t["depth"], rtol=1e-6)
        assert rec.depth[0, 0] == 0  # invalid stays 0
        np.testing.assert_array_equal(rec.seg, t["seg"])


def test_flat_layout_and_no_labels(tmp_path):
    truth = fakes.make_folder(tmp_path / "x", splits={"only": 2}, labels=False)
    flat = tmp_path / "flat"
    for sub in ("rgb", "depth"):
        os.makedirs(flat / sub)
        for name in os.listdir(tmp_path / "x" / sub / "only"):
            os.rename(tmp_path / "x" / sub / "only" / name, flat / sub / name)
    src = FolderSource(flat, default_split="val")
    assert src.splits() == {"val": ["onlyimg00", "onlyimg01"]}
    assert src.num_classes is None
    rec = src.load("onlyimg01")
    assert rec.seg is None
    np.testing.assert_array_equal(rec.rgb, truth["onlyimg01"]["rgb"])


def test_depth_scale(tmp_path):
    truth = fakes.make_folder(tmp_path, splits={"a": 1}, labels=False)
    rec = FolderSource(tmp_path, depth_png_scale=0.0001).load("aimg00")
    np.testing.assert_allclose(rec.depth, truth["aimg00"]["depth"] / 10, rtol=1e-6)


def test_bad_inputs(tmp_path):
    with pytest.raises(BsrError, match="rgb"):
        FolderSource(tmp_path)
    fakes.make_folder(tmp_path, splits={"a": 2})
    # 8-bit depth PNG
    write_png_atomic(tmp_path / "depth" / "a" / "aimg00.png", np.ones((20, 28), np.uint8))
    with pytest.raises(BsrError, match="aimg00.png.*16-bit"):
        FolderSource(tmp_path).load("aimg00")
    # depth of another size
    write_png_atomic(tmp_path / "depth" / "a" / "aimg00.png", np.ones((20, 27), np.uint16))
    with pytest.raises(BsrError, match="aimg00.png.*differs"):
        FolderSource(tmp_path).load("aimg00")
    # label outside the classes
    lab = np.zeros((20, 28), np.uint8)
    lab[2, 2] = 9
    write_png_atomic(tmp_path / "seg" / "a" / "aimg01.png", lab)
    with pytest.raises(BsrError, match="aimg01.png.*9"):
        FolderSource(tmp_path, num_classes=5).load("aimg01")
    # missing depth
    os.unlink(tmp_path / "depth" / "a" / "aimg01.png")
    with pytest.raises(BsrError, match="aimg01.*missing depth"):
        FolderSource(tmp_path)


def test_all_invalid_depth(tmp_path):
    fakes.make_folder(tmp_path, splits={"a": 1}, labels=False)
    write_png_atomic(tmp_path / "depth" / "a" / "aimg00.png", np.zeros((20, 28), np.uint16))
    with pytest.raises(BsrError, match="no valid depth"):
        FolderSource(tmp_path).load("aimg00")


def test_read_image_kinds(tmp_path):
    write_png_atomic(tmp_path / "c.png", np.zeros((4, 5, 3), np.uint8))
    assert read_image(tmp_path / "c.png", kind="rgb").shape == (4, 5, 3)
    with pytest.raises(BsrError, match="c.png.*16-bit"):
        read_image(tmp_path / "c.png", kind="u16")
    with pytest.raises(BsrError, match="nothere.png.*not found"):
        read_image(tmp_path / "nothere.png")
