"""``bsr bench``: score SR methods on the test groups and print the paper's table.

This command composes the harness (:mod:`bsrdata.benchmark`, numpy only) with the torch methods: it imports
:mod:`bsrdata.models.bench_methods`, which registers ``oracle`` and ``cmos+rrdb_sft``, and builds every
``--method`` through the harness's method registry. The torch import happens only when a method other than
``bicubic``/``command:`` is asked for; ``--help`` lists the names the models register.
"""

from __future__ import annotations

import sys

import click

from bsrdata.errors import BsrError

#: modules whose import registers bench methods (the torch side)
METHOD_MODULES = ("bsrdata.models.bench_methods",)
NUMPY_METHODS = ("bicubic",)


def load_methods() -> None:
    """Import the modules that register the torch bench methods."""
    import importlib

    for mod in METHOD_MODULES:
        importlib.import_module(mod)


def _method_help() -> str:
    from bsrdata import benchmark as bm

    try:
        load_methods()
    except ImportError:  # torch missing: only the numpy methods
        pass
    aliases = bm.METHODS.aliases()
    names = [n + "".join(f" (alias {a})" for a, t in sorted(aliases.items()) if t == n) for n in bm.METHODS.names()]
    return (" | ".join(names) + ' | command:"PROG {in} {out}"; repeatable; "LABEL=..." names the row.')


def parse_opts(items) -> dict:
    """``--opt KEY=VALUE`` items -> {key: value}; values read as YAML scalars (numbers, true/false, text)."""
    import yaml

    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise BsrError(f"--opt: expected KEY=VALUE with a plain key, got {item!r}")
        try:
            out[key] = yaml.safe_load(val) if val.strip() else ""
        except yaml.YAMLError:
            out[key] = val
    return out


class _MethodOption(click.Option):
    """``--method`` whose help lists the registered method names (computed when help is shown)."""

    def get_help_record(self, ctx):
        self.help = _method_help()
        return super().get_help_record(ctx)


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
@click.option("--method", "methods", multiple=True, required=True, cls=_MethodOption,
              help='bicubic | oracle | cmos+rrdb_sft | command:"PROG {in} {out}"; repeatable.')
@click.option("--groups", default="1-5", show_default=True, help="Test groups, e.g. 1-5 or 1,3.")
@click.option("--crop-border", default=0, show_default=True, type=int,
              help="Pixels cropped per side before PSNR/SSIM (CMOS test code: 0; BasicSR/MANet: the scale).")
@click.option("--out", "out_dir", default="bench-results", show_default=True, type=click.Path(file_okay=False),
              help="Results folder (resumable; tables bench.md/.csv/.json).")
@click.option("--ckpt", default=None, type=click.Path(),
              help="oracle: RRDB-SFT checkpoint; cmos+rrdb_sft: a blind-chain checkpoint, or RRDB-SFT with "
                   "--cmos-ckpt.")
@click.option("--cmos-ckpt", default=None, type=click.Path(), help="cmos+rrdb_sft: CMOS checkpoint (stage 1).")
@click.option("--device", default="auto", show_default=True,
              help="Torch device of the torch methods (auto, cpu, cuda).")
@click.option("--shell", is_flag=True, help="Run command: methods through /bin/sh (default: no shell).")
@click.option("--chunk", default=32, show_default=True, type=int, help="LR images per call of a command: method.")
@click.option("--timeout", default=None, type=float, help="Seconds allowed per command: call.")
@click.option("--save-images", is_flag=True, help="Also write the SR PNGs under OUT/sr/LABEL/.")
@click.option("--fresh", is_flag=True, help="Ignore stored results of these methods and score again.")
@click.option("--strata", "use_strata", is_flag=True,
              help="Also score per σ bin, blur-boundary band vs flat, IVA vs VA (strata.md/.json).")
@click.option("--strata-bins", default=None, help="σ bin edges (HR px) like 0,1,2,5, or one bin width; "
              "default 0,1,...,ceil(σ_max).")
