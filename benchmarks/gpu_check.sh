#!/usr/bin/env bash
# GPU check, one script: the CUDA tests, the trainer's levers (bench_trainer.py: num_workers,
# torch.compile, and a profile), the demo's reach training on CUDA (bf16 autocast) with a
# rollout evaluation, and the model benchmark on CUDA (bench_model.py). Each stage has its own time limit;
# the outputs go to OUT (default benchmarks/results/gpu).
#   usage: bash benchmarks/gpu_check.sh [OUT] [TRAIN_MINUTES]
# Needs a CUDA PyTorch and the package's imports (torch_brain, ...) on PYTHONPATH or installed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
MINUTES=${2:-3}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of this script without a GPU
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, torch_brain; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

echo "== CUDA tests"
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -25 | tee "$OUT/cuda_tests.txt"

echo "== trainer steps/s: num_workers and torch.compile vs the defaults, with a profile"
timeout 300 $PY benchmarks/bench_trainer.py --compare levers --profile --steps $([ "$DEVICE" = cpu ] && echo 16 || echo 200) \
  --skip $([ "$DEVICE" = cpu ] && echo 4 || echo 60) --out "$OUT/train_levers.json" 2>/dev/null | grep "steps/s"

echo "== the reach demo trained on CUDA ($MINUTES min cap), then evaluated without baselines"
RUNS=$(mktemp -d)
SECONDS=0
timeout $((MINUTES * 60 + 90)) $PY -m neurohorizon --runs-dir "$RUNS" train \
  src/neurohorizon/configs/demo.yaml train.device="$DEVICE" train.max_minutes="$MINUTES" 2>&1 \
  | tr '\r' '\n' | grep -v "^train:" | tail -20 | tee "$OUT/train.txt"
echo "training wall time: $SECONDS s" | tee -a "$OUT/train.txt"
RUN=$(ls -d "$RUNS"/*/ | head -1)
cp "$RUN/valid_log.csv" "$OUT/" 2>/dev/null  # at most 8 files come back from a device run
timeout 120 $PY -m neurohorizon evaluate "$RUN" --no-baselines --device "$DEVICE" 2>&1 | tail -5 | tee "$OUT/evaluate.txt"
EVAL=$(ls -d "$RUN"/evaluations/*/ 2>/dev/null | head -1)
[ -n "$EVAL" ] && cp "$EVAL/metrics.json" "$OUT/metrics_reach_cuda.json"

echo "== model benchmark on CUDA"
timeout 150 $PY benchmarks/bench_model.py --devices "$DEVICE" $([ "$DEVICE" = cpu ] && echo --quick) --out "$OUT/bench_model_cuda.json" > /dev/null \
  && cat "$OUT/bench_model_cuda.json"
ls "$OUT"
