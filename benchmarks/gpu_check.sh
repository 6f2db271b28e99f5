#!/usr/bin/env bash
# The GPU checks of issue 15 (item 8) in a few minutes: the tests marked `gpu` (autocast and
# channels_last vs fp32, the out-of-memory fallback, AMP training, DDP with NCCL, the tile budget)
# and the GPU benchmarks (bench_gpu.py: predict fp32 vs bf16/fp16 and channels_last, 12 MP whole
# vs tiles vs auto, training with and without AMP). Without CUDA it says that everything was
# skipped and exits 0.
#
#   benchmarks/gpu_check.sh            (PYTHON=... to use another interpreter than .venv/bin/python)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export QT_QPA_PLATFORM=offscreen

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ml/test_gpu.py -rs
    "$PY" benchmarks/bench_gpu.py
    echo "gpu_check: no CUDA device visible to torch: every GPU test and benchmark was SKIPPED (nothing was checked)"
    exit 0
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
t0=$SECONDS
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ml/test_gpu.py -rs -s --durations=5
tests_rc=$?
"$PY" benchmarks/bench_gpu.py --seconds "${BENCH_SECONDS:-3}"
bench_rc=$?
echo "gpu_check: pytest -m gpu exit $tests_rc, bench_gpu exit $bench_rc, $((SECONDS - t0)) s"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
