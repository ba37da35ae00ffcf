"""``bsr export DIR --format cmos|png --out DIR2``: a built dataset as plain image folders.

``cmos`` writes the folders the public CMOS code reads unchanged (``train/{GT,LRx4,blur,semseg}``; the
grouped test split as ``val/`` in the NYUv2 layout, ``test/`` in the Cityscapes one, with ``GT``, ``semseg``
and ``Group{1..5}/{LRx4,blur}``; blur as 16-bit σ×10 three-channel PNG; semseg by layout), ``--layout``
auto|nyuv2|cityscapes; ``png`` writes plain lossless folders. See :mod:`bsrdata.export` and
:mod:`bsrdata.export_cmos`.
"""

from __future__ import annotations

import click

from bsrdata.cli.progress import bar_callback


@click.command()
@click.argument("root", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["cmos", "png"]), default="cmos", show_default=True,
              help="cmos: the CMOS code's folder layout; png: plain lossless folders.")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Folder to create (must be new or empty).")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier export in --out (refused if it holds files its bsr_export.json does not list).")
@click.option("--layout", type=click.Choice(["auto", "nyuv2", "cityscapes"]), default="auto", show_default=True,
              help="cmos only: nyuv2 = grouped test split as val/, semseg 1 channel k+1 (0 void); cityscapes = "
                   "splits by name, semseg 3 channels = train id (255 void); auto = from the dataset's source.")
def export(root, fmt, out_dir, overwrite, layout):
    """Export the dataset at ROOT (a folder with manifest.json) to image folders."""
    from tqdm import tqdm

    from bsrdata.export import export_dataset

    bar = tqdm(total=0, unit="img", desc=f"export {fmt}", leave=False, dynamic_ncols=True)
    progress = bar_callback(bar)

    try:
        summary = export_dataset(root, out_dir, fmt, overwrite=overwrite, progress=progress,
                                 layout=None if layout == "auto" else layout)
    finally:
        bar.close()
    parts = [f"{s} {n}" for s, n in summary["splits"].items()]
    if summary["groups"]:
        parts.append(f"groups {len(summary['groups'])}×{next(iter(summary['groups'].values()))}")
    kind = fmt + (f", layout {summary['layout']}" if summary.get("layout") else "")
    moved = [f"{s} as {f}/" for s, f in summary.get("folders", {}).items() if s != f]
    click.echo(f"exported {', '.join(parts)} ({summary['files']} files) to {summary['out']} [{kind}]"
               + (f"; {', '.join(moved)}" if moved else ""))
