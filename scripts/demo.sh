#!/usr/bin/env bash
# The main job on the embedded default data. Usage: scripts/demo.sh BIN_DIR OUT_DIR
set -euo pipefail
BIN=${1:-.venv/bin}
OUT=${2:-out}
"$BIN/bsr" --help
