"""``bsr build demo|nyuv2|cityscapes|folder ... --out DIR``: build a benchmark dataset as HDF5 shards."""

from __future__ import annotations

import click

from bsrdata.cli.progress import LazyBar

DEMO_TRAIN, DEMO_TEST, DEMO_SIZE = 40, 15, "240x320"


def _common(f):
    """Options every builder shares. Degradation options default to None = the recipe's / the default."""
    opts = [
        click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder."),
        click.option("--workers", default=1, show_default=True, type=int, help="Worker processes."),
        click.option("--seed", default=None, type=int, help="Seed (default: the recipe's, else 0)."),
        click.option("--limit", default=None, type=int, help="Only the first N images of every split."),
        click.option("--renderer", type=click.Choice(["layered", "gather"]), default=None,
                     help="Blur operator (default layered)."),
        click.option("--downsample", type=click.Choice(["direct", "bicubic"]), default=None,
                     help="x4 downsampler (default direct)."),
        click.option("--noise", type=float, default=None, help="Gaussian noise σ_n on the 0-255 scale (default 0)."),
        click.option("--max-coc", type=int, default=None, help="Largest CoC in px, odd (default 21)."),
        click.option("--scale", type=int, default=None, help="Downsampling factor (default 4)."),
        click.option("--coc-step", type=float, default=None, help="CoC rounding step in px (default 0.1)."),
        click.option("--depth-clip", type=float, default=None, metavar="P",
                     help="Clamp each frame's depth to its P-th and (100-P)-th percentiles (0 <= P < 50; "
                          "default 0 = off, the paper) so outlier pixels cannot set the CoC range."),
        click.option("--floor-colour/--no-floor-colour", default=None,
                     help="Layered: zero the colour where the blurred mask is floored (no overshoot)."),
        click.option("--shard", "shard", default="1/1", show_default=True,
                     help="Build only slice K/N (merge slices with `bsr merge`); auto = K/N from a SLURM job "
                          "array (SLURM_ARRAY_TASK_ID/_COUNT/_MIN) or torchrun's RANK/WORLD_SIZE."),
        click.option("--shard-size", default=None, type=int,
                     help="Renderings per shard file (default 32; demo 16)."),
        click.option("--with-depth", is_flag=True, help="Also store depth (metres)."),
        click.option("--invariant-fraction", default=None,
                     help="Share of the training keys rendered space-invariant, e.g. 1 (all, paper Table 4) "
                          "or 0.5 (default 1/5)."),
        click.option("--shard-format", type=click.Choice(["1", "2"]), default="2", show_default=True,
                     help="Shard file format: 2 = Blosc + tiles + coded blur (fast reading), 1 = gzip (the first)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _cfg(base: dict, **over):
    from bsrdata.degrade import DegradeConfig

    d = dict(base)
    for k, v in over.items():
        if v is not None:
            d[k] = v
    return DegradeConfig.from_dict(d)


def _run(source, kw, *, recipe=None, base_cfg=None, default_seed=0, source_files=None, grouped=("test",),
         n_groups=5):
    from bsrdata.build import build_dataset, check_build_options

    cfg = _cfg(base_cfg or {}, max_coc=kw["max_coc"], scale=kw["scale"], coc_step=kw["coc_step"],
               renderer=kw["renderer"], downsample=kw["downsample"], noise=kw["noise"], depth_clip=kw["depth_clip"],
               floor_colour=kw["floor_colour"])
    seed = default_seed if kw["seed"] is None else kw["seed"]
    shard_size = 32 if kw["shard_size"] is None else kw["shard_size"]  # 0 is refused, not read as "default"
    if str(kw["shard"]).strip().lower() == "auto":
        from bsrdata.build import shard_from_env

        kw["shard"] = "{}/{}".format(*shard_from_env())  # resolved once: the bar and the lock name the slice
    check_build_options(workers=kw["workers"], shard_size=shard_size, limit=kw["limit"], shard=kw["shard"],
                        n_groups=n_groups, seed=seed)
    from bsrdata.plan import invariant_fraction

    frac = invariant_fraction(kw["invariant_fraction"])
    if recipe is not None:
        from bsrdata.recipes import with_deviations

        recipe = with_deviations(recipe, cfg, seed, kw["limit"], frac)
    bar = None
    status = None
    if not kw["quiet"]:
        # drawn on the first progress call, with its real total: no empty bar first
        bar = LazyBar(unit="img", desc=f"build {kw['shard']}" if kw["shard"] != "1/1" else "build",
                      dynamic_ncols=True)

        def status(text):
            click.echo(f"bsr build: {text}", err=True)
    try:
        summary = build_dataset(source, kw["out"], cfg, seed=seed, workers=kw["workers"],
                                shard_size=shard_size, limit=kw["limit"], shard=kw["shard"],
                                recipe=recipe, progress=bar, with_depth=kw["with_depth"],
                                source_files=source_files, grouped=grouped, n_groups=n_groups, status=status,
                                invariant_fraction=frac, shard_format=int(kw["shard_format"]))
    except BaseException:
        if bar is not None:
            bar.close(leave=False)  # the error line alone, not a half bar above it
        raise
    if bar is not None:
        bar.close()
    _print_summary(summary)
    return summary


def _print_summary(s):
    from bsrdata.workers import describe

    echo = click.echo
    if s.get("workers") and describe(s["workers"]):
        echo(describe(s["workers"]))
    echo(f"built in {s['seconds']:.1f} s: {s['rendered_shards']} shards rendered, {s['skipped_shards']} kept "
         "from an earlier run")
    for split, c in s["splits"].items():
        echo(f"  {split:<6} {c['images']:>5} images, {c['renderings']:>5} renderings "
             f"({c['invariant']} invariant), {c['shards']} shards here")
    for g, c in s["groups"].items():
        echo(f"  group {g}: {c['members']} members, {c['invariant']} invariant")
    h = s["sigma_hist"]
    edges, frac = h["edges"], h["fraction"]
    echo("  σ histogram (HR px, fraction of pixels):")
    for i, f in enumerate(frac):
        echo(f"    [{edges[i]:5.2f}, {edges[i + 1]:5.2f}{']' if i == len(frac) - 1 else ')'} "
             f"{f:6.3f} {'#' * int(round(f * 50))}")
    echo(f"manifest: {s['manifest']}")
    for w in s.get("warnings", ()):
        click.echo(f"bsr build: {w}", err=True)


@click.group("build")
def build():
    """Build a benchmark dataset (HDF5 shards + manifest.json)."""


def _size(text):
    from bsrdata.plan import parse_hw

    return parse_hw(text, option="--size", example="240x320")


@build.command("demo")
@_common
@click.option("--train", "n_train", default=DEMO_TRAIN, show_default=True, type=int, help="Synthetic train frames.")
@click.option("--test", "n_test", default=DEMO_TEST, show_default=True, type=int, help="Synthetic test frames.")
@click.option("--size", default=DEMO_SIZE, show_default=True, help="Frame size HxW.")
@click.option("--middlebury/--no-middlebury", default=True, show_default=True,
              help="Add the real Middlebury Motorcycle frame (resized) to the test split.")
def demo(n_train, n_test, size, middlebury, **kw):
    """Embedded data, no download: synthetic RGB-D scenes (+ Middlebury) -> train + 5 test groups."""
    from bsrdata.sources.synthetic import demo_source

    h, w = _size(size)
    src = demo_source(n_train=n_train, n_test=n_test, size=(h, w), seed=0 if kw["seed"] is None else kw["seed"],
                      middlebury=middlebury)
    kw["with_depth"] = True  # the demo always stores depth (the preview shows it)
    if kw["shard_size"] is None:
        kw["shard_size"] = 16  # small shards keep both workers busy on a small dataset
    _run(src, kw)


@build.command("nyuv2")
@_common
@click.option("--mat", required=True, type=click.Path(), help="nyu_depth_v2_labeled.mat (MATLAB v7.3).")
@click.option("--splits", "splits_mat", required=True, type=click.Path(), help="splits.mat (trainNdxs, testNdxs).")
@click.option("--class-map", required=True, type=click.Path(), help="classMapping40.mat (mapClass).")
@click.option("--recipe", default="nyuv2-bsr-1.0", show_default=True, help="Release recipe name or JSON path.")
@click.option("--no-checksum", is_flag=True, help="Skip hashing the source files (recorded as unchecked).")
def nyuv2(mat, splits_mat, class_map, recipe, no_checksum, **kw):
    """NYUv2-BSR from the labelled .mat (795 train / 654 test, 40 classes)."""
    from bsrdata.recipes import check_source_files, load_recipe
    from bsrdata.sources import get_source

    rec = load_recipe(recipe)
    files = None
    if not no_checksum:
        files = check_source_files(rec, {"nyu_depth_v2_labeled.mat": mat, "splits.mat": splits_mat,
                                         "classMapping40.mat": class_map})
    opts = {k: v for k, v in rec.get("source", {}).items() if k in ("border_px",)}
    src = get_source("nyuv2", mat=mat, splits=splits_mat, class_map=class_map, **opts)
    plan = rec.get("plan", {})
    _run(src, kw, recipe=rec, base_cfg=rec["degrade"], default_seed=rec["seed"], source_files=files,
         grouped=tuple(plan.get("grouped", ("test",))), n_groups=int(plan.get("n_groups", 5)))


@build.command("cityscapes")
@_common
@click.option("--root", required=True, type=click.Path(), help="Cityscapes root (leftImg8bit/, disparity/, ...).")
@click.option("--disparity", default="provided", show_default=True, help="provided | sgbm | cache:DIR")
@click.option("--recipe", default="cityscapes-bsr-1.0", show_default=True, help="Release recipe name or JSON path.")
def cityscapes(root, disparity, recipe, **kw):
    """Cityscapes-BSR from a Cityscapes download (train / val / test)."""
    from bsrdata.recipes import load_recipe
    from bsrdata.sources import get_source

    rec = load_recipe(recipe)
    opts = {k: v for k, v in rec.get("source", {}).items() if k in ("min_disp", "max_disp")}
    src = get_source("cityscapes", root=root, disparity=disparity, **opts)
    plan = rec.get("plan", {})
    _run(src, kw, recipe=rec, base_cfg=rec["degrade"], default_seed=rec["seed"],
         grouped=tuple(plan.get("grouped", ("test",))), n_groups=int(plan.get("n_groups", 5)))


@build.command("folder")
@_common
@click.option("--root", required=True, type=click.Path(), help="Folder with rgb/ and depth/ (see docs).")
@click.option("--depth-png-scale", default=0.001, show_default=True, type=float,
              help="Metres per unit of a 16-bit depth PNG.")
@click.option("--num-classes", default=None, type=int, help="Number of label classes, if labels are given.")
@click.option("--size", "frame_size", default=None, metavar="HxW",
              help="Bring every frame to HxW (needed when sizes differ): centre crop, or see --fit.")
@click.option("--fit", type=click.Choice(["crop", "resize"]), default="crop", show_default=True,
              help="With --size: centre crop, or resize (colour area/bicubic, depth and labels nearest).")
def folder(root, depth_png_scale, num_classes, frame_size, fit, **kw):
    """Your own RGB-D images (+ optional labels)."""
    from bsrdata.sources import get_source

    opts = {"depth_png_scale": depth_png_scale}
    if frame_size is not None:
        opts.update(size=_size(frame_size), fit=fit)
    if num_classes is not None:
        opts["num_classes"] = num_classes
    src = get_source("folder", root=root, **opts)
    _run(src, kw)


