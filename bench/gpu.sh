#!/usr/bin/env bash
# The GPU throughput run in one command, for the first lent GPU (the device tool): in under
# 10 minutes of device time it
#   1. installs what the GPU image lacks from wheels carried from here (bench/gpu/wheels.txt),
#   2. builds the Qwen2-VL-2B-shape checkpoint (random weights drawn on the GPU; checkpoints.shapes),
#   3. converts the bundled sample and runs bench/train_throughput.py: a, b and c side by side,
#   4. leaves the JSON, the markdown table and the logs in $OUT (the device tool brings them back).
#
#   bash bench/gpu.sh --fetch-wheels     # here, once: .whl/py312 (for the GPU) and .whl/py311 (rehearsal)
#   bash bench/gpu.sh                    # on the lent GPU: device run, carry [".whl/py312"]
#   bash bench/gpu.sh --cpu-rehearsal    # here: the same steps on CPU at tiny shape, in an environment
#                                        # holding only the GPU image's packages (bench/gpu/bare_env.py)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=gpu
case "${1:-}" in
  --fetch-wheels) MODE=fetch ;;
  --cpu-rehearsal) MODE=cpu ;;
  "") ;;
  *) echo "usage: bash bench/gpu.sh [--fetch-wheels | --cpu-rehearsal]" >&2; exit 2 ;;
esac
WHEEL_LIMIT_MIB=56  # the device carries 64 MiB per call, the working tree (~5 MiB) included

fetch_wheels() {  # $1: python version digits (312, 311)
  local dir=".whl/py$1" platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  mkdir -p "$dir"
  grep -v '^#' bench/gpu/wheels.txt | while read -r req; do
    [ -n "$req" ] || continue
    # A binary wheel for that Python; else (an sdist-only package: deepspeed, ...) a wheel built here,
    # which for these is pure Python (deepspeed compiles its ops on first use).
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "${1:0:1}.${1:1}" \
      --implementation cp "${platforms[@]}" -d "$dir" "$req" 2>/dev/null ||
      .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$dir" "$req" 2>&1 |
        grep -v "is ignored" || true
    ls "$dir" | grep -i "^$(echo "${req%%==*}" | tr - _)-" > /dev/null || { echo "no wheel for $req" >&2; exit 1; }
  done
  local mib; mib=$(du -sm "$dir" | cut -f1)
  echo "$dir: $(ls "$dir" | wc -l) wheels, $mib MiB"
  [ "$mib" -le "$WHEEL_LIMIT_MIB" ] || { echo "over the ${WHEEL_LIMIT_MIB} MiB the device can carry" >&2; exit 1; }
}

if [ "$MODE" = fetch ]; then
  fetch_wheels 312
  fetch_wheels 311
  # For the rehearsal only: what the GPU image has, the wheels need and this machine's venv lacks.
  mkdir -p .whl/py311-image
  .venv/bin/python bench/gpu/bare_env.py --fill .whl/py311 | while read -r name; do
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d .whl/py311-image "$name" 2>&1 |
      grep -v "is ignored" || true
  done
  echo ".whl/py311-image: $(ls .whl/py311-image | tr '\n' ' ')"
  exit 0
fi

# --- the run (GPU, or its CPU rehearsal) ----------------------------------------------------------
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MODELSCOPE_OFFLINE=1 USE_HF=1 \
       TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if [ "$MODE" = cpu ]; then
  WORK=${WORK:-/tmp/medvlm-gpu-rehearsal}
  OUT=${OUT:-$ROOT/output/gpu-rehearsal}
  PY=$(.venv/bin/python bench/gpu/bare_env.py "$WORK/bare")
  BENCH_ARGS=(--steps 3 --warmup 1 --batch 2 --mem-budget-gib 6 --max-batch 8 --timeout-min 20
              --name cpu-rehearsal-tiny)
else
  WORK=${WORK:-/tmp/medvlm-gpu}
  OUT=${OUT:-$ROOT/output/gpu-bench}
  PY=python3
  BENCH_ARGS=(--steps 8 --warmup 2 --timeout-min 2.5)
fi
PYVER=$($PY -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
mkdir -p "$WORK" "$OUT"
LOG="$OUT/gpu-run.log"
: > "$LOG"
say() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
timed() {  # name, command...: run, log, and record the seconds it took
  local name=$1 t0=$SECONDS; shift
  say "== $name: $(echo "$*" | cut -c1-300)"
  if "$@" >> "$LOG" 2>&1; then say "== $name ok ($((SECONDS - t0)) s)"; else
    local rc=$?; say "== $name FAILED rc=$rc ($((SECONDS - t0)) s)"; tail -30 "$LOG"; return $rc; fi
}

say "mode $MODE, python $PYVER ($PY), work $WORK, out $OUT"
{ nvidia-smi 2>/dev/null || echo "no nvidia-smi"; uptime; free -g; } > "$OUT/machine.txt"

WHL="$ROOT/.whl/py$PYVER"
[ -d "$WHL" ] || { say "no wheels in $WHL: run 'bash bench/gpu.sh --fetch-wheels' here, carry .whl/py$PYVER"; exit 1; }
say "installing $(ls "$WHL" | wc -l) wheels from $WHL into $WORK/site"
timed install "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$WORK/site" "$WHL"/*.whl
export PYTHONPATH="$WORK/site:$ROOT"
if [ "$MODE" = cpu ]; then  # packages the GPU image has that this machine's venv lacks (bare_env.py --fill)
  timed image-fill "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/image-fill" "$ROOT"/.whl/py311-image/*.whl
  export PYTHONPATH="$PYTHONPATH:$WORK/image-fill"
fi
timed imports "$PY" -c "
import importlib, importlib.metadata as md
for name in ('torch', 'transformers', 'peft', 'trl', 'datasets', 'ms-swift', 'accelerate', 'liger-kernel', 'deepspeed'):
    print(name, md.version(name))
import torch, swift, trl, datasets, peft, transformers
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')
for optional in ('deepspeed', 'liger_kernel', 'flash_attn'):
    try:
        importlib.import_module(optional); print(optional, 'imports')
    except Exception as e:
        print(optional, 'unavailable:', type(e).__name__, str(e)[:200])
"
grep -E "^(torch|transformers|peft|trl|datasets|ms-swift|accelerate|liger|deepspeed|cuda|flash)" "$LOG" \
  > "$OUT/versions.txt" || true

if [ "$MODE" = cpu ]; then
  MODEL="$WORK/models/tiny-qwen2-vl"
  timed model "$PY" -m checkpoints.tiny --out "$WORK/models" --families qwen2_vl \
    --corpus data/sample/medtrinity_sample.parquet
else
  MODEL="$WORK/models/shape-qwen2-vl-2b"
  timed model "$PY" -m checkpoints.shapes --shape qwen2-vl-2b --out "$WORK/models" --device cuda
fi

status=0
timed bench "$PY" bench/train_throughput.py --model "$MODEL" --family qwen2_vl \
  --work "$WORK/throughput" --out "$OUT" "${BENCH_ARGS[@]}" || status=$?
for run in "$WORK"/throughput/runs/*/; do  # the end of each swift run's log, in one file
  [ -f "$run/swift.log" ] && { echo "===== $run"; tail -40 "$run/swift.log"; } >> "$OUT/swift-logs.txt"
done
say "done (status $status); results in $OUT"
exit $status
