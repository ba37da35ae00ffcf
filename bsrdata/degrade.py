"""The degradation y = (x ⊗ k)↓s + n: blur, ×s downsampling, optional noise, uint8 rounding.

Everything random about one sample (focus depth, focal length, the IVA σ, the noise) is drawn from
:func:`sample_rng` ``(seed, key, group)``, so a sample can be reproduced on its own, in any process
and in any order.

Images here are float in [0, 1] (H, W, 3) unless said otherwise; σ and CoC are in HR pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.metrics import to_uint8

RENDERERS = ("layered", "gather")
DOWNSAMPLERS = ("direct", "bicubic")


@dataclasses.dataclass(frozen=True)
class DegradeConfig:
    """Generator parameters of one dataset (stored as shard attributes and in the manifest).

    - ``max_coc``: odd int ≥ 3, the largest circle of confusion in HR px (21 NYUv2-BSR, 61 Cityscapes-BSR);
      also the fixed kernel window. ``sigma_max = (max_coc - 1) / 4``.
    - ``scale``: integer downsampling factor s ≥ 1 (4 in the paper).
    - ``coc_step``: CoC rounding step in px (0.1, SYNDOF).
    - ``renderer``: ``"layered"`` (SYNDOF compositing) or ``"gather"`` (per-pixel Gaussian).
    - ``downsample``: ``"direct"`` (every s-th pixel from pixel 0) or ``"bicubic"`` (MATLAB imresize).
    - ``noise``: Gaussian noise σ_n on the 0–255 scale added to LR before rounding (0 = none).
    - ``floor_colour``: layered only; zero the colour where the blurred mask is floored.
    - ``depth_clip``: percent p in [0, 50); p > 0 clamps each frame's valid depths to their own p-th and
      (100 − p)-th percentiles before focus and CoC are computed, so a few outlier pixels cannot set the
      CoC normalisation (docs/sources.md, "Depth outliers"). 0 (default, the paper) keeps every depth.
    """

    max_coc: int = 21
    scale: int = 4
    coc_step: float = 0.1
    renderer: str = "layered"
    downsample: str = "direct"
    noise: float = 0.0
    floor_colour: bool = False
    depth_clip: float = 0.0

    def __post_init__(self):
        mc = self.max_coc
        if isinstance(mc, bool) or not isinstance(mc, (int, np.integer)) or int(mc) != mc:
            raise BsrError(f"max_coc: must be an odd integer >= 3, got {mc!r}")
        if mc < 3:
            raise BsrError(f"max_coc: {mc} is too small (must be an odd integer >= 3)")
        if mc % 2 == 0:
            raise BsrError(f"max_coc: {mc} is even (the kernel window needs a centre pixel; use an odd value)")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, np.integer)) or self.scale < 1:
            raise BsrError(f"scale: must be an integer >= 1, got {self.scale!r}")
        if not (isinstance(self.coc_step, (int, float)) and 0 < self.coc_step <= 1):
            raise BsrError(f"coc_step: must be in (0, 1] px, got {self.coc_step!r}")
        if self.renderer not in RENDERERS:
            raise BsrError(f"renderer: {self.renderer!r} is not one of {', '.join(RENDERERS)}")
        if self.downsample not in DOWNSAMPLERS:
            raise BsrError(f"downsample: {self.downsample!r} is not one of {', '.join(DOWNSAMPLERS)}")
        if not (isinstance(self.noise, (int, float)) and math.isfinite(self.noise) and self.noise >= 0):
            raise BsrError(f"noise: must be a finite value >= 0 (σ_n on the 0-255 scale), got {self.noise!r}")
        dc = self.depth_clip
        if isinstance(dc, bool) or not isinstance(dc, (int, float)) or not (0 <= dc < 50):
            raise BsrError(f"depth_clip: must be a percentage in [0, 50), got {dc!r}")
        object.__setattr__(self, "depth_clip", float(dc))
        object.__setattr__(self, "max_coc", int(mc))
        object.__setattr__(self, "scale", int(self.scale))
        object.__setattr__(self, "coc_step", float(self.coc_step))
        object.__setattr__(self, "noise", float(self.noise))
        object.__setattr__(self, "floor_colour", bool(self.floor_colour))

    @property
    def sigma_max(self) -> float:
        """Largest σ in HR px: (max_coc - 1) / 4."""
        return (self.max_coc - 1) / 4.0

    def to_attrs(self) -> dict:
        """Shard / manifest attributes (plain JSON types), including ``sigma_max`` and the generator version."""
        from bsrdata import GENERATOR_VERSION

        attrs = {
            "scale": self.scale,
            "max_coc": self.max_coc,
            "sigma_max": self.sigma_max,
            "coc_step": self.coc_step,
            "renderer": self.renderer,
            "downsample": self.downsample,
            "noise": self.noise,
            "floor_colour": self.floor_colour,
            "generator_version": GENERATOR_VERSION,
        }
        if self.depth_clip:  # recorded only when used: datasets built without it keep their bytes
            attrs["depth_clip"] = self.depth_clip
        return attrs

    @classmethod
    def from_dict(cls, d: dict) -> "DegradeConfig":
        """Build from a dict (recipe ``degrade`` block or manifest attrs); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _hash_words(*parts) -> list[int]:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return [int.from_bytes(h[i:i + 4], "little") for i in range(0, 32, 4)]


