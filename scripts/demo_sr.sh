#!/usr/bin/env bash
# The SR part of `make demo`: after scripts/demo.sh has built OUT/demo, train a tiny blind chain on the CPU
# (a few steps of CMOS unless OUT/runs/cmos_demo exists, then the small RRDB-SFT on the true maps) and
# score bicubic and the chain (CMOS -> RRDB-SFT) on the five test groups, with stratified scores (σ bins,
# blur-boundary band) and figures; `bsr eval cmos` adds the blur-map strata and its figure.
# Usage: scripts/demo_sr.sh BIN_DIR OUT_DIR
set -euo pipefail
BIN=${1:-.venv/bin}
OUT=${2:-out}
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$(pwd)/.numba_cache}
DATA="$OUT/demo"
RUNS="$OUT/runs"
CMOS="$RUNS/cmos_demo"
SR="$RUNS/rrdb_sft_demo"
if [ ! -f "$DATA/manifest.json" ]; then
  echo "demo_sr: $DATA/manifest.json missing; run scripts/demo.sh $BIN $OUT first" >&2
  exit 1
fi
if [ ! -f "$CMOS/last/config.json" ]; then
  "$BIN/bsr" train cmos --data "$DATA" --config configs/cmos_demo.yaml --out "$CMOS" --resume --no-progress \
    >/dev/null
fi
"$BIN/bsr" train rrdb-sft --data "$DATA" --config configs/rrdb_sft_demo.yaml --out "$SR" --resume --no-progress \
  >/dev/null
echo
echo "SR on the demo test groups (x4, PSNR/SSIM on Y; the models trained for a minute on the CPU):"
"$BIN/bsr" bench --data "$DATA" --out "$OUT/bench" --method bicubic --method "CMOS+RRDB-SFT=cmos" \
  --ckpt "$SR/last" --cmos-ckpt "$CMOS/last" --device cpu --strata --figures "$OUT/figures"
"$BIN/bsr" eval cmos --data "$DATA" --ckpt "$CMOS/last" --device cpu --strata --figures "$OUT/figures" \
  --out "$OUT/eval_cmos" >/dev/null 2>&1
echo
echo "stratified tables: $OUT/bench/strata.md  $OUT/eval_cmos/cmos_strata.md"
echo "figures:           $OUT/figures/*.png"
