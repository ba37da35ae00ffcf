"""``bsr convert SRC.pth --arch cmos|rrdb_sft|blind_sr --num-classes N --out DIR``: a checkpoint saved by the
authors' CMOS code -> our checkpoint folder (docs/cmos.md, "Evaluating the released weights")."""

from __future__ import annotations

import click


@click.command("convert")
@click.argument("src", type=click.Path())
@click.option("--arch", required=True, type=click.Choice(["cmos", "rrdb_sft", "blind_sr"]),
              help="Which public network the file holds (CMOS_*, RRDB_SFT_*, BlindSR_*).")
@click.option("--num-classes", required=True, type=int, help="40 (NYUv2-BSR) or 19 (Cityscapes-BSR).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="New checkpoint folder to write.")
@click.option("--window-merge", default="legacy", show_default=True, type=click.Choice(["legacy", "fixed"]),
              help="GIA window merge: legacy (the code the released files were trained with) or fixed.")
def convert(src, arch, num_classes, out_dir, window_merge):
    """Map every tensor of SRC strictly into our network and write DIR (model.safetensors + config.json)."""
    from bsrdata.models.convert_public import convert as run

    cfg = run(src, arch, num_classes, out_dir, window_merge=window_merge)
    click.echo(f"{src}: {cfg['source']['tensors']} tensors -> {out_dir} ({cfg['model']['name']}, "
               f"{num_classes} classes, window merge {window_merge}, sha256 {cfg['source']['sha256'][:12]})")
