"""``bsr depth``: stereo disparity caches (CREStereo) for the Cityscapes-BSR builder.

``bsr depth cityscapes --root DIR --weights crestereo_eth3d.pth --out CACHE [--device cuda]`` writes
``CACHE/{split}/{city}/{key}_disparity.png`` (Cityscapes 16-bit encoding, full resolution) for every
left/right pair; ``bsr build cityscapes --disparity cache:CACHE`` reads it. Resumable: finished files
are skipped, each file appears atomically.
"""

from __future__ import annotations

import sys
import time

import click

from bsrdata.errors import BsrError


def _parse_size(value):
    from bsrdata.plan import parse_hw

    return parse_hw(value, option="--size", example="1024x2048", min_side=32)


@click.group()
def depth():
    """Precompute stereo disparity caches with CREStereo."""


@depth.command("cityscapes")
@click.option("--root", required=True, type=click.Path(), help="Cityscapes root (leftImg8bit/, rightImg8bit/).")
@click.option("--weights", required=True, type=click.Path(), help="crestereo_eth3d.pth (PyTorch port weights).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Cache folder to write.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto = cuda when available, else cpu (slow).")
@click.option("--size", default=None, metavar="HxW",
              help="Run CREStereo at this size (then resize back); default: the image's own size.")
@click.option("--iters", type=click.IntRange(1, 100), default=20, show_default=True,
              help="Recurrent updates per pass (two passes).")
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "val", "test"]),
              help="Split(s) to process (repeatable); default: all present.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Process at most N pairs (in order).")
def cityscapes(root, weights, out_dir, device, size, iters, splits, limit):
    """CREStereo disparity for every Cityscapes stereo pair, written as a resumable cache."""

    from bsrdata import depth_cache

    size = _parse_size(size)
    pairs = depth_cache.list_pairs(root, out_dir, list(splits) or None)
    if limit is not None:
        pairs = pairs[:limit]
    from bsrdata.models.device import pick_device

    dev = pick_device(device)
    depth_cache.check_writable(out_dir)
    from bsrdata.lock import folder_lock

    with folder_lock(out_dir, "depth"):
        _run(pairs, weights, out_dir, dev, size, iters)


def _run(pairs, weights, out_dir, dev, size, iters):
    import numpy as np

    from bsrdata import depth_cache, stereo
    from bsrdata.manifest import sha256_file
    from bsrdata.models.crestereo import load_crestereo, predict_disparity
    from bsrdata.sources.folder import read_image

    model = load_crestereo(weights, dev)
    depth_cache.check_settings(out_dir, {
        "method": "crestereo", "weights_sha256": sha256_file(weights),
        "size": None if size is None else f"{size[0]}x{size[1]}", "iters": iters,
    })
    todo = [p for p in pairs if not depth_cache.is_cached(p)]
    skipped = len(pairs) - len(todo)
    if dev.type == "cpu" and todo:
        click.echo("bsr depth: warning: CREStereo on the CPU is slow (minutes per full-size Cityscapes pair); "
                   "use --device cuda on a GPU machine", err=True)
    if skipped:
        click.echo(f"bsr depth: {skipped} of {len(pairs)} pairs already cached, skipping them", err=True)

    from tqdm import tqdm

    t0 = time.time()
    for pair in tqdm(todo, disable=not todo, desc="crestereo", unit="pair", file=sys.stderr, dynamic_ncols=True):
        left = read_image(pair.left, kind="rgb")
        right = read_image(pair.right, kind="rgb")
        if left.shape != right.shape:
            raise BsrError(f"{pair.right}: size {right.shape[1]}x{right.shape[0]} differs from the left image "
                           f"{left.shape[1]}x{left.shape[0]}")
        disp = predict_disparity(model, np.ascontiguousarray(left[..., ::-1]), np.ascontiguousarray(right[..., ::-1]),
                                 size=size, iters=iters, device=dev)
        depth_cache.remove_stale_temps(pair)
        try:
            stereo.write_disparity_png(pair.out, disp)
        except OSError as exc:
            raise BsrError(f"{pair.out}: cannot write ({exc.strerror or exc})") from None
    n = len(todo)
    rate = f", {(time.time() - t0) / n:.1f} s/pair" if n else ""
    click.echo(f"bsr depth: wrote {n} disparities, {skipped} already cached, into {out_dir}{rate}")
