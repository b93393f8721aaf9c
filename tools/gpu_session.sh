#!/usr/bin/env bash
# One device-machine call: build the CUDA extension, the pack_conv route
# study, the training step, the CUDA tests with compute-sanitizer beside them,
# and the op benchmarks, each stage logging under $OUT and cut off so that the
# whole call ends within BUDGET_S seconds (default 540) with its logs.
#
#   bash tools/gpu_session.sh [build] [routes] [train] [check] [bench OPS...]
#
# Stages run in that order whatever the order given. check runs the tests
# that touch CUDA (pytest -k cuda; TEST_ARGS overrides) and, at the same
# time, compute-sanitizer's memcheck, racecheck, synccheck and initcheck over
# every CUDA kernel (python -m tools.sanitize cuda). Timed stages (routes,
# train, bench) run alone. Results land in $OUT/<device-slug>/<suite>.md|.json
# (the layout of benchmarks/results/), all packed into $OUT/session.tgz at the
# end (a device call returns at most 8 files; PACK_OUT=0 leaves them as they are).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
BUDGET_S=${BUDGET_S:-540}
stages=" $* "
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(elapsed)s] $*"; }
# seconds until a deadline given as a fraction (percent) of the budget, at least 5:
# a stage that ends early leaves its time to the next ones
until_pct() { local l=$(( BUDGET_S * $1 / 100 - $(elapsed) )); (( l < 5 )) && l=5; echo $l; }
summary=()
has() { [[ $stages == *" $1 "* ]]; }

if has build; then
  stamp build
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  timeout "$(until_pct 35)" python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; rc=$?
  tail -5 "$OUT/build.log"; grep -m5 -i " error" "$OUT/build.log"; summary+=("build rc=$rc ($(elapsed)s)")
  python3 -c "import packops; print({k: v.available for k, v in packops.backends().items()})"
fi
slug=$(python3 -c "import torch; from benchmarks import report; print(report.slug(report.device_name(torch.device('cuda'))))" 2>/dev/null)
if has routes; then
  stamp routes
  timeout "$(until_pct 52)" python3 -m benchmarks.pack_routes --device cuda --profile --out "$OUT" \
    > "$OUT/routes.log" 2>&1; rc=$?
  timeout "$(until_pct 58)" python3 -m benchmarks.pack_routes --device cuda --layers pack1 pack3 \
    --cudnn-benchmark --out "$OUT" > "$OUT/routes-cudnn-benchmark.log" 2>&1; rc2=$?
  summary+=("routes rc=$rc, cudnn-benchmark rc=$rc2 ($(elapsed)s)")
  grep -A200 "^| layer" "$OUT/$slug/pack-routes.md" 2>/dev/null | grep -v "^- " | head -50
fi
if has train; then
  stamp train
  timeout "$(until_pct 70)" python3 -m benchmarks.train_step --device cuda --preset packnet01 \
    --providers reference fused --out "$OUT" ${TRAIN_ARGS:-} > "$OUT/train.log" 2>&1; rc=$?
  timeout "$(until_pct 79)" python3 -m benchmarks.train_step --device cuda --preset packnet01 \
    --providers reference fused --amp --merge --out "$OUT" ${TRAIN_ARGS:-} > "$OUT/train-amp.log" 2>&1; rc2=$?
  summary+=("train-step rc=$rc, amp rc=$rc2 ($(elapsed)s)")
  grep -B1 -A4 "^| provider" "$OUT/$slug/train-step.md" 2>/dev/null
  tail -n 3 "$OUT/train.log" "$OUT/train-amp.log"
fi
if has check; then
  stamp check
  lim=$(until_pct 95); deadline=$(( $(date +%s) + lim ))
  (
    for tool in memcheck racecheck synccheck initcheck; do
      extra=(); env=()
      [[ $tool == memcheck ]] && extra=(--leak-check no) && env=(PYTORCH_NO_CUDA_MEMORY_CACHING=1)
      rest=$(( deadline - $(date +%s) )); (( rest < 5 )) && break
      env "${env[@]}" timeout "$rest" compute-sanitizer --tool $tool "${extra[@]}" \
        --error-exitcode 9 python3 -m tools.sanitize cuda > "$OUT/$tool.log" 2>&1
      echo "$tool rc=$? $(grep -m1 'ERROR SUMMARY' "$OUT/$tool.log")" >> "$OUT/sanitize.txt"
    done
  ) &
  san=$!
  timeout "$lim" python3 -m pytest -q -p no:cacheprovider -n 8 ${TEST_ARGS:--k cuda} \
    > "$OUT/pytest.log" 2>&1; rc=$?
  wait $san
  tail -15 "$OUT/pytest.log"; summary+=("pytest rc=$rc: $(tail -1 "$OUT/pytest.log") ($(elapsed)s)")
  cat "$OUT/sanitize.txt" 2>/dev/null; summary+=("$(tr '\n' ';' < "$OUT/sanitize.txt" 2>/dev/null)")
fi
if has bench; then
  ops=${stages#* bench }
  stamp "bench $ops"
  [[ -n $slug && -d benchmarks/results/$slug ]] && cp -rn "benchmarks/results/$slug" "$OUT"/
  timeout "$(until_pct 100)" python3 -m benchmarks.report --device cuda --merge --out "$OUT" \
    --providers reference triton cuda ${ops:+--ops $ops} > "$OUT/bench.log" 2>&1; rc=$?
  summary+=("bench rc=$rc ($(elapsed)s)")
  tail -25 "$OUT/bench.log"
fi
stamp done
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
# what comes back from a device call is at most 8 files: everything in one archive
if [[ ${PACK_OUT:-1} == 1 ]]; then
  tar czf /tmp/session.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/session.tgz "$OUT"/ &&
    echo "results: session.tgz ($(du -h "$OUT/session.tgz" | cut -f1))"
fi
