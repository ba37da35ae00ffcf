"""Thin-lens defocus: circle of confusion (CoC), σ maps, focus and focal-length sampling (numpy only).

Units: depth in **metres** at the API (converted to mm inside the physical formula), focal length in mm,
CoC and σ in pixels of the image whose width is ``width_px``.

Thin lens (Potmesil & Chakravarty), CoC diameter in pixels::

    c(z) = f² |z − z_f| / (N · z · (z_f − f)) · W_px / sensor_mm

SYNDOF solves the f-number N per image so that the larger of c(z_min), c(z_max) equals ``max_coc``; f and
the sensor then cancel and::

    c(z) = max_coc · |1/z − 1/z_f| / max(|1/z_min − 1/z_f|, |1/z_max − 1/z_f|)

which is scale-free in z (metres or millimetres give the same map). σ of the Gaussian PSF is
``max(0, (c − 1) / 4)`` (c ≤ 1 px is in focus).

Invalid depth rule (:func:`clean_depth`): a pixel whose depth is 0, negative, NaN or ±inf takes the depth
of the nearest valid pixel (Euclidean distance transform; ties broken by scipy's EDT). A depth map with no
valid pixel raises :class:`BsrError`. So no NaN ever reaches a blur map.
"""

from __future__ import annotations

import numpy as np

from bsrdata.errors import BsrError

FOCAL_LENGTHS_MM = (50.0, 70.0, 85.0)
FOCAL_WEIGHTS = (1.0 / 9.0, 4.0 / 9.0, 4.0 / 9.0)
SENSOR_MM = 36.0
# Scale of the half-normal over normalised rank (rank / n_unique) used by sample_focus:
# P(rank < 20 %) = erf(0.2 / (0.25·√2)) ≈ 0.58, P(rank > 60 %) ≈ 0.016.
FOCUS_RANK_SCALE = 0.25

__all__ = [
    "check_max_coc",
    "clean_depth",
    "clip_depth",
    "depth_outlier_stretch",
    "coc_physical",
    "coc_normalised",
    "solve_f_number",
    "sample_focus",
    "sample_focal_length",
    "quantise_coc",
    "sigma_from_coc",
    "coc_from_sigma",
    "FOCAL_LENGTHS_MM",
    "FOCAL_WEIGHTS",
]


def check_max_coc(max_coc, option: str = "max_coc") -> int:
    """Return ``max_coc`` as an int; BsrError unless it is an odd integer ≥ 3."""
    try:
        ok_int = float(max_coc) == int(max_coc)
    except (TypeError, ValueError):
        ok_int = False
    if not ok_int or isinstance(max_coc, bool):
        raise BsrError(f"{option}: must be an odd integer >= 3, got {max_coc!r}")
    m = int(max_coc)
    if m < 3:
        raise BsrError(f"{option}: {m} is too small (must be an odd integer >= 3)")
    if m % 2 == 0:
        raise BsrError(f"{option}: {m} is even (the kernel window needs a centre pixel; use an odd value)")
    return m


def clean_depth(depth):
    """Replace invalid depth by the depth of the nearest valid pixel.

    Args:
        depth: (H, W) array, any float/int dtype, metres. Invalid: 0, negative, NaN, ±inf.

    Returns:
        ``(depth_m, valid)``: float64 (H, W) metres, all finite and > 0; bool (H, W) the original validity.

    Raises:
        BsrError: not 2-D, empty, or no valid pixel.
    """
    d = np.asarray(depth)
    if d.ndim != 2 or d.size == 0:
        raise BsrError(f"depth: expected a non-empty (H, W) array, got shape {d.shape}")
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise BsrError(f"depth: expected a numeric array, got dtype {d.dtype}")
    d = d.astype(np.float64)
    valid = np.isfinite(d) & (d > 0)
    if not valid.any():
        raise BsrError("depth: no valid pixel (all depths are 0, negative, NaN or inf)")
    if valid.all():
        return d, valid
    from scipy.ndimage import distance_transform_edt

    _, (iy, ix) = distance_transform_edt(~valid, return_distances=True, return_indices=True)
    out = d[iy, ix]
    return out, valid


def clip_depth(depth_m, valid, percent: float):
    """Clamp depths to the ``percent``-th and ``(100 - percent)``-th percentiles of the valid pixels.

    Args:
        depth_m: float64 (H, W) metres (cleaned). valid: bool (H, W). percent: in (0, 50).
    Returns:
        ``(clipped float64 (H, W), (lo, hi) metres)``.
    """
    lo, hi = np.percentile(np.asarray(depth_m)[valid], [percent, 100.0 - percent])
    return np.clip(depth_m, lo, hi), (float(lo), float(hi))


def depth_outlier_stretch(depth_m, valid, percent: float = 0.5) -> float:
    """How much the extreme ``percent`` % of valid pixels at each end widen the inverse-depth range:
    (1/z_min − 1/z_max) / (1/z_p − 1/z_(100−p)). The CoC normalisation divides by the full range, so a
    stretch of k leaves the other pixels' CoC at most ~1/k of ``max_coc``. 1.0 for a flat frame.

    Args:
        depth_m: (H, W) metres, > 0. valid: bool (H, W). percent: in (0, 50).
    Returns:
        float >= 1 (inf when the robust range is 0 but the full one is not).
    """
    inv = 1.0 / np.asarray(depth_m, dtype=np.float64)[valid]
    if inv.size == 0:
        return 1.0
    lo, hi = np.percentile(inv, [percent, 100.0 - percent])
    full = float(inv.max() - inv.min())
    robust = float(hi - lo)
    if full <= 0:
        return 1.0
    return full / robust if robust > 0 else float("inf")


