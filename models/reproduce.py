"""``bsr reproduce TABLE``: the paper's ablations (Tables 4-8) as one command each (docs/reproduce.md).

A table is a list of training runs (:class:`Run`: a task, a config from ``configs/``, ``--set`` switches,
and checkpoints of earlier runs it starts from) and a list of rows (:class:`Row`), each scored from one
run: ``cmos`` rows with :func:`bsrdata.models.evaluate.run_eval` (blur-map PSNR/SSIM, mIoU, with strata),
``sr`` rows with the bench harness (SR PSNR/SSIM on Y, with strata). :func:`reproduce` trains what is not
trained yet (each run resumes), scores every row and writes ``OUT/TABLE.md`` and ``OUT/TABLE.json`` (the
rows, every run's config, checkpoint SHA-256 and the dataset's manifest SHA-256).

``small=True`` swaps each run's config for its CPU variant (``*_demo`` / ``*_small``: minutes on a demo
build, numbers that only show the sequence works); ``plan(...)`` returns the equivalent ``bsr`` command
lines (``--dry-run``), which is also what docs/reproduce.md lists.
"""

from __future__ import annotations

import dataclasses
import json
import os

from bsrdata.errors import BsrError

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: ``OUT/runs/<slug>``. ``config`` / ``small_config``: file names in ``configs/``;
    ``sets``: ``key=value`` overrides; ``inits``: (config key, slug of an earlier run whose checkpoint it gets);
    ``data``: which dataset it trains on (``main`` = ``--data``, ``iva`` = ``--data-iva``)."""

    slug: str
    task: str
    config: str
    small_config: str
    sets: tuple = ()
    inits: tuple = ()
    data: str = "main"


@dataclasses.dataclass(frozen=True)
class Row:
    """One table row: ``kind`` ``cmos`` (score the CMOS run ``run``) or ``sr`` (bench ``method`` with the
    checkpoint of ``run`` and, for the chain, the CMOS of ``cmos_run``)."""

    label: str
    kind: str
    run: str
    method: str = ""
    cmos_run: str = ""


_GIA_OFF = ("model.gia.flow=false", "model.gia.channel=false", "model.gia.spatial=false")
_CMOS = ("cmos_nyuv2.yaml", "cmos_demo.yaml")
_SR = ("rrdb_sft_nyuv2.yaml", "rrdb_sft_demo.yaml")
_SR_NOSEG = ("rrdb_sft_noseg_nyuv2.yaml", "rrdb_sft_demo.yaml")

def _manet_runs(prefix: str, data: str) -> list:
    """MANet's three stages on ``data`` (``main`` or ``iva``), run folders ``<prefix>_s1..3``."""
    st = [(f"manet_nyuv2_stage{k}.yaml", f"manet_small_stage{k}.yaml") for k in (1, 2, 3)]
    return [Run(f"{prefix}_s1", "manet", *st[0], data=data), Run(f"{prefix}_s2", "manet", *st[1], data=data),
            Run(f"{prefix}_s3", "manet", *st[2], inits=(("init.estimator_ckpt", f"{prefix}_s1"),
                                                          ("init.sr_ckpt", f"{prefix}_s2")), data=data)]


