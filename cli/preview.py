"""``bsr preview DIR [--split --group --n] --out panel.png``: one PNG panel of a built dataset."""

from __future__ import annotations

import click


@click.command("preview")
@click.argument("root", type=click.Path())
@click.option("--split", default="test", show_default=True, help="Split to show.")
@click.option("--group", default=None, type=int, help="Test group 1..5 (default: the stored renderings).")
@click.option("--n", "n", default=4, show_default=True, type=int, help="Number of samples (rows).")
@click.option("--start", default=0, show_default=True, type=int, help="Index of the first sample.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
def preview(root, split, group, n, start, out):
    """HR | LR | blur map (σ colour bar) | segmentation | depth, one row per sample."""
    from bsrdata.preview import make_panel

    path = make_panel(root, out, split=split, group=group, n=n, start=start)
    click.echo(f"preview: {path}")
