"""One PNG panel of a built dataset: a row per sample (HR, LR upscaled, blur map, segmentation, depth).

Drawn with numpy + Pillow only (:func:`blur_colour`, the σ map of ``bsr sr``, labels its bar with OpenCV). The blur
map uses a viridis-like colour map over [0, σ_max] with a colour bar labelled in σ (HR pixels); segmentation uses a
fixed palette (255 = ignore is black); depth uses a grey ramp (near = bright) over the frame's own range, and a grey
tile saying "no depth" when the dataset was built without ``--with-depth``.
"""

from __future__ import annotations

import os

import numpy as np

from bsrdata.errors import BsrError

_VIRIDIS = np.array([[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
                     [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]], float)


def colormap(x) -> np.ndarray:
    """x in [0, 1] (any shape) -> uint8 RGB (..., 3) on a viridis-like ramp (values outside are clipped)."""
    x = np.clip(np.nan_to_num(np.asarray(x, float)), 0.0, 1.0)
    pos = x * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(pos).astype(int), len(_VIRIDIS) - 2)
    t = (pos - i)[..., None]
    return np.round(_VIRIDIS[i] * (1 - t) + _VIRIDIS[i + 1] * t).astype(np.uint8)


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC bit-interleaved palette: (n, 3) uint8, entry 0 black, distinct neighbours."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def palette() -> np.ndarray:
    """256×3 uint8 label palette: class k gets VOC colour k + 1; entry 255 (ignore) is black."""
    p = voc_palette(257)[1:].copy()
    p[255] = 0
    return p


