"""The real Middlebury 2014 "Motorcycle" stereo pair that ships inside scikit-image (no download).

``skimage.data.stereo_motorcycle()`` gives the left and right images (500×741, uint8 RGB) and the left
ground-truth disparity (float32 px at this quarter resolution, inf where unknown). Calibration of the
quarter-resolution pair: f = 994.978 px, baseline = 193.001 mm, doffs = 31.086 px, so

    depth_mm = f · baseline / (disparity + doffs)

Unknown disparity (NaN / inf / non-positive denominator) becomes depth 0 = invalid, which
:func:`bsrdata.optics.clean_depth` fills from the nearest valid pixel. No labels (``seg`` is None).

With ``size=(H, W)`` the frame is resized (area for colour, nearest for depth, so invalid stays 0) to
cover H×W and centre-cropped; depth in metres does not change with image resizing.
"""

from __future__ import annotations

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.sources.base import Record, Source

KEY = "middlebury-motorcycle"
FOCAL_PX = 994.978
BASELINE_MM = 193.001
DOFFS_PX = 31.086


def disparity_to_depth_m(disp) -> np.ndarray:
    """Motorcycle disparity (px, quarter resolution) -> depth float32 metres, 0 where unknown."""
    d = np.asarray(disp, dtype=np.float64)
    den = d + DOFFS_PX
    ok = np.isfinite(d) & (den > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(ok, FOCAL_PX * BASELINE_MM / np.where(ok, den, 1.0), 0.0) / 1000.0
    return z.astype(np.float32)


def _cover_crop(rgb, depth, size):
    import cv2

    h, w = int(size[0]), int(size[1])
    H, W = rgb.shape[:2]
    s = max(h / H, w / W)
    nh, nw = max(h, int(round(H * s))), max(w, int(round(W * s)))
    rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    depth = cv2.resize(depth, (nw, nh), interpolation=cv2.INTER_NEAREST)
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(rgb[y0:y0 + h, x0:x0 + w]), np.ascontiguousarray(depth[y0:y0 + h, x0:x0 + w])


class MiddleburySource(Source):
    """One frame, key ``middlebury-motorcycle``, in split ``split`` (default ``test``)."""

    name = "middlebury"
    num_classes = None

    def __init__(self, size=None, split: str = "test"):
        if size is not None:
            try:
                size = (int(size[0]), int(size[1]))
            except (TypeError, ValueError, IndexError):
                raise BsrError(f"size: expected (H, W), got {size!r}") from None
            if min(size) < 8:
                raise BsrError(f"size: {size[0]}x{size[1]} too small")
        self.size = size
        self.split = str(split)

    def splits(self) -> dict:
        return {self.split: [KEY]}

    def load(self, key: str) -> Record:
        if key != KEY:
            raise BsrError(f"middlebury: unknown key '{key}'")
        from skimage import data

        left, _right, disp = data.stereo_motorcycle()
        rgb = np.ascontiguousarray(left[..., :3]).astype(np.uint8)
        depth = disparity_to_depth_m(disp)
        if self.size is not None:
            rgb, depth = _cover_crop(rgb, depth, self.size)
        return Record(key=KEY, rgb=rgb, depth=depth, seg=None)
