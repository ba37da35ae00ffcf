"""Score a CMOS checkpoint on a built dataset (``bsr eval cmos``): blur-map PSNR/SSIM and mIoU per group.

:func:`run_eval` loads the checkpoint, checks it fits the dataset, scores it with
:func:`bsrdata.models.engine.task_cmos.evaluate_cmos` and writes ``cmos_eval.md``, ``cmos_eval.csv`` and
``cmos_eval.json`` (with the checkpoint and dataset provenance) through :mod:`bsrdata.tables` and
:mod:`bsrdata.fileio`. Each records the conventions (:func:`bsrdata.metrics.eval_conventions`: σ_max of
the blur normalisation, the mIoU definition): a note under the Markdown table, ``blur_norm`` /
``miou_def`` CSV columns, ``provenance.conventions`` in the JSON.
"""

from __future__ import annotations

import os

from bsrdata.errors import BsrError

__all__ = ["run_eval", "eval_groups"]


def eval_groups(text, available) -> list[int]:
    """``--group`` value -> test group numbers: ``all`` (every group the dataset has), or as
    :func:`bsrdata.benchmark.parse_groups` (``1-5``, ``1,3``, ``2``); each must be in ``available``."""
    from bsrdata.benchmark import parse_groups

    if text is None or str(text).strip().lower() in ("", "all"):
        return sorted(int(g) for g in available)
    gs = parse_groups(text, option="--group")
    missing = [g for g in gs if str(g) not in available]
    if missing:
        raise BsrError(f"--group: {missing} not in the dataset (has {', '.join(sorted(available)) or 'none'})")
    return gs


def run_eval(data, ckpt, group="all", split="test", out=None, device=None, progress=True, limit=0,
             miou="public", strata=None, figures=None):
    """Score the CMOS checkpoint ``ckpt`` (run or checkpoint folder) on ``data`` -> (rows, markdown).

    ``miou``: ``public`` (mean over all classes, absent ones count 0, as the CMOS test code) or
    ``present`` (mean over the classes present), :data:`bsrdata.metrics.MIOU_DEFINITIONS`.
    ``strata`` (a :class:`bsrdata.strata.StrataSpec` or ``True`` for the defaults): blur-map scores per
    stratum too (:func:`bsrdata.strata.write_eval_strata`, appended to the markdown, ``cmos_strata.*`` in
    ``out``); ``figures`` (a folder): :func:`bsrdata.figures.eval_figure` of the first space-variant unit."""
    from bsrdata.fileio import sha256_file, write_json_atomic, write_text_atomic
    from bsrdata.manifest import load_manifest
    from bsrdata.metrics import check_miou, eval_conventions
    from bsrdata.models.checkpoint import WEIGHTS, load, read_config, resolve_dir
    from bsrdata.models.device import pick_device
    from bsrdata.models.engine.task_cmos import CMOS_MODELS, dataset_num_classes, evaluate_cmos
    from bsrdata.tables import eval_csv, eval_markdown

    try:
        ck = resolve_dir(ckpt)
    except BsrError as exc:
        raise BsrError(f"--ckpt {exc}") from None
    check_miou(miou, "--miou")
    cfg = read_config(ck)
    name = cfg["model"]["name"]
    if name not in CMOS_MODELS:
        raise BsrError(f"--ckpt {ckpt}: checkpoint is a {name!r} model, not CMOS ({', '.join(CMOS_MODELS)})")
    m = load_manifest(data)
    n = dataset_num_classes(m)
    ncls = cfg["model"].get("num_classes")
    if name != "cmos_blur" and n is not None and n != ncls:
        raise BsrError(f"--ckpt {ckpt}: model predicts {ncls} classes, dataset {data} has {n}")
    if split not in m.splits:
        raise BsrError(f"--split: {split!r} not in {data} (has {', '.join(sorted(m.splits))})")
    groups = eval_groups(group, m.groups) if split == "test" and m.groups else None
    model, cfg = load(ck)
    model.to(pick_device(device or "auto"))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="eval cmos", unit="img", dynamic_ncols=True)
    extra = _Extras(data, groups, split, strata, figures)
    try:
        rows = evaluate_cmos(model, data, groups, split=split, limit=limit,
                             progress=(bar.update if bar is not None else None), miou=miou,
                             on_unit=extra.on_unit if extra.active else None)
    finally:
        if bar is not None:
            bar.close()
    scored = {k for r in rows.values() for k in r}
    attrs = m.attrs or {}
    sigma_max = float(attrs.get("sigma_max", (attrs.get("max_coc", 21) - 1) / 4))  # as BenchData reads it
    conv = eval_conventions(sigma_max=sigma_max if "blur_psnr" in scored else None,
                            miou=miou if "miou" in scored else None, num_classes=getattr(model, "num_classes", ncls))
    md = eval_markdown(rows, conv)
    if out:
        os.makedirs(out, exist_ok=True)
        prov = {"checkpoint": os.path.abspath(ck), "checkpoint_sha256": sha256_file(os.path.join(ck, WEIGHTS)),
                "model": cfg["model"], "dataset": os.path.abspath(data), "split": split,
                "manifest_sha256": sha256_file(os.path.join(data, "manifest.json")),
                "metrics": {"blur": "PSNR/SSIM of σ/σ_max maps, peak 1, prediction unclipped, mean over images",
                            "miou": "percent, one confusion matrix per group, 255 ignored"},
                "conventions": conv}
        write_text_atomic(os.path.join(out, "cmos_eval.md"), md + "\n")
        write_text_atomic(os.path.join(out, "cmos_eval.csv"), eval_csv(rows, conv))
        write_json_atomic(os.path.join(out, "cmos_eval.json"), {"provenance": prov, "results": rows}, indent=2,
                          sort_keys=True, default=float)
    else:
        prov = None
    md = extra.finish(md, limit, out, prov)
    return rows, md


