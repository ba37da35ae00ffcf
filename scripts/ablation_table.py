"""Collect `bsr eval cmos --strata` results of several runs into one ablation table (paper Tables 5, 7, 8 layout).

Usage: python scripts/ablation_table.py "LABEL=RESULTS_DIR" ... > table.md
Each RESULTS_DIR is an `--out` folder of `bsr eval cmos` (cmos_eval.json, optionally cmos_strata.json).
Columns: blur-map PSNR/SSIM and mIoU (Avg over groups, docs/cmos.md), then the blur-map MAE (σ px) in the
blur-boundary band and in flat regions (docs/sr.md "Stratified scores"), and the checkpoint's SHA-256.
"""

from __future__ import annotations

import json
import math
import os
import sys

from bsrdata.tables import markdown_table


def _f(v, fmt):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def main(argv):
    head = ["Variant", "blur PSNR", "blur SSIM", "mIoU (%)", "MAE band (px)", "MAE flat (px)", "checkpoint"]
    body = []
    for arg in argv:
        label, _, d = arg.partition("=")
        with open(os.path.join(d, "cmos_eval.json"), encoding="utf-8") as fh:
            ev = json.load(fh)
        avg = ev["results"]["avg"]
        band = flat = None
        sp = os.path.join(d, "cmos_strata.json")
        if os.path.isfile(sp):
            with open(sp, encoding="utf-8") as fh:
                st = json.load(fh)["strata"]
            band = (st.get("band", {}).get("avg") or {}).get("mae")
            flat = (st.get("flat", {}).get("avg") or {}).get("mae")
        body.append([label, _f(avg.get("blur_psnr"), "{:.2f}"), _f(avg.get("blur_ssim"), "{:.4f}"),
                     _f(avg.get("miou"), "{:.2f}"), _f(band, "{:.3f}"), _f(flat, "{:.3f}"),
                     "`" + ev["provenance"]["checkpoint_sha256"][:12] + "`"])
    print(markdown_table(head, body))


if __name__ == "__main__":
    main(sys.argv[1:])
