"""``bsr eval cmos --data DIR --ckpt RUN [--group all|1..5] [--split test] [--out DIR]``.

Prints a Markdown table (rows = groups and Avg; blur-map PSNR/SSIM, mIoU %) and writes ``cmos_eval.md``,
``cmos_eval.csv`` and ``cmos_eval.json`` (with the checkpoint and dataset provenance) under ``--out``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import click

from bsrdata.errors import BsrError

COLUMNS = (("blur_psnr", "Blur PSNR", "{:.2f}"), ("blur_ssim", "Blur SSIM", "{:.4f}"), ("miou", "mIoU (%)", "{:.2f}"),
           ("psnr", "PSNR-Y", "{:.2f}"), ("ssim", "SSIM-Y", "{:.4f}"))


def _label(g):
    return "Avg" if g == "avg" else (f"Group{g}" if str(g).isdigit() else str(g))


def _cols(rows):
    return [c for c in COLUMNS if any(c[0] in r for r in rows.values())]


def format_markdown(rows: dict) -> str:
    cols = _cols(rows)
    head = "| | " + " | ".join(c[1] for c in cols) + " | images |"
    lines = [head, "|---" * (len(cols) + 2) + "|"]
    for g, r in rows.items():
        vals = [("–" if c[0] not in r or math.isnan(r[c[0]]) else c[2].format(r[c[0]])) for c in cols]
        lines.append(f"| {_label(g)} | " + " | ".join(vals) + f" | {r.get('n', '')} |")
    return "\n".join(lines)


def format_csv(rows: dict) -> str:
    cols = _cols(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["group"] + [c[0] for c in cols] + ["n"])
    for g, r in rows.items():
        w.writerow([_label(g)] + [("" if c[0] not in r else f"{r[c[0]]:.6f}") for c in cols] + [r.get("n", "")])
    return buf.getvalue()


def resolve_checkpoint(path) -> str:
    """A run folder (uses ``last/``) or a checkpoint folder -> the checkpoint folder."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "model.safetensors")):
        return path
    if os.path.isfile(os.path.join(path, "last", "model.safetensors")):
        return os.path.join(path, "last")
    raise BsrError(f"--ckpt {path}: neither a checkpoint folder nor a run folder with last/")


def parse_groups(text, available):
    if text in (None, "all"):
        return sorted(int(g) for g in available)
    try:
        gs = sorted({int(x) for x in str(text).split(",") if x.strip()})
    except ValueError:
        raise BsrError(f"--group: expected all or numbers like 1,3, got {text!r}") from None
    missing = [g for g in gs if str(g) not in available]
    if missing or not gs:
        raise BsrError(f"--group: {missing or text} not in the dataset (has {', '.join(sorted(available)) or 'none'})")
    return gs


def run_eval(data, ckpt, group="all", split="test", out=None, device=None, progress=True, limit=0):
    import torch

    from bsrdata.manifest import read_manifest, sha256_file
    from bsrdata.models.checkpoint import read_config
    from bsrdata.models.engine.task_cmos import CMOS_MODELS, dataset_num_classes, evaluate_cmos

    ck = resolve_checkpoint(ckpt)
    cfg = read_config(ck)
    name = cfg["model"]["name"]
    if name not in CMOS_MODELS:
        raise BsrError(f"--ckpt {ckpt}: checkpoint is a {name!r} model, not CMOS ({', '.join(CMOS_MODELS)})")
    m = read_manifest(data)
    n = dataset_num_classes(m)
    ncls = cfg["model"].get("num_classes")
    if name != "cmos_blur" and n is not None and n != ncls:
        raise BsrError(f"--ckpt {ckpt}: model predicts {ncls} classes, dataset {data} has {n}")
    if split not in m.get("splits", {}):
        raise BsrError(f"--split: {split!r} not in {data} (has {', '.join(sorted(m.get('splits', {})))})")
    groups = parse_groups(group, m.get("groups", {})) if split == "test" and m.get("groups") else None
    from bsrdata.models.checkpoint import load

    model, cfg = load(ck)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="eval cmos", unit="img", dynamic_ncols=True)
    try:
        rows = evaluate_cmos(model, data, groups, split=split, limit=limit,
                             progress=(bar.update if bar is not None else None))
    finally:
        if bar is not None:
            bar.close()
    md = format_markdown(rows)
    if out:
        os.makedirs(out, exist_ok=True)
        prov = {"checkpoint": os.path.abspath(ck), "checkpoint_sha256": sha256_file(os.path.join(ck, "model.safetensors")),
                "model": cfg["model"], "dataset": os.path.abspath(data), "split": split,
                "manifest_sha256": sha256_file(os.path.join(data, "manifest.json")),
                "metrics": {"blur": "PSNR/SSIM of σ/σ_max maps, peak 1, prediction unclipped, mean over images",
                            "miou": "percent, one confusion matrix per group, 255 ignored"}}
        for fname, text in (("cmos_eval.md", md + "\n"), ("cmos_eval.csv", format_csv(rows)),
                            ("cmos_eval.json", json.dumps({"provenance": prov, "results": rows}, indent=2,
                                                          sort_keys=True, default=float) + "\n")):
            tmp = os.path.join(out, fname + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, os.path.join(out, fname))
    return rows, md


@click.command("eval")
@click.argument("task_name", metavar="TASK", type=click.Choice(["cmos"]))
@click.option("--data", required=True, type=click.Path(file_okay=False), help="built dataset folder")
@click.option("--ckpt", required=True, type=click.Path(file_okay=False), help="run folder or checkpoint folder")
@click.option("--group", default="all", show_default=True, help="all, or test groups like 1 or 1,3")
@click.option("--split", default="test", show_default=True, help="split to score (groups apply to test)")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="folder for .md/.csv/.json results")
@click.option("--device", default=None, help="cpu, cuda, ...")
@click.option("--limit", default=0, type=int, help="score only the first N images of each group (0 = all)")
def evaluate(task_name, data, ckpt, group, split, out, device, limit):
    """Score a CMOS checkpoint: blur-map PSNR/SSIM and mIoU per test group and on average."""
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        raise BsrError(f"--data {data}: no manifest.json (not a built dataset)")
    _, md = run_eval(data, ckpt, group=group, split=split, out=out, device=device, limit=limit)
    click.echo(md)