def derived_seed(seed, key, group=0) -> int:
    """A 64-bit integer derived from (seed, key, group) by SHA-256 (recorded in the sample params)."""
    w = _hash_words("bsrdata-sample", int(seed), str(key), int(group))
    return w[0] | (w[1] << 32)


def sample_rng(seed, key, group=0) -> np.random.Generator:
    """The per-sample generator: SHA-256 of (seed, key, group) -> SeedSequence -> PCG64.

    Stable across processes, platforms and Python hash seeds; depends on nothing else.
    """
    words = _hash_words("bsrdata-sample", int(seed), str(key), int(group))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


# ----------------------------------------------------------------------------------------- downsampling
def _cubic(x):
    """Keys' cubic kernel with a = -0.5 (MATLAB imresize 'bicubic')."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def _resize_weights(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """MATLAB imresize contributions as a dense (out_len, in_len) float64 matrix (antialiased when scale < 1)."""
    kernel_width = 4.0
    if scale < 1:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p)[None, :]  # 1-based
    d = u[:, None] - idx
    w = scale * _cubic(scale * d) if scale < 1 else _cubic(d)
    w = w / w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_len + 1), np.arange(in_len, 0, -1)])
    src = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_len)] - 1
    m = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), p)
    np.add.at(m, (rows, src.ravel()), w.ravel())
    return m


def imresize_bicubic(img, scale: float, out_shape=None) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (antialiasing on) for float images.

    img: float (H, W) or (H, W, C); returns float64 (ceil(H·scale), ceil(W·scale)[, C]), no clipping.
    Height is resized first, then width (MATLAB's order for equal scales).
    """
    a = np.asarray(img, dtype=np.float64)
    if a.ndim not in (2, 3):
        raise BsrError(f"image: expected (H, W) or (H, W, C), got shape {a.shape}")
    h, w = a.shape[:2]
    if out_shape is None:
        out_shape = (int(math.ceil(h * scale - 1e-9)), int(math.ceil(w * scale - 1e-9)))
    mh = _resize_weights(h, out_shape[0], scale)
    mw = _resize_weights(w, out_shape[1], scale)
    out = np.tensordot(mh, a, axes=(1, 0))  # (oh, W, C)
    out = np.moveaxis(np.tensordot(mw, out, axes=(1, 1)), 0, 1)
    return out


