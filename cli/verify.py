"""``bsr verify DIR [--full]``: check a built dataset; exit 0 only when nothing is wrong."""

from __future__ import annotations

import click

from bsrdata.cli.progress import LazyBar
from bsrdata.errors import BsrError


@click.command("verify")
@click.argument("root", type=click.Path())
@click.option("--full", is_flag=True, help="Also check the sha256 of every shard file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def verify(root, full, quiet):
    """Check DIR against its manifest: counts, shapes, dtypes, σ range, labels, groups (--full: sha256)."""
    from bsrdata.verify import verify_dataset

    bar = None if quiet else LazyBar(unit="shard", desc="verify", dynamic_ncols=True)
    try:
        rep = verify_dataset(root, full=full, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    for w in rep.get("warnings", ()):
        click.echo(f"bsr verify: warning: {w}", err=True)
    probs = rep["problems"]
    if probs:
        if len(probs) > 1:  # one problem (e.g. a malformed manifest) is the error line alone
            for p in probs:
                click.echo(f"  {p}", err=True)
        raise BsrError(f"{root}: {len(probs)} problem(s); first: {probs[0]}")
    click.echo(f"{root}: OK ({rep['shards']} shards, {rep['samples']} samples"
               f"{', sha256 checked' if full else ''})")
