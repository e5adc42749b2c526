#!/usr/bin/env bash
# One GPU session in two time-boxed parts: every eager row, then the torch.compile rows.
#
#   OUT=runs/benchmarks/gpu EAGER_S=330 TOTAL_S=560 bash benchmarks/on_gpu.sh [extra args...]
#
# The eager part gets at most EAGER_S seconds, the compiled part what is left of TOTAL_S.
# Each part writes results.partial.json after every row, so a part stopped by its time
# limit keeps what it measured (`python -m benchmarks.report DIR/results.partial.json`).
# PEAK_TFLOPS / PEAK_TFLOPS_FP32: the card's dense bf16 / fp32 peaks for the MFU column
# (defaults: H100/H200 SXM, 989 bf16 and 495 TF32: convolutions run on TF32 by default). PYTHON: the interpreter (default python).
set -u
OUT=${OUT:-runs/benchmarks/gpu}
EAGER_S=${EAGER_S:-330}
TOTAL_S=${TOTAL_S:-560}
START=$SECONDS
PEAK=(--peak-tflops "${PEAK_TFLOPS:-989}" --peak-tflops-fp32 "${PEAK_TFLOPS_FP32:-495}")
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/eager.log"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$OUT/eager.log"
timeout --signal=INT --kill-after=20 "$EAGER_S" \
    "$PY" -m benchmarks --device cuda --compile off "${PEAK[@]}" --out "$OUT/eager" "$@" 2>&1 | tee -a "$OUT/eager.log"
timeout --signal=INT --kill-after=20 "$(( TOTAL_S - (SECONDS - START) - 20 ))" \
    "$PY" -m benchmarks --device cuda --only stage1:compile stage1:fast "${PEAK[@]}" --out "$OUT/compiled" "$@" \
    2>&1 | tee "$OUT/compiled.log"
exit 0
