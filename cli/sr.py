"""``bsr sr``: blind ×4 SR of real photos with the CMOS + RRDB-SFT chain (paper Fig. 6).

For each IMAGE it writes into OUT:

- ``<stem>_sr.png``: the SR image;
- ``<stem>_blur.png``: the estimated σ map colour-mapped over [0, --sigma-max], the SR image's size (pixel
  aligned with it); ``<stem>_blur_legend.png``: its colour bar, labelled in σ HR pixels;
- ``<stem>_sigma.png``: the raw σ map, 16-bit, value = round(σ · 1000) (σ in HR px; clipped to 0..65.535);
- ``<stem>_seg.png``: the segmentation as a palette PNG (class k has palette entry k).

A σ estimate far beyond --sigma-max (the range the checkpoint was trained on) is warned about: the photo's
blur is then unlike anything in training and the SR is an extrapolation. Files are written under a
temporary name and renamed.
"""

from __future__ import annotations

import os
import sys

import click
import numpy as np

from bsrdata.errors import BsrError
from bsrdata.preview import blur_colour, seg_image
from bsrdata.sources.folder import read_image


def _save(im, path):
    """Write PIL image ``im`` as a PNG atomically (:mod:`bsrdata.fileio`)."""
    import io

    from bsrdata.fileio import write_bytes_atomic

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


MIN_SIDE = 4  # smallest LR side the chain and the σ colour bar were run on
OUT_OF_RANGE = 1.5  # warn when the estimated σ exceeds this multiple of --sigma-max


def sigma_warning(path, sigma, sigma_max) -> str | None:
    """The warning line for a σ estimate beyond ``OUT_OF_RANGE`` x ``sigma_max`` (or not finite), else None."""
    top = float(np.max(sigma)) if np.all(np.isfinite(sigma)) else float("nan")
    if np.isfinite(top) and top <= OUT_OF_RANGE * sigma_max:
        return None
    return (f"{path}: estimated σ up to {top:.3g} px, far beyond --sigma-max {sigma_max:g} (the checkpoint's "
            "training range): the SR extrapolates")


@click.command("sr")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--ckpt", required=True, type=click.Path(), help="blind_sr checkpoint, or RRDB-SFT with --cmos-ckpt.")
@click.option("--cmos-ckpt", default=None, type=click.Path(), help="CMOS checkpoint (stage 1).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--sigma-max", default=5.0, show_default=True, type=float,
              help="The checkpoint's training σ range and the top of the blur colour scale, in HR px "
                   "(NYUv2-BSR 5, Cityscapes-BSR 15).")
def sr(images, ckpt, cmos_ckpt, out_dir, device, sigma_max):
    """Blind x4 super-resolution of real IMAGES; writes SR, blur-map and segmentation PNGs."""
    import torch
    from PIL import Image
    from tqdm import tqdm

    from bsrdata.models.bench_methods import load_chain
    from bsrdata.models.convert import image_to_tensor, tensor_to_image
    from bsrdata.models.device import pick_device

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
        rgb = read_image(p, kind="rgb")
        if min(rgb.shape[:2]) < MIN_SIDE:
            raise BsrError(f"{p}: {rgb.shape[1]}x{rgb.shape[0]} image is too small "
                           f"(at least {MIN_SIDE} px a side)")
        stem = os.path.splitext(os.path.basename(p))[0]
        n = stems.get(stem, 0)
        stems[stem] = n + 1
        if n:
            stem = f"{stem}_{n + 1}"
        with torch.no_grad():
            out = chain(image_to_tensor(rgb, dev))
        sr_img = tensor_to_image(out["sr"])
        sigma = out["blur"][0, 0].float().cpu().numpy()
        _save(Image.fromarray(sr_img), os.path.join(out_dir, f"{stem}_sr.png"))
        coloured = blur_colour(sigma, sigma_max)
        w = sigma.shape[1]
        _save(Image.fromarray(coloured[:, :w]), os.path.join(out_dir, f"{stem}_blur.png"))
        _save(Image.fromarray(coloured[:, w:]), os.path.join(out_dir, f"{stem}_blur_legend.png"))
        raw = np.clip(np.round(np.nan_to_num(sigma, nan=0.0) * 1000.0), 0, 65535).astype(np.uint16)
        _save(Image.fromarray(raw), os.path.join(out_dir, f"{stem}_sigma.png"))
        warning = sigma_warning(p, sigma, sigma_max)
        if warning:
            click.echo(f"bsr sr: warning: {warning}", err=True)
        if out.get("seg") is not None:
            _save(seg_image(out["seg"][0].argmax(0).cpu().numpy()), os.path.join(out_dir, f"{stem}_seg.png"))
        click.echo(f"{p}: {rgb.shape[1]}x{rgb.shape[0]} -> {sr_img.shape[1]}x{sr_img.shape[0]}, "
                   f"sigma {float(sigma.min()):.2f}..{float(sigma.max()):.2f} px -> {out_dir}/{stem}_*.png")
