"""bsrdata.metrics against independent implementations (scikit-image, OpenCV, hand computations)."""

import math

import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import structural_similarity

from bsrdata import metrics
from bsrdata.errors import BsrError


def _pair(seed=0, h=37, w=45):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # a correlated distortion so SSIM is neither ~0 nor ~1
    noise = rng.normal(0, 18, (h, w, 3))
    sr = np.clip(hr.astype(np.float64) * 0.9 + 12 + noise, 0, 255).round().astype(np.uint8)
    return sr, hr


def _skimage_ssim_valid(a, b, peak):
    """scikit-image's Gaussian SSIM map (reflect-padded), averaged only where the window fits (valid)."""
    _, smap = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=peak, full=True
    )
    # skimage's Gaussian has truncate 3.5 -> radius int(3.5*1.5+0.5) = 5, an 11-tap window: the pixels
    # at least 5 from the border see no padding, so their values are exactly the valid-filtered map.
    return float(smap[5:-5, 5:-5].mean())


def test_y_channel_matches_skimage():
    sr, _ = _pair()
    np.testing.assert_allclose(metrics.rgb_to_y(sr), rgb2ycbcr(sr)[..., 0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_y_hand_computed(crop):
    sr, hr = _pair(1)
    y_sr = rgb2ycbcr(sr)[..., 0]
    y_hr = rgb2ycbcr(hr)[..., 0]
    if crop:
        y_sr, y_hr = y_sr[crop:-crop, crop:-crop], y_hr[crop:-crop, crop:-crop]
    total = 0.0
    for a, b in zip(y_sr.ravel().tolist(), y_hr.ravel().tolist()):
        total += (a - b) ** 2
    mse = total / y_sr.size
    expected = 10 * math.log10(255.0**2 / mse)
    assert abs(metrics.psnr_y(sr, hr, crop_border=crop) - expected) < 1e-4


@pytest.mark.parametrize("crop", [0, 4])
def test_ssim_y_matches_skimage(crop):
    sr, hr = _pair(2)
    y_sr = rgb2ycbcr(sr)[..., 0]
    y_hr = rgb2ycbcr(hr)[..., 0]
    if crop:
        y_sr, y_hr = y_sr[crop:-crop, crop:-crop], y_hr[crop:-crop, crop:-crop]
    expected = _skimage_ssim_valid(y_sr, y_hr, 255)
    got = metrics.ssim_y(sr, hr, crop_border=crop)
    assert 0.2 < got < 0.99
    assert abs(got - expected) < 1e-5


def test_ssim_matches_opencv_basicsr_style():
    cv2 = pytest.importorskip("cv2")
    sr, hr = _pair(3)
    a = rgb2ycbcr(sr)[..., 0]
    b = rgb2ycbcr(hr)[..., 0]
    k = cv2.getGaussianKernel(11, 1.5)
    win = np.outer(k, k.T)
    f = lambda x: cv2.filter2D(x, -1, win)[5:-5, 5:-5]  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = f(a), f(b)
    s11, s22, s12 = f(a * a) - mu1**2, f(b * b) - mu2**2, f(a * b) - mu1 * mu2
    smap = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    assert abs(metrics.ssim_y(sr, hr) - smap.mean()) < 1e-5


def test_identical_images():
    _, hr = _pair(4)
    assert metrics.psnr_y(hr, hr) == math.inf
    assert metrics.ssim_y(hr, hr) == pytest.approx(1.0, abs=1e-12)


def test_to_uint8_rounds_and_clips():
    x = np.array([-0.1, 0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 1.0, 1.7])
    assert metrics.to_uint8(x).tolist() == [0, 0, 1, 1, 2, 255, 255]


def test_bad_inputs():
    sr, hr = _pair(5)
    with pytest.raises(BsrError):
        metrics.psnr_y(sr, hr[:-1])
    with pytest.raises(BsrError):
        metrics.psnr_y(sr.astype(np.float32), hr)
    with pytest.raises(BsrError):
        metrics.ssim_y(sr, hr, crop_border=20)
    with pytest.raises(BsrError):
        metrics.crop_border(sr, -1)


def test_blur_metrics_against_references():
    rng = np.random.default_rng(6)
    gt = rng.uniform(0, 5, (40, 52))
    pred = gt + rng.normal(0, 0.6, gt.shape) + 0.3  # can leave [0, 5]: must not be clipped
    assert pred.max() > 5
    smax = 5.0
    mse = np.mean((pred / smax - gt / smax) ** 2)
    assert abs(metrics.blur_psnr(pred, gt, smax) - 10 * math.log10(1 / mse)) < 1e-4
    clipped = np.clip(pred, 0, smax)
    mse_c = np.mean((clipped / smax - gt / smax) ** 2)
    assert abs(metrics.blur_psnr(pred, gt, smax) - 10 * math.log10(1 / mse_c)) > 1e-3
    expected = _skimage_ssim_valid(pred / smax, gt / smax, 1.0)
    assert abs(metrics.blur_ssim(pred[None], gt[None], smax) - expected) < 1e-5


def test_confusion_matrix_hand_computed():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1], [0, 1, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1], [0, 1, 1, 0]])
    cm = metrics.ConfusionMatrix(4)
    cm.update(pred[:2], gt[:2]).update(pred[2:], gt[2:])
    # rows = gt, cols = pred, 255 ignored
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 2
    expected[0, 1] = 1
    expected[1, 1] = 4
    expected[2, 2] = 1
    expected[2, 0] = 1
    expected[2, 1] = 1
    np.testing.assert_array_equal(cm.matrix, expected)
    # IoU: class0 2/(3+3-2)=0.5; class1 4/(4+6-4)=2/3; class2 1/(3+1-1)=1/3; class3 absent -> NaN
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [0.5, 2 / 3, 1 / 3], atol=1e-12)
    assert np.isnan(iou[3])
    assert cm.miou() == pytest.approx((0.5 + 2 / 3 + 1 / 3) / 3, abs=1e-12)


def test_confusion_matrix_bad_labels():
    cm = metrics.ConfusionMatrix(3)
    with pytest.raises(BsrError):
        cm.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(BsrError):
        cm.update(np.array([0, 1]), np.array([0, 7]))
    cm.update(np.array([0, 9]), np.array([0, 255]))  # ignored pixel: its prediction is not checked
    assert cm.matrix.sum() == 1
