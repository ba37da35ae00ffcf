"""Table 2's layout on a small build, on the CPU: every baseline's learning check, then one table (issue 12).

    python scripts/baselines_table.py --data out/demo --out out/baselines [--minutes 10] \
        [--methods manet,dan,dcls,koalanet,kernelgan,chain] [--kernelgan-iters 300] [--figures DIR]

For each learned method, runs ``scripts/learn_<method>.py --data DATA --minutes M --out OUT/<method>`` unless
``OUT/<method>/learn_<method>.json`` exists (its ``checkpoint`` is the trained network); ``chain`` runs
``scripts/learn_sr.py`` (RRDB-SFT on the true maps for M minutes and a small CMOS for M minutes) for the
oracle and the blind chain CMOS -> RRDB-SFT. Then scores bicubic, every trained method and KernelGAN + ZSSR
(per image, ``--kernelgan-iters`` / ``--kernelgan-budget``) in one ``bsr bench`` folder ``OUT/table`` with
``--strata``, and writes ``OUT/table.md`` / ``OUT/table.json`` (rows, per-method training facts, commands).
Every number is produced by the code on DATA; the models are tiny and trained for minutes, so the table
shows that each row runs end to end and learns, not the paper's ranking.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LEARNED = {  # method -> table label
    "manet": "MANet",
    "dan": "DAN",
    "dcls": "DCLS",
    "koalanet": "KOALAnet",
}
ALL = list(LEARNED) + ["kernelgan", "chain"]


def _learn(method, args):
    """Run the method's learning check unless its summary exists -> the summary dict."""
    out = os.path.join(args.out, method)
    name = "learn_sr" if method == "chain" else f"learn_{method}"
    summary = os.path.join(out, f"{name}.json")
    if not os.path.isfile(summary):
        cmd = [sys.executable, os.path.join(ROOT, "scripts", f"{name}.py"), "--data", args.data,
               "--minutes", str(args.minutes), "--out", out]
        if method == "chain":  # the CMOS trains on whole frames, the size it is scored on (docs/cmos.md)
            cmd += ["--cmos-minutes", str(args.minutes), "--cmos-set", "data.crop=null"]
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=False, cwd=ROOT)
    if not os.path.isfile(summary):
        raise SystemExit(f"{summary}: the learning check of {method} wrote no summary")
    with open(summary, encoding="utf-8") as fh:
        doc = json.load(fh)
    doc["_summary"] = summary
    return doc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a built dataset (e.g. out/demo from make demo)")
    ap.add_argument("--out", required=True, help="folder for the runs, the bench folder and the table")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per learned method")
    ap.add_argument("--methods", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    ap.add_argument("--kernelgan-iters", type=int, default=None, help="bsr bench --iters for kernelgan")
    ap.add_argument("--kernelgan-budget", type=float, default=None, help="bsr bench --time-budget (s per image)")
    ap.add_argument("--figures", default=None, help="also write the bench figures here")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ALL]
    if bad:
        ap.error(f"--methods: unknown {bad[0]!r} (known: {', '.join(ALL)})")

    import bsrdata.models.bench_methods  # noqa: F401  (registers the torch methods)
    from bsrdata import benchmark as bm
    from bsrdata.fileio import write_json_atomic, write_text_atomic
    from bsrdata.manifest import load_manifest
    from bsrdata.strata import StrataSpec

    facts, built = {}, [bm.get_method("bicubic")]
    for m in methods:
        if m == "kernelgan":
            continue
        doc = _learn(m, args)
        if m == "chain":
            sr = os.path.join(args.out, "chain", "rrdb_sft", "run", "last")
            built.append(bm.get_method("oracle", ckpt=sr, device="cpu"))
            if doc.get("cmos_ckpt"):
                built.append(bm.get_method("CMOS+RRDB-SFT=cmos+rrdb_sft", ckpt=sr, cmos_ckpt=doc["cmos_ckpt"],
                                           device="cpu"))
        else:
            built.append(bm.get_method(f"{LEARNED[m]}={m}", ckpt=doc["checkpoint"], device="cpu"))
        facts[m] = {k: doc.get(k) for k in ("iterations", "seconds", "checkpoint", "cmos_ckpt", "cmos_iterations",
                                            "pass", "command")}
        facts[m]["summary"] = doc["_summary"]
    if "kernelgan" in methods:
        for label, opts in (("KernelGAN+ZSSR", {}), ("KernelGAN+ZSSR-direct", {"align": "direct"})):
            # the official 4i+1.5 grid assumption, and the same SR moved onto our direct grid
            built.append(bm.get_method(f"{label}=kernelgan", iters=args.kernelgan_iters,
                                       time_budget=args.kernelgan_budget, device="cpu", opts=opts))
    groups = sorted(int(g) for g in load_manifest(args.data).groups)
    data = bm.BenchData(args.data, groups)
    spec = StrataSpec.make(data.sigma_max)
    t0 = time.perf_counter()
    res = bm.run_bench(data, built, os.path.join(args.out, "table"), strata=spec,
                       save_images=bool(args.figures))
    t_bench = time.perf_counter() - t0
    from bsrdata.strata import write_bench_strata

    strata_md, aggs = write_bench_strata(data, os.path.join(args.out, "table"), res.rows, spec, 0)
    if args.figures:
        from bsrdata.figures import bench_figures

        bench_figures(data, os.path.join(args.out, "table"), res.rows, args.figures, strata=aggs)
    md = "\n".join([res.markdown.strip(), "", strata_md.strip()])
    write_text_atomic(os.path.join(args.out, "table.md"), md + "\n")
    write_json_atomic(os.path.join(args.out, "table.json"),
                      {"command": " ".join(["python", "scripts/baselines_table.py"] + (argv or sys.argv[1:])),
                       "rows": res.rows, "training": facts, "bench_seconds": t_bench, "errors": res.errors},
                      indent=2, default=float)
    print(md)
    for e in res.errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if res.errors else 0


if __name__ == "__main__":
    sys.exit(main())
