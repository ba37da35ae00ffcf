#!/usr/bin/env bash
# Tiny CPU runs of the CMOS ablations (paper Tables 5 and 8; docs/reproduce.md): each variant is
# configs/cmos_demo.yaml (30 iterations) plus its switch, scored with `bsr eval cmos --strata`, and the
# rows are collected into one table. The numbers only show that the sequence runs end to end.
# Usage: scripts/reproduce_small.sh table5|table8 BIN_DIR OUT_DIR   (after scripts/demo.sh built OUT/demo)
set -euo pipefail
TABLE=${1:?table5 or table8}
BIN=${2:-.venv/bin}
OUT=${3:-out}
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$(pwd)/.numba_cache}
DATA="$OUT/demo"
case "$TABLE" in
  table5) VARIANTS=("w/o-GIA:--set model.gia.flow=false --set model.gia.channel=false --set model.gia.spatial=false"
                    "F:--set model.gia.channel=false --set model.gia.spatial=false"
                    "F+C:--set model.gia.spatial=false"
                    "F+C+S:") ;;
  table8) VARIANTS=("with-aux:" "without-aux:--set loss.aux_weight=0") ;;
  *) echo "reproduce_small: unknown table '$TABLE' (table5, table8)" >&2; exit 1 ;;
esac
ROWS=()
for v in "${VARIANTS[@]}"; do
  label=${v%%:*}; sets=${v#*:}; slug=$(echo "$label" | tr '/+' '__')
  run="$OUT/ablations/$TABLE/runs/$slug"; res="$OUT/ablations/$TABLE/eval/$slug"
  # shellcheck disable=SC2086
  [ -f "$run/last/config.json" ] || "$BIN/bsr" train cmos --data "$DATA" --config configs/cmos_demo.yaml \
      --out "$run" --resume --no-progress $sets >/dev/null
  "$BIN/bsr" eval cmos --data "$DATA" --ckpt "$run/last" --device cpu --strata --out "$res" >/dev/null 2>&1
  ROWS+=("$label=$res")
done
"$BIN/python" scripts/ablation_table.py "${ROWS[@]}" | tee "$OUT/ablations/$TABLE/table.md"
