"""Stereo utilities: the Cityscapes 16-bit disparity encoding, hole filling, OpenCV SGBM, disparity ->
depth, camera JSON and the disparity cache (numpy + OpenCV; no torch).

Disparity is in pixels of the image it belongs to (positive: the left-image point appears further left
in the right image). Depth is in metres. The Cityscapes encoding stores p = round(d·256) + 1 for d > 0
and p = 0 for an invalid pixel, so d = (p - 1) / 256.

Hole filling (:func:`fill_disparity_holes`), the documented method:
  1. Row-wise, background-favouring: each run of invalid pixels inside a row takes the **smaller** of the
     disparities of the nearest valid pixels to its left and right (the smaller disparity is the farther
     surface; stereo holes are mostly occlusions and textureless background, which belong to the far
     side). A run touching the image border takes its one neighbour.
  2. Rows with no valid pixel at all are filled the same way column-wise from the rows above / below.
  3. Smoothing: the filled pixels (only those) are replaced by a 5×5 median of the step-2 result, then by
     a normalised 5×5 box mean over the same, which removes the horizontal streaks of step 1 and leaves
     every measured pixel unchanged.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bsrdata.errors import BsrError

# Depth clamp: Cityscapes' baseline·fx ≈ 473 m·px, so d = 1 px is ≈ 473 m. Disparities below min_disp
# (including 0, i.e. "at infinity") are clamped to min_disp.
DEFAULT_MIN_DISP = 1.0


def decode_cityscapes_disparity(png):
    """uint16 (H, W) Cityscapes disparity PNG values -> (disp float32 (H, W) px, valid bool (H, W)).

    d = (p - 1) / 256 where p > 0; invalid pixels (p = 0) get d = 0 and valid False."""
    png = np.asarray(png)
    if png.dtype != np.uint16 or png.ndim != 2:
        raise BsrError(f"disparity: expected a uint16 (H, W) array, got {png.dtype} {png.shape}")
    valid = png > 0
    disp = np.where(valid, (png.astype(np.float32) - 1.0) / 256.0, np.float32(0.0)).astype(np.float32)
    return disp, valid


def encode_cityscapes_disparity(disp):
    """float disparity (H, W) px -> uint16 (H, W): p = round(d·256) + 1 for finite d > 0, else 0.

    Values too large for 16 bits (d > 255.996) are clipped to 65535."""
    d = np.asarray(disp, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    p = np.zeros(d.shape, np.float64)
    p[ok] = np.round(d[ok] * 256.0) + 1.0
    return np.clip(p, 0, 65535).astype(np.uint16)


def _fill_rows(disp, valid):
    """Step 1: background-favouring row-wise fill. Returns (filled, row_has_valid)."""
    h, w = disp.shape
    cols = np.broadcast_to(np.arange(w), (h, w))
    left = np.where(valid, cols, -1)
    np.maximum.accumulate(left, axis=1, out=left)
    right = np.where(valid, cols, w)
    right = np.minimum.accumulate(right[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    inf = np.float32(np.inf)
    lv = np.where(left >= 0, disp[rows, np.clip(left, 0, w - 1)], inf)
    rv = np.where(right < w, disp[rows, np.clip(right, 0, w - 1)], inf)
    fill = np.minimum(lv, rv)
    out = np.where(valid, disp, fill)
    return out, valid.any(axis=1)


def fill_disparity_holes(disp, valid):
    """Fill every invalid pixel of a disparity map (method in the module docstring).

    disp float (H, W) px, valid bool (H, W) -> float32 (H, W) with no hole (every value finite).
    Measured pixels keep their value exactly. Raises BsrError when no pixel is valid."""
    import cv2

    disp = np.asarray(disp, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(disp)
    if disp.ndim != 2 or valid.shape != disp.shape:
        raise BsrError(f"disparity: expected (H, W) arrays, got {disp.shape} and {valid.shape}")
    if not valid.any():
        raise BsrError("disparity: no valid pixel to fill from")
    if valid.all():
        return disp.copy()
    filled, row_ok = _fill_rows(np.where(valid, disp, 0).astype(np.float32), valid)
    if not row_ok.all():
        # step 2: rows without any measurement, column-wise from the filled rows
        rv = np.broadcast_to(row_ok[:, None], disp.shape)
        colfill, _ = _fill_rows(np.ascontiguousarray(filled.T), np.ascontiguousarray(rv.T))
        filled = np.where(rv, filled, colfill.T)
    # step 3: smooth the filled pixels only
    med = cv2.medianBlur(filled.astype(np.float32), 5)
    smooth = cv2.blur(med, (5, 5), borderType=cv2.BORDER_REFLECT)
    out = np.where(valid, disp, smooth).astype(np.float32)
    return out


def sgbm_disparity(left_rgb, right_rgb, max_disp=192, block_size=5):
    """OpenCV semi-global block matching on a rectified pair.

    left_rgb, right_rgb: uint8 (H, W, 3) RGB of equal size. max_disp: largest disparity searched, px
    (rounded up to a multiple of 16). Returns (disp float32 (H, W) px in the left image, valid bool):
    pixels SGBM rejects (occlusions, uniqueness and left-right checks, speckles) are invalid, disp 0."""
    import cv2

    left = np.asarray(left_rgb)
    right = np.asarray(right_rgb)
    for name, a in (("left", left), ("right", right)):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise BsrError(f"sgbm: {name} image must be uint8 (H, W, 3), got {a.dtype} {a.shape}")
    if left.shape != right.shape:
        raise BsrError(f"sgbm: left {left.shape[1]}x{left.shape[0]} and right {right.shape[1]}x{right.shape[0]} "
                       "differ in size")
    nd = int(np.ceil(max(16, int(max_disp)) / 16.0)) * 16
    # OpenCV fails with a bare allocation error when the search range is not narrower than the image.
    width = left.shape[1]
    if width <= 16:
        raise BsrError(f"sgbm: image width {width} px is too small for stereo matching (need > 16)")
    nd = min(nd, (width - 1) // 16 * 16)
    bs = int(block_size)
    matcher = cv2.StereoSGBM_create(
        minDisparity=0, numDisparities=nd, blockSize=bs,
        P1=8 * 3 * bs * bs, P2=32 * 3 * bs * bs, disp12MaxDiff=1,
        uniquenessRatio=10, speckleWindowSize=100, speckleRange=2,
        mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    raw = matcher.compute(cv2.cvtColor(left, cv2.COLOR_RGB2BGR), cv2.cvtColor(right, cv2.COLOR_RGB2BGR))
    disp = raw.astype(np.float32) / 16.0
    valid = raw > 0
    disp[~valid] = 0.0
    return disp, valid


def disparity_to_depth(disp, baseline_m, fx_px, min_disp=DEFAULT_MIN_DISP, valid=None):
    """depth = baseline·fx / max(d, min_disp), float32 (H, W) metres.

    The clamp bounds depth at baseline·fx / min_disp (≈ 473 m for Cityscapes with min_disp 1 px);
    d = 0 ("at infinity") is clamped the same way. Non-finite or negative d, and pixels where ``valid``
    (optional bool (H, W)) is False, give depth 0 (= invalid for the renderer)."""
    b = float(baseline_m)
    f = float(fx_px)
    if not (np.isfinite(b) and b > 0 and np.isfinite(f) and f > 0):
        raise BsrError(f"camera: baseline ({baseline_m}) and fx ({fx_px}) must be positive")
    if not (min_disp > 0):
        raise BsrError(f"min_disp: must be positive, got {min_disp}")
    d = np.asarray(disp, dtype=np.float64)
    ok = np.isfinite(d) & (d >= 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    depth = np.zeros(d.shape, np.float64)
    depth[ok] = (b * f) / np.maximum(d[ok], float(min_disp))
    return depth.astype(np.float32)


def read_camera_json(path):
    """Cityscapes camera JSON -> (baseline_m, fx_px) from ``extrinsic.baseline`` and ``intrinsic.fx``.

    Raises BsrError("<path>: ...") for a missing/unparsable file or a missing / non-positive value."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BsrError(f"{path}: file not found")
    try:
        with open(path, "rb") as fh:
            cam = json.loads(fh.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BsrError(f"{path}: not a readable camera JSON ({exc})") from None
    vals = []
    for section, field in (("extrinsic", "baseline"), ("intrinsic", "fx")):
        sec = cam.get(section) if isinstance(cam, dict) else None
        v = sec.get(field) if isinstance(sec, dict) else None
        if v is None:
            raise BsrError(f"{path}: no {section}.{field}")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise BsrError(f"{path}: {section}.{field} is not a number ({v!r})") from None
        if not (np.isfinite(v) and v > 0):
            raise BsrError(f"{path}: {section}.{field} must be positive, got {v}")
        vals.append(v)
    return vals[0], vals[1]


def read_disparity_png(path):
    """Read a Cityscapes-encoded 16-bit disparity PNG -> (disp float32 px, valid bool)."""
    from bsrdata.sources.folder import read_image

    return decode_cityscapes_disparity(read_image(path, kind="u16"))


def write_disparity_png(path, disp):
    """Write disparity (float px, H×W) in the Cityscapes encoding, atomically (temp name + rename)."""
    from bsrdata.sources.folder import write_png_atomic

    write_png_atomic(path, encode_cityscapes_disparity(disp))


def cache_disparity_path(cache_dir, split, key):
    """Path of a cached disparity: ``DIR/{split}/{city}/{key}_disparity.png`` (key = city_seq_frame)."""
    city = key.rsplit("_", 2)[0]
    return os.path.join(os.fspath(cache_dir), split, city, f"{key}_disparity.png")


def read_disparity_cache(cache_dir, split, key):
    """(disp float32 px, valid bool) from a disparity cache (layout in docs/API.md)."""
    return read_disparity_png(cache_disparity_path(cache_dir, split, key))
