import json

import numpy as np
import pytest

from bsrdata import stereo
from bsrdata.errors import BsrError

try:
    from tests import fakes
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import fakes


@pytest.fixture(scope="module")
def moto():
    from skimage import data

    left, right, gt = data.stereo_motorcycle()
    return left, right, gt


def test_decode_known_values():
    png = np.array([[0, 1, 257], [513, 65535, 129]], np.uint16)
    d, v = stereo.decode_cityscapes_disparity(png)
    np.testing.assert_array_equal(v, [[False, True, True], [True, True, True]])
    np.testing.assert_allclose(d, [[0, 0, 1.0], [2.0, 65534 / 256, 0.5]])
    assert d.dtype == np.float32


def test_encode_decode_round_trip():
    rng = np.random.default_rng(1)
    d = rng.uniform(0.01, 200, (17, 23))
    d[0, :5] = [0, -3, np.nan, np.inf, 0.001]
    p = stereo.encode_cityscapes_disparity(d)
    assert p.dtype == np.uint16
    assert (p[0, :4] == 0).all() and p[0, 4] == 1  # 0.001 rounds to 0 -> p = 1 (valid, d = 0)
    back, valid = stereo.decode_cityscapes_disparity(p)
    ok = np.isfinite(d) & (d > 0)
    np.testing.assert_array_equal(valid[1:], ok[1:])
    assert np.abs(back[1:] - d[1:]).max() <= 0.5 / 256 + 1e-6


def test_decode_rejects_8bit():
    with pytest.raises(BsrError):
        stereo.decode_cityscapes_disparity(np.zeros((3, 3), np.uint8))


def test_fill_keeps_measured_and_leaves_no_hole(moto):
    _l, _r, gt = moto
    valid = np.isfinite(gt)
    out = stereo.fill_disparity_holes(np.where(valid, gt, 0), valid)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out[valid], gt[valid])


def test_fill_middlebury_punched_holes(moto):
    _l, _r, gt = moto
    known = np.isfinite(gt)
    rng = np.random.default_rng(0)
    holes = np.zeros_like(known)
    for _ in range(40):
        y, x = rng.integers(0, gt.shape[0] - 15), rng.integers(0, gt.shape[1] - 25)
        holes[y:y + 15, x:x + 25] = True
    v = known & ~holes
    out = stereo.fill_disparity_holes(np.where(v, gt, 0), v)
    m = holes & known
    err = np.abs(out[m] - gt[m])
    base = np.abs(gt[v].mean() - gt[m])  # filling with the mean disparity
    assert np.median(err) < 0.5
    assert np.mean(err < 2.0) > 0.8
    assert np.median(err) < 0.05 * np.median(base)


def test_fill_favours_background():
    # near surface (d = 30) on the left, far (d = 10) on the right, a wide hole between them:
    d = np.zeros((20, 60), np.float32)
    d[:, :20] = 30
    d[:, 40:] = 10
    v = d > 0
    out = stereo.fill_disparity_holes(d, v)
    assert np.allclose(out[:, 24:37], 10)  # the hole's inside takes the far side
    # a hole touching the border takes its only neighbour
    d2 = np.zeros((5, 12), np.float32)
    d2[:, 6:] = 7
    np.testing.assert_allclose(stereo.fill_disparity_holes(d2, d2 > 0), 7)


def test_fill_rows_without_measurement():
    d = np.full((12, 9), 5.0, np.float32)
    d[6:, :] = 8.0
    v = np.ones(d.shape, bool)
    v[3:5, :] = False  # two empty rows
    out = stereo.fill_disparity_holes(np.where(v, d, 0), v)
    assert np.isfinite(out).all()
    assert np.all((out[3:5] >= 5) & (out[3:5] <= 8))


def test_fill_no_valid_pixel():
    with pytest.raises(BsrError, match="no valid pixel"):
        stereo.fill_disparity_holes(np.zeros((4, 4)), np.zeros((4, 4), bool))


def test_sgbm_on_middlebury(moto):
    left, right, gt = moto
    disp, valid = stereo.sgbm_disparity(left, right, max_disp=128)
    assert disp.shape == gt.shape and disp.dtype == np.float32
    assert valid.mean() > 0.6
    ok = valid & np.isfinite(gt)
    err = np.abs(disp[ok] - gt[ok])
    assert np.mean(err < 2.0) > 0.85
    assert (disp[~valid] == 0).all()


