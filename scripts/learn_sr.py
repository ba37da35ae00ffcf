"""Learning check for RRDB-SFT on the CPU (issue 6): does the oracle beat bicubic within a time budget?

    python scripts/learn_sr.py --data out/learn_sr --build --train 120 --test 15 --minutes 15 --out out/learn_sr_run \
        [--cmos-ckpt RUN/last | --cmos-minutes 8]

Trains ``configs/rrdb_sft_small.yaml`` (RRDB-SFT on the ground-truth σ and segmentation, small width, one
thread) for at most ``--minutes`` (a short calibration run sets the iteration count so the cosine schedule
ends in time), then scores with ``bsr bench``'s harness on test groups 1-5: ``bicubic``, ``oracle`` and, when a
CMOS checkpoint is given (or trained here for ``--cmos-minutes`` with ``configs/cmos_cpu_small.yaml``), the
blind chain CMOS -> RRDB-SFT. Passes when the oracle beats bicubic by >= 1 dB PSNR-Y (average of the groups).
Writes ``learn_sr.json`` / ``learn_sr.md`` and the bench tables in --out and prints the table.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts import learncheck  # noqa: E402


def main(argv=None):
    ap = learncheck.parser(__doc__, minutes=15.0, config="rrdb_sft_small.yaml",
                           minutes_help="RRDB-SFT training budget (calibration included)",
                           sets_help="RRDB-SFT config override key=value")
    ap.add_argument("--cmos-ckpt", default=None, help="a CMOS checkpoint for the blind chain row")
    ap.add_argument("--cmos-minutes", type=float, default=0.0, help="train a small CMOS this long if no --cmos-ckpt")
    ap.add_argument("--cmos-config", default=os.path.join(ROOT, "configs", "cmos_cpu_small.yaml"),
                    help="config of that CMOS (cmos_cpu_small trains on 96x128 crops: build the dataset at that "
                         "size, or pass --cmos-set data.crop=null for whole frames; docs/cmos.md \"Crop size\")")
    ap.add_argument("--cmos-set", dest="cmos_sets", action="append", default=[], help="CMOS config override")
    args = ap.parse_args(argv)

    import torch

    import bsrdata.models.bench_methods  # noqa: F401  (registers oracle, cmos+rrdb_sft)
    from bsrdata import benchmark as bm
    from bsrdata.manifest import load_manifest
    from bsrdata.models.engine.budget import train_within
    from bsrdata.models.engine.config import apply_overrides, read_yaml
    from bsrdata.models.engine.task import get_task

    torch.set_num_threads(args.threads)
    t_build = learncheck.build_if_asked(args)
    m = load_manifest(args.data)
    ncls = int(m.num_classes)
    os.makedirs(args.out, exist_ok=True)

    task = get_task("rrdb-sft")
    user = apply_overrides(read_yaml(args.config), [f"model.num_classes={ncls}", f"train.threads={args.threads}"]
                           + list(args.sets))
    cfg = task.config(user, where=args.config)
    res, spi, t_train, sr_ckpt = train_within(task, cfg, args.data, os.path.join(args.out, "rrdb_sft"),
                                                   args.minutes * 60.0)

    cmos_ckpt, t_cmos, cmos_iters = args.cmos_ckpt, 0.0, None
    if cmos_ckpt is None and args.cmos_minutes > 0:
        ctask = get_task("cmos")
        cuser = apply_overrides(read_yaml(args.cmos_config),
                                [f"model.num_classes={ncls}", f"train.threads={args.threads}"] + list(args.cmos_sets))
        ccfg = ctask.config(cuser, where=args.cmos_config)
        cres, _, t_cmos, cmos_ckpt = train_within(ctask, ccfg, args.data, os.path.join(args.out, "cmos"),
                                                       args.cmos_minutes * 60.0)
        cmos_iters = cres["iterations"]

    groups = sorted(int(g) for g in m.groups)
    data = bm.BenchData(args.data, groups)
    methods = [bm.get_method("bicubic"), bm.get_method("oracle", ckpt=sr_ckpt, device="cpu")]
    if cmos_ckpt:
        methods.append(bm.get_method("CMOS+RRDB-SFT=cmos+rrdb_sft", ckpt=sr_ckpt, cmos_ckpt=cmos_ckpt, device="cpu"))
    bench, t_bench = learncheck.bench(data, methods, args.out)
    rows = {r["label"]: r for r in bench.rows}
    if "bicubic" not in rows or "oracle" not in rows:
        print("\n".join(bench.errors), file=sys.stderr)
        return 2
    gain = rows["oracle"]["avg"]["psnr"] - rows["bicubic"]["avg"]["psnr"]
    ok = gain >= 1.0
    summary = {
        "command": " ".join([os.path.basename(sys.executable), "scripts/learn_sr.py"] + (argv or sys.argv[1:])),
        "config": cfg, "iterations": res["iterations"], "sec_per_it_calibration": spi,
        "seconds": {"build": t_build, "train_rrdb_sft": t_train, "train_cmos": t_cmos, "bench": t_bench},
        "cmos_ckpt": cmos_ckpt, "cmos_iterations": cmos_iters, "torch_threads": torch.get_num_threads(),
        "rows": {k: {"groups": v["groups"], "avg": v["avg"]} for k, v in rows.items()},
        "oracle_gain_db": gain, "pass": ok, "errors": bench.errors,
    }
    mc = cfg["model"]
    md = [f"## RRDB-SFT learning check (test groups {','.join(map(str, groups))})", "",
          f"RRDB-SFT (nf {mc['nf']}, {mc['nb']} blocks, img_residual {mc['img_residual']}) trained "
          f"{res['iterations']} iterations in {t_train / 60:.1f} min on the CPU ({args.threads} thread(s), crop "
          f"{cfg['data']['crop']}, batch {cfg['train']['batch_size']}) with the true maps"
          + (f"; CMOS: {cmos_ckpt}" + (f" ({cmos_iters} iterations, {t_cmos / 60:.1f} min)" if cmos_iters else "")
             if cmos_ckpt else "") + ".", "",
          bench.markdown.strip(), "",
          f"Oracle - bicubic: {gain:+.2f} dB PSNR-Y (need >= 1): {'PASS' if ok else 'FAIL'}."]
    if "CMOS+RRDB-SFT" in rows:
        cg = rows["CMOS+RRDB-SFT"]["avg"]["psnr"] - rows["bicubic"]["avg"]["psnr"]
        md.append(f"Blind chain - bicubic: {cg:+.2f} dB PSNR-Y.")
        summary["chain_gain_db"] = cg
    learncheck.write_summary(args.out, "learn_sr", summary, md)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
