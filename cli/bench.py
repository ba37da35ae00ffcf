"""``bsr bench``: score SR methods on the test groups and print the paper's table."""

from __future__ import annotations

import sys

import click

from bsrdata.errors import BsrError


class _Bar:
    def __init__(self, total, desc):
        from tqdm import tqdm

        self.t = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(self, n):
        self.t.update(n)

    def close(self):
        self.t.close()


@click.command("bench")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="Built dataset folder.")
@click.option("--method", "methods", multiple=True, required=True,
              help='bicubic | oracle | cmos | command:"PROG {in} {out}"; repeatable; "LABEL=..." names the row.')
@click.option("--groups", default="1-5", show_default=True, help="Test groups, e.g. 1-5 or 1,3.")
@click.option("--crop-border", default=0, show_default=True, type=int,
              help="Pixels cropped per side before PSNR/SSIM (CMOS test code: 0; BasicSR/MANet: the scale).")
@click.option("--out", "out_dir", default="bench-results", show_default=True, type=click.Path(file_okay=False),
              help="Results folder (resumable; tables bench.md/.csv/.json).")
@click.option("--ckpt", default=None, type=click.Path(),
              help="oracle: RRDB-SFT checkpoint; cmos: a blind-chain checkpoint, or RRDB-SFT with --cmos-ckpt.")
@click.option("--cmos-ckpt", default=None, type=click.Path(), help="cmos: CMOS checkpoint (stage 1).")
@click.option("--device", default="auto", show_default=True, help="Torch device for oracle/cmos (auto, cpu, cuda).")
@click.option("--shell", is_flag=True, help="Run command: methods through /bin/sh (default: no shell).")
@click.option("--chunk", default=32, show_default=True, type=int, help="LR images per call of a command: method.")
@click.option("--timeout", default=None, type=float, help="Seconds allowed per command: call.")
@click.option("--save-images", is_flag=True, help="Also write the SR PNGs under OUT/sr/LABEL/.")
@click.option("--fresh", is_flag=True, help="Ignore stored results of these methods and score again.")
def bench(data_dir, methods, groups, crop_border, out_dir, ckpt, cmos_ckpt, device, shell, chunk, timeout,
          save_images, fresh):
    """Score SR METHODs on the test groups of DATA (PSNR/SSIM on Y) and print the table."""
    from bsrdata import benchmark as bm

    data = bm.BenchData(data_dir, bm.parse_groups(groups))
    if crop_border < 0:
        raise BsrError(f"--crop-border: must be >= 0, got {crop_border}")
    built, errors = [], []
    for spec in methods:
        try:
            built.append(bm.get_method(spec, shell=shell, chunk=chunk, timeout=timeout, ckpt=ckpt,
                                       cmos_ckpt=cmos_ckpt, device=device))
        except BsrError as exc:
            errors.append(str(exc))
    labels = [m.label for m in built]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise BsrError(f"--method: two methods are labelled {dup[0]!r}; name them with LABEL=...")
    res = bm.run_bench(data, built, out_dir, crop_border=crop_border, progress=_Bar, save_images=save_images,
                       fresh=fresh)
    errors += res.errors
    click.echo(res.markdown, nl=False)
    click.echo(f"tables: {res.files['md']}, {res.files['csv']}, {res.files['json']}", err=True)
    for e in errors:
        click.echo(f"bsr: error: {e}", err=True)
    if errors:
        sys.exit(1)
