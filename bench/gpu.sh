#!/usr/bin/env bash
# The GPU checks of BENCHMARKS.md in one call on a device machine (see the device README): install the
# carried wheels (.whl/: diffusers and the few pure-Python packages the GPU image lacks), then run the
# bench named first (mae, ddpm, paper_study) with the rest of the arguments, its figures under $OUT.
#   bash bench/gpu.sh mae        bash bench/gpu.sh ddpm --train-steps 250        bash bench/gpu.sh paper_study
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OUT=${OUT:-bench_out}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
bench=$1; shift
script="bench/${bench}_gpu.py"
[ -f "$script" ] || script="bench/${bench}.py"
python3 "$script" --out "$OUT" "$@"
