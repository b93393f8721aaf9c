#!/usr/bin/env bash
# One device-machine call: build the CUDA extension, then the stages named, in
# the order given, each logging under $OUT and cut off so that the whole call
# ends within BUDGET_S seconds (default 540) with its logs:
#
#   bash tools/gpu_session.sh build check routes train overhead graph bench OPS...
#
#   build    python setup.py build_ext --inplace (TORCH_CUDA_ARCH_LIST=9.0)
#   check    the tests that touch CUDA (pytest -n 8 -k cuda; TEST_ARGS
#            overrides) and, at the same time, compute-sanitizer over every
#            CUDA kernel (python -m tools.sanitize cuda): SANITIZERS (default
#            "memcheck racecheck synccheck initcheck"), SANITIZE_OPS to narrow
#   routes   the pack-routes suite (ROUTES_K narrows it, a pytest -k expression),
#            then pack1 and pack3 again with --bench-cudnn-benchmark (unless ROUTES_CB=0)
#   train    the train-step suite, PackNet01, reference and fused, float32 and
#            bf16 autocast (TRAIN_K overrides the -k expression)
#   overhead the op-overhead suite: every op's call at tiny sizes against its
#            native baseline
#   graph    the training step, providers reference, fused and fused+graph (the
#            step captured as a CUDA graph), PackNet01 at 4x192x640 and the main
#            preset, float32 and bf16 autocast, with the GPU accounting
#            (--bench-profile-steps 3: launches, syncs, busy %, TFLOP/s)
#   bench    the op suites (copy, ops, pack, pack-layer) for the ops named on
#            the rest of the line (all when none), providers reference triton
#            cuda (BENCH_PROVIDERS), merged into the committed results
# Every stage runs the one runner, pytest benchmarks/ --benchmark-only
# --bench-device cuda --bench-out $OUT (BENCH_ARGS adds options, e.g.
# --benchmark-max-time=0.5). Timed stages run alone. Each stage may use the
# budget left minus 40 s for every stage after it. Results land in
# $OUT/<device-slug>/<suite>.md|.json (the layout of benchmarks/results/), all
# packed into $OUT/session.tgz at the end (a device call returns at most 8
# files; PACK_OUT=0 leaves them as they are). DRY=1 prints the commands
# instead of running them (bash tools/gpu_session.sh ... with DRY=1: a check
# of the stage selection on any machine).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
BUDGET_S=${BUDGET_S:-540}
DRY=${DRY:-0}
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
# run a command, or with DRY=1 print it (on fd 3: the terminal, whatever the command's redirections)
exec 3>&1
x() { if [[ $DRY == 1 ]]; then { printf '+'; printf ' %q' "$@"; echo; } >&3; else "$@"; fi; }
# the runner on the GPU: bench TIMEOUT LOG PYTEST-ARGS...
bench() {
  local t=$1 log=$2; shift 2
  # shellcheck disable=SC2086  # BENCH_ARGS: options split as the shell would
  x timeout "$t" python3 -m pytest -q -p no:cacheprovider benchmarks/ --benchmark-only \
    --bench-device cuda --bench-out "$OUT" ${BENCH_ARGS:-} "$@" > "$OUT/$log" 2>&1
}
# seconds the stage at position $1 may take
allow() { local l=$(( BUDGET_S - $(elapsed) - 40 * (${#stages[@]} - 1 - $1) )); (( l < 10 )) && l=10; echo $l; }

stage_build() {
  x nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
  x python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  x timeout "$1" python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; rc=$?
  tail -2 "$OUT/build.log"; grep -m5 -i " error" "$OUT/build.log"; summary+=("build rc=$rc ($(elapsed)s)")
  x python3 -c "import packops; print({k: v.available for k, v in packops.backends().items()})"
}

stage_check() {
  local deadline=$(( $(date +%s) + $1 ))
  (
    for tool in ${SANITIZERS:-memcheck racecheck synccheck initcheck}; do
      extra=(); env=()
      [[ $tool == memcheck ]] && extra=(--leak-check no) && env=(PYTORCH_NO_CUDA_MEMORY_CACHING=1)
      rest=$(( deadline - $(date +%s) )); (( rest < 5 )) && break
      x env "${env[@]}" timeout "$rest" compute-sanitizer --tool "$tool" "${extra[@]}" \
        --error-exitcode 9 python3 -m tools.sanitize cuda > "$OUT/$tool.log" 2>&1
      echo "$tool rc=$? $(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.log")" >> "$OUT/sanitize.txt"
    done
  ) &
  local san=$!
  local targs  # TEST_ARGS as the shell would split it: -k "cuda and pack" stays one pattern
  eval "targs=(${TEST_ARGS:--k cuda})"
  x timeout "$1" python3 -m pytest -q -p no:cacheprovider -n 8 "${targs[@]}" \
    > "$OUT/pytest.log" 2>&1; rc=$?
  wait $san
  grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -20
  summary+=("pytest rc=$rc: $(tail -1 "$OUT/pytest.log") ($(elapsed)s)")
  summary+=("$(tr '\n' ';' < "$OUT/sanitize.txt" 2>/dev/null)")
}

stage_routes() {
  local deadline=$(( $(date +%s) + $1 ))
  bench "$1" routes.log -k "pack-routes/${ROUTES_K:+ and ($ROUTES_K)}"; rc=$?
  rc2=-
  if [[ ${ROUTES_CB:-1} == 1 ]] && (( deadline - $(date +%s) > 10 )); then
    bench "$(( deadline - $(date +%s) ))" routes-cudnn-benchmark.log --bench-cudnn-benchmark \
      -k "pack-routes/ and (pack1 or pack3)"; rc2=$?
  fi
  summary+=("routes rc=$rc, cudnn-benchmark rc=$rc2 ($(elapsed)s)")
  grep "^| pack" "$OUT/$slug/pack-routes.md" 2>/dev/null
}

stage_train() {
  bench "$1" train.log -k "${TRAIN_K:-train-step/packnet01 and (reference] or fused])}"; rc=$?
  summary+=("train-step rc=$rc ($(elapsed)s)")
  grep -E "^\| packnet01" "$OUT/$slug/train-step.md" 2>/dev/null | cut -c1-160
}

stage_overhead() {
  bench "$1" overhead.log -k "overhead/"; rc=$?
  summary+=("overhead rc=$rc ($(elapsed)s)")
  grep -E "^\| " "$OUT/$slug/overhead.md" 2>/dev/null | cut -d'|' -f2,4,6,7,9
}

stage_graph() {
  bench "$1" graph.log --bench-merge --bench-profile-steps "${PROFILE_STEPS:-3}" \
    -k "${GRAPH_K:-train-step/ and (reference] or fused] or fused+graph])}"; rc=$?
  summary+=("graph rc=$rc ($(elapsed)s)")
  grep -E "^\| (packnet01|main)" "$OUT/$slug/train-step.md" 2>/dev/null | cut -c1-200
}

stage_bench() {
  [[ -n $slug && -d benchmarks/results/$slug ]] && x cp -rn "benchmarks/results/$slug" "$OUT"/
  local p sel="" provs=""
  for p in ${BENCH_PROVIDERS:-reference triton cuda}; do provs+="${provs:+ or }$p]"; done
  for p in $ops; do sel+="${sel:+ or }$p"; done
  bench "$1" bench.log --bench-merge \
    -k "copy/ or ((ops/ or pack/ or pack-layer/) ${sel:+and ($sel) }and ($provs))"; rc=$?
  summary+=("bench rc=$rc ($(elapsed)s)")
  grep -hE "^\| (pack3d|unpack3d|pack_conv|photometric_loss|reproject|ssim|group_norm_elu) " \
    "$OUT/$slug"/{ops,pack}.md 2>/dev/null | grep -E "reference|cuda" | cut -d'|' -f2-9 | head -60
}

for i in "${!stages[@]}"; do
  name=${stages[$i]}
  if ! declare -F "stage_$name" > /dev/null; then echo "unknown stage $name"; continue; fi
  stamp "$name (may take $(allow "$i") s)"
  "stage_$name" "$(allow "$i")"
  [[ -z $slug ]] && slug=$(python3 -c "from benchmarks import measure; print(measure.slug(measure.device_name('cuda')))" 2>/dev/null)
done
stamp done
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
# what comes back from a device call is at most 8 files: everything in one archive
if [[ ${PACK_OUT:-1} == 1 && $DRY != 1 ]]; then
  tar czf /tmp/session.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/session.tgz "$OUT"/ &&
    echo "results: session.tgz ($(du -h "$OUT/session.tgz" | cut -f1))"
fi
