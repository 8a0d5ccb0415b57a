#!/usr/bin/env bash
# One prepared check for a machine with a GPU (about 8 minutes at most on one GPU):
#   1. paper-profile smoke: a few FA steps of each dataset's encoder (MNIST, CIFAR-10,
#      CelebA, STL-10) at batch 128 on random images, with the time per epoch they imply
#      (python -m benchmarks.gpu_smoke);
#   2. the CUDA tests: the FA step, the VFA sampler and DDP (nccl) against the CPU's fp32
#      results (pytest tests/test_cuda.py);
#   3. the benchmark at --full (python -m benchmarks.run), its report written under the
#      log folder, not into results/ (FA_OUTPUT_ROOT).
# Every step has its own time limit; a failing step is logged and the next one runs.
#
#   bash benchmarks/gpu_check.sh                    # logs under $OUT, else runs/gpu_check/
#   DEVICE=cpu SMOKE=1 bash benchmarks/gpu_check.sh # dry run on a CPU: tiny sizes (~4 min)
#
# Environment: OUT (log folder), PY (python; default .venv/bin/python, else python3),
# DEVICE (default cuda), SMOKE=1 (tiny sizes), SECTIONS (benchmark sections, default all).
set -uo pipefail
cd "$(dirname "$0")/.."

LOG="${OUT:-runs/gpu_check}"
mkdir -p "$LOG"
LOG="$(cd "$LOG" && pwd)"
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
DEVICE="${DEVICE:-cuda}"
SECTIONS="${SECTIONS:-1,2,3,4,5,6,7,8}"
if [[ "${SMOKE:-0}" == 1 ]]; then
  SMOKE_ARGS=(--batch 4 --steps 1 --init default)
  BENCH_MODE=--smoke
  TEST_ENV=(FA_CUDA_TESTS_ON=cpu)
else
  SMOKE_ARGS=(--batch 128 --steps 5)
  BENCH_MODE=--full
  TEST_ENV=()
fi
status=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $LOG/NAME.log
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG/summary.txt"
  timeout --kill-after=10 "$limit" "$@" >"$LOG/$name.log" 2>&1
  local rc=$?
  echo "   $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG/summary.txt"
  tail -n 25 "$LOG/$name.log"
  [[ $rc == 0 ]] || status=1
}

{
  date -u +"%Y-%m-%d %H:%M:%S UTC"
  git rev-parse HEAD 2>/dev/null || true
  command -v nvidia-smi >/dev/null && nvidia-smi || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), 'devices', torch.cuda.device_count())"
} >"$LOG/machine.txt" 2>&1
cat "$LOG/machine.txt"

step smoke 90 "$PY" -m benchmarks.gpu_smoke --device "$DEVICE" "${SMOKE_ARGS[@]}" \
  --out "$LOG/smoke.md"
step cuda_tests 150 env "${TEST_ENV[@]}" "$PY" -m pytest -q -ra -p no:cacheprovider \
  tests/test_cuda.py
step benchmark 270 env FA_OUTPUT_ROOT="$LOG/bench" "$PY" -m benchmarks.run "$BENCH_MODE" \
  --device "$DEVICE" --sections "$SECTIONS"

echo "logs: $LOG (summary.txt; the benchmark's report: bench/results/benchmarks.md)"
exit $status
