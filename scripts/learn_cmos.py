"""Learning check for CMOS on the CPU (issue 5): does the small configuration learn within a time budget?

    python scripts/learn_cmos.py --data out/learn --build --train 200 --test 20 --minutes 15 --out out/learn_cmos

Trains ``configs/cmos_cpu_small.yaml`` (same architecture, half width, small crops, one thread) for at most
``--minutes`` (a short calibration run sets the iteration count so the cosine schedule ends in time), then
scores on test groups 1-5: blur-map PSNR/SSIM (÷ σ_max, unclipped) and mIoU, against two baselines scored
by the same code: the training set's mean σ everywhere, and the training set's most frequent class
everywhere. Passes when the trained model beats the constant σ by >= 3 dB blur PSNR and the majority class
in mIoU. Writes ``learn_cmos.json`` and ``learn_cmos.md`` in --out and prints the table.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts import learncheck  # noqa: E402


def train_statistics(data):
    """Mean σ over every training pixel, and the most frequent class (255 ignored)."""
    from bsrdata.shards import open_dataset

    view = open_dataset(data, "train")
    total, count, hist = 0.0, 0, None
    for s in view:
        total += float(s["blur"].astype(np.float64).sum())
        count += s["blur"].size
        if s["seg"] is not None:
            seg = s["seg"][s["seg"] != 255]
            h = np.bincount(seg.ravel(), minlength=256)
            hist = h if hist is None else hist + h
    return total / count, (int(np.argmax(hist)) if hist is not None else None)


def constant_model(sigma, cls, num_classes):
    import torch
    import torch.nn as nn

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_classes = num_classes
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, lr):
            n, _, h, w = lr.shape
            blur = torch.full((n, 1, 4 * h, 4 * w), float(sigma))
            seg = torch.zeros(n, num_classes, 4 * h, 4 * w)
            seg[:, cls] = 1.0
            return {"blur": blur, "seg": seg}

    return Constant()


def main(argv=None):
    ap = learncheck.parser(__doc__, minutes=15.0, config="cmos_cpu_small.yaml", train=200, test=20, threads=False)
    args = ap.parse_args(argv)

    import torch

    from bsrdata.manifest import load_manifest
    from bsrdata.models.engine.budget import train_within
    from bsrdata.models.engine.config import apply_overrides, read_yaml
    from bsrdata.models.engine.task_cmos import CMOSTask, dataset_num_classes, evaluate_cmos
    from bsrdata.tables import eval_markdown as format_markdown

    t_build = learncheck.build_if_asked(args)
    m = load_manifest(args.data)
    ncls = dataset_num_classes(m)
    task = CMOSTask()
    user = apply_overrides(read_yaml(args.config), [f"model.num_classes={ncls}"] + list(args.sets))
    cfg = task.config(user, where=args.config)
    budget = args.minutes * 60.0
    res, spi, t_train, _ = train_within(task, cfg, args.data, args.out, budget)
    model = res["model"].eval()

    groups = sorted(int(g) for g in m.groups)
    t2 = time.perf_counter()
    rows_model = evaluate_cmos(model, args.data, groups)
    t_eval = time.perf_counter() - t2
    sigma, cls = train_statistics(args.data)
    rows_const = evaluate_cmos(constant_model(sigma, cls, ncls), args.data, groups)
    a, b = rows_model["avg"], rows_const["avg"]
    gain = a["blur_psnr"] - b["blur_psnr"]
    ok_blur, ok_seg = gain >= 3.0, a["miou"] > b["miou"]
    summary = {
        "command": " ".join([os.path.basename(sys.executable), "scripts/learn_cmos.py"] + (argv or sys.argv[1:])),
        "config": cfg, "iterations": res["iterations"], "sec_per_it_calibration": spi,
        "seconds": {"build": t_build, "train": t_train, "eval": t_eval},
        "baseline": {"sigma_mean": sigma, "majority_class": cls, "rows": rows_const},
        "model": rows_model, "blur_psnr_gain_db": gain, "pass_blur": ok_blur, "pass_miou": ok_seg,
        "torch_threads": torch.get_num_threads(),
        "conventions": task.conventions(dict(cfg, data=dict(cfg["data"], root=args.data))),
    }
    md = ["## CMOS learning check (test groups " + ",".join(map(str, groups)) + ")", "",
          f"Trained {res['iterations']} iterations in {t_train / 60:.1f} min on the CPU "
          f"({cfg['model']['name']}, width {cfg['model']['width']}, crop {cfg['data']['crop']}, "
          f"batch {cfg['train']['batch_size']}).", "",
          "| method | Blur PSNR (dB) | Blur SSIM | mIoU (%) |", "|---|---|---|---|",
          f"| constant σ = {sigma:.3f} / class {cls} | {b['blur_psnr']:.2f} | {b['blur_ssim']:.4f} | {b['miou']:.2f} |",
          f"| CMOS small | {a['blur_psnr']:.2f} | {a['blur_ssim']:.4f} | {a['miou']:.2f} |", "",
          f"Blur PSNR gain {gain:+.2f} dB (need >= 3): {'PASS' if ok_blur else 'FAIL'}; "
          f"mIoU above majority class: {'PASS' if ok_seg else 'FAIL'}.", "",
          "Per group (CMOS small):", "", format_markdown(rows_model)]
    os.makedirs(args.out, exist_ok=True)
    learncheck.write_summary(args.out, "learn_cmos", summary, md)
    return 0 if (ok_blur and ok_seg) else 1


if __name__ == "__main__":
    sys.exit(main())
