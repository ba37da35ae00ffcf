import json
import os
import pickle

import numpy as np
import pytest

from bsrdata import stereo
from bsrdata.errors import BsrError
from bsrdata.sources.cityscapes import CityscapesSource
from bsrdata.sources.folder import write_png_atomic

try:
    from tests import fakes
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import fakes

# label id -> train id, spelled out from the Cityscapes label table (independent of cityscapesscripts)
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
             26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs")
    truth = fakes.make_cityscapes(root)
    return root, truth


def test_splits_and_keys(city):
    root, truth = city
    s = CityscapesSource(root).splits()
    assert list(s) == ["train", "val", "test"]
    for split in s:
        assert s[split] == sorted(k for k, t in truth.items() if t["split"] == split)
    assert all(len(k.split("_")) == 3 for k in truth)
    assert CityscapesSource(root, splits=("val",)).splits() == {"val": s["val"]}


def test_provided_depth_exact_where_measured(city):
    root, truth = city
    src = CityscapesSource(root)
    for key, t in truth.items():
        rec = src.load(key)
        np.testing.assert_array_equal(rec.rgb, t["rgb"])
        assert rec.depth.dtype == np.float32 and rec.depth.shape == t["rgb"].shape[:2]
        v = t["valid"]
        want = t["baseline"] * t["fx"] / t["disp"]  # per-image camera
        np.testing.assert_allclose(rec.depth[v], want[v], rtol=1e-5)
        assert np.isfinite(rec.depth).all() and (rec.depth > 0).all()
        # holes: filled from measured neighbours, so within the frame's measured range
        assert rec.depth[~v].min() >= want[v].min() * 0.999 and rec.depth[~v].max() <= want[v].max() * 1.001


def test_labels_train_ids(city):
    root, truth = city
    src = CityscapesSource(root)
    for key, t in truth.items():
        rec = src.load(key)
        if t["split"] == "test":
            assert rec.seg is None
            continue
        want = np.vectorize(lambda i: TRAIN_IDS.get(int(i), 255))(t["ids"]).astype(np.uint8)
        np.testing.assert_array_equal(rec.seg, want)
    assert src.num_classes == 19


def test_sgbm_mode(city):
    root, truth = city
    src = CityscapesSource(root, disparity="sgbm", max_disp=16)
    key = sorted(truth)[0]
    t = truth[key]
    rec = src.load(key)
    # the right image is the left shifted by 6 px: median depth is baseline*fx/6
    assert abs(np.median(rec.depth[:, 10:]) - t["baseline"] * t["fx"] / 6) / (t["baseline"] * t["fx"] / 6) < 0.1


def test_cache_mode(city, tmp_path):
    root, truth = city
    key = [k for k, t in truth.items() if t["split"] == "val"][0]
    t = truth[key]
    d = np.full(t["rgb"].shape[:2], 12.5)
    stereo.write_disparity_png(stereo.cache_disparity_path(tmp_path, "val", key), d)
    src = CityscapesSource(root, disparity=f"cache:{tmp_path}", splits=("val",))
    rec = src.load(key)
    np.testing.assert_allclose(rec.depth, t["baseline"] * t["fx"] / 12.5, rtol=1e-5)
    other = [k for k, t in truth.items() if t["split"] == "val"][1]
    with pytest.raises(BsrError, match=f"{other}_disparity.png"):
        src.load(other)


def test_pickles(city):
    root, truth = city
    src = pickle.loads(pickle.dumps(CityscapesSource(root)))
    key = sorted(truth)[1]
    np.testing.assert_array_equal(src.load(key).rgb, truth[key]["rgb"])


def test_depth_clamp(tmp_path):
    truth = fakes.make_cityscapes(tmp_path, counts={"val": 1})
    key, t = next(iter(truth.items()))
    d = np.full(t["rgb"].shape[:2], 0.25)  # far below 1 px
    stereo.write_disparity_png(t["paths"]["disparity"], d)
    rec = CityscapesSource(tmp_path, splits=("val",)).load(key)
    np.testing.assert_allclose(rec.depth, t["baseline"] * t["fx"] / 1.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------- bad input

@pytest.fixture()
def one(tmp_path):
    truth = fakes.make_cityscapes(tmp_path, counts={"val": 1})
    key, t = next(iter(truth.items()))
    return tmp_path, key, t


def load_err(root, key, **kw):
    with pytest.raises(BsrError) as e:
        CityscapesSource(root, splits=("val",), **kw).load(key)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_camera_without_baseline(one):
    root, key, t = one
    cam = fakes.camera_json(0.2, 2000.0)
    del cam["extrinsic"]["baseline"]
    with open(t["paths"]["camera"], "w") as fh:
        json.dump(cam, fh)
    msg = load_err(root, key)
    assert "_camera.json" in msg and "baseline" in msg


def test_camera_without_fx(one):
    root, key, t = one
    cam = fakes.camera_json(0.2, 2000.0)
    del cam["intrinsic"]["fx"]
    with open(t["paths"]["camera"], "w") as fh:
        json.dump(cam, fh)
    msg = load_err(root, key)
    assert "_camera.json" in msg and "fx" in msg


def test_disparity_without_valid_pixel(one):
    root, key, t = one
    write_png_atomic(t["paths"]["disparity"], np.zeros(t["rgb"].shape[:2], np.uint16))
    msg = load_err(root, key)
    assert "_disparity.png" in msg and "no valid pixel" in msg


def test_label_id_outside_table(one):
    root, key, t = one
    ids = t["ids"].copy()
    ids[3, 4] = 77
    write_png_atomic(t["paths"]["gtFine"], ids)
    msg = load_err(root, key)
    assert "_gtFine_labelIds.png" in msg and "77" in msg


def test_corrupt_png(one):
    root, key, t = one
    data = open(t["paths"]["leftImg8bit"], "rb").read()
    with open(t["paths"]["leftImg8bit"], "wb") as fh:
        fh.write(data[: len(data) // 3])
    msg = load_err(root, key)
    assert "_leftImg8bit.png" in msg


def test_frames_of_unequal_size(one):
    root, key, t = one
    d = np.where(t["valid"], t["disp"], 0)[:, :-4]
    write_png_atomic(t["paths"]["disparity"], stereo.encode_cityscapes_disparity(d))
    msg = load_err(root, key)
    assert "_disparity.png" in msg and "differs" in msg
    write_png_atomic(t["paths"]["rightImg8bit"], t["right"][:-2])
    msg = load_err(root, key, disparity="sgbm")
    assert "_rightImg8bit.png" in msg and "differs" in msg


def test_label_of_unequal_size(one):
    root, key, t = one
    write_png_atomic(t["paths"]["gtFine"], t["ids"][:-1])
    assert "differs" in load_err(root, key)


def test_missing_files_and_options(one, tmp_path):
    root, key, t = one
    os.unlink(t["paths"]["camera"])
    msg = load_err(root, key)
    assert "_camera.json" in msg and "not found" in msg
    with pytest.raises(BsrError, match="train"):
        CityscapesSource(root, splits=("train",))
    with pytest.raises(BsrError, match="--disparity"):
        CityscapesSource(root, disparity="crestereo", splits=("val",))
    with pytest.raises(BsrError, match="cache"):
        CityscapesSource(root, disparity=f"cache:{tmp_path}/nothere", splits=("val",))
    with pytest.raises(BsrError, match="not found"):
        CityscapesSource(tmp_path / "nothere")
