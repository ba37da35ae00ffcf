"""Image-quality metrics of the benchmark (numpy only; docs/sr.md "Metrics").

SR images (``psnr_y``, ``ssim_y``)
    Inputs are uint8 RGB arrays (H, W, 3). They are converted to the luma channel
    ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with R, G, B in [0, 1] (float64, *not* rounded, so Y lies
    in [16, 235]). PSNR uses peak 255; SSIM uses an 11×11 Gaussian window (σ = 1.5), "valid" filtering
    (no padding: the SSIM map is (H-10, W-10)), C1 = (0.01·255)², C2 = (0.03·255)², and returns the mean of
    the map. ``crop_border`` removes that many pixels on every side first (BasicSR/MANet crop ``scale``; the
    CMOS test code crops none). A float SR output in [0, 1] is turned into uint8 with :func:`to_uint8`.

Blur maps (``blur_psnr``, ``blur_ssim``)
    Both maps (σ in HR pixels, float, any shape that squeezes to (H, W)) are divided by ``sigma_max``; the
    prediction is **not** clipped. PSNR with peak 1, SSIM as above with C1 = 0.01², C2 = 0.03².

Segmentation (``ConfusionMatrix``)
    One confusion matrix over the whole set, label 255 ignored; IoU per class and their mean. Two
    definitions of the mean (:data:`MIOU_DEFINITIONS`, docs/cmos.md "Evaluation conventions"):
    ``"public"`` (the default, as the CMOS test code computes the paper's numbers): the mean over **all**
    classes, a class absent from both ground truth and prediction counting 0 (IoU = tp / max(tp + fp + fn,
    1e-8)); ``"present"``: the mean over the classes that occur in the ground truth or the prediction.

Conventions (:func:`eval_conventions`, :func:`sr_conventions`)
    Every results file of ``bsr eval`` and ``bsr bench`` records the conventions it was scored with: a
    JSON-able dict (the ``.json`` / ``.jsonl`` files), short tags (extra ``.csv`` columns) and one line of
    text under the Markdown table (:func:`conventions_note`).
"""

from __future__ import annotations

import math

import numpy as np

from bsrdata.errors import BsrError

__all__ = [
    "to_uint8",
    "rgb_to_y",
    "crop_border",
    "psnr",
    "ssim",
    "psnr_y",
    "ssim_y",
    "blur_psnr",
    "blur_ssim",
    "ConfusionMatrix",
    "IGNORE_INDEX",
    "MIOU_DEFINITIONS",
    "DEFAULT_MIOU",
    "check_miou",
    "eval_conventions",
    "sr_conventions",
    "convention_tags",
    "conventions_note",
]

IGNORE_INDEX = 255
#: mIoU definitions: "public" = the CMOS test code (mean over all classes, absent ones count 0);
#: "present" = mean over the classes present in ground truth or prediction
MIOU_DEFINITIONS = ("public", "present")
DEFAULT_MIOU = "public"
_MIOU_TEXT = {
    "public": "mean IoU over all {n} classes, one confusion matrix per group, 255 ignored; a class absent from "
              "both ground truth and prediction counts 0 (IoU = tp / max(tp + fp + fn, 1e-8), the CMOS test code)",
    "present": "mean IoU over the classes present in the ground truth or the prediction (of {n}), one confusion "
               "matrix per group, 255 ignored; absent classes are left out",
}
_WIN = 11
_WIN_SIGMA = 1.5


def to_uint8(img) -> np.ndarray:
    """Float image in [0, 1] (any shape) -> uint8: ``floor(x·255 + 0.5)`` clipped to [0, 255] (MATLAB im2uint8).

    The one rounding rule of the toolkit: the degradation's LR (``bsrdata.degrade`` re-exports it) and every
    SR output scored by the benchmark."""
    x = np.asarray(img, dtype=np.float64)
    return np.clip(np.floor(x * 255.0 + 0.5), 0, 255).astype(np.uint8)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float64 luma (H, W) in [16, 235] (ITU-R BT.601, not rounded)."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise BsrError(f"image: expected an RGB array (H, W, 3), got shape {img.shape}")
    if img.dtype != np.uint8:
        raise BsrError(f"image: expected uint8 RGB, got {img.dtype} (use metrics.to_uint8 for [0, 1] floats)")
    x = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def crop_border(img: np.ndarray, n: int) -> np.ndarray:
    """Remove ``n`` pixels from each side of the first two axes (``n = 0`` returns ``img``)."""
    n = int(n)
    if n < 0:
        raise BsrError(f"--crop-border: must be >= 0, got {n}")
    if n == 0:
        return img
    if img.shape[0] <= 2 * n or img.shape[1] <= 2 * n:
        raise BsrError(f"--crop-border: {n} px leaves nothing of a {img.shape[0]}x{img.shape[1]} image")
    return img[n:-n, n:-n]


