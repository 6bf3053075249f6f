#!/usr/bin/env bash
# Session 8, call 3 (~450 s): consumers wait for V after issuing S (FA3's order) and the producer
# prefetches K/V boxes kPrefetchAhead tiles ahead into L2. Builds: base (the session-start kernel,
# snapshot .snap-s8b), vw (V wait moved, kPrefetchAhead = 0), pf4 (the snapshot .snap-s8f as
# committed: both, with the GPU tests at every instance), pf8; CudaHopper* on pf4; bench/ab.py
# on five public cases; the fastest build (geometric mean) runs bench/peers.py against cuDNN.
#   for x in b:b58bb1f f:HEAD; do d=.snap-s8${x%%:*}; rm -rf $d && mkdir -p $d && git archive ${x#*:} | tar -x -C $d && git rev-parse --short ${x#*:} > $d/.commit; done
#   run(command="bash .snap-s8f/.notes/s8_pf_run.sh", carry=[".cutlass", ".snap-s8b", ".snap-s8f"])
set -u
R=$PWD; O=$OUT; C=$(cat $R/.snap-s8f/.commit)
L=$O/logs; mkdir -p $L
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a $O/summary.txt
log "commits base $(cat $R/.snap-s8b/.commit), new $C"
TRAITS=src/cuda/fused/sm90/kernel_traits_fwd_sm90.cuh
build() {  # label, snapshot, kPrefetchAhead (or -)
  local v=$1 V=$R/src-$1 B=$R/build-$1 dims=128 types=bf16 tests=OFF targets=fna-bench
  rm -rf $V && cp -r $R/$2 $V && ln -sfn $R/.cutlass $V/.cutlass
  if [ "$3" != - ]; then
    sed -i "s/kPrefetchAhead = 4;/kPrefetchAhead = $3;/" $V/$TRAITS
    grep -q "kPrefetchAhead = $3;" $V/$TRAITS || { echo "sed failed"; return 1; }
  fi
  if [ $v = pf4 ]; then dims="64;128"; types="fp16;bf16"; tests=ON; targets="fna-bench fna_gpu_tests"; fi
  cmake -S $V -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="$dims" \
    -DFNA_DTYPES="$types" -DFNA_BUILD_TESTS=$tests -DFNA_BUILD_TOOLS=ON \
    -DFNA_CUTLASS_INCLUDE_DIR=$V/.cutlass/include > $L/configure-$v.log 2>&1 &&
  ninja -C $B -j16 $targets > $L/build-$v.log 2>&1
}
( build base .snap-s8b -; echo "rc $?" >> $L/build-base.log ) &
( build vw .snap-s8f 0; echo "rc $?" >> $L/build-vw.log ) &
( build pf4 .snap-s8f 4; echo "rc $?" >> $L/build-pf4.log ) &
( build pf8 .snap-s8f 8; echo "rc $?" >> $L/build-pf8.log ) &
wait
LABELS="base vw pf4 pf8"
for v in $LABELS; do log "build $v: $(tail -1 $L/build-$v.log)"; done
timeout 120 $R/build-pf4/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' > $L/gpu-tests.log 2>&1
log "CudaHopper* (pf4) rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $L/gpu-tests.log | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure" $L/gpu-tests.log | head -6
cd $R/.snap-s8f
ARGS=""; for v in $LABELS; do [ -x $R/build-$v/tools/fna-bench ] && ARGS="$ARGS --build $v=$R/build-$v/tools/fna-bench"; done
timeout 200 python3 bench/ab.py $ARGS --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided \
  --rounds 2 --iters 10 --json-out $O/ab.json > $L/ab.log 2>&1
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
timeout 170 python3 bench/peers.py --commit "$C-$BEST" \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided \
  --peers cudnn,fna --no-backward --fna-bench $R/build-$BEST/tools/fna-bench --fna-bench-backends cuda-hopper \
  --deadline-s 160 --out $O/peers.json > $L/peers.log 2>&1
log "peers rc $?"
sed -n '/^summary/,$p' $L/peers.log | tee -a $O/summary.txt
tar -czf $O/logs.tgz -C $O logs && rm -rf $L
log total