TABLES = {
    "table4": ("MANet trained on space-invariant blur only vs on NYUv2-BSR (paper Table 4)",
               _manet_runs("t4_iva", "iva") + _manet_runs("t4_bsr", "main"),
               [Row("MANet, all-IVA training", "sr", "t4_iva_s3", "manet"),
                Row("MANet, NYUv2-BSR training", "sr", "t4_bsr_s3", "manet")]),
    "table5": ("GIA without the flow / channel / spatial parts (paper Table 5)", [
        Run("t5_none", "cmos", *_CMOS, _GIA_OFF),
        Run("t5_f", "cmos", *_CMOS, _GIA_OFF[1:]),
        Run("t5_fc", "cmos", *_CMOS, _GIA_OFF[2:]),
        Run("t5_fcs", "cmos", *_CMOS),
    ], [Row("w/o GIA", "cmos", "t5_none"), Row("F", "cmos", "t5_f"), Row("F+C", "cmos", "t5_fc"),
        Row("F+C+S", "cmos", "t5_fcs")]),
    "table6": ("RRDB-SFT with and without the semantic prior (paper Table 6)", [
        Run("t6_noseg", "rrdb-sft", *_SR_NOSEG, ("model.name=rrdb_sft_noseg",)),
        Run("t6_seg", "rrdb-sft", *_SR),
    ], [Row("w/o semantics", "sr", "t6_noseg", "oracle"), Row("with semantics", "sr", "t6_seg", "oracle")]),
    "table7": ("Single-task CMOS variants and the SR they lead to (paper Table 7)", [
        Run("t7_blur", "cmos", *_CMOS, ("model.name=cmos_blur",)),
        Run("t7_seg", "cmos", *_CMOS, ("model.name=cmos_seg",)),
        Run("t7_both", "cmos", *_CMOS),
        Run("t6_noseg", "rrdb-sft", *_SR_NOSEG, ("model.name=rrdb_sft_noseg",)),
        Run("t6_seg", "rrdb-sft", *_SR),
    ], [Row("blur only", "cmos", "t7_blur"), Row("segmentation only", "cmos", "t7_seg"),
        Row("multi-task", "cmos", "t7_both"),
        Row("SR from blur only", "sr", "t6_noseg", "cmos", "t7_blur"),
        Row("SR from multi-task", "sr", "t6_seg", "cmos", "t7_both")]),
    "table8": ("CMOS with and without auxiliary supervision (paper Table 8)", [
        Run("t8_aux", "cmos", *_CMOS),
        Run("t8_noaux", "cmos", *_CMOS, ("loss.aux_weight=0",)),
    ], [Row("with auxiliary supervision", "cmos", "t8_aux"), Row("without", "cmos", "t8_noaux")]),
}


def table_names() -> list:
    return sorted(TABLES)


def _spec(table: str):
    if table not in TABLES:
        raise BsrError(f"unknown table {table!r} (known: {', '.join(table_names())})")
    return TABLES[table]


def _config_path(run: Run, small: bool, configs_dir: str) -> str:
    path = os.path.join(configs_dir, run.small_config if small else run.config)
    if not os.path.isfile(path):
        raise BsrError(f"{path}: config of run {run.slug} not found (pass --configs DIR, the repository's configs/)")
    return path


def _sets(run: Run, out: str, num_classes, extra=()) -> list:
    sets = list(run.sets) + list(extra)
    for key, slug in run.inits:
        sets.append(f"{key}={os.path.join(out, 'runs', slug, 'last')}")
    if num_classes and run.task in ("cmos", "rrdb-sft"):
        sets.append(f"model.num_classes={int(num_classes)}")
    return sets


def plan(table: str, data: str, out: str, *, small: bool = False, configs_dir: str = CONFIGS_DIR,
         num_classes=None, data_iva=None, sets=()) -> list:
    """The ``bsr`` command lines that :func:`reproduce` runs for ``table`` (strings, shell-quoted)."""
    import shlex

    _, runs, rows = _spec(table)
    lines = []
    for r in runs:
        d = (data_iva or "DATA_IVA") if r.data == "iva" else data
        argv = ["bsr", "train", r.task, "--data", d, "--config", _config_path(r, small, configs_dir),
                "--out", os.path.join(out, "runs", r.slug), "--resume"]
        for s in _sets(r, out, num_classes, sets):
            argv += ["--set", s]
        lines.append(shlex.join(argv))
    for row in rows:
        ck = os.path.join(out, "runs", row.run, "last")
        if row.kind == "cmos":
            argv = ["bsr", "eval", "cmos", "--data", data, "--ckpt", ck, "--strata",
                    "--out", os.path.join(out, "eval", row.run)]
        else:
            argv = ["bsr", "bench", "--data", data, "--out", os.path.join(out, "bench"), "--strata",
                    "--method", f"{_slug(row.label)}={row.method}", "--ckpt", ck]
            if row.cmos_run:
                argv += ["--cmos-ckpt", os.path.join(out, "runs", row.cmos_run, "last")]
        lines.append(shlex.join(argv))
    return lines


