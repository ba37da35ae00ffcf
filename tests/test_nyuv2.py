import pickle

import h5py
import numpy as np
import pytest
import scipy.io

from bsrdata.errors import BsrError
from bsrdata.sources.nyuv2 import NYUv2Source

try:
    from tests import fakes
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import fakes


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    return fakes.make_nyuv2(tmp_path_factory.mktemp("nyu"))


def src(f, **kw):
    return NYUv2Source(f["mat"], f["splits"], f["class_map"], **kw)


def expected_seg(f, i):
    raw = f["labels"][i - 1].astype(np.int64)
    out = np.full(raw.shape, 255, np.uint8)
    m = raw > 0
    out[m] = f["map_class"][raw[m] - 1].astype(np.int64) - 1
    return out


def test_fake_looks_like_matlab73(nyu):
    with open(nyu["mat"], "rb") as fh:
        assert fh.read(19) == b"MATLAB 7.3 MAT-file"
    assert h5py.is_hdf5(nyu["mat"])
    with h5py.File(nyu["mat"], "r") as f:
        assert f["images"].shape == (10, 3, 32, 24)  # MATLAB order reversed by h5py
        assert f["depths"].shape == (10, 32, 24)
    with open(nyu["splits"], "rb") as fh:
        assert fh.read(10) == b"MATLAB 5.0"


def test_splits_keys_one_based(nyu):
    s = src(nyu).splits()
    assert s["train"] == [f"nyuv2-{i:04d}" for i in nyu["train"]]
    assert s["test"] == [f"nyuv2-{i:04d}" for i in (1, 3, 6, 8)]
    assert src(nyu).num_classes == 40


@pytest.mark.parametrize("i", [1, 4, 10])
def test_frames_exact(nyu, i):
    rec = src(nyu, border_px=0).load(f"nyuv2-{i:04d}")
    assert rec.key == f"nyuv2-{i:04d}"
    assert rec.rgb.shape == (24, 32, 3) and rec.rgb.dtype == np.uint8
    np.testing.assert_array_equal(rec.rgb, nyu["images"][i - 1])
    assert rec.depth.dtype == np.float32
    np.testing.assert_array_equal(rec.depth, nyu["depths"][i - 1])
    assert rec.seg.dtype == np.uint8
    np.testing.assert_array_equal(rec.seg, expected_seg(nyu, i))
    assert set(np.unique(rec.seg)) <= set(range(40)) | {255}


def test_labels_independent_formula(nyu):
    # label k -> ((7k + 3) mod 40) + 1 -> minus 1; 0 -> 255 (spelled out, not via the class map array)
    rec = src(nyu, border_px=0).load("nyuv2-0002")
    raw = nyu["labels"][1].astype(np.int64)
    want = np.where(raw == 0, 255, (7 * raw + 3) % 40)
    np.testing.assert_array_equal(rec.seg, want)


def test_border_rule(nyu):
    rec = src(nyu, border_px=3).load("nyuv2-0005")
    ref = src(nyu, border_px=0).load("nyuv2-0005")
    band = np.ones((24, 32), bool)
    band[3:-3, 3:-3] = False
    assert (rec.seg[band] == 255).all() and (rec.depth[band] == 0).all()
    np.testing.assert_array_equal(rec.seg[~band], ref.seg[~band])
    np.testing.assert_array_equal(rec.depth[~band], ref.depth[~band])
    np.testing.assert_array_equal(rec.rgb, ref.rgb)


def test_pickles_and_reads_after(nyu):
    s = src(nyu, border_px=0)
    s.load("nyuv2-0001")  # opens the handle
    s2 = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(s2.load("nyuv2-0003").rgb, nyu["images"][2])
    s.close()


def test_mat_without_userblock_also_reads(tmp_path):
    f = fakes.make_nyuv2(tmp_path, n=4, train=[1, 2], test=[3, 4], userblock=False)
    np.testing.assert_array_equal(src(f, border_px=0).load("nyuv2-0004").rgb, f["images"][3])


def test_unknown_key(nyu):
    with pytest.raises(BsrError, match="nyuv2-0011"):
        src(nyu).load("nyuv2-0011")


# ---------------------------------------------------------------------------------------- bad input

