"""``bsr eval cmos --data DIR --ckpt RUN [--group all|1-5|1,3] [--split test] [--out DIR]``.

Prints a Markdown table (rows = groups and Avg; blur-map PSNR/SSIM, mIoU %) and writes ``cmos_eval.md``,
``cmos_eval.csv`` and ``cmos_eval.json`` (with the checkpoint and dataset provenance and the scoring
conventions) under ``--out``. ``--miou public`` (default: the CMOS test code's mean over all classes, a class
absent from ground truth and prediction counting 0) or ``--miou present`` (mean over the classes present).
The work is :func:`bsrdata.models.evaluate.run_eval`; the tables are :mod:`bsrdata.tables`.
"""

from __future__ import annotations

import os

import click

from bsrdata.errors import BsrError


@click.command("eval")
@click.argument("task_name", metavar="TASK", type=click.Choice(["cmos"]))
@click.option("--data", required=True, type=click.Path(file_okay=False), help="built dataset folder")
@click.option("--ckpt", required=True, type=click.Path(file_okay=False), help="run folder or checkpoint folder")
@click.option("--group", "--groups", "group", default="all", show_default=True,
              help="all, or test groups like 1, 1,3 or 1-5")
@click.option("--split", default="test", show_default=True, help="split to score (groups apply to test)")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="folder for .md/.csv/.json results")
@click.option("--device", default=None, help="cpu, cuda, ...")
@click.option("--limit", default=0, type=int, help="score only the first N images of each group (0 = all)")
@click.option("--miou", default="public", show_default=True, type=click.Choice(["public", "present"]),
              help="public: mean IoU over all classes, absent ones count 0 (CMOS test code, paper tables); "
                   "present: mean over the classes present in ground truth or prediction")
@click.option("--strata", "use_strata", is_flag=True,
              help="also blur-map scores per σ bin, boundary band vs flat, IVA vs VA (cmos_strata.md/.json)")
@click.option("--strata-bins", default=None, help="σ bin edges (HR px) like 0,1,2,5, or one bin width")
@click.option("--band-width", default=8, show_default=True, type=int, help="boundary band width (HR px)")
@click.option("--band-threshold", default=0.5, show_default=True, type=float,
              help="σ range (px) in the band window that marks a blur discontinuity")
@click.option("--figures", "figures_dir", default=None, type=click.Path(file_okay=False),
              help="write a PNG of predicted vs true σ, the error and the segmentation here")
def evaluate(task_name, data, ckpt, group, split, out, device, limit, miou, use_strata, strata_bins, band_width,
             band_threshold, figures_dir):
    """Score a CMOS checkpoint: blur-map PSNR/SSIM and mIoU per test group and on average."""
    from bsrdata.models.evaluate import run_eval

    if not os.path.isfile(os.path.join(data, "manifest.json")):
        raise BsrError(f"--data {data}: no manifest.json (not a built dataset)")
    spec = None
    if use_strata:
        from bsrdata.benchmark import BenchData
        from bsrdata.strata import StrataSpec

        spec = StrataSpec.make(BenchData(data, split=split).sigma_max, strata_bins, band_width, band_threshold)
    _, md = run_eval(data, ckpt, group=group, split=split, out=out, device=device, limit=limit, miou=miou,
                     strata=spec, figures=figures_dir)
    click.echo(md)
