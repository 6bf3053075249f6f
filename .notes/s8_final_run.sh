#!/usr/bin/env bash
# Session 8, call 4 (~480 s): verify main (V wait after the S issue) and the branch s8-trims (ring
# counters instead of t % 3, 8 max chains): both built at every sm_90a instance with the GPU
# tests; CudaHopper* on both; compute-sanitizer racecheck + memcheck on both; bench/ab.py main vs
# trims on five cases; same-run peers (cuDNN) for the faster one on all six hopper cases.
#   for x in t:s8-trims m:main; do d=.snap-s8${x%%:*}; rm -rf $d && mkdir -p $d && git archive ${x#*:} | tar -x -C $d && git rev-parse --short ${x#*:} > $d/.commit; done
#   run(command="bash .snap-s8m/.notes/s8_final_run.sh", carry=[".cutlass", ".snap-s8m", ".snap-s8t"])
set -u
R=$PWD; O=$OUT
L=$O/logs; mkdir -p $L
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a $O/summary.txt
log "commits main $(cat $R/.snap-s8m/.commit), trims $(cat $R/.snap-s8t/.commit)"
build() {  # label (m or t)
  local V=$R/.snap-s8$1 B=$R/build-s8$1
  ln -sfn $R/.cutlass $V/.cutlass
  cmake -S $V -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="64;128" \
    -DFNA_DTYPES="fp16;bf16" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
    -DFNA_CUTLASS_INCLUDE_DIR=$V/.cutlass/include > $L/configure-$1.log 2>&1 &&
  ninja -C $B -j16 fna-bench fna_gpu_tests > $L/build-$1.log 2>&1
}
for v in m t; do ( build $v; echo "rc $?" >> $L/build-$v.log ) & done
wait
for v in m t; do log "build $v: $(tail -1 $L/build-$v.log)"; done
for v in m t; do
  B=$R/build-s8$v
  timeout 120 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' > $L/gpu-tests-$v.log 2>&1
  log "CudaHopper* ($v) rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $L/gpu-tests-$v.log | tr '\n' ' ')"
  grep -E "^\[  FAILED|Failure" $L/gpu-tests-$v.log | head -6
  timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 $B/tools/fna-bench --backend cuda-hopper \
    --warmup 0 --iters 1 --verify --extent 5,8,9 --window 3,4,5 --stride 1,2,1 --dilation 1,2,1 \
    --causal 1,0,1 --dtype fp16 --head-dim 128 --additional-kv 70 > $L/racecheck-$v.log 2>&1
  log "racecheck ($v) rc $?: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' $L/racecheck-$v.log | tail -1)"
  timeout 120 env FNA_TEST_COUNT=12 compute-sanitizer --tool memcheck --error-exitcode 9 $B/tests/gpu/fna_gpu_tests \
    --gtest_filter='CudaHopperForward.RandomSweep' --gtest_color=no > $L/memcheck-$v.log 2>&1
  log "memcheck ($v) rc $?: $(grep -E 'ERROR SUMMARY' $L/memcheck-$v.log | tail -1) $(grep -E '^\[  (PASSED|FAILED) ' $L/memcheck-$v.log | tr '\n' ' ')"
done
cd $R/.snap-s8m
timeout 150 python3 bench/ab.py --build main=$R/build-s8m/tools/fna-bench --build trims=$R/build-s8t/tools/fna-bench \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided \
  --rounds 3 --iters 10 --json-out $O/ab.json > $L/ab.log 2>&1
log "ab rc $?"
sed -n '/median of/,$p' $L/ab.log | tee -a $O/summary.txt
BEST=$(python3 - $O/ab.json <<'PY'
import json, math, sys
j = json.load(open(sys.argv[1])); b = j["builds"]; m = j["median_ms"]
score = {l: math.exp(sum(math.log(v[b[0]] / v[l]) for v in m.values() if l in v and b[0] in v) / len(m)) for l in b}
print(max(score, key=score.get))
print(" ".join(f"{l} {s:.4f}" for l, s in score.items()), file=sys.stderr)
PY
)
log "fastest: $BEST"
[ "$BEST" = trims ] && BB=$R/build-s8t C=$(cat $R/.snap-s8t/.commit) || { BB=$R/build-s8m; C=$(cat $R/.snap-s8m/.commit); }
timeout 150 python3 bench/peers.py --commit "$C" \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided,video-small \
  --peers cudnn,fna --no-backward --fna-bench $BB/tools/fna-bench --fna-bench-backends cuda-hopper \
  --deadline-s 140 --out $O/peers.json > $L/peers.log 2>&1
log "peers rc $?"
sed -n '/^summary/,$p' $L/peers.log | tee -a $O/summary.txt
tar -czf $O/logs.tgz -C $O logs && rm -rf $L
log total
