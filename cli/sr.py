"""``bsr sr``: blind ×4 SR of real photos with the CMOS + RRDB-SFT chain (paper Fig. 6).

For each IMAGE it writes into OUT: ``<stem>_sr.png`` (the SR image), ``<stem>_blur.png`` (the estimated σ
map, colour-mapped, with a colour bar labelled in σ HR pixels) and ``<stem>_seg.png`` (the segmentation as a
palette PNG; class k has palette entry k). Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import os
import sys

import click
import numpy as np

from bsrdata.errors import BsrError
from bsrdata.preview import colormap, voc_palette


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
    """σ map (H, W) in HR px -> uint8 RGB (H, W + bar_width, 3): the preview's viridis-like colours over [0, sigma_max] and a
    colour bar on the right with ticks labelled in σ pixels."""
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


def _read_rgb(path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I", "F"):
                raise BsrError(f"{path}: {im.mode} image; expected 8-bit RGB")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise BsrError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise BsrError(f"{path}: not a readable image ({exc})") from None


def _save(im, path):
    tmp = path + ".tmp.png"
    im.save(tmp)
    os.replace(tmp, path)


@click.command("sr")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--ckpt", required=True, type=click.Path(), help="blind_sr checkpoint, or RRDB-SFT with --cmos-ckpt.")
@click.option("--cmos-ckpt", default=None, type=click.Path(), help="CMOS checkpoint (stage 1).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--sigma-max", default=5.0, show_default=True, type=float,
              help="Top of the blur colour scale, σ in HR px (NYUv2-BSR 5, Cityscapes-BSR 15).")
def sr(images, ckpt, cmos_ckpt, out_dir, device, sigma_max):
    """Blind x4 super-resolution of real IMAGES; writes SR, blur-map and segmentation PNGs."""
    import torch
    from PIL import Image
    from tqdm import tqdm

    from bsrdata.models.sr_methods import load_chain, pick_device
    from bsrdata.metrics import to_uint8

    if sigma_max <= 0:
        raise BsrError(f"--sigma-max: must be > 0, got {sigma_max}")
    for p in images:  # fail before loading anything
        if not os.path.isfile(p):
            raise BsrError(f"{p}: no such file")
    dev = pick_device(device)
    chain, _ = load_chain(ckpt, cmos_ckpt)
    chain.to(dev).eval()
    os.makedirs(out_dir, exist_ok=True)
    stems = {}
    for p in tqdm(images, desc="sr", unit="img", file=sys.stderr, leave=False):
        rgb = _read_rgb(p)
        stem = os.path.splitext(os.path.basename(p))[0]
        n = stems.get(stem, 0)
        stems[stem] = n + 1
        if n:
            stem = f"{stem}_{n + 1}"
        lr = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(dev)
        with torch.no_grad():
            out = chain(lr)
        sr_img = to_uint8(out["sr"][0].permute(1, 2, 0).float().cpu().numpy())
        sigma = out["blur"][0, 0].float().cpu().numpy()
        _save(Image.fromarray(sr_img), os.path.join(out_dir, f"{stem}_sr.png"))
        _save(Image.fromarray(blur_colour(sigma, sigma_max)), os.path.join(out_dir, f"{stem}_blur.png"))
        if out.get("seg") is not None:
            _save(seg_image(out["seg"][0].cpu().numpy()), os.path.join(out_dir, f"{stem}_seg.png"))
        click.echo(f"{p}: {rgb.shape[1]}x{rgb.shape[0]} -> {sr_img.shape[1]}x{sr_img.shape[0]}, "
                   f"sigma {float(sigma.min()):.2f}..{float(sigma.max()):.2f} px -> {out_dir}/{stem}_*.png")
