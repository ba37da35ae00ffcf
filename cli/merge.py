"""``bsr merge OUT PART...``: join slices built with ``--shard K/N`` into one dataset."""

from __future__ import annotations

import click


@click.command("merge")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("parts", nargs=-1, required=True, type=click.Path())
def merge(out, parts):
    """Join the PART folders (or part manifests) of a sliced build into OUT (manifest written last)."""
    from bsrdata.build import merge as do_merge

    m = do_merge(out, list(parts))
    n = sum(len(s["shards"]) for s in m["splits"].values())
    click.echo(f"merged {len(parts)} part folder(s) into {out}: {n} shards, "
               + ", ".join(f"{k} {v['count']}" for k, v in m["splits"].items()))
