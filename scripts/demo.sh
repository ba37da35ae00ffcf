#!/usr/bin/env bash
# The main job on the embedded default data. Usage: scripts/demo.sh BIN_DIR OUT_DIR
# Builds the demo dataset (synthetic scenes + the Middlebury frame: train + five test groups), verifies it
# (with sha256), writes preview panels and the dataset card, and says where everything is.
set -euo pipefail
BIN=${1:-.venv/bin}
OUT=${2:-out}
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$(pwd)/.numba_cache}
DATA="$OUT/demo"
mkdir -p "$OUT"
"$BIN/bsr" build demo --out "$DATA" --workers 2
"$BIN/bsr" verify "$DATA" --full
"$BIN/bsr" preview "$DATA" --split test --group 1 --n 4 --out "$OUT/preview_test_group1.png"
"$BIN/bsr" preview "$DATA" --split train --n 4 --out "$OUT/preview_train.png"
"$BIN/bsr" info "$DATA" --card --out "$OUT/card" >/dev/null
echo
echo "dataset:  $DATA  (manifest.json, train/*.h5, test/*.h5)"
echo "previews: $OUT/preview_test_group1.png  $OUT/preview_train.png"
echo "card:     $OUT/card/CARD.md  (bsr info $DATA)"
echo "load it:  python -c \"import bsrdata; v = bsrdata.open_dataset('$DATA', 'test', group=1); print(len(v), v[0]['lr'].shape)\""
