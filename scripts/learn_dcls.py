"""Learning check for DCLS on the CPU (issue 12): does a small DCLS beat bicubic within a time budget?

    python scripts/learn_dcls.py --data out/demo --minutes 10 --out out/learn_dcls [--build]

Trains ``configs/dcls_small.yaml`` (narrow DCLS, 11-tap LR kernel, image-derived kernel target, one thread) for
at most ``--minutes`` (a short calibration run sets the iteration count so the schedule ends in time), then
scores with ``bsr bench``'s harness on the test groups: ``bicubic`` and ``dcls`` (the trained checkpoint).
Also reports the last logged losses (SR L1, kernel L1). Passes when DCLS beats bicubic in PSNR-Y (average of
the groups). Writes ``learn_dcls.json`` / ``learn_dcls.md`` and the bench tables in --out and prints the table.
"""

from __future__ import annotations

import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts import learncheck  # noqa: E402


def _last_log(run):
    path = os.path.join(run, "log.csv")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("kernel") not in (None, "")]
    return {k: float(rows[-1][k]) for k in ("l1", "kernel") if rows and k in rows[-1]}


def main(argv=None):
    ap = learncheck.parser(__doc__, minutes=10.0, config="dcls_small.yaml")
    args = ap.parse_args(argv)

    import torch

    import bsrdata.models.bench_methods  # noqa: F401  (registers the baseline methods)
    from bsrdata import benchmark as bm
    from bsrdata.manifest import load_manifest
    from bsrdata.models.engine.budget import train_within
    from bsrdata.models.engine.config import apply_overrides, read_yaml
    from bsrdata.models.engine.task import get_task

    torch.set_num_threads(args.threads)
    t_build = learncheck.build_if_asked(args)
    m = load_manifest(args.data)
    os.makedirs(args.out, exist_ok=True)

    task = get_task("dcls")
    user = apply_overrides(read_yaml(args.config), [f"train.threads={args.threads}"] + list(args.sets))
    cfg = task.config(user, where=args.config)
    res, spi, t_train, ckpt = train_within(task, cfg, args.data, os.path.join(args.out, "dcls"), args.minutes * 60.0)
    losses = _last_log(os.path.join(args.out, "dcls", "run"))

    groups = sorted(int(g) for g in m.groups)
    data = bm.BenchData(args.data, groups)
    methods = [bm.get_method("bicubic"), bm.get_method("dcls", ckpt=ckpt, device="cpu")]
    bench, t_bench = learncheck.bench(data, methods, args.out)
    rows = {r["label"]: r for r in bench.rows}
    if "bicubic" not in rows or "dcls" not in rows:
        print("\n".join(bench.errors), file=sys.stderr)
        return 2
    gain = rows["dcls"]["avg"]["psnr"] - rows["bicubic"]["avg"]["psnr"]
    ok = gain > 0
    summary = {
        "command": " ".join([os.path.basename(sys.executable), "scripts/learn_dcls.py"] + (argv or sys.argv[1:])),
        "config": cfg, "iterations": res["iterations"], "sec_per_it_calibration": spi,
        "seconds": {"build": t_build, "train": t_train, "bench": t_bench}, "checkpoint": ckpt,
        "torch_threads": torch.get_num_threads(), "last_losses": losses,
        "rows": {k: {"groups": v["groups"], "avg": v["avg"]} for k, v in rows.items()},
        "gain_db": gain, "pass": ok, "errors": bench.errors,
    }
    mc = cfg["model"]
    md = [f"## DCLS learning check (test groups {','.join(map(str, groups))})", "",
          f"DCLS (nf {mc['nf']}, {mc['ng']}x{mc['nb']} DPCAB, kernel {mc['kernel_size']}, img_residual "
          f"{mc['img_residual']}) trained {res['iterations']} iterations in {t_train / 60:.1f} min on the CPU "
          f"({args.threads} thread(s), crop {cfg['data']['crop']}, batch {cfg['train']['batch_size']}); last losses "
          + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()) + ".", "",
          bench.markdown.strip(), "",
          f"DCLS - bicubic: {gain:+.2f} dB PSNR-Y (need > 0): {'PASS' if ok else 'FAIL'}. Checkpoint: {ckpt}"]
    learncheck.write_summary(args.out, "learn_dcls", summary, md)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