def one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_file(nyu, tmp_path):
    with pytest.raises(BsrError) as e:
        NYUv2Source(tmp_path / "nope.mat", nyu["splits"], nyu["class_map"])
    assert "nope.mat" in one_line(e) and "not found" in one_line(e)
    with pytest.raises(BsrError) as e:
        NYUv2Source(nyu["mat"], tmp_path / "nosplits.mat", nyu["class_map"])
    assert "nosplits.mat" in one_line(e)


def test_v5_mat_where_v73_expected(nyu, tmp_path):
    p = tmp_path / "v5.mat"
    scipy.io.savemat(p, {"images": np.zeros((2, 2))})
    with pytest.raises(BsrError) as e:
        NYUv2Source(p, nyu["splits"], nyu["class_map"])
    assert "v5.mat" in one_line(e) and "v5" in one_line(e) and "7.3" in one_line(e)


def test_missing_variable(tmp_path):
    images, depths, labels = fakes.nyu_frames(3, 8, 10)
    p = fakes.write_nyu_mat(tmp_path / "m.mat", images, depths, labels, omit=("labels",))
    fakes.write_splits_mat(tmp_path / "s.mat", [1], [2])
    fakes.write_class_map(tmp_path / "c.mat")
    with pytest.raises(BsrError) as e:
        NYUv2Source(p, tmp_path / "s.mat", tmp_path / "c.mat")
    assert "m.mat" in one_line(e) and "labels" in one_line(e)


def test_frames_of_unequal_size(tmp_path):
    images, depths, labels = fakes.nyu_frames(3, 8, 10)
    p = fakes.write_nyu_mat(tmp_path / "m.mat", images, depths[:, :, :9], labels)
    fakes.write_splits_mat(tmp_path / "s.mat", [1], [2])
    fakes.write_class_map(tmp_path / "c.mat")
    with pytest.raises(BsrError) as e:
        NYUv2Source(p, tmp_path / "s.mat", tmp_path / "c.mat")
    assert "m.mat" in one_line(e) and "depths" in one_line(e)


@pytest.mark.parametrize("train,test,bad", [([1, 2, 11], [3], "11"), ([0, 2], [3], "0"), ([1, 2], [2], "both")])
def test_split_indices_out_of_range(nyu, tmp_path, train, test, bad):
    p = fakes.write_splits_mat(tmp_path / "splits_bad.mat", train, test)
    with pytest.raises(BsrError) as e:
        NYUv2Source(nyu["mat"], p, nyu["class_map"])
    assert "splits_bad.mat" in one_line(e) and bad in one_line(e)


def test_split_missing_variable(nyu, tmp_path):
    p = tmp_path / "sp.mat"
    scipy.io.savemat(p, {"trainNdxs": np.array([[1.0]])})
    with pytest.raises(BsrError, match="sp.mat.*testNdxs"):
        NYUv2Source(nyu["mat"], p, nyu["class_map"])


@pytest.mark.parametrize("mc,what", [(np.ones(40), "40 entries"), (np.full(894, 41.0), "1..40")])
def test_class_map_wrong(nyu, tmp_path, mc, what):
    p = fakes.write_class_map(tmp_path / "cm_bad.mat", mc)
    with pytest.raises(BsrError) as e:
        NYUv2Source(nyu["mat"], nyu["splits"], p)
    assert "cm_bad.mat" in one_line(e) and what in one_line(e)


def test_garbage_splits_file(nyu, tmp_path):
    p = tmp_path / "junk.mat"
    p.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(BsrError, match="junk.mat"):
        NYUv2Source(nyu["mat"], p, nyu["class_map"])


def test_label_out_of_table(tmp_path):
    images, depths, labels = fakes.nyu_frames(2, 8, 10)
    labels[1, 2, 3] = 900
    p = fakes.write_nyu_mat(tmp_path / "m.mat", images, depths, labels)
    fakes.write_splits_mat(tmp_path / "s.mat", [1], [2])
    fakes.write_class_map(tmp_path / "c.mat")
    s = NYUv2Source(p, tmp_path / "s.mat", tmp_path / "c.mat", border_px=0)
    s.load("nyuv2-0001")
    with pytest.raises(BsrError, match="m.mat.*900"):
        s.load("nyuv2-0002")
