#!/usr/bin/env bash
# Session 8, calls 6 and 7 (~300-420 s): A/B of a branch against main (call 6: s8-uniform, wgmma
# descriptors in uniform registers, ROUNDS=3; call 7: s8-uniform2, K / V descriptor bases
# broadcast too, ROUNDS=2), with the branch's GPU tests and compute-sanitizer at every instance;
# same-run peers of the faster one.
#
#   (call 7: u:s8-uniform2 instead of u:s8-uniform, ROUNDS=2)
#   for x in u:s8-uniform m:main; do d=.snap-s8${x%%:*}; rm -rf $d && mkdir -p $d && git archive ${x#*:} | tar -x -C $d && git rev-parse --short ${x#*:} > $d/.commit; done
#   run(command="ROUNDS=3 bash .snap-s8m/.notes/s8_uniform_run.sh", carry=[".cutlass", ".snap-s8m", ".snap-s8u"])
set -u
R=$PWD; O=$OUT
L=$O/logs; mkdir -p $L
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a $O/summary.txt
log "commits main $(cat $R/.snap-s8m/.commit), uniform $(cat $R/.snap-s8u/.commit)"
build() {  # label (m or u), dims, dtypes, targets
  local V=$R/.snap-s8$1 B=$R/build-s8$1
  ln -sfn $R/.cutlass $V/.cutlass
  cmake -S $V -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="$2" \
    -DFNA_DTYPES="$3" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
    -DFNA_CUTLASS_INCLUDE_DIR=$V/.cutlass/include > $L/configure-$1.log 2>&1 &&
  ninja -C $B -j16 $4 > $L/build-$1.log 2>&1
}
( build m 128 bf16 fna-bench; echo "rc $?" >> $L/build-m.log ) &
( build u "64;128" "fp16;bf16" "fna-bench fna_gpu_tests"; echo "rc $?" >> $L/build-u.log ) &
wait
for v in m u; do log "build $v: $(tail -1 $L/build-$v.log)"; done
timeout 120 $R/build-s8u/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' > $L/gpu-tests-u.log 2>&1
log "CudaHopper* (uniform) rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $L/gpu-tests-u.log | tr '\n' ' ')"
B=$R/build-s8u
timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 $B/tools/fna-bench --backend cuda-hopper \
  --warmup 0 --iters 1 --verify --extent 5,8,9 --window 3,4,5 --stride 1,2,1 --dilation 1,2,1 \
  --causal 1,0,1 --dtype fp16 --head-dim 128 --additional-kv 70 > $L/racecheck-u.log 2>&1
log "racecheck (uniform) rc $?: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' $L/racecheck-u.log | tail -1)"
timeout 120 env FNA_TEST_COUNT=12 compute-sanitizer --tool memcheck --error-exitcode 9 $B/tests/gpu/fna_gpu_tests \
  --gtest_filter='CudaHopperForward.RandomSweep' --gtest_color=no > $L/memcheck-u.log 2>&1
log "memcheck (uniform) rc $?: $(grep -E 'ERROR SUMMARY' $L/memcheck-u.log | tail -1) $(grep -E '^\[  (PASSED|FAILED) ' $L/memcheck-u.log | tr '\n' ' ')"
cd $R/.snap-s8m
timeout 150 python3 bench/ab.py --build main=$R/build-s8m/tools/fna-bench --build uniform=$R/build-s8u/tools/fna-bench \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided \
  --rounds ${ROUNDS:-3} --iters 10 --json-out $O/ab.json > $L/ab.log 2>&1
log "ab rc $?"
sed -n '/median of/,$p' $L/ab.log | tee -a $O/summary.txt
BEST=$(python3 - $O/ab.json <<'PY'
import json, math, sys
j = json.load(open(sys.argv[1])); b = j["builds"]; m = j["median_ms"]
score = {l: math.exp(sum(math.log(v[b[0]] / v[l]) for v in m.values() if l in v and b[0] in v) / len(m)) for l in b}
print(max(score, key=score.get))
PY
)
log "fastest: $BEST"
[ "$BEST" = uniform ] && W=u || W=m
timeout 120 python3 bench/peers.py --commit "$(cat $R/.snap-s8$W/.commit)" \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided,video-small \
  --peers cudnn,fna --no-backward --fna-bench $R/build-s8$W/tools/fna-bench --fna-bench-backends cuda-hopper \
  --deadline-s 110 --out $O/peers.json > $L/peers.log 2>&1
log "peers rc $?"
sed -n '/^summary/,$p' $L/peers.log | tee -a $O/summary.txt
tar -czf $O/logs.tgz -C $O logs && rm -rf $L
log total
