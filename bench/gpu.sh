#!/usr/bin/env bash
# The GPU checks of BENCHMARKS.md in one call on a device machine (see the device README): install the
# carried wheels (.whl/: diffusers and the few pure-Python packages the GPU image lacks), then run each
# bench named (mae, ddpm, paper_study) with its arguments, benches separated by a lone "+", figures under $OUT.
#   bash bench/gpu.sh mae        bash bench/gpu.sh ddpm --train-steps 250
#   bash bench/gpu.sh paper_study --budget-s 420 + mae --steps 30    # the study, then the stock baselines
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OUT=${OUT:-bench_out}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
# genaug run on CUDA defaults to local submitit jobs (runtime.processes_per_gpu per GPU): say if it cannot
python3 -c "import submitit; print('submitit', submitit.__version__)" \
  || echo "submitit MISSING: carry its wheel (and cloudpickle's) in .whl/, or paper_study's genaug run fails at its first job"
# the probe stage fits its linear probe with scikit-learn (and joblib, threadpoolctl)
python3 -c "import sklearn; print('scikit-learn', sklearn.__version__)" \
  || echo "scikit-learn MISSING: carry its wheel (and joblib's, threadpoolctl's) in .whl/, or set probe.tasks=[]"
status=0
run_bench() {
  local script="bench/${1}_gpu.py"
  [ -f "$script" ] || script="bench/${1}.py"
  shift
  python3 "$script" --out "$OUT" "$@" || status=$?
}
bench=()
for arg in "$@"; do
  if [ "$arg" = "+" ]; then run_bench "${bench[@]}"; bench=(); else bench+=("$arg"); fi
done
[ ${#bench[@]} -gt 0 ] && run_bench "${bench[@]}"
exit $status
