"""Learning check for MANet on the CPU (issue 12): three stages in one time budget, bench vs bicubic, σ̂ vs σ.

    python scripts/learn_manet.py --data out/demo --minutes 10 --out out/learn_manet [--build]

Trains ``configs/manet_small_stage1.yaml`` (estimator), ``manet_small_stage2.yaml`` (restorer on the true per-pixel
codes) and ``manet_small_stage3.yaml`` (restorer fine-tuned on the frozen estimator's kernels) for the shares
``--shares`` of ``--minutes`` (each stage: a short calibration run sets the iteration count; the schedule's
milestones / restart period are scaled to it), then scores with ``bsr bench``'s harness on test groups 1-5:
``bicubic`` and ``manet`` (the stage-3 checkpoint), and reports the Pearson correlation between the estimated
σ̂ map (second moment of the per-pixel kernels) and the true σ at the LR sites of the distinct test images
(pooled over all their pixels, and the mean over images whose σ varies). Passes when MANet beats bicubic in
PSNR-Y (average of the groups); the σ̂ map counts as following σ from a pooled r of 0.3 (reported
separately). Writes ``learn_manet.json`` /
``learn_manet.md`` and the bench tables in --out and prints the table.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts import learncheck  # noqa: E402

CALIBRATION_ITERATIONS = 8
BUDGET_SHARE = 0.85
SIGMA_R = 0.3  # pooled Pearson r from which the σ̂ map counts as following σ


def train_stage(task, cfg, data, out, budget_s):
    """Calibrate, plan the iterations that fit ``budget_s`` (milestones / restart period scaled), train.
    Returns (result, seconds per iteration, seconds spent, checkpoint path)."""
    from bsrdata.models.engine.trainer import train

    t0 = time.perf_counter()
    ccfg = json.loads(json.dumps(cfg))
    ccfg["train"].update(iterations=CALIBRATION_ITERATIONS, log_every=1, milestones=[])
    if ccfg["train"]["schedule"] == "cosine_restart":
        ccfg["train"]["restart_period"] = CALIBRATION_ITERATIONS
    ccfg["data"]["val_split"] = None
    train(task, ccfg, data, os.path.join(out, "calibration"), resume=True, progress=False)
    with open(os.path.join(out, "calibration", "log.csv")) as f:
        rows = list(csv.DictReader(f))
    # steady-state seconds per iteration: the log's sec_per_it is a running mean that includes start-up
    tot = [float(r["sec_per_it"]) * int(r["iteration"]) for r in rows]
    half = len(rows) // 2
    spi = (tot[-1] - tot[half - 1]) / (int(rows[-1]["iteration"]) - int(rows[half - 1]["iteration"]))
    left = budget_s - (time.perf_counter() - t0)
    t = cfg["train"]
    n0, n = int(t["iterations"]), max(10, int(left * BUDGET_SHARE / spi))
    t["milestones"] = sorted({max(1, round(m * n / n0)) for m in t["milestones"] if round(m * n / n0) < n})
    if t["schedule"] == "cosine_restart":
        t["restart_period"] = max(1, round(int(t["restart_period"]) * n / n0))
    t.update(iterations=n, val_every=0, ckpt_every=max(50, n // 4))
    cfg["data"]["val_split"] = None
    run = os.path.join(out, "run")
    res = train(task, cfg, data, run, resume=True, progress=False, time_limit=max(1.0, left))
    return res, spi, time.perf_counter() - t0, os.path.join(run, "last")


def sigma_correlation(ckpt, data) -> dict:
    """σ̂ (stage-3 model's estimator) vs σ at the LR sites of every distinct test unit of ``data``."""
    import numpy as np

    from bsrdata.models import checkpoint
    from bsrdata.models.engine.task_manet import _pearson, estimator_scores

    model, _ = checkpoint.load(ckpt)
    model.eval()
    down = str((data.manifest.attrs or {}).get("downsample", "direct"))
    uids = list(dict.fromkeys(u for g in data.group_ids for u in data.groups[g]))
    items = [estimator_scores(model.estimator, data.load(u), down) for u in uids]
    a = np.concatenate([i["sigma_hat"].ravel() for i in items])
    b = np.concatenate([i["sigma"].ravel() for i in items])
    per = [_pearson(i["sigma_hat"], i["sigma"]) for i in items if np.ptp(i["sigma"]) > 0]
    return {"pearson_pooled": _pearson(a, b), "pearson_per_image_mean": float(np.mean(per)) if per else None,
            "images": len(items), "images_with_varying_sigma": len(per), "sigma_mae": float(np.abs(a - b).mean()),
            "kernel_l1": float(np.mean([i["l1"].mean() for i in items])),
            "sigma_true_mean": float(b.mean()), "sigma_hat_mean": float(a.mean())}


def main(argv=None):
    ap = learncheck.parser(__doc__, minutes=10.0,
                           minutes_help="training budget of the three stages together", train=None, test=None)
    ap.add_argument("--shares", default="0.45,0.3,0.25", help="fractions of --minutes for stages 1,2,3")
    args = ap.parse_args(argv)

    import torch

    import bsrdata.models.bench_methods  # noqa: F401  (registers manet)
    from bsrdata import benchmark as bm
    from bsrdata.manifest import load_manifest
    from bsrdata.models.engine.config import apply_overrides, read_yaml
    from bsrdata.models.engine.task import get_task

    torch.set_num_threads(args.threads)
    learncheck.build_if_asked(args)
    m = load_manifest(args.data)
    shares = [float(x) for x in args.shares.split(",")]
    os.makedirs(args.out, exist_ok=True)
    task = get_task("manet")
    stages, ckpts = {}, {}
    for s, share in zip((1, 2, 3), shares):
        path = os.path.join(ROOT, "configs", f"manet_small_stage{s}.yaml")
        sets = [f"train.threads={args.threads}"]
        if s == 3:
            sets += [f"init.estimator_ckpt={ckpts[1]}", f"init.sr_ckpt={ckpts[2]}"]
        cfg = task.config(apply_overrides(read_yaml(path), sets), where=path)
        res, spi, secs, ckpts[s] = train_stage(task, cfg, args.data, os.path.join(args.out, f"s{s}"),
                                               args.minutes * 60.0 * share)
        stages[s] = {"config": os.path.relpath(path, ROOT), "iterations": res["iterations"], "sec_per_it": spi,
                     "minutes": secs / 60.0, "checkpoint": ckpts[s], "train": cfg["train"]}
        print(f"stage {s}: {res['iterations']} iterations in {secs / 60:.1f} min -> {ckpts[s]}", flush=True)

    groups = sorted(int(g) for g in m.groups)
    data = bm.BenchData(args.data, groups)
    methods = [bm.get_method("bicubic"), bm.get_method("manet", ckpt=ckpts[3], device="cpu")]
    bench, t_bench = learncheck.bench(data, methods, args.out)
    rows = {r["label"]: r for r in bench.rows}
    if "bicubic" not in rows or "manet" not in rows:
        print("\n".join(bench.errors), file=sys.stderr)
        return 2
    corr = sigma_correlation(ckpts[3], data)
    gain = rows["manet"]["avg"]["psnr"] - rows["bicubic"]["avg"]["psnr"]
    ok = gain > 0
    sigma_ok = corr["pearson_pooled"] >= SIGMA_R
    summary = {"command": " ".join([os.path.basename(sys.executable), "scripts/learn_manet.py"]
                                   + (argv or sys.argv[1:])),
               "stages": stages, "bench_seconds": t_bench, "torch_threads": torch.get_num_threads(),
               "rows": {k: {"groups": v["groups"], "avg": v["avg"]} for k, v in rows.items()},
               "manet_gain_db": gain, "sigma": corr, "checkpoint": ckpts[3], "pass": ok, "sigma_learned": sigma_ok,
               "errors": bench.errors}
    total = sum(v["minutes"] for v in stages.values())
    md = [f"## MANet learning check (test groups {','.join(map(str, groups))})", "",
          "Small MANet (configs/manet_small_stage{1,2,3}.yaml; restorer with img_residual bicubic, not in the paper) "
          f"trained on the CPU ({args.threads} thread(s)) in {total:.1f} min: "
          + "; ".join(f"stage {s} {v['iterations']} it / {v['minutes']:.1f} min" for s, v in stages.items()) + ".",
          "", bench.markdown.strip(), "",
          f"MANet - bicubic: {gain:+.2f} dB PSNR-Y.",
          f"σ̂ (kernel second moment) vs true σ at the LR sites of {corr['images']} test images: Pearson r "
          f"{corr['pearson_pooled']:.3f} pooled, {corr['pearson_per_image_mean'] if corr['pearson_per_image_mean'] is None else round(corr['pearson_per_image_mean'], 3)} "  # noqa: E501
          f"mean per image ({corr['images_with_varying_sigma']} with varying σ); MAE {corr['sigma_mae']:.2f} px; "
          f"kernel L1 {corr['kernel_l1']:.3f}.",
          f"SR: {'PASS' if ok else 'FAIL'} (needs MANet > bicubic). σ̂ follows σ: {'yes' if sigma_ok else 'no'} "
          f"(pooled r >= {SIGMA_R}). Checkpoint: {ckpts[3]}"]
    learncheck.write_summary(args.out, "learn_manet", summary, md)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
