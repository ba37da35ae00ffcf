"""``bsr convert SRC --arch ARCH --out DIR``: a checkpoint saved by another project's code -> our checkpoint
folder. CMOS archs (docs/cmos.md, "Evaluating the released weights"): ``cmos``, ``rrdb_sft``, ``blind_sr``
with ``--num-classes``; baselines (docs/baselines.md, "Released weights"): ``manet``, ``dan``, ``dcls``,
``koalanet``."""

from __future__ import annotations

import click

ARCH_CHOICES = ["cmos", "rrdb_sft", "blind_sr", "manet", "dan", "dcls", "koalanet"]


@click.command("convert")
@click.argument("src", type=click.Path())
@click.option("--arch", required=True, type=click.Choice(ARCH_CHOICES),
              help="Which network the file holds: the public CMOS_*, RRDB_SFT_*, BlindSR_* files, or a "
                   "baseline's released weights.")
@click.option("--num-classes", default=None, type=int, help="CMOS archs: 40 (NYUv2-BSR) or 19 (Cityscapes-BSR).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="New checkpoint folder to write.")
@click.option("--window-merge", default=None, type=click.Choice(["legacy", "fixed"]),
              help="CMOS archs: GIA window merge, legacy (default: the code the released files were trained "
                   "with) or fixed.")
@click.option("--variant", default=None, help="Baselines with versions (dan: v1 | v2; default: from the file).")
def convert(src, arch, num_classes, out_dir, window_merge, variant):
    """Map every tensor of SRC strictly into our network and write DIR (model.safetensors + config.json)."""
    from bsrdata.models.converters import convert as run

    cfg = run(src, arch, out_dir, num_classes=num_classes, window_merge=window_merge, variant=variant)
    m = cfg["model"]
    extra = f", {m['num_classes']} classes" if "num_classes" in m else ""
    if "window_merge" in cfg:
        extra += f", window merge {cfg['window_merge']}"
    click.echo(f"{src}: {cfg['source']['tensors']} tensors -> {out_dir} ({m['name']}{extra}, "
               f"sha256 {cfg['source']['sha256'][:12]})")