@click.option("--band-width", default=8, show_default=True, type=int, help="Boundary band width (HR px).")
@click.option("--band-threshold", default=0.5, show_default=True, type=float,
              help="σ range (px) in the band window that marks a blur discontinuity.")
@click.option("--figures", "figures_dir", default=None, type=click.Path(file_okay=False),
              help="Write PNG figures here (PSNR vs σ bin with --strata, bar chart, comparison panels).")
@click.option("--crop", "crop", default=None, help="Zoom crop of the comparison panels, X,Y,W,H in HR px "
              "(default: where the methods differ most).")
@click.option("--iters", default=None, type=int,
              help="Per-image methods (kernelgan): optimisation iterations per image (default: the official).")
@click.option("--time-budget", default=None, type=float,
              help="Per-image methods (kernelgan): seconds allowed per image (stops the schedule early).")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="A method option (repeatable), e.g. --opt align=shift; docs/baselines.md lists them.")
def bench(data_dir, methods, groups, crop_border, out_dir, ckpt, cmos_ckpt, device, shell, chunk, timeout,
          save_images, fresh, use_strata, strata_bins, band_width, band_threshold, figures_dir, crop, iters,
          time_budget, opts):
    """Score SR METHODs on the test groups of DATA (PSNR/SSIM on Y) and print the table."""
    from bsrdata import benchmark as bm

    data = bm.BenchData(data_dir, bm.parse_groups(groups))
    if crop_border < 0:
        raise BsrError(f"--crop-border: must be >= 0, got {crop_border}")
    bodies = [bm.split_label(spec)[1] for spec in methods]
    if any(b not in NUMPY_METHODS and not b.startswith(bm.COMMAND_PREFIX) for b in bodies):
        try:
            load_methods()  # registers the torch methods (imports torch)
        except ImportError:
            pass  # without torch only bicubic and command: exist; others are "unknown bench method"
    if iters is not None and iters < 1:
        raise BsrError(f"--iters: must be >= 1, got {iters}")
    if time_budget is not None and not time_budget > 0:
        raise BsrError(f"--time-budget: must be > 0 seconds, got {time_budget}")
    method_opts = parse_opts(opts)
    built, errors = [], []
    for spec in methods:
        try:
            built.append(bm.get_method(spec, shell=shell, chunk=chunk, timeout=timeout, ckpt=ckpt,
                                       cmos_ckpt=cmos_ckpt, device=device, iters=iters,
                                       time_budget=time_budget, opts=method_opts))
        except BsrError as exc:
            errors.append(str(exc))
    labels = [m.label for m in built]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise BsrError(f"--method: two methods are labelled {dup[0]!r}; name them with LABEL=...")
    spec = None
    if use_strata:
        from bsrdata.strata import StrataSpec

        spec = StrataSpec.make(data.sigma_max, strata_bins, band_width, band_threshold)
    if figures_dir:
        from bsrdata.figures import parse_crop, require_matplotlib

        require_matplotlib()
        crop = parse_crop(crop)
    res = bm.run_bench(data, built, out_dir, crop_border=crop_border, progress=_Bar,
                       save_images=save_images or bool(figures_dir), fresh=fresh, strata=spec)
    errors += res.errors
    click.echo(res.markdown, nl=False)
    click.echo(f"tables: {res.files['md']}, {res.files['csv']}, {res.files['json']}", err=True)
    aggs = None
    if spec is not None:
        from bsrdata.strata import write_bench_strata

        md, aggs = write_bench_strata(data, out_dir, res.rows, spec, crop_border)
        click.echo("\n" + md, nl=False)
        click.echo(f"strata: {out_dir}/strata.md, {out_dir}/strata.json", err=True)
    if figures_dir and res.rows:
        from bsrdata.figures import bench_figures

        for path in bench_figures(data, out_dir, res.rows, figures_dir, strata=aggs, crop=crop):
            click.echo(f"figure: {path}", err=True)
    for e in errors:
        click.echo(f"bsr: error: {e}", err=True)
    if errors:
        sys.exit(1)
