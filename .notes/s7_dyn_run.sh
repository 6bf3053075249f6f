#!/usr/bin/env bash
# Session 7 "dynsched" device call (<= ~330 s from cold): the cuda-hopper forward's dynamic
# persistent schedule (fna issue 6; scheduler_fwd_sm90.cuh). Build (sm_90a, D 64;128 x
# fp16;bf16), host CudaHopperGeometry* (the planner's list-schedule model vs a replay of the
# kernel's walk), GPU CudaHopper* (DynamicScheduleIsBitwiseStatic first: dynamic vs static bits,
# repeated calls, graph capture; each step under a timeout: a hang names its test in the log's
# last "[ RUN"), then an interleaved A/B of the same binary, dynamic (default) vs
# FNA_HOPPER_SCHED=static, bf16 D=128, on the planner's shapes (which the dynamic model picks)
# and, where main's planner picked another shape, on main's shape too (static on main's shape is
# main's behaviour), then same-run peers (cuDNN vs cuda-hopper autotuned). Logs:
# $OUT/summary.txt (table last), $OUT/logs.tgz, $OUT/peers.json.
#   cd /work/main && rm -rf .snap-dyn && mkdir -p .snap-dyn && git -C /work/wt-dynsched archive s7-dynsched | tar -x -C .snap-dyn && git -C /work/wt-dynsched rev-parse --short s7-dynsched > .snap-dyn/.commit
#   run(command="bash .snap-dyn/.notes/s7_dyn_run.sh", carry=[".cutlass", ".snap-dyn"])
set -u
R=$PWD; S=$R/.snap-dyn; O=$OUT; B=$R/build-dyn; C=$(cat $S/.commit 2>/dev/null || echo unknown)
L=$O/logs; mkdir -p $L
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
finish() { tar -czf $O/logs.tgz -C $O logs && rm -rf $L; log total; }
hang() { [ $1 -eq 124 ] && log "  TIMEOUT (hang?) in: $(grep '^\[ RUN' $2 | tail -1)"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee -a $O/summary.txt
log "commit $C"
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="64;128" \
  -DFNA_DTYPES="fp16;bf16" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $L/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench fna_gpu_tests fna_fused_geometry_test > $L/build.log 2>&1 ||
  { log "BUILD FAILED"; grep -m5 -A5 error $L/build.log | tee -a $O/summary.txt; finish; exit 1; }
log "build done"
timeout 60 $B/tests/gpu/fna_fused_geometry_test --gtest_color=no --gtest_filter='CudaHopperGeometry*' > $L/geometry.log 2>&1
rc=$?; log "host CudaHopperGeometry* rc $rc: $(grep -E '^\[  (PASSED|FAILED)' $L/geometry.log | tr '\n' ' ')"; hang $rc $L/geometry.log
timeout 40 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopperForward.DynamicSchedule*' > $L/gpu-dyn.log 2>&1
rc=$?; log "DynamicScheduleIsBitwiseStatic rc $rc: $(grep -E '^\[  (PASSED|FAILED) ' $L/gpu-dyn.log | tr '\n' ' ')"; hang $rc $L/gpu-dyn.log
grep -E "Failure|Expected|Which is|out, |lse, " $L/gpu-dyn.log | head -6 | tee -a $O/summary.txt
timeout 150 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*:-CudaHopperForward.DynamicSchedule*' > $L/gpu-tests.log 2>&1
rc=$?; log "CudaHopper* rc $rc: $(grep -E '^\[  (PASSED|FAILED) ' $L/gpu-tests.log | tr '\n' ' ')"; hang $rc $L/gpu-tests.log
grep -E "^\[  FAILED|Failure" $L/gpu-tests.log | head -6 | tee -a $O/summary.txt

# A/B, interleaved: one fna-bench process per measurement (median of 20 forward calls, 10 on
# video-hunyuan: 43 ms each), the dynamic (default) and the static schedule alternating; round 1
# always (~30 s), more rounds while under 230 s (peers need ~60-80 s). "@main": main's planner
# pick (round-robin model) where the dynamic model picks another shape (static on it = main).
HUN="--extent 30,48,80 --window 18,24,24 --heads 24"
VS="--extent 16,32,32 --window 8,16,16 --heads 24"
declare -A ARGS=(
  [img-128]="--extent 128,128 --window 31,31 --heads 24"
  [video-small]="$VS"
  [video-small@main]="$VS --tiles-q 4,8,4 --tiles-kv 4,8,4"
  [video-hunyuan]="$HUN"
  [video-hunyuan@main]="$HUN --tiles-q 16,8,1 --tiles-kv 4,4,8"
  [seq-32k-blocked]="--extent 32768 --window 2048 --stride 256 --heads 16"
  [video-hunyuan-strided]="$HUN --stride 16,8,8")
CASES="img-128 video-small video-small@main video-hunyuan video-hunyuan@main seq-32k-blocked video-hunyuan-strided"
touch $L/ab.txt
for round in 1 2 3; do
  for c in $CASES; do
    for mode in dynamic static nosplit; do
      [ $round -gt 1 ] && [ $((SECONDS - t0)) -gt 230 ] && break 3
      # nosplit: dynamic schedule without the tail split (FNA_HOPPER_SPLIT=0), where it splits.
      [ $mode = nosplit ] && [[ $c != seq-32k-blocked && $c != img-128 && $c != video-small ]] && continue
      sched=$mode split=1; [ $mode = nosplit ] && sched=dynamic split=0
      iters=20; [[ $c == video-hunyuan* ]] && iters=10
      ms=$(FNA_HOPPER_SCHED=$sched FNA_HOPPER_SPLIT=$split timeout 20 $B/tools/fna-bench --backend cuda-hopper --json \
        --warmup 2 --iters $iters --head-dim 128 --dtype bf16 ${ARGS[$c]} 2>>$L/ab.err |
        python3 -c 'import json,sys; print([json.loads(l)["fwd_ms"] for l in sys.stdin if l.startswith("{")][0])' 2>>$L/ab.err)
      echo "$round $c $mode ${ms:-nan}" >> $L/ab.txt
    done
  done
done
log "A/B done"

# Same-run cuDNN for the issue's bars (x cuDNN), cuda-hopper autotuned (the dynamic model's
# candidates), in the time left (at least 50 s).
left=$((320 - (SECONDS - t0))); [ $left -lt 50 ] && left=50
timeout $((left + 10)) python3 bench/peers.py --commit $C \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided,video-small \
  --peers cudnn,fna --no-backward --fna-bench $B/tools/fna-bench --fna-bench-backends cuda-hopper \
  --fna-bench-autotune --deadline-s $left --out $O/peers.json > $L/peers.log 2>&1
log "peers rc $?"
sed -n '/^summary/,$p' $L/peers.log | tee -a $O/summary.txt

python3 - $L/ab.txt <<'PY' | tee -a $O/summary.txt
import collections, statistics, sys
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, c, mode, ms = line.split()
    if ms != "nan":
        t[(c, mode)].append(float(ms))
print("A/B, same binary, median fwd ms (static / dynamic > 1: dynamic faster; @main: main's shape)")
print(f"{'case':24s} {'dynamic':>9s} {'static':>9s} {'st/dyn':>7s}  rounds")
cases = []
for (c, _) in t:
    if c not in cases:
        cases.append(c)
for c in cases:
    a, b = t.get((c, "dynamic")), t.get((c, "static"))
    if a and b:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{c:24s} {ma:9.3f} {mb:9.3f} {mb / ma:7.3f}  {len(a)}/{len(b)}")
    n = t.get((c, "nosplit"))
    if a and n:
        print(f"{'  no tail split':24s} {statistics.median(n):9.3f} (dynamic): nosplit / split "
              f"{statistics.median(n) / statistics.median(a):.3f}")
for c in ("video-small", "video-hunyuan"):
    a, b = t.get((c, "dynamic")), t.get((c + "@main", "static"))
    if a and b:
        print(f"{c}: main's behaviour (static, main's shape) / branch (dynamic, new shape): "
              f"{statistics.median(b) / statistics.median(a):.3f}")
PY
finish
