#!/usr/bin/env bash
# Session 7 "tail" device call (<= ~300 s from cold): the cuda-hopper tail split (fna issue 6).
# Build (sm_90a, D 64;128 x fp16;bf16), host CudaHopperGeometry* (split rule and schedule), GPU
# CudaHopper* (TailSplit, TailSplitRepeatsBitwise and the old suite, which now splits most of its
# small problems on 132 SMs), compute-sanitizer memcheck + racecheck of two forced-split
# problems, an interleaved A/B of the same build with the split on and off (FNA_HOPPER_SPLIT=0)
# on seq-32k-blocked, seq-32k, img-128, video-small, then same-run peers (cuDNN vs cuda-hopper)
# on those cases. Logs: $OUT/summary.txt, $OUT/logs.tgz, $OUT/peers.json.
# Main's figures to compare with: bench/RESULTS.md run S6-F1.
#   cd /work/main && rm -rf .snap-tail && mkdir -p .snap-tail && git -C /work/wt-tail archive s7-tail | tar -x -C .snap-tail && git -C /work/wt-tail rev-parse --short s7-tail > .snap-tail/.commit
#   run(command="bash .snap-tail/.notes/s7_tail_run.sh", carry=[".cutlass", ".snap-tail"])
set -u
R=$PWD; S=$R/.snap-tail; O=$OUT; B=$R/build-tail; C=$(cat $S/.commit)
L=$O/logs; mkdir -p $L
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
finish() { tar -czf $O/logs.tgz -C $O logs && rm -rf $L; log total; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee -a $O/summary.txt
log "commit $C"
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="64;128" \
  -DFNA_DTYPES="fp16;bf16" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $L/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench fna_gpu_tests fna_fused_geometry_test > $L/build.log 2>&1 ||
  { log "BUILD FAILED"; grep -m5 -A5 error $L/build.log | tee -a $O/summary.txt; finish; exit 1; }
log "build done"
timeout 30 $B/tests/gpu/fna_fused_geometry_test --gtest_color=no --gtest_filter='CudaHopperGeometry*' > $L/geometry.log 2>&1
log "host CudaHopperGeometry* rc $?: $(grep -E '^\[  (PASSED|FAILED)' $L/geometry.log | tr '\n' ' ')"
timeout 150 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' > $L/gpu-tests.log 2>&1
log "CudaHopper* rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $L/gpu-tests.log | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure|TailSplit.*ms\)" $L/gpu-tests.log | head -8 | tee -a $O/summary.txt

# Sanitizers on forced splits (plan_tail_split replayed on the host): 16 items on 15
# blocks (1 item x 3 chunks), 120 items on 117 blocks (3 items x 6 chunks, additional KV).
P1="--extent 1000 --window 300 --heads 2 --head-dim 128 --dtype bf16"
P2="--extent 8,12,20 --window 5,7,9 --additional-kv 70 --heads 2 --head-dim 64 --dtype fp16"
for tool in memcheck racecheck; do
  for case in "15|$P1" "117|$P2"; do
    FNA_HOPPER_GRID=${case%%|*} timeout 40 compute-sanitizer --tool $tool --error-exitcode 9 \
      $B/tools/fna-bench --backend cuda-hopper --warmup 0 --iters 1 --verify ${case#*|} \
      > $L/san.log 2>&1
    rc=$?
    cat $L/san.log >> $L/sanitizer.log
    log "$tool grid ${case%%|*} rc $rc: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $L/san.log | tail -1) | $(grep -E '^cuda-hopper' $L/san.log | tail -1)"
  done
done
rm -f $L/san.log

# A/B, interleaved: the same binary with the split on and off, one fna-bench process per
# measurement (median of 30 forward calls), 3 rounds or until 210 s (the peers need ~80 s).
declare -A ARGS=(
  [seq-32k-blocked]="--extent 32768 --window 2048 --stride 256 --heads 16"
  [seq-32k]="--extent 32768 --window 2048 --heads 16"
  [img-128]="--extent 128,128 --window 31,31 --heads 24"
  [video-small]="--extent 16,32,32 --window 8,16,16 --heads 24")
touch $L/ab.txt
for round in 1 2 3; do
  for c in seq-32k-blocked seq-32k img-128 video-small; do
    for mode in 1 0; do
      [ $((SECONDS - t0)) -gt 210 ] && break 3
      ms=$(FNA_HOPPER_SPLIT=$mode timeout 20 $B/tools/fna-bench --backend cuda-hopper --json \
        --warmup 3 --iters 30 --head-dim 128 --dtype bf16 ${ARGS[$c]} 2>>$L/ab.err |
        python3 -c 'import json,sys; print([json.loads(l)["fwd_ms"] for l in sys.stdin if l.startswith("{")][0])' 2>>$L/ab.err)
      echo "$round $c $mode ${ms:-nan}" >> $L/ab.txt
    done
  done
done
python3 - $L/ab.txt <<'PY' | tee -a $O/summary.txt
import collections, statistics, sys
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, c, mode, ms = line.split()
    if ms != "nan":
        t[(c, mode)].append(float(ms))
print(f"{'case':16s} {'split ms':>9s} {'off ms':>9s} {'off/split':>9s}  rounds")
for c in ("seq-32k-blocked", "seq-32k", "img-128", "video-small"):
    a, b = t.get((c, "1")), t.get((c, "0"))
    if a and b:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{c:16s} {ma:9.3f} {mb:9.3f} {mb / ma:9.3f}  {len(a)}/{len(b)}")
PY

# Same-run cuDNN for the issue's bars (x cuDNN, TFLOP/s), in the time left (at least 60 s).
left=$((290 - (SECONDS - t0))); [ $left -lt 60 ] && left=60
timeout $((left + 10)) python3 bench/peers.py --commit $C --cases seq-32k-blocked,seq-32k,img-128,video-small \
  --peers cudnn,fna --no-backward --fna-bench $B/tools/fna-bench --fna-bench-backends cuda-hopper \
  --deadline-s $left --out $O/peers.json > $L/peers.log 2>&1
log "peers rc $?"
sed -n '/^summary/,$p' $L/peers.log | tee -a $O/summary.txt
finish