def _gauss_1d() -> np.ndarray:
    r = (_WIN - 1) // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(t * t) / (2.0 * _WIN_SIGMA * _WIN_SIGMA))
    return g / g.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a float64 (H, W) array with the 1-D kernel ``w`` on both axes."""
    k = len(w)
    h, wd = x.shape
    rows = np.zeros((h - k + 1, wd), dtype=np.float64)
    for i in range(k):
        rows += w[i] * x[i : i + h - k + 1]
    out = np.zeros((h - k + 1, wd - k + 1), dtype=np.float64)
    for j in range(k):
        out += w[j] * rows[:, j : j + wd - k + 1]
    return out


def _check_pair(a: np.ndarray, b: np.ndarray, what: str):
    if a.shape != b.shape:
        raise BsrError(f"{what}: shapes differ, {a.shape} vs {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """PSNR in dB of two float arrays of equal shape; ``inf`` when identical."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    _check_pair(a, b, "psnr")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def ssim(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """Mean SSIM of two float (H, W) arrays: 11×11 Gaussian (σ 1.5), valid filtering, K1 0.01, K2 0.03."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    _check_pair(a, b, "ssim")
    if a.ndim != 2:
        raise BsrError(f"ssim: expected 2-D arrays, got shape {a.shape}")
    if a.shape[0] < _WIN or a.shape[1] < _WIN:
        raise BsrError(f"ssim: image {a.shape[0]}x{a.shape[1]} is smaller than the {_WIN}x{_WIN} window")
    c1 = (0.01 * peak) ** 2
    c2 = (0.03 * peak) ** 2
    w = _gauss_1d()
    mu_a = _filter_valid(a, w)
    mu_b = _filter_valid(b, w)
    s_aa = _filter_valid(a * a, w) - mu_a * mu_a
    s_bb = _filter_valid(b * b, w) - mu_b * mu_b
    s_ab = _filter_valid(a * b, w) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * s_ab + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (s_aa + s_bb + c2)
    return float(np.mean(num / den))


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """PSNR (dB, peak 255) on the Y channel of two uint8 RGB images (H, W, 3)."""
    _check_pair(np.asarray(sr), np.asarray(hr), "psnr_y")
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    return psnr(_crop(ys, crop_border), _crop(yh, crop_border), 255.0)


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """SSIM (mean of the valid map) on the Y channel of two uint8 RGB images (H, W, 3)."""
    _check_pair(np.asarray(sr), np.asarray(hr), "ssim_y")
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    return ssim(_crop(ys, crop_border), _crop(yh, crop_border), 255.0)


_crop = crop_border


def _blur_pair(pred, gt, sigma_max):
    if not sigma_max or sigma_max <= 0:
        raise BsrError(f"sigma_max: must be > 0, got {sigma_max}")
    p = np.squeeze(np.asarray(pred, dtype=np.float64))
    g = np.squeeze(np.asarray(gt, dtype=np.float64))
    _check_pair(p, g, "blur map")
    return p / sigma_max, g / sigma_max


def blur_psnr(pred: np.ndarray, gt: np.ndarray, sigma_max: float) -> float:
    """Blur-map PSNR (dB): both σ maps ÷ ``sigma_max``, peak 1, prediction not clipped."""
    p, g = _blur_pair(pred, gt, sigma_max)
    return psnr(p, g, 1.0)


def blur_ssim(pred: np.ndarray, gt: np.ndarray, sigma_max: float) -> float:
    """Blur-map SSIM: both σ maps (H, W) ÷ ``sigma_max``, peak 1, prediction not clipped."""
    p, g = _blur_pair(pred, gt, sigma_max)
    return ssim(p, g, 1.0)


