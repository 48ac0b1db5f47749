#!/usr/bin/env bash
# Everything the GPU path needs checked, in one go, the day a GPU is lent (≤ 8 min on one
# H100/H200). Self-contained: a copy of the repo, no virtualenv, no network but PyPI.
#
#   bash bench/gpu_check.sh                 # results in $OUT, else bench/results/gpu
#   STAGES="kernel step" bash bench/gpu_check.sh   # only these (the env stage runs if named)
#
# Stages (each one's failure is recorded and the next still runs; a table comes at the end):
#   env       a venv (.venv-gpu, reused if there) that sees a system CUDA torch; else torch from
#             PyPI (its Linux wheel is the CUDA build); then `pip install -e .` and pytest
#   doctor    `sweeper doctor`: versions, GPUs, the kernel self-test on each GPU
#   selftest  the self-test's cost in a fresh process: cold (empty Triton cache) and warm
#   tests     the kernel tests compiled on the GPU (no interpreter): numerics, fallback, compile
#   kernel    bench/kernel.py at D = 1.25e8, d = 1e3 … 1e6: kernel time ÷ device copy
#   step      bench/kernel.py: subspace step ÷ full step, random-init RoBERTa-base (no network)
#   e2e       a 2-probe DID job on the GPU (MiniLM on Rotten Tomatoes, assets from PyPI),
#             checking that its probes ran the fused kernel (the MLflow `kernel` tag)
# Writes $OUT/<stage>.log, JSON per stage, $OUT/summary.json and $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/bench/results/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VENV=${VENV:-$ROOT/.venv-gpu}
PY=$VENV/bin/python
export SWEEPER_KERNEL_CACHE=$OUT/kernel-builds
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
STARTED=$SECONDS
: > "$OUT/stages.tsv"

STAGES=${STAGES:-env doctor selftest tests kernel step e2e}
DEADLINE=${DEADLINE:-480} # seconds for the whole script: a stage gets at most what is left

# stage NAME LIMIT_SECONDS COMMAND...: runs it with a time limit, output in $OUT/NAME.log.
stage() {
  local name=$1 limit=$2
  shift 2
  [[ " $STAGES " == *" $name "* ]] || return 0
  local start=$SECONDS rc=0 left=$((DEADLINE - (SECONDS - STARTED)))
  if ((left < 20)); then
    printf '%s\t%s\t0\n' "$name" "skipped (out of time)" >>"$OUT/stages.tsv"
    echo "=== $name skipped: ${left}s left of DEADLINE=${DEADLINE}s"
    return 0
  fi
  ((limit <= left)) || limit=$left
  echo "=== $name (limit ${limit}s, $((SECONDS - STARTED))s so far)"
  timeout --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  local status=ok
  if ((rc == 124 || rc == 137)); then
    status="timeout"
  elif ((rc != 0)); then
    status="failed (exit $rc)"
  fi
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >>"$OUT/stages.tsv"
  echo "    $status in $((SECONDS - start))s; last lines of $OUT/$name.log:"
  tail -n 5 "$OUT/$name.log" | sed 's/^/    | /'
}

make_env() {
  if [[ ! -x $PY ]]; then
    python3 -m venv --system-site-packages "$VENV"
  fi
  "$PY" -m pip install -q --upgrade pip
  if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA torch visible: installing torch from PyPI (the CUDA build)"
    "$PY" -m pip install -q torch
  fi
  "$PY" -m pip install -q -e . pytest pytest-timeout hypothesis
  "$PY" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "triton", triton.__version__, torch.cuda.get_device_name())'
}

e2e_job() {
  "$VENV/bin/sweeper" assets fetch minilm rotten-tomatoes
  cat >"$OUT/e2e.yaml" <<EOF
# bench/gpu_check.sh: a 2-probe DID search on one GPU; the fused kernel must be the one used.
name: gpu-check
grid:
  - models: [minilm]
    tasks:
      - name: rotten-tomatoes
        options: {max_length: 48, eval_size: 400}
methods:
  full:
    train: {optimizer: adamw, lr: 1.0e-4, weight_decay: 0.01}
  did: {search: {lo: 1000, hi: 100000}}
tolerance: 1.0
seeds: {baseline: 1, probe: 1, boundary: 1}
train: {steps: 60, batch_size: 32, eval_every: 20}
resources: {cpus_per_trial: 4, gpus_per_trial: 1}
budget: {max_probes: 2, max_wall_seconds: 120}
tracking: {run_dir: $OUT/e2e}
EOF
  rm -rf "$OUT/e2e"
  "$VENV/bin/sweeper" run "$OUT/e2e.yaml"
  "$PY" bench/gpu_check.py e2e "$OUT/e2e" "$OUT/e2e.json"
}

# Limits are caps; DEADLINE bounds the sum. Expected on an H100 with torch to download:
# env ~150 s, doctor ~20, selftest ~45, tests ~120 (Triton compiles each specialisation the
# tests use), kernel ~40 (more with d = 1e6: its n = 2^20 kernels compile), step ~45, e2e ~90. The compile check is CPU-only: CI runs it.
stage env 240 make_env
stage doctor 60 "$VENV/bin/sweeper" doctor
stage selftest 75 "$PY" bench/gpu_check.py selftest "$OUT/selftest.json"
stage tests 180 "$PY" -m pytest -q -p no:cacheprovider --timeout 120 \
  tests/test_fastfood_triton.py tests/test_kernel_selftest.py
stage kernel 120 "$PY" bench/kernel.py --D 1.25e8 --d 1e3 1e5 1e6 --skip-step --out "$OUT/kernel"
stage step 120 "$PY" bench/kernel.py --d 1e3 1e5 1e6 --steps 6 --skip-kernels --out "$OUT/step"
stage e2e 150 e2e_job
"$PY" bench/gpu_check.py summary "$OUT" || python3 bench/gpu_check.py summary "$OUT" || true
echo "total $((SECONDS - STARTED))s; table in $OUT/summary.md"
