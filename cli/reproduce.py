"""``bsr reproduce TABLE --data DIR --out DIR [--small] [--dry-run]``: one of the paper's ablation tables
(docs/reproduce.md), trained and scored end to end by :func:`bsrdata.models.reproduce.reproduce`."""

from __future__ import annotations

import click

from bsrdata.errors import BsrError

TABLES = ("table4", "table5", "table6", "table7", "table8")


@click.command("reproduce")
@click.argument("table", type=click.Choice(TABLES))
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Built dataset (NYUv2-BSR, or a demo "
              "build with --small).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for runs/, eval/, bench/ "
              "and TABLE.md / TABLE.json (resumable).")
@click.option("--data-iva", default=None, type=click.Path(file_okay=False),
              help="table4: the all-invariant training build (bsr build ... --invariant-fraction 1).")
@click.option("--small", is_flag=True, help="CPU variant: the *_demo configs (minutes; tiny-run numbers).")
@click.option("--configs", "configs_dir", default=None, type=click.Path(file_okay=False),
              help="The repository's configs/ folder (default: beside the installed package).")
@click.option("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override applied to every run of the table, e.g. train.iterations=300.")
@click.option("--dry-run", is_flag=True, help="Print the bsr commands this runs, run nothing.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def reproduce(table, data, data_iva, out, small, configs_dir, device, sets, dry_run, no_progress):
    """Train the runs of TABLE (each resumes) and score its rows in the paper's layout."""
    import os

    from bsrdata.models import reproduce as rp

    cdir = configs_dir or rp.CONFIGS_DIR
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        raise BsrError(f"--data {data}: no manifest.json (not a built dataset)")
    if dry_run:
        from bsrdata.manifest import load_manifest

        n = load_manifest(data).num_classes
        for line in rp.plan(table, data, out, small=small, configs_dir=cdir, num_classes=n, sets=sets,
                            data_iva=data_iva):
            click.echo(line)
        return
    res = rp.reproduce(table, data, out, small=small, configs_dir=cdir, device=device, sets=sets, data_iva=data_iva,
                       progress=not no_progress, log=lambda m: click.echo(f"reproduce {table}: {m}", err=True))
    click.echo(res["markdown"])
    click.echo(f"tables: {res['files']['md']}, {res['files']['json']}", err=True)
