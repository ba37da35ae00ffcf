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
    assert cm.miou("present") == pytest.approx((0.5 + 2 / 3 + 1 / 3) / 3, abs=1e-12)
    # the default is the CMOS test code's: class 3 (absent from GT and prediction) counts 0 in the mean of 4
    assert cm.miou() == cm.miou("public") == pytest.approx((0.5 + 2 / 3 + 1 / 3 + 0) / 4, abs=1e-12)


def test_miou_definitions_hand_made_case():
    """5 classes; GT has classes 0 and 1, the prediction also says 2 somewhere; 3 and 4 never occur."""
    gt = np.array([[0, 0, 0, 1], [1, 1, 255, 1]])
    pred = np.array([[0, 0, 1, 1], [1, 2, 3, 1]])  # the 3 sits on a void pixel: ignored, class 3 stays absent
    cm = metrics.ConfusionMatrix(5).update(pred, gt)
    # valid (gt, pred) pairs: (0,0) (0,0) (0,1) (1,1) (1,1) (1,2) (1,1)
    # class 0: tp 2, fp 0, fn 1 -> 2/3; class 1: tp 3, fp 1 (a GT 0), fn 1 (predicted 2) -> 3/5;
    # class 2: tp 0, fp 1 -> 0 (present in the prediction, so it counts 0 in both definitions)
    present = (2 / 3 + 3 / 5 + 0) / 3  # = 19/45 = 0.4222...
    public = (2 / 3 + 3 / 5 + 0 + 0 + 0) / 5  # = 19/75 = 0.2533...: classes 3 and 4 count 0
    assert cm.miou("present") == pytest.approx(present, abs=1e-15)
    assert cm.miou("public") == pytest.approx(public, abs=1e-15)
    assert cm.miou() == cm.miou("public")
    # the public test code's loop, written out: IoU_k = tp / max(tp + fp + fn, 1e-8) over valid pixels
    valid = gt != 255
    jac = [np.sum((gt == k) & (pred == k) & valid)
           / max(np.sum((gt == k) & (pred == k) & valid) + np.sum((gt != k) & (pred == k) & valid)
                 + np.sum((gt == k) & (pred != k) & valid), 1e-8) for k in range(5)]
    assert cm.miou("public") == pytest.approx(float(np.mean(jac)), abs=1e-15)
    # an empty matrix: 0 for public (the mean of zeros), NaN for present
    assert metrics.ConfusionMatrix(3).miou("public") == 0.0
    assert math.isnan(metrics.ConfusionMatrix(3).miou("present"))
    with pytest.raises(BsrError, match="miou: expected one of public, present"):
        cm.miou("all")


@pytest.mark.parametrize("kernel_size", [21, 61])
def test_blur_normalisation_as_cmos_test_code(kernel_size):
    """Blur PSNR/SSIM equal the CMOS test code's formula: both maps / ((kernel_size - 1) / 4) in float32,
    PSNR = 20 log10(1 / sqrt(MSE)), SSIM of the maps x 255 with cv2.filter2D (11x11 Gaussian 1.5, valid
    region [5:-5, 5:-5]) and C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2. σ_max of a dataset built with that
    max_coc is the divisor."""
    import cv2

    from bsrdata.degrade import DegradeConfig

    smax = DegradeConfig(max_coc=kernel_size).sigma_max
    assert smax == (kernel_size - 1) / 4
    rng = np.random.default_rng(kernel_size)
    gt = np.round(rng.uniform(0, smax, (48, 64)) * 10).astype(np.float32) / np.float32(10)  # 0.1 px steps
    pred = (gt + rng.normal(0, smax / 8, gt.shape) - 0.2).astype(np.float32)  # leaves [0, σ_max]
    assert pred.min() < 0 and pred.max() > smax
    d = np.float32((kernel_size - 1) / 4.0)
    p32, g32 = pred / d, gt / d
    mse = np.mean((p32.astype(np.float64) - g32.astype(np.float64)) ** 2)
    ref_psnr = 20 * math.log10(1.0 / math.sqrt(mse))
    a, b = p32.astype(np.float64) * 255.0, g32.astype(np.float64) * 255.0
    k = cv2.getGaussianKernel(11, 1.5)
    win = np.outer(k, k.transpose())

    def filt(x):
        return cv2.filter2D(x, -1, win)[5:-5, 5:-5]

    mu1, mu2 = filt(a), filt(b)
    s11, s22, s12 = filt(a * a) - mu1 ** 2, filt(b * b) - mu2 ** 2, filt(a * b) - mu1 * mu2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ref_ssim = float(np.mean(((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))))
    # ours divides in float64: the float32 division of the public code moves PSNR by < 1e-5 dB
    assert metrics.blur_psnr(pred, gt, smax) == pytest.approx(ref_psnr, abs=1e-5)
    assert metrics.blur_ssim(pred, gt, smax) == pytest.approx(ref_ssim, abs=1e-6)
    # a wrong divisor would show: max_coc instead of σ_max moves PSNR by 20 log10(max_coc / σ_max)
    assert abs(metrics.blur_psnr(pred, gt, kernel_size) - ref_psnr) > 10


def test_conventions_records():
    conv = metrics.eval_conventions(sigma_max=5.0, miou="public", num_classes=40)
    assert conv["blur"]["sigma_max"] == 5.0 and conv["blur"]["prediction_clipped"] is False
    assert conv["miou"]["definition"] == "public" and "counts 0" in conv["miou"]["text"]
    assert metrics.convention_tags(conv) == {"blur_norm": "sigma/5", "miou_def": "public"}
    note = metrics.conventions_note(conv)
    assert note.startswith("Conventions: blur maps ÷ σ_max = 5") and "all 40 classes" in note
    sr = metrics.sr_conventions()
    assert sr["sr"]["channel"] == "Y" and sr["sr"]["crop_border"] == 0
    assert metrics.convention_tags(sr) == {"sr_metric": "Y", "crop_border": "0"}
    assert "present" in metrics.conventions_note(metrics.eval_conventions(miou="present"))
    with pytest.raises(BsrError, match="miou"):
        metrics.eval_conventions(miou="x")


def test_confusion_matrix_bad_labels():
    cm = metrics.ConfusionMatrix(3)
    with pytest.raises(BsrError):
        cm.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(BsrError):
        cm.update(np.array([0, 1]), np.array([0, 7]))
    cm.update(np.array([0, 9]), np.array([0, 255]))  # ignored pixel: its prediction is not checked
    assert cm.matrix.sum() == 1