def test_sgbm_on_shifted_texture():
    rng = np.random.default_rng(3)
    img = fakes.textured(rng, 60, 140)
    left, right = img[:, :120].copy(), img[:, 9:129].copy()  # right[c] = left[c + 9]
    disp, valid = stereo.sgbm_disparity(left, right, max_disp=32)
    assert abs(np.median(disp[valid][disp[valid] > 0]) - 9) < 0.5


def test_sgbm_unequal_size():
    a = np.zeros((10, 20, 3), np.uint8)
    with pytest.raises(BsrError, match="differ"):
        stereo.sgbm_disparity(a, np.zeros((10, 22, 3), np.uint8))


def test_disparity_to_depth_formula_and_clamp():
    d = np.array([[1.0, 4.0, 0.5, 0.0], [np.nan, -1.0, 100.0, 2.0]], np.float32)
    z = stereo.disparity_to_depth(d, 0.2, 2000.0, min_disp=1.0)
    want = np.array([[400.0, 100.0, 400.0, 400.0], [0, 0, 4.0, 200.0]])
    np.testing.assert_allclose(z, want, rtol=1e-6)
    z2 = stereo.disparity_to_depth(d, 0.2, 2000.0, min_disp=1.0, valid=np.array([[1, 0, 1, 1], [1, 1, 1, 1]], bool))
    assert z2[0, 1] == 0
    with pytest.raises(BsrError):
        stereo.disparity_to_depth(d, 0.0, 2000.0)


def test_camera_json(tmp_path):
    p = tmp_path / "cam.json"
    p.write_text(json.dumps(fakes.camera_json(0.209313, 2262.52)))
    assert stereo.read_camera_json(p) == (0.209313, 2262.52)
    for doc, what in (({"extrinsic": {}, "intrinsic": {"fx": 2000}}, "extrinsic.baseline"),
                      ({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fy": 1}}, "intrinsic.fx"),
                      ({"extrinsic": {"baseline": -0.2}, "intrinsic": {"fx": 1}}, "positive")):
        p.write_text(json.dumps(doc))
        with pytest.raises(BsrError) as e:
            stereo.read_camera_json(p)
        assert "cam.json" in str(e.value) and what in str(e.value)
    p.write_text("{not json")
    with pytest.raises(BsrError, match="cam.json"):
        stereo.read_camera_json(p)
    with pytest.raises(BsrError, match="missing.json"):
        stereo.read_camera_json(tmp_path / "missing.json")


def test_disparity_cache_layout_and_read(tmp_path):
    d = np.linspace(0.5, 90, 6 * 8).reshape(6, 8)
    d[0, 0] = 0
    key = "aachen_000001_000019"
    path = stereo.cache_disparity_path(tmp_path, "train", key)
    assert path == str(tmp_path / "train" / "aachen" / f"{key}_disparity.png")
    stereo.write_disparity_png(path, d)
    back, valid = stereo.read_disparity_cache(tmp_path, "train", key)
    assert not valid[0, 0] and valid.sum() == 47
    assert np.abs(back[valid] - d[valid]).max() <= 0.5 / 256 + 1e-6
    assert list((tmp_path / "train" / "aachen").iterdir()) == [tmp_path / "train" / "aachen" / f"{key}_disparity.png"]


def test_corrupt_disparity_png(tmp_path):
    good = tmp_path / "good.png"
    stereo.write_disparity_png(good, np.full((30, 40), 3.0))
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BsrError, match="trunc.png"):
        stereo.read_disparity_png(tmp_path / "trunc.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(BsrError, match="junk.png"):
        stereo.read_disparity_png(tmp_path / "junk.png")


def test_sgbm_narrow_image_clamps_search_range():
    """An image narrower than max_disp must not crash inside OpenCV."""
    import numpy as np

    from bsrdata.stereo import sgbm_disparity

    rng = np.random.default_rng(0)
    left = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    right = np.roll(left, -4, axis=1)
    disp, valid = sgbm_disparity(left, right, max_disp=192)
    assert disp.shape == (64, 128) and valid.shape == (64, 128)
