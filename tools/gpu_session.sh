#!/usr/bin/env bash
# One device-machine call: build the CUDA extension, then the stages named, in
# the order given, each logging under $OUT and cut off so that the whole call
# ends within BUDGET_S seconds (default 540) with its logs:
#
#   bash tools/gpu_session.sh build check routes train bench OPS...
#
#   build   python setup.py build_ext --inplace (TORCH_CUDA_ARCH_LIST=9.0)
#   check   the tests that touch CUDA (pytest -n 8 -k cuda; TEST_ARGS
#           overrides) and, at the same time, compute-sanitizer over every
#           CUDA kernel (python -m tools.sanitize cuda): SANITIZERS (default
#           "memcheck racecheck synccheck initcheck"), SANITIZE_OPS to narrow
#   routes  python -m benchmarks.pack_routes (ROUTES_ARGS), then with
#           --cudnn-benchmark for pack1 and pack3 (unless ROUTES_CB=0)
#   train   python -m benchmarks.train_step, PackNet01, reference and fused,
#           float32 then bf16 autocast (TRAIN_ARGS)
#   bench   python -m benchmarks.report --ops OPS (the rest of the line),
#           providers reference triton cuda (BENCH_PROVIDERS)
# Timed stages run alone. Each stage may use the budget left minus 40 s for
# every stage after it. Results land in $OUT/<device-slug>/<suite>.md|.json
# (the layout of benchmarks/results/), all packed into $OUT/session.tgz at the
# end (a device call returns at most 8 files; PACK_OUT=0 leaves them as they are).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
BUDGET_S=${BUDGET_S:-540}
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(elapsed)s] $*"; }
summary=()
# the stage list: words up to "bench", whose arguments are the ops
stages=(); ops=""
while (( $# )); do
  if [[ $1 == bench ]]; then stages+=(bench); shift; ops="$*"; break; fi
  stages+=("$1"); shift
done
slug=""
# seconds the stage at position $1 may take
allow() { local l=$(( BUDGET_S - $(elapsed) - 40 * (${#stages[@]} - 1 - $1) )); (( l < 10 )) && l=10; echo $l; }

stage_build() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  timeout "$1" python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; rc=$?
  tail -2 "$OUT/build.log"; grep -m5 -i " error" "$OUT/build.log"; summary+=("build rc=$rc ($(elapsed)s)")
  python3 -c "import packops; print({k: v.available for k, v in packops.backends().items()})"
}

stage_check() {
  local deadline=$(( $(date +%s) + $1 ))
  (
    for tool in ${SANITIZERS:-memcheck racecheck synccheck initcheck}; do
      extra=(); env=()
      [[ $tool == memcheck ]] && extra=(--leak-check no) && env=(PYTORCH_NO_CUDA_MEMORY_CACHING=1)
      rest=$(( deadline - $(date +%s) )); (( rest < 5 )) && break
      env "${env[@]}" timeout "$rest" compute-sanitizer --tool "$tool" "${extra[@]}" \
        --error-exitcode 9 python3 -m tools.sanitize cuda > "$OUT/$tool.log" 2>&1
      echo "$tool rc=$? $(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.log")" >> "$OUT/sanitize.txt"
    done
  ) &
  local san=$!
  local targs  # TEST_ARGS as the shell would split it: -k "cuda and pack" stays one pattern
  eval "targs=(${TEST_ARGS:--k cuda})"
  timeout "$1" python3 -m pytest -q -p no:cacheprovider -n 8 "${targs[@]}" \
    > "$OUT/pytest.log" 2>&1; rc=$?
  wait $san
  grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -20
  summary+=("pytest rc=$rc: $(tail -1 "$OUT/pytest.log") ($(elapsed)s)")
  summary+=("$(tr '\n' ';' < "$OUT/sanitize.txt" 2>/dev/null)")
}

stage_routes() {
  local deadline=$(( $(date +%s) + $1 ))
  timeout "$1" python3 -m benchmarks.pack_routes --device cuda --out "$OUT" ${ROUTES_ARGS:-} \
    > "$OUT/routes.log" 2>&1; rc=$?
  rc2=-
  if [[ ${ROUTES_CB:-1} == 1 ]] && (( deadline - $(date +%s) > 10 )); then
    timeout "$(( deadline - $(date +%s) ))" python3 -m benchmarks.pack_routes --device cuda \
      --layers pack1 pack3 --cudnn-benchmark --out "$OUT" > "$OUT/routes-cudnn-benchmark.log" 2>&1
    rc2=$?
  fi
  summary+=("routes rc=$rc, cudnn-benchmark rc=$rc2 ($(elapsed)s)")
  grep "^| pack" "$OUT/$slug/pack-routes.md" 2>/dev/null
}

stage_train() {
  local deadline=$(( $(date +%s) + $1 ))
  timeout "$(( $1 * 55 / 100 ))" python3 -m benchmarks.train_step --device cuda --preset packnet01 \
    --providers reference fused --out "$OUT" ${TRAIN_ARGS:-} > "$OUT/train.log" 2>&1; rc=$?
  timeout "$(( deadline - $(date +%s) ))" python3 -m benchmarks.train_step --device cuda \
    --preset packnet01 --providers reference fused --amp --merge --out "$OUT" ${TRAIN_ARGS:-} \
    > "$OUT/train-amp.log" 2>&1; rc2=$?
  summary+=("train-step rc=$rc, amp rc=$rc2 ($(elapsed)s)")
  grep -E "^(###|\| (reference|fused))" "$OUT/$slug/train-step.md" 2>/dev/null | cut -c1-120
}

stage_bench() {
  [[ -n $slug && -d benchmarks/results/$slug ]] && cp -rn "benchmarks/results/$slug" "$OUT"/
  timeout "$1" python3 -m benchmarks.report --device cuda --merge --out "$OUT" \
    --providers ${BENCH_PROVIDERS:-reference triton cuda} ${ops:+--ops $ops} > "$OUT/bench.log" 2>&1
  rc=$?
  summary+=("bench rc=$rc ($(elapsed)s)")
  grep -E "^\| (pack3d|unpack3d|pack_conv|photometric_loss|reproject|ssim|group_norm_elu) " \
    "$OUT/bench.log" | grep -E "reference|cuda" | cut -d'|' -f2-9 | head -60
}

for i in "${!stages[@]}"; do
  name=${stages[$i]}
  if ! declare -F "stage_$name" > /dev/null; then echo "unknown stage $name"; continue; fi
  stamp "$name (may take $(allow "$i") s)"
  "stage_$name" "$(allow "$i")"
  [[ -z $slug ]] && slug=$(python3 -c "import torch; from benchmarks import report; print(report.slug(report.device_name(torch.device('cuda'))))" 2>/dev/null)
done
stamp done
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
# what comes back from a device call is at most 8 files: everything in one archive
if [[ ${PACK_OUT:-1} == 1 ]]; then
  tar czf /tmp/session.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/session.tgz "$OUT"/ &&
    echo "results: session.tgz ($(du -h "$OUT/session.tgz" | cut -f1))"
fi