class ConfusionMatrix:
    """Accumulates one confusion matrix over a whole set (rows = ground truth, columns = prediction).

    ``update(pred, gt)`` takes integer arrays of equal shape; ground-truth pixels equal to 255 are ignored.
    Other labels must lie in ``[0, num_classes)``; a prediction outside that range is an error.
    """

    def __init__(self, num_classes: int):
        if int(num_classes) < 1:
            raise BsrError(f"num_classes: must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, gt) -> "ConfusionMatrix":
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        _check_pair(pred, gt, "confusion matrix")
        keep = gt != IGNORE_INDEX
        p = pred[keep].astype(np.int64)
        g = gt[keep].astype(np.int64)
        c = self.num_classes
        if g.size:
            if g.min() < 0 or g.max() >= c:
                raise BsrError(f"segmentation: ground-truth label {int(g.max())} outside 0..{c - 1} (and 255)")
            if p.min() < 0 or p.max() >= c:
                bad = int(p.min()) if p.min() < 0 else int(p.max())
                raise BsrError(f"segmentation: predicted label {bad} outside 0..{c - 1}")
            self.matrix += np.bincount(g * c + p, minlength=c * c).reshape(c, c)
        return self

    def iou(self) -> np.ndarray:
        """Per-class IoU, float64 (C,); NaN for a class absent from both ground truth and prediction."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) - tp
        out = np.full(self.num_classes, np.nan)
        np.divide(tp, union, out=out, where=union > 0)
        return out

    def miou(self, definition: str = DEFAULT_MIOU) -> float:
        """Mean IoU (fraction in [0, 1]) by ``definition`` (:data:`MIOU_DEFINITIONS`).

        ``"public"``: the mean over all ``num_classes``; a class that never occurs in the ground truth nor
        in the predictions counts 0, as in the CMOS test code (tp / max(tp + fp + fn, 1e-8)). An empty
        matrix gives 0.
        ``"present"``: such a class has an undefined IoU and is left out of the mean (NaN when no class
        occurs). On a full test set where every class occurs both give the same number. With either, a
        class that occurs but is never predicted correctly counts 0.
        """
        check_miou(definition, "miou")
        iou = self.iou()
        if definition == "public":
            return float(np.mean(np.nan_to_num(iou, nan=0.0)))
        if np.all(np.isnan(iou)):
            return math.nan
        return float(np.nanmean(iou))

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else math.nan


# ------------------------------------------------------------------------------------------ conventions
def check_miou(definition, option: str = "--miou") -> str:
    """``definition`` if it is one of :data:`MIOU_DEFINITIONS`, else BsrError naming ``option``."""
    if definition not in MIOU_DEFINITIONS:
        raise BsrError(f"{option}: expected one of {', '.join(MIOU_DEFINITIONS)}, got {definition!r}")
    return definition


_SSIM_TEXT = "11x11 Gaussian window (sigma 1.5), valid filtering, C1 = (0.01 L)^2, C2 = (0.03 L)^2, mean of the map"


def eval_conventions(*, sigma_max=None, miou=None, num_classes=None) -> dict:
    """The conventions of a CMOS evaluation (blur maps and / or segmentation) as a JSON-able dict.

    ``sigma_max``: σ_max of the dataset (blur maps scored, else None); ``miou``: the mIoU definition
    (segmentation scored, else None); ``num_classes`` the class count of the mean."""
    out = {}
    if sigma_max is not None:
        out["blur"] = {"normalise": "sigma / sigma_max (both maps, sigma in HR px)", "sigma_max": float(sigma_max),
                       "prediction_clipped": False, "psnr_peak": 1.0, "ssim": _SSIM_TEXT + " with L = 1",
                       "average": "mean over a group's images; Avg = mean of the groups"}
    if miou is not None:
        check_miou(miou, "miou")
        out["miou"] = {"definition": miou, "num_classes": num_classes, "percent": True,
                       "text": _MIOU_TEXT[miou].format(n=num_classes if num_classes is not None else "C"),
                       "average": "Avg = mean of the groups"}
    return out


def sr_conventions(crop_border: int = 0) -> dict:
    """The conventions of SR scores (PSNR/SSIM on Y) as a JSON-able dict."""
    return {"sr": {"channel": "Y", "y": "16 + 65.481 R + 128.553 G + 24.966 B, R, G, B = uint8 / 255, float64, "
                                        "not rounded",
                   "quantise": "SR output clipped to [0, 1], floor(x*255 + 0.5) to uint8 (the CMOS test code rounds "
                               "float32 x*255 half to even: other values at exact ties only, < 1e-6 dB)",
                   "psnr_peak": 255.0,
                   "ssim": _SSIM_TEXT + " with L = 255", "crop_border": int(crop_border),
                   "average": "mean over a group's images; Avg = mean of the groups"}}


def convention_tags(conv: dict) -> dict:
    """Short ``{column: value}`` tags of a conventions dict, for the extra columns of a CSV table."""
    tags = {}
    if "blur" in conv:
        tags["blur_norm"] = f"sigma/{conv['blur']['sigma_max']:g}"
    if "miou" in conv:
        tags["miou_def"] = conv["miou"]["definition"]
    if "sr" in conv:
        tags["sr_metric"] = conv["sr"]["channel"]
        tags["crop_border"] = str(conv["sr"]["crop_border"])
    return tags


def conventions_note(conv: dict) -> str:
    """One line of text naming the conventions (written under the Markdown tables)."""
    parts = []
    if "blur" in conv:
        parts.append(f"blur maps ÷ σ_max = {conv['blur']['sigma_max']:g}, PSNR peak 1, prediction unclipped")
    if "miou" in conv:
        m = conv["miou"]
        n = m.get("num_classes")
        if m["definition"] == "public":
            parts.append(f"mIoU {m['definition']}: mean over all {n if n is not None else 'C'} classes, a class "
                         "absent from GT and prediction counts 0")
        else:
            parts.append(f"mIoU {m['definition']}: mean over the classes present in GT or prediction")
    if "sr" in conv:
        parts.append(f"PSNR (dB) / SSIM on the Y channel, border crop {conv['sr']['crop_border']} px")
    return "Conventions: " + "; ".join(parts) + "." if parts else ""
