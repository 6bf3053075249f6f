#!/usr/bin/env bash
# Device check of branch s6-hopclean (the cuda-hopper forward with the table masks + p1/p2/p3 as
# the only kernel): one call, target <= 200 s wall from a cold machine. Run it from the root of a
# checkout of the branch, or of a snapshot inside the main checkout (.cutlass from ../.cutlass):
#   git archive s6-hopclean | tar x -C .snap-hopclean   (in /work/main, after mkdir)
#   run(command="cd .snap-hopclean && bash .notes/hopclean_check.sh",
#       carry=[".cutlass", ".snap-hopclean"])
# 1. configure + build (sm_90a, D 64;128 x fp16;bf16, -j16): fna-bench, the GPU tests and the
#    host replay (scripts/device-check's flags)
# 2. host replay CudaHopperGeometry*, then every CudaHopper* GPU test (default sweep)
# 3. fna-bench --verify on cuda-hopper: hopmask_run.sh's problem (masked tiles + additional KV,
#    bf16 D=128) and the same at fp16 D=64, plus a 3-D masked and a 1-D block-sparse one
# 4. one timing each of the three S6-H1 cases (bf16 D=128, 3 warm-ups + 20 iters) for a sanity
#    look against the lead's 'all' numbers (7.459 / 0.819 / 1.035 ms)
# Summary last in the output and in $OUT/summary.txt; logs tarred in $OUT/logs.tgz.
set -u
R=$PWD; O=${OUT:-/tmp/hopclean}; B=$R/build-hopclean
# A snapshot inside the main checkout borrows its .cutlass (headers, and GTest in .cutlass/deps,
# which CMakeLists.txt looks for under the source dir).
[ -d "$R/.cutlass/include" ] || ln -sfn "$(cd "$R/.." && pwd)/.cutlass" "$R/.cutlass"
mkdir -p "$O"
: > "$O/summary.txt"
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" >> "$O/summary.txt"; }  # printed at the end
left() { [ $((SECONDS - t0)) -lt "$1" ]; }  # true while under $1 s since the start
finish() { cat "$O/summary.txt"; cd "$O" && tar czf logs.tgz ./*.log && rm -f ./*.log; exit "${1:-0}"; }

src="snapshot $R"
[ -e "$R/.git" ] && src="commit $(git -C "$R" rev-parse --short HEAD)"
log "$src $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
cmake -S "$R" -B "$B" -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="64;128" \
  -DFNA_DTYPES="fp16;bf16" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR="$R/.cutlass/include" > "$O/configure.log" 2>&1 ||
  { log "CONFIGURE FAILED"; finish 1; }
ninja -C "$B" -j16 fna-bench fna_gpu_tests fna_fused_geometry_test > "$O/build.log" 2>&1 ||
  { log "BUILD FAILED"; grep -m5 -A5 error "$O/build.log"; finish 1; }
log "build done"

timeout 30 "$B/tests/gpu/fna_fused_geometry_test" --gtest_color=no \
  --gtest_filter='CudaHopperGeometry*' > "$O/geometry.log" 2>&1
log "host replay rc $?: $(grep -E '^\[  (PASSED|FAILED)' "$O/geometry.log" | tr '\n' ' ')"
t=$SECONDS
timeout 120 "$B/tests/gpu/fna_gpu_tests" --gtest_color=no --gtest_filter='CudaHopper*' \
  > "$O/gpu-tests.log" 2>&1
log "CudaHopper* rc $? ($((SECONDS - t)) s): $(grep -E '^\[  (PASSED|FAILED) ' "$O/gpu-tests.log" | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure" "$O/gpu-tests.log" | head -5 >> "$O/summary.txt"

# --verify: a poisoned run against the float64 reference; the backend's line ends in "pass" or
# "FAIL: ..." (rc 1 on a failure).
verify() {  # name, args...
  local name=$1
  shift
  timeout 30 "$B/tools/fna-bench" --backend cuda-hopper --warmup 0 --iters 1 --verify "$@" \
    > "$O/verify-$name.log" 2>&1
  log "verify $name rc $?: $(grep -E '^cuda-hopper|rror' "$O/verify-$name.log" | tr -s ' ' | tr '\n' ' ')"
}
verify bf16-128 --extent 13,37 --window 5,8 --dtype bf16 --head-dim 128 --additional-kv 70
verify fp16-64 --extent 13,37 --window 5,8 --dtype fp16 --head-dim 64 --additional-kv 70
verify 3d-masked --extent 9,14,20 --window 5,7,9 --dtype bf16 --head-dim 128 --heads 2
verify 1d-blocked --extent 4096 --window 512 --stride 128 --dtype fp16 --head-dim 64 --heads 2

C1="--extent 30,48,80 --window 18,24,24 --heads 4"         # video-hunyuan H=4 (all: 7.459 ms)
C2="--extent 128,128 --window 31,31 --heads 24"            # img-128 (all: 0.819 ms)
C3="--extent 32768 --window 2048 --stride 256 --heads 16"  # seq-32k-blocked (all: 1.035 ms)
for c in C1 C2 C3; do
  left 185 || { log "timing skipped from $c (time)"; break; }
  ms=$(timeout 20 "$B/tools/fna-bench" --backend cuda-hopper --warmup 3 --iters 20 --head-dim 128 \
       --dtype bf16 ${!c} 2>&1 | tee "$O/time-$c.log" | awk '/^cuda-hopper/{print $2, $3}')
  log "time $c: $ms"
done
finish 0
