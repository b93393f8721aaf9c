#!/usr/bin/env bash
# One device-machine call: build the CUDA extension, run the test suite on
# CUDA, compute-sanitizer over every kernel, and the benchmarks, each stage
# logging under $OUT. Usage: bash tools/gpu_session.sh [build] [test] [sanitize] [train] [bench OPS...]
# Results land in $OUT/<device-slug>/<suite>.md|.json (the layout of benchmarks/results/).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
stages=" $* "
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
summary=()
if [[ $stages == *" build "* ]]; then
  stamp build
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; rc=$?
  tail -5 "$OUT/build.log"; summary+=("build rc=$rc")
  python3 -c "import packops; print({k: v.available for k, v in packops.backends().items()})"
fi
if [[ $stages == *" test "* ]]; then
  stamp test
  python3 -m pytest -q -p no:cacheprovider -n 8 ${TEST_ARGS:-} > "$OUT/pytest.log" 2>&1; rc=$?
  tail -25 "$OUT/pytest.log"; summary+=("pytest rc=$rc: $(tail -1 "$OUT/pytest.log")")
fi
if [[ $stages == *" sanitize "* ]]; then
  stamp sanitize
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --leak-check no \
    --error-exitcode 9 python3 -m tools.sanitize ${SANITIZE_BACKENDS:-} > "$OUT/memcheck.log" 2>&1; rc=$?
  tail -4 "$OUT/memcheck.log"; summary+=("memcheck rc=$rc: $(grep -c 'Invalid' "$OUT/memcheck.log") invalid")
  compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m tools.sanitize cuda \
    > "$OUT/racecheck.log" 2>&1; rc=$?
  tail -4 "$OUT/racecheck.log"; summary+=("racecheck rc=$rc: $(grep -ci 'hazard' "$OUT/racecheck.log") hazard lines")
fi
if [[ $stages == *" train "* ]]; then
  stamp train
  python3 -m benchmarks.train_step --device cuda --out "$OUT" ${TRAIN_ARGS:-} > "$OUT/train.log" 2>&1; rc=$?
  summary+=("train-step rc=$rc")
  tail -30 "$OUT/train.log"
fi
if [[ $stages == *" bench "* ]]; then
  ops=${stages#* bench }
  stamp "bench $ops"
  # --merge adds to this device's committed results
  slug=$(python3 -c "import torch; from benchmarks import report; print(report.slug(report.device_name(torch.device('cuda'))))" 2>/dev/null)
  [[ -n $slug && -d benchmarks/results/$slug ]] && cp -rn "benchmarks/results/$slug" "$OUT"/  # -n: keep train-step.* just written
  python3 -m benchmarks.report --device cuda --merge --out "$OUT" ${ops:+--ops $ops} > "$OUT/bench.log" 2>&1; rc=$?
  summary+=("bench rc=$rc")
  tail -40 "$OUT/bench.log"
fi
stamp done
printf '%s\n' "${summary[@]}"