class _Extras:
    """The opt-in parts of ``bsr eval cmos``: per-unit strata sums and the figure's sample (``on_unit``)."""

    def __init__(self, data, groups, split, strata, figures):
        self.spec, self.figures = strata, figures
        self.active = bool(strata) or bool(figures)
        if not self.active:
            return
        from bsrdata.benchmark import BenchData
        from bsrdata.strata import StrataSpec

        self.bd = BenchData(data, [int(g) for g in groups]) if groups is not None else BenchData(data, split=split)
        if strata is True:
            self.spec = StrataSpec.make(self.bd.sigma_max)
        if figures:
            from bsrdata.figures import require_matplotlib

            require_matplotlib()
        self.stats, self.shown = {}, None

    def on_unit(self, uid, sample, pred):
        from bsrdata.strata import blur_unit_stats

        if self.spec and "blur" in pred:
            self.stats[uid] = blur_unit_stats(pred["blur"], sample["blur"], self.spec, self.bd.sigma_max)
        if self.figures and (self.shown is None or (self.shown[0] is True and not self.bd.units[uid].invariant)):
            self.shown = (self.bd.units[uid].invariant, uid, sample, pred)

    def finish(self, md, limit, out, prov):
        if not self.active:
            return md
        if self.spec and self.stats:
            from bsrdata.strata import write_eval_strata

            groups = {g: u for g, u in self.bd.select(limit).items()}
            smd, _ = write_eval_strata(self.bd, groups, self.stats, self.spec, out, prov)
            md = md + "\n\n" + smd
        if self.figures and self.shown is not None:
            from bsrdata.figures import eval_figure

            _, uid, sample, pred = self.shown
            unit = self.bd.units[uid]
            path = eval_figure(sample, pred.get("blur"), pred.get("seg"), self.bd.sigma_max,
                               os.path.join(self.figures, f"cmos_{uid}.png"),
                               title=f"{unit.key} ({'IVA' if unit.invariant else 'VA'})")
            self.figure = path
        return md
