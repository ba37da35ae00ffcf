"""Learning check for DAN on the CPU (issue 12): does a small DAN beat bicubic within a time budget?

    python scripts/learn_dan.py --data out/demo [--build] --minutes 10 --out out/learn_dan [--set model.name=dan_v2]

Trains ``configs/dan_small.yaml`` (narrow DAN v1, 4 loops, one thread by default) for at most ``--minutes``
(a short calibration run sets the iteration count so the schedule ends in time), then scores ``bicubic`` and
``dan`` with ``bsr bench``'s harness on test groups 1-5. Also measures the kernel estimate on the distinct
test images: the L1 between the last loop's code and the code of the image's mean per-pixel kernel
(beside the same for the initial delta code), and σ̂, the σ whose Gaussian has the code nearest the estimate,
against the image's mean σ (correlation, MAE). Passes when DAN
beats bicubic on the average PSNR-Y of the groups. Writes ``learn_dan.json`` / ``learn_dan.md`` and the
bench tables in --out; the trained checkpoint is ``--out/dan/run/last``.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts import learncheck  # noqa: E402


def kernel_check(ckpt, data, uids):
    """The last loop's code on each image of ``uids`` against the code of the image's mean per-pixel kernel
    (L1, beside the initial delta code's), and σ̂ (the σ whose Gaussian code is nearest the estimate, σ on a
    0.05 px grid up to 1.2 σ_max) against the image's mean σ (correlation, mean absolute error)."""
    import numpy as np
    import torch

    from bsrdata.models import checkpoint
    from bsrdata.models.engine.task_dan import kernel_target
    from bsrdata.models.kernels import gaussian_kernels

    model, cfg = checkpoint.load(ckpt)
    k = model.kernel_size
    grid = torch.arange(0.0, 1.2 * float(cfg["model"]["pca_sigma_max"]) + 1e-9, 0.05, dtype=torch.float64)
    table = model.encode(gaussian_kernels(grid, k).float()).double()  # (G, code_len)
    est_l1, init_l1, sig_hat, sigmas = [], [], [], []
    with torch.no_grad():
        for uid in uids:
            s = data.load(uid)
            lr = torch.from_numpy(np.asarray(s["lr"], np.float32) / 255.0).permute(2, 0, 1)[None]
            code = model(lr)["code"][0].double()
            blur = torch.from_numpy(np.asarray(s["blur"], np.float32))[None, None]
            gt = model.encode(kernel_target(blur, k))[0].double()
            est_l1.append(float((code - gt).abs().mean()))
            init_l1.append(float((model.init_ker_map[0].double() - gt).abs().mean()))
            sig_hat.append(float(grid[(table - code).norm(dim=1).argmin()]))
            sigmas.append(float(np.mean(s["blur"])))
    sh, sg = np.array(sig_hat), np.array(sigmas)
    corr = float(np.corrcoef(sh, sg)[0, 1]) if len(uids) > 2 and sh.std() > 0 and sg.std() > 0 else float("nan")
    return {"images": len(uids), "code_l1_estimate": float(np.mean(est_l1)), "code_l1_delta": float(np.mean(init_l1)),
            "sigma_hat_corr": corr, "sigma_hat_mae": float(np.abs(sh - sg).mean()),
            "sigma_mean_range": [float(sg.min()), float(sg.max())]}


def main(argv=None):
    ap = learncheck.parser(__doc__, minutes=10.0, config="dan_small.yaml")
    args = ap.parse_args(argv)

    import torch

    import bsrdata.models.bench_methods  # noqa: F401  (registers dan)
    from bsrdata import benchmark as bm
    from bsrdata.manifest import load_manifest
    from bsrdata.models.engine.budget import train_within
    from bsrdata.models.engine.config import apply_overrides, read_yaml
    from bsrdata.models.engine.task import get_task

    torch.set_num_threads(args.threads)
    t_build = learncheck.build_if_asked(args)
    m = load_manifest(args.data)
    os.makedirs(args.out, exist_ok=True)

    task = get_task("dan")
    user = apply_overrides(read_yaml(args.config), [f"train.threads={args.threads}"] + list(args.sets))
    cfg = task.config(user, where=args.config)
    res, spi, t_train, ckpt = train_within(task, cfg, args.data, os.path.join(args.out, "dan"), args.minutes * 60.0)

    groups = sorted(int(g) for g in m.groups)
    data = bm.BenchData(args.data, groups)
    methods = [bm.get_method("bicubic"), bm.get_method("dan", ckpt=ckpt, device="cpu")]
    bench, t_bench = learncheck.bench(data, methods, args.out)
    rows = {r["label"]: r for r in bench.rows}
    if "bicubic" not in rows or "dan" not in rows:
        print("\n".join(bench.errors), file=sys.stderr)
        return 2
    uids = list(dict.fromkeys(u for g in groups for u in data.groups[g]))
    kern = kernel_check(ckpt, data, uids)
    gain = rows["dan"]["avg"]["psnr"] - rows["bicubic"]["avg"]["psnr"]
    ok = gain > 0
    with open(os.path.join(ckpt, "config.json")) as f:
        run_cfg = json.load(f)
    mc = run_cfg["model"]
    summary = {
        "command": " ".join([os.path.basename(sys.executable), "scripts/learn_dan.py"] + (argv or sys.argv[1:])),
        "config": run_cfg, "iterations": res["iterations"], "sec_per_it_calibration": spi,
        "seconds": {"build": t_build, "train": t_train, "bench": t_bench}, "torch_threads": torch.get_num_threads(),
        "checkpoint": os.path.abspath(ckpt),
        "rows": {k: {"groups": v["groups"], "avg": v["avg"]} for k, v in rows.items()},
        "dan_gain_db": gain, "kernel": kern, "pass": ok, "errors": bench.errors,
    }
    tc, dc = run_cfg["train"], run_cfg["data"]
    md = [f"## DAN learning check (test groups {','.join(map(str, groups))})", "",
          f"{mc['name']} (nf {mc['nf']}, nb {mc['nb']}, estimator {mc['est_nf']}x{mc['est_blocks']}, "
          f"{mc['loops']} loops, kernel {mc['kernel_size']}, img_residual {mc['img_residual']}, target "
          f"{run_cfg['kernel']['target']}) trained {res['iterations']} iterations in {t_train / 60:.1f} min on the "
          f"CPU ({args.threads} thread(s), crop {dc['crop']}, batch {tc['batch_size']}); checkpoint "
          f"{os.path.abspath(ckpt)}.", "",
          bench.markdown.strip(), "",
          f"DAN - bicubic: {gain:+.2f} dB PSNR-Y (need > 0): {'PASS' if ok else 'FAIL'}.",
          f"Kernel code L1 on {kern['images']} test images: estimate {kern['code_l1_estimate']:.4f}, initial delta "
          f"{kern['code_l1_delta']:.4f}; sigma-hat (nearest Gaussian code) vs the image's mean sigma: correlation "
          f"{kern['sigma_hat_corr']:.3f}, MAE {kern['sigma_hat_mae']:.2f} px."]
    learncheck.write_summary(args.out, "learn_dan", summary, md)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