def _as_depth(depth_m, name="depth_m"):
    z = np.asarray(depth_m, dtype=np.float64)
    if not np.all(np.isfinite(z)) or np.any(z <= 0):
        raise BsrError(f"{name}: must be finite and > 0 (clean it with optics.clean_depth first)")
    return z


def coc_physical(depth_m, focus_m, f_mm, N, width_px, sensor_mm=SENSOR_MM):
    """Thin-lens CoC diameter in pixels.

    Args:
        depth_m: depth, metres, any shape, finite and > 0.
        focus_m: focus distance z_f, metres, must exceed the focal length.
        f_mm: focal length, mm. N: f-number (> 0). width_px: image width in pixels.
        sensor_mm: sensor width, mm (36 = full frame).

    Returns:
        float64 array of the shape of ``depth_m``: c = f²|z − z_f| / (N z (z_f − f)) · W_px / sensor_mm.
    """
    z = _as_depth(depth_m) * 1000.0
    zf = float(focus_m) * 1000.0
    f = float(f_mm)
    if not zf > f:
        raise BsrError(f"focus_m: {focus_m} m is not beyond the focal length {f_mm} mm")
    if not float(N) > 0:
        raise BsrError(f"N: f-number must be > 0, got {N}")
    return f * f * np.abs(z - zf) / (float(N) * z * (zf - f)) * float(width_px) / float(sensor_mm)


def _inv_spread(z, focus_m):
    inv = 1.0 / z
    invf = 1.0 / float(focus_m)
    return np.abs(inv - invf), max(abs(1.0 / z.min() - invf), abs(1.0 / z.max() - invf))


def coc_normalised(depth_m, focus_m, max_coc):
    """SYNDOF-normalised CoC in pixels: N solved so the image's largest CoC equals ``max_coc``.

    Args:
        depth_m: (H, W) depth, metres, finite and > 0. focus_m: focus distance, metres (> 0).
        max_coc: odd int ≥ 3, px.

    Returns:
        float64 (H, W), c = max_coc · |1/z − 1/z_f| / max(|1/z_min − 1/z_f|, |1/z_max − 1/z_f|), in
        [0, max_coc]. If every depth equals the focus the map is all zero.
    """
    m = check_max_coc(max_coc)
    z = _as_depth(depth_m)
    if not (np.isfinite(focus_m) and focus_m > 0):
        raise BsrError(f"focus_m: must be finite and > 0, got {focus_m}")
    spread, denom = _inv_spread(z, focus_m)
    if denom <= 0:
        return np.zeros(z.shape, dtype=np.float64)
    return np.minimum(m * spread / denom, float(m))


def solve_f_number(depth_m, focus_m, f_mm, max_coc, width_px, sensor_mm=SENSOR_MM):
    """The f-number N that makes ``coc_physical`` peak at exactly ``max_coc`` on this depth map.

    Returns a float (inf if every depth equals the focus).
    """
    z = _as_depth(depth_m)
    zf = float(focus_m) * 1000.0
    f = float(f_mm)
    if not zf > f:
        raise BsrError(f"focus_m: {focus_m} m is not beyond the focal length {f_mm} mm")
    _, denom = _inv_spread(z * 1000.0, zf)  # 1/mm
    # c = f² z_f |1/z − 1/z_f| / (N (z_f − f)) · W / sensor  (z in mm)
    if denom <= 0:
        return float("inf")
    return f * f * zf * denom / ((zf - f) * float(max_coc)) * float(width_px) / float(sensor_mm)


def sample_focus(depth_m, rng, scale=FOCUS_RANK_SCALE):
    """Draw a focus depth (metres) from the image's depths, favouring near ones.

    The unique depths are ranked near → far; a normalised rank u = |X|, X ~ N(0, scale²), redrawn while
    u ≥ 1, picks index floor(u · n_unique). With scale 0.25 about 58 % of draws fall in the nearest 20 %
    of ranks and about 1.6 % in the farthest 40 %.

    Args:
        depth_m: depth map, metres, finite and > 0 (any shape). rng: numpy Generator.

    Returns:
        float, one of the depth values.
    """
    z = _as_depth(depth_m)
    u = np.unique(z)
    while True:
        r = abs(rng.normal(0.0, scale))
        if r < 1.0:
            break
    return float(u[min(int(r * u.size), u.size - 1)])


def sample_focal_length(rng):
    """Focal length in mm from {50, 70, 85} with weights 1/9, 4/9, 4/9 (SYNDOF)."""
    return float(rng.choice(np.asarray(FOCAL_LENGTHS_MM), p=np.asarray(FOCAL_WEIGHTS)))


def quantise_coc(coc, step=0.1):
    """Round CoC (px) to the nearest multiple of ``step`` (px, > 0): ``rint(c / step) · step``."""
    if not float(step) > 0:
        raise BsrError(f"coc_step: must be > 0, got {step}")
    return np.rint(np.asarray(coc, dtype=np.float64) / float(step)) * float(step)


def sigma_from_coc(coc):
    """Gaussian σ (px) from CoC diameter (px): max(0, (c − 1) / 4)."""
    return np.maximum(0.0, (np.asarray(coc, dtype=np.float64) - 1.0) / 4.0)


def coc_from_sigma(sigma):
    """Inverse of :func:`sigma_from_coc` for σ > 0: c = 4σ + 1."""
    return 4.0 * np.asarray(sigma, dtype=np.float64) + 1.0
