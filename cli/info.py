"""``bsr info DIR [--card] [--out FOLDER]``: the dataset card of a built dataset (:mod:`bsrdata.card`).

Prints the card (counts per split and group as the paper's Table 1, σ and rendering statistics, the recipe
and its deviations, sizes on disk, the manifest's SHA-256); ``--card`` also writes ``CARD.md`` and the σ
histogram ``card_sigma_hist.png`` into ``--out`` (default: DIR).
"""

from __future__ import annotations

import os

import click

from bsrdata.errors import BsrError


@click.command("info")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--card", is_flag=True, help="Write CARD.md and card_sigma_hist.png (needs matplotlib).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for the card files (default: the dataset folder).")
def info(root, card, out_dir):
    """Print the dataset card of ROOT; --card writes it as Markdown with a σ histogram PNG."""
    from bsrdata import card as cd

    if not os.path.isfile(os.path.join(root, "manifest.json")):
        raise BsrError(f"{root}: no manifest.json (not a built dataset)")
    if card:
        from bsrdata.figures import require_matplotlib

        require_matplotlib()
        md_path, png = cd.write_card(root, out_dir)
        with open(md_path, encoding="utf-8") as fh:
            click.echo(fh.read(), nl=False)
        click.echo(f"card: {md_path}, {png}", err=True)
    else:
        click.echo(cd.card_markdown(cd.collect(root)), nl=False)
