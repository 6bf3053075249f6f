#!/usr/bin/env bash
# Session 7, task "model" (branch s7-model): ONE device call, <= ~250 s from a cold machine.
# The lead, in /work/main:
#   rm -rf .snap-s7m && mkdir -p .snap-s7m && git -C /work/wt-model archive s7-model | tar -x -C .snap-s7m && git -C /work/wt-model rev-parse --short s7-model > .snap-s7m/.commit
#   run(command="bash .snap-s7m/.notes/s7_model_run.sh", carry=[".cutlass", ".snap-s7m"])
# 1. build sm_90a, D 64;128 x fp16;bf16: fna-bench, fna_gpu_tests, fna_fused_geometry_test
# 2. host replay CudaHopperGeometry* (the new planner's counts and schedule vs the kernel's
#    geometry), CudaHopper* GPU tests (the planner now picks other shapes for the test problems),
#    two --verify problems on the new picks' shapes
# 3. bench/plan_sweep.py per case (one fna-bench process each, time-boxed, saved as it goes):
#    the planner's pick, the model's best 8, the count-only model's best 3 (its first = main's
#    planner before this branch: the A/B), bf16 D = 128 forward, 2 rounds in alternating order
# 4. the combined table (predicted vs measured, planner vs fastest, refit) printed last
# Back: summary.txt, table.md, logs.tgz (every log and sweep-*.json).
set -u
R=$PWD; S=$R/.snap-s7m; O=$OUT; B=$R/build-s7m
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
left() { echo $((245 - (SECONDS - t0))); }  # seconds of the 250 s budget left (5 s for the end)
finish() { cd $O && tar czf logs.tgz *.log sweep-*.json 2>/dev/null; rm -f *.log sweep-*.json; }
log "commit $(cat $S/.commit 2>/dev/null || echo '?'); $(nvidia-smi --query-gpu=name --format=csv,noheader)"
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="64;128" \
  -DFNA_DTYPES="fp16;bf16" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $O/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench fna_gpu_tests fna_fused_geometry_test > $O/build.log 2>&1 ||
  { log "BUILD FAILED"; grep -m5 -A5 error $O/build.log | tee -a $O/summary.txt; finish; exit 1; }
log "build done"

timeout 30 $B/tests/gpu/fna_fused_geometry_test --gtest_color=no \
  --gtest_filter='CudaHopperGeometry*' > $O/geometry.log 2>&1
log "host replay rc $?: $(grep -E '^\[  (PASSED|FAILED)' $O/geometry.log | tr '\n' ' ')"
# Tests first, but leave the verifies and sweeps ~75 s (expected use: ~10 + ~40 s).
tt=$(( $(left) - 75 )); [ $tt -gt 75 ] && tt=75; [ $tt -lt 20 ] && tt=20
timeout $tt $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' \
  > $O/gpu-tests.log 2>&1
log "CudaHopper* rc $? (box $tt s): $(grep -E '^\[  (PASSED|FAILED) ' $O/gpu-tests.log | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure" $O/gpu-tests.log | head -5 | tee -a $O/summary.txt
verify() {
  local name=$1; shift
  timeout 20 $B/tools/fna-bench --backend cuda-hopper --warmup 0 --iters 1 --verify "$@" \
    > $O/verify-$name.log 2>&1
  log "verify $name rc $?: $(grep -E '^cuda-hopper' $O/verify-$name.log | tr -s ' ')"
}
# video-hunyuan's new pick (Q extent 1 on the contiguous axis) on a smaller 3-D problem, and the
# planner's own pick of a video-small-like problem with additional KV.
verify q16x8x1 --extent 20,24,40 --window 9,12,12 --heads 2 --dtype bf16 --head-dim 128 \
  --tiles-q 16,8,1 --tiles-kv 4,4,8
verify planned --extent 8,16,16 --window 4,8,8 --heads 3 --dtype fp16 --head-dim 64 \
  --additional-kv 70

# case:time box (s), most telling first. Expected: ~15 s video-hunyuan (9 shapes x 2 rounds x 10
# runs x ~46 ms + inputs), ~10 s strided, ~5 s each for the others (seq-32k-blocked has one
# shape: rank 1, 128 / 128).
for cb in video-hunyuan:40 video-small:15 img-128:15 video-hunyuan-strided:25 seq-32k-blocked:10; do
  c=${cb%%:*}; box=${cb##*:}
  l=$(left); [ $l -lt 8 ] && { log "sweep $c skipped: out of time"; continue; }
  [ $box -gt $((l - 5)) ] && box=$((l - 5))
  timeout $((box + 5)) python3 bench/plan_sweep.py --fna-bench $B/tools/fna-bench --cases $c \
    --top 8 --counts-top 3 --case-timeout $box --out $O/sweep-$c.json > $O/sweep-$c.log 2>&1
  log "sweep $c rc $?: $(grep -E "^$c: [0-9]+ shapes|time box" $O/sweep-$c.log | tr '\n' ' ')"
done
from=(); for f in $O/sweep-*.json; do [ -s $f ] && from+=(--from $f); done
if [ ${#from[@]} -gt 0 ]; then
  python3 bench/plan_sweep.py --fna-bench $B/tools/fna-bench "${from[@]}" > $O/table.md 2> $O/table.log
  log "table rc $?"
fi
log total
finish
cat $O/table.md 2>/dev/null | tail -60