def _slug(label: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", label).strip("-")


def _train(run: Run, data, out, small, configs_dir, num_classes, device, progress, sets=()):
    from bsrdata.models.engine.config import load_user_config
    from bsrdata.models.engine.task import get_task
    from bsrdata.models.engine.trainer import train

    task = get_task(run.task)
    path = _config_path(run, small, configs_dir)
    user = load_user_config(path, _sets(run, out, num_classes, sets))
    user.setdefault("task", run.task)
    cfg = task.config(user, where=path)
    res = train(task, cfg, data, os.path.join(out, "runs", run.slug), resume=True, progress=progress, device=device)
    return {"slug": run.slug, "task": run.task, "config": os.path.basename(path),
            "sets": list(run.sets) + list(sets), "iterations": res["iterations"]}


def reproduce(table: str, data: str, out: str, *, small: bool = False, configs_dir: str = CONFIGS_DIR,
              device=None, progress: bool = True, data_iva=None, sets=(), log=print) -> dict:
    """Train the runs of ``table`` on ``data`` (each resumes), score its rows, write ``OUT/TABLE.md/.json``.

    ``sets``: ``key=value`` overrides applied to every run after its own (e.g. ``train.iterations=300``: a
    finished shorter run then continues; a run folder holding another model is refused). Returns ``{"markdown", "rows",
    "files"}``. ``log(line)`` reports each step."""
    from bsrdata.fileio import sha256_file, write_json_atomic, write_text_atomic
    from bsrdata.manifest import load_manifest

    title, runs, rows = _spec(table)
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        raise BsrError(f"--data {data}: no manifest.json (not a built dataset)")
    if any(r.data == "iva" for r in runs) and not (data_iva and os.path.isfile(os.path.join(data_iva,
                                                                                             "manifest.json"))):
        raise BsrError(f"--data-iva: {table} needs an all-invariant build (bsr build ... --invariant-fraction 1)")
    m = load_manifest(data)
    ncls = int(m.num_classes) if m.num_classes else None
    done = []
    for r in runs:
        log(f"train {r.slug} ({r.task}, {r.small_config if small else r.config}{', ' if r.sets else ''}"
            f"{' '.join(r.sets)})")
        done.append(_train(r, data_iva if r.data == "iva" else data, out, small, configs_dir, ncls, device,
                           progress, sets))
    scored = [_score(row, data, out, device, progress, log) for row in rows]
    md = _markdown(table, title, scored, small)
    prov = {"table": table, "title": title, "small": small, "dataset": os.path.abspath(data),
            "manifest_sha256": sha256_file(os.path.join(data, "manifest.json")), "runs": done}
    os.makedirs(out, exist_ok=True)
    files = {"md": os.path.join(out, f"{table}.md"), "json": os.path.join(out, f"{table}.json")}
    write_text_atomic(files["md"], md + "\n")
    write_json_atomic(files["json"], {"provenance": prov, "rows": scored}, indent=2, sort_keys=True, default=float)
    return {"markdown": md, "rows": scored, "files": files}


def _score(row: Row, data, out, device, progress, log) -> dict:
    from bsrdata.fileio import sha256_file
    from bsrdata.models.checkpoint import WEIGHTS

    ck = os.path.join(out, "runs", row.run, "last")
    sha = sha256_file(os.path.join(ck, WEIGHTS))
    if row.kind == "cmos":
        from bsrdata.models.evaluate import run_eval

        log(f"eval {row.label}")
        res_dir = os.path.join(out, "eval", row.run)
        rows, _ = run_eval(data, ck, out=res_dir, device=device, progress=progress, strata=True)
        avg = rows["avg"]
        st = {}
        sp = os.path.join(res_dir, "cmos_strata.json")
        if os.path.isfile(sp):  # a segmentation-only CMOS has no blur map, so no blur strata
            with open(sp, encoding="utf-8") as fh:
                st = json.load(fh)["strata"]
        band = (st.get("band", {}).get("avg") or {}).get("mae")
        flat = (st.get("flat", {}).get("avg") or {}).get("mae")
        return {"label": row.label, "kind": "cmos", "run": row.run, "checkpoint_sha256": sha,
                "blur_psnr": avg.get("blur_psnr"), "blur_ssim": avg.get("blur_ssim"), "miou": avg.get("miou"),
                "mae_band": band, "mae_flat": flat}
    import bsrdata.models.bench_methods  # noqa: F401  (registers the torch methods)
    from bsrdata import benchmark as bm
    from bsrdata.manifest import load_manifest
    from bsrdata.strata import StrataSpec, bench_strata

    log(f"bench {row.label}")
    groups = sorted(int(g) for g in load_manifest(data).groups)
    bd = bm.BenchData(data, groups) if groups else bm.BenchData(data, split="test")
    cmos = os.path.join(out, "runs", row.cmos_run, "last") if row.cmos_run else None
    meth = bm.get_method(f"{_slug(row.label)}={row.method}", ckpt=ck, cmos_ckpt=cmos, device=device or "auto")
    bench_dir = os.path.join(out, "bench")
    spec = StrataSpec.make(bd.sigma_max)
    res = bm.run_bench(bd, [meth], bench_dir, strata=spec)
    if res.errors:
        raise BsrError(res.errors[0])
    r = next(x for x in res.rows if x["label"] == meth.label)
    agg = bench_strata(bd, bench_dir, [r], spec).get(meth.label) or {}
    band = (agg.get("band", {}).get("avg") or {}).get("psnr")
    flat = (agg.get("flat", {}).get("avg") or {}).get("psnr")
    out_row = {"label": row.label, "kind": "sr", "run": row.run, "checkpoint_sha256": sha,
               "psnr": r["avg"]["psnr"], "ssim": r["avg"]["ssim"], "psnr_band": band, "psnr_flat": flat}
    if cmos:
        out_row["cmos_checkpoint_sha256"] = sha256_file(os.path.join(cmos, WEIGHTS))
    return out_row


def _markdown(table, title, rows, small) -> str:
    from bsrdata.tables import markdown_table

    def f(v, fmt):
        return "–" if v is None or v != v else fmt.format(v)

    parts = [f"### {title}" + (" — tiny run (--small)" if small else ""), ""]
    cm = [r for r in rows if r["kind"] == "cmos"]
    if cm:
        parts.append(markdown_table(
            ["Variant", "blur PSNR", "blur SSIM", "mIoU (%)", "MAE band (px)", "MAE flat (px)", "checkpoint"],
            [[r["label"], f(r["blur_psnr"], "{:.2f}"), f(r["blur_ssim"], "{:.4f}"), f(r["miou"], "{:.2f}"),
              f(r["mae_band"], "{:.3f}"), f(r["mae_flat"], "{:.3f}"), f"`{r['checkpoint_sha256'][:12]}`"]
             for r in cm]))
    sr = [r for r in rows if r["kind"] == "sr"]
    if sr:
        if cm:
            parts.append("")
        parts.append(markdown_table(
            ["Variant", "SR PSNR", "SR SSIM", "PSNR band", "PSNR flat", "checkpoint"],
            [[r["label"], f(r["psnr"], "{:.2f}"), f(r["ssim"], "{:.4f}"), f(r["psnr_band"], "{:.2f}"),
              f(r["psnr_flat"], "{:.2f}"), f"`{r['checkpoint_sha256'][:12]}`"] for r in sr]))
    parts += ["", "Blur-map scores: σ/σ_max maps, mean over the 5 groups; mIoU as the public CMOS test code; SR: "
              "PSNR/SSIM on Y, no border crop, mean of the groups; band / flat: the blur-boundary band and the "
              "rest (docs/sr.md \"Stratified scores\")."]
    return "\n".join(parts)