def seg_image(seg: np.ndarray):
    """Class indices (H, W) -> PIL 'P' image with a palette (class k -> VOC colour of k + 1; 255 black)."""
    from PIL import Image

    seg = np.asarray(seg)
    idx = np.where(seg == 255, 0, seg.astype(np.int64) + 1)
    idx = np.clip(idx, 0, 255).astype(np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette(voc_palette(256).ravel().tolist())
    return im


def blur_colour(sigma: np.ndarray, sigma_max: float, bar_width: int = 60) -> np.ndarray:
    """σ map (H, W) in HR px -> uint8 RGB (H, W + bar_width, 3): the preview's viridis-like colours over
    [0, sigma_max] and a colour bar on the right with ticks labelled in σ pixels (text drawn with OpenCV)."""
    import cv2

    sigma = np.asarray(sigma, np.float64)
    if sigma_max <= 0:
        raise BsrError(f"--sigma-max: must be > 0, got {sigma_max}")
    h, w = sigma.shape
    img = colormap(sigma / sigma_max)  # the same colours as `bsr preview`
    bar = np.full((h, bar_width, 3), 255, np.uint8)
    top = max(26, h // 20) if h >= 60 else 4
    bot = h - max(6, h // 20)
    ramp = np.linspace(sigma_max, 0.0, max(bot - top, 2))
    strip = colormap(ramp / sigma_max)[:, None].repeat(12, 1)
    bar[top: top + len(ramp), 4:16] = strip
    scale = max(0.3, min(0.5, h / 400))
    n_ticks = 5 if h >= 120 else 2
    for k in range(n_ticks + 1):
        v = sigma_max * k / n_ticks
        y = int(round(bot - 1 - (bot - 1 - top) * k / n_ticks))
        bar[y, 16:20] = 0
        txt = f"{v:g}"
        cv2.putText(bar, txt, (21, min(h - 2, max(8, y + 4))), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    if h >= 60:
        cv2.putText(bar, "sigma px", (2, top - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([img, bar], axis=1)


def _font(size=14):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _tile(arr, w, h, resample):
    from PIL import Image

    return Image.fromarray(arr).resize((w, h), resample)


def _colourbar(height, sigma_max, font):
    from PIL import Image, ImageDraw

    bar_w, pad = 18, 6
    img = Image.new("RGB", (bar_w + 70, height), (255, 255, 255))
    ramp = colormap(np.linspace(1, 0, height - 2 * pad))[:, None, :].repeat(bar_w, axis=1)
    img.paste(Image.fromarray(ramp), (pad, pad))
    d = ImageDraw.Draw(img)
    for v in np.linspace(0, sigma_max, 5):
        y = pad + int(round((1 - v / sigma_max) * (height - 2 * pad - 1))) if sigma_max > 0 else pad
        d.line([(pad + bar_w, y), (pad + bar_w + 4, y)], fill=(0, 0, 0))
        d.text((pad + bar_w + 6, max(0, y - 7)), f"{v:g}", fill=(0, 0, 0), font=font)
    return img


def make_panel(root, out, split: str = "test", group=None, n: int = 4, start: int = 0, tile_width: int = 256) -> str:
    """Write a PNG panel of ``n`` samples of ``split`` (or test ``group``) starting at ``start``.

    Returns the path written. Raises BsrError for a bad dataset, an empty selection or an unwritable ``out``.
    """
    from PIL import Image, ImageDraw

    from bsrdata.shards import open_dataset

    if int(n) < 1:
        raise BsrError(f"--n: must be >= 1, got {n}")
    if int(start) < 0:
        raise BsrError(f"--start: must be >= 0, got {start}")
    if group is not None and split != "test":
        raise BsrError(f"--group: test groups belong to the test split, not '{split}' (use --split test)")
    view = open_dataset(root, split, group=group)
    if len(view) == 0:
        raise BsrError(f"{root}: split '{split}' is empty")
    idx = list(range(int(start), min(len(view), int(start) + int(n))))
    if not idx:
        raise BsrError(f"--start: {start} is past the {len(view)} samples of '{split}'")
    sigma_max = float(view.attrs["sigma_max"])
    scale = int(view.attrs["scale"])
    font = _font(14)
    pal = palette()
    cols = ["HR", f"LR (x{scale} nearest)", "blur map", "segmentation", "depth"]
    rows = []
    for i in idx:
        s = view[i]
        h, w = s["hr"].shape[:2]
        tw = min(int(tile_width), w)
        th = max(1, int(round(h * tw / w)))
        lr_up = np.repeat(np.repeat(s["lr"], scale, 0), scale, 1)
        tiles = [
            _tile(s["hr"], tw, th, Image.BILINEAR),
            _tile(lr_up, tw, th, Image.NEAREST),
            _tile(colormap(s["blur"] / sigma_max if sigma_max > 0 else s["blur"] * 0), tw, th, Image.NEAREST),
        ]
        if s["seg"] is not None and np.any(s["seg"] != 255):
            tiles.append(_tile(pal[s["seg"]], tw, th, Image.NEAREST))
        else:
            tiles.append(_blank(tw, th, "no labels" if s["seg"] is None else "no labels (all 255)", font))
        if s.get("depth") is not None:
            d = np.asarray(s["depth"], float)
            lo, hi = float(d.min()), float(d.max())
            g = 1.0 - (d - lo) / (hi - lo) if hi > lo else np.ones_like(d)
            tiles.append(_tile((g * 255).astype(np.uint8)[..., None].repeat(3, 2), tw, th, Image.BILINEAR))
            drange = f"{lo:.2f}-{hi:.2f} m"
        else:
            tiles.append(_blank(tw, th, "no depth", font))
            drange = ""
        label = f"{s['key']}  {'IVA sigma=%.3g px' % float(s['blur'].flat[0]) if s['invariant'] else 'VA'}  {drange}"
        rows.append((tiles, label, tw, th))
    gap, head, lab = 4, 40, 16
    width = max(len(t) * (tw + gap) for t, _, tw, _ in rows) + gap
    height = head + sum(th + lab + gap for _, _, _, th in rows) + gap
    bar = _colourbar(height - head, sigma_max, font)
    panel = Image.new("RGB", (width + bar.width, height), (255, 255, 255))
    d = ImageDraw.Draw(panel)
    tw0 = rows[0][2]
    title = f"{os.path.basename(os.path.abspath(root))}: {split}" + (f" group {group}" if group is not None else "")
    d.text((gap + 2, 2), title, fill=(0, 0, 0), font=font)
    d.text((width, 2), "blur sigma", fill=(0, 0, 0), font=font)
    d.text((width, 20), "(HR px)", fill=(0, 0, 0), font=font)
    for c, name in enumerate(cols):
        d.text((gap + c * (tw0 + gap) + 2, 21), name, fill=(0, 0, 0), font=font)
    y = head
    for tiles, label, tw, th in rows:
        d.text((gap + 2, y), label, fill=(0, 0, 0), font=font)
        y += lab
        for c, t in enumerate(tiles):
            panel.paste(t, (gap + c * (tw + gap), y))
        y += th + gap
    panel.paste(bar, (width, head))
    out = os.fspath(out)
    dirn = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(dirn):
        raise BsrError(f"--out {out}: folder {dirn} does not exist")
    from bsrdata.fileio import atomic_open

    try:
        with atomic_open(out, "wb") as fh:
            panel.save(fh, format="PNG")
    except BsrError as exc:
        raise BsrError(f"--out {exc}") from None
    return out


def _blank(w, h, text, font):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (w, h), (200, 200, 200))
    ImageDraw.Draw(im).text((6, h // 2 - 7), text, fill=(60, 60, 60), font=font)
    return im
