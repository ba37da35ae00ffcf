#!/usr/bin/env bash
# The prepared speed check for a GPU machine (docs/pipeline.md "GPU check"): one command of at most
# 9 minutes (give it a limit of ~580 s) that measures what the CPU machines cannot:
#   1. perf/train.py on CUDA, eager: CMOS, RRDB-SFT and the blind chain at the paper's sizes (AMP bf16,
#      channels_last), with the loader in the loop (8 workers) and without it, with the projected
#      wall time of every public training schedule;
#   2. perf/loader.py with 2, 4, 8 and 16 workers (how far the reader scales past 2 cores);
#   3. perf/train.py with --compile (torch.compile) for CMOS and RRDB-SFT;
#   4. perf/cityscapes_build.py with 16 workers (the Cityscapes-BSR build projection on 16 cores).
# Each step has its own time limit; a step cut short leaves what it measured (the JSON files are written
# as they go) and the next one runs. Everything lands in OUTDIR: env.txt, gpu_check.log, *.json.
#
#   bash scripts/gpu_check.sh OUTDIR            # the full check (on the machine with the GPU)
#   bash scripts/gpu_check.sh OUTDIR smoke      # the same plumbing in ~2 min at toy sizes (any machine)
#
# It needs no install and no network: the python (PYTHON, default python3) must already hold torch,
# numpy, numba, h5py, opencv, scipy, scikit-image, pyyaml, safetensors, click, tqdm, pillow. hdf5plugin
# and cityscapesscripts, when missing, are installed from wheels in .whl/ (pip download them for the
# machine's python first, docs/pipeline.md). The package's installed layout (bsrdata.models,
# bsrdata.cli) is made in a scratch copy of the tree, so the checkout itself is not changed.
set -uo pipefail

out=${1:?usage: bash scripts/gpu_check.sh OUTDIR [full|smoke]}
mode=${2:-full}
case "$mode" in full|smoke) ;; *) echo "gpu_check.sh: unknown mode '$mode' (full or smoke)" >&2; exit 2 ;; esac
PY=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee -a "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1

case "$mode" in
  full)  dev=cuda; t_train=180; t_loader=90; t_compile=120; t_city=130
         train_args=(--only cmos,rrdb_sft,blind --steps 20 --warmup 3 --workers 8 --items 64)
         loader_args=(--workers 2,4,8,16 --items 320 --repeats 2 --city-items 2)
         city_args=(--workers 16 --train 16 --val 8 --test 8) ;;
  smoke) dev=${SMOKE_DEVICE:-cpu}; t_train=120; t_loader=120; t_compile=60; t_city=120
         train_args=(--only cmos --steps 1 --warmup 0 --workers 1 --items 8 --width 0.1 --nb 1)
         loader_args=(--workers 1 --items 16 --repeats 1 --size 64x96 --city-size 64x128 --city-items 2)
         city_args=(--workers 1 --train 1 --val 1 --test 1 --size 128x256) ;;
esac

site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
for mod in hdf5plugin cityscapesscripts; do
  if ! "$PY" -c "import $mod" 2>/dev/null; then
    whl=$(ls "$root"/.whl/"$mod"-*.whl 2>/dev/null | head -1)
    if [ -z "$whl" ]; then
      echo "gpu_check.sh: $mod is not importable by $PY and no .whl/$mod-*.whl is there"; exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site/lib" "$whl" || exit 2
  fi
done
export PYTHONPATH="$site/lib${PYTHONPATH:+:$PYTHONPATH}"

# the installed layout in a scratch copy: bsrdata/, with models/ as bsrdata/models and cli/ as bsrdata/cli
tree="$site/tree"
mkdir -p "$tree"
cp -r "$root/bsrdata" "$root/perf" "$root/configs" "$tree/"
cp -r "$root/models" "$tree/bsrdata/models"
cp -r "$root/cli" "$tree/bsrdata/cli"
export NUMBA_CACHE_DIR="$site/numba"
cd "$tree" || exit 2

{
  date -u
  nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
  nproc
  "$PY" -c "import sys, torch, numpy, numba, h5py; print(sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
'numpy', numpy.__version__, 'numba', numba.__version__, 'h5py', h5py.__version__)"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

step() {  # step NAME LIMIT_S command...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout --kill-after 10 "$limit" "$@"
  local rc=$?
  echo "== $name: rc $rc after $((SECONDS - t0)) s"
}

step train "$t_train" "$PY" perf/train.py --device "$dev" "${train_args[@]}" --json "$out/train.json"
step loader "$t_loader" "$PY" perf/loader.py "${loader_args[@]}" --json "$out/loader.json"
if [ "$dev" = cuda ]; then
  step train_compile "$t_compile" "$PY" perf/train.py --device "$dev" "${train_args[@]}" --only cmos,rrdb_sft \
    --compile --json "$out/train_compile.json"
fi
step cityscapes_build "$t_city" "$PY" perf/cityscapes_build.py "${city_args[@]}" --json "$out/cityscapes_build.json"
echo "== done: $(ls "$out" | tr '\n' ' ')"