def downsample(img, scale: int, method: str = "direct") -> np.ndarray:
    """×scale downsampling of a float (H, W, 3) image whose H, W are multiples of ``scale``.

    ``direct``: every s-th pixel starting at pixel 0 -> (H/s, W/s, 3), same dtype.
    ``bicubic``: MATLAB-compatible antialiased bicubic -> float64 (H/s, W/s, 3).
    """
    img = np.asarray(img)
    if scale == 1:
        return img.copy()
    if method == "direct":
        return img[::scale, ::scale].copy()
    if method == "bicubic":
        return imresize_bicubic(img, 1.0 / scale, out_shape=(img.shape[0] // scale, img.shape[1] // scale))
    raise BsrError(f"downsample: {method!r} is not one of {', '.join(DOWNSAMPLERS)}")


# ------------------------------------------------------------------------------------------- synthesis
def check_record(record, scale: int = 1):
    """Validate a source record; returns (rgb uint8 (H,W,3), depth float (H,W), seg uint8 (H,W) or None)."""
    key = getattr(record, "key", "?")
    rgb = np.asarray(record.rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise BsrError(f"{key}: image must be RGB (H, W, 3), got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise BsrError(f"{key}: image must be uint8, got {rgb.dtype}")
    depth = np.asarray(record.depth)
    if depth.ndim != 2:
        raise BsrError(f"{key}: depth must be (H, W), got shape {depth.shape}")
    if depth.shape != rgb.shape[:2]:
        raise BsrError(f"{key}: image is {rgb.shape[0]}x{rgb.shape[1]} but depth is {depth.shape[0]}x{depth.shape[1]}")
    if not np.issubdtype(depth.dtype, np.number) or np.issubdtype(depth.dtype, np.complexfloating):
        raise BsrError(f"{key}: depth must be real-valued, got {depth.dtype}")
    seg = record.seg
    if seg is not None:
        seg = np.asarray(seg)
        if seg.shape != rgb.shape[:2]:
            raise BsrError(f"{key}: labels are {seg.shape} but the image is {rgb.shape[:2]}")
        if seg.dtype != np.uint8:
            raise BsrError(f"{key}: labels must be uint8 (255 = ignore), got {seg.dtype}")
    h, w = rgb.shape[:2]
    if h < scale or w < scale:
        raise BsrError(f"{key}: image {h}x{w} is smaller than the scale factor {scale}")
    return rgb, depth, seg


def gaussian_blur_fixed(img, sigma: float, max_coc: int) -> np.ndarray:
    """Plain Gaussian blur, σ px, in the fixed max_coc window, mirrored borders (edge pixel included).

    img float (H, W, 3); returns float32. σ = 0 returns the image unchanged.
    """
    from scipy.ndimage import correlate1d

    from bsrdata.render import gaussian_kernel_1d

    img = np.asarray(img, dtype=np.float32)
    if sigma <= 0:
        return img.copy()
    k = np.asarray(gaussian_kernel_1d(float(sigma), int(max_coc)), dtype=np.float64)
    out = correlate1d(img.astype(np.float64), k, axis=0, mode="reflect")
    out = correlate1d(out, k, axis=1, mode="reflect")
    return out.astype(np.float32)


def _f_number(depth_m, focus_m, f_mm, width_px, max_coc):
    """The aperture N that makes the physical CoC peak at max_coc (recorded only; it cancels out)."""
    from bsrdata import optics

    try:
        n = optics.solve_f_number(depth_m, focus_m, f_mm, max_coc, width_px)
    except BsrError:
        return None
    return float(n) if np.isfinite(n) else None


def synthesize(record, cfg: DegradeConfig, seed: int, invariant: bool, group: int = 0) -> dict:
    """One benchmark sample from one source record.

    record: :class:`bsrdata.sources.base.Record` (rgb uint8 (H,W,3), depth (H,W) metres, invalid = 0 /
    NaN / inf / negative, seg uint8 or None). H and W are cropped (top-left kept) down to multiples of
    ``cfg.scale``.

    Variant (VA): depth is cleaned (:func:`bsrdata.optics.clean_depth`), a focal length and a focus depth
    are drawn, the SYNDOF-normalised CoC is computed and rounded to ``coc_step``, and the image is blurred
    by ``cfg.renderer``. Invariant (IVA): one σ ~ U[0, σ_max], quantised through the CoC like the VA maps,
    applied as a plain fixed-window Gaussian. Then downsampling, optional noise, uint8.

    Returns the Sample dict of API.md: key, hr uint8 (H,W,3), lr uint8 (H/s,W/s,3), blur float32 (H,W) σ in
    HR px, seg uint8 (H,W) or None, depth float32 (H,W) metres (cleaned), invariant bool, params dict.
    """
    from bsrdata import optics
    from bsrdata.render import count_layers

    s = cfg.scale
    rgb, depth, seg = check_record(record, s)
    h, w = (rgb.shape[0] // s) * s, (rgb.shape[1] // s) * s
    rgb = rgb[:h, :w]
    depth = depth[:h, :w]
    if seg is not None:
        seg = seg[:h, :w]
    key = str(record.key)
    depth_m, valid = optics.clean_depth(depth)
    clip = None
    if cfg.depth_clip:
        depth_m, clip = optics.clip_depth(depth_m, valid, cfg.depth_clip)
    rng = sample_rng(seed, key, group)
    img = rgb.astype(np.float32) / np.float32(255.0)
    params = {
        "seed": int(seed),
        "group": int(group),
        "render_seed": derived_seed(seed, key, group),
        "invariant": bool(invariant),
        "renderer": cfg.renderer,
        "depth_invalid_frac": float(1.0 - valid.mean()),
    }
    if clip is not None:
        params["depth_clip_m"] = [float(clip[0]), float(clip[1])]
    lr_done = None
    if invariant:
        sig = float(rng.uniform(0.0, cfg.sigma_max))
        c = float(optics.quantise_coc(np.float64(optics.coc_from_sigma(sig)), cfg.coc_step))
        c = min(c, float(cfg.max_coc))
        sigma = float(optics.sigma_from_coc(np.float64(c)))
        blur = np.full((h, w), sigma, dtype=np.float32)
        blurred = gaussian_blur_fixed(img, sigma, cfg.max_coc)
        params.update({"sigma_iva": sigma, "coc_iva_px": c, "n_layers": 1})
    else:
        f_mm = float(optics.sample_focal_length(rng))
        focus = float(optics.sample_focus(depth_m, rng))
        coc = optics.quantise_coc(optics.coc_normalised(depth_m, focus, cfg.max_coc), cfg.coc_step)
        coc = np.minimum(np.asarray(coc, dtype=np.float64), float(cfg.max_coc))
        sigma_map = np.asarray(optics.sigma_from_coc(coc), dtype=np.float32)
        blur = sigma_map
        near = depth_m < focus
        if cfg.renderer == "layered":
            from bsrdata.render import render_layered

            blurred = render_layered(img, coc, cfg.max_coc, near=near, floor_colour=cfg.floor_colour,
                                     coc_step=cfg.coc_step)
        elif cfg.downsample == "direct":
            from bsrdata.render import render_gather_points

            blurred = None
            lr_done = np.asarray(render_gather_points(img, sigma_map, cfg.max_coc, s), dtype=np.float64)
        else:
            from bsrdata.render import render_gather

            blurred = render_gather(img, sigma_map, cfg.max_coc)
        params.update({
            "focus_m": focus,
            "f_mm": f_mm,
            "f_number": _f_number(depth_m, focus, f_mm, w, cfg.max_coc),
            "coc_max_px": float(coc.max()),
            "sigma_max_px": float(sigma_map.max()),
            "n_layers": count_layers(coc, near, cfg.coc_step),
        })
    if lr_done is None:
        lr_f = downsample(np.asarray(blurred, dtype=np.float64), s, cfg.downsample)
    else:
        lr_f = lr_done
    lr_f = np.asarray(lr_f, dtype=np.float64)
    if cfg.noise > 0:
        lr_f = lr_f + rng.normal(0.0, cfg.noise / 255.0, size=lr_f.shape)
    params["noise"] = cfg.noise
    return {
        "key": key,
        "hr": np.ascontiguousarray(rgb),
        "lr": to_uint8(lr_f),
        "blur": np.ascontiguousarray(blur, dtype=np.float32),
        "seg": None if seg is None else np.ascontiguousarray(seg),
        "depth": depth_m.astype(np.float32),
        "invariant": bool(invariant),
        "params": params,
    }
