#!/usr/bin/env bash
# Session 8, call 2 (~450 s): the softmax's exponentials split between MUFU and the FMA pipe
# (kFmaExpEvery, kernel_traits_fwd_sm90.cuh). Builds the snapshot with kFmaExpEvery = 0 (all
# MUFU = the session-start kernel), 8, 4 (the snapshot's value, with the GPU tests at every
# instance) and 2; CudaHopper* on the 4 build; bench/ab.py interleaved on five public cases; the
# fastest variant (geometric mean) then runs bench/peers.py against cuDNN in the same run.
#   rm -rf .snap-s8e && mkdir -p .snap-s8e && git archive HEAD | tar -x -C .snap-s8e && git rev-parse --short HEAD > .snap-s8e/.commit
#   run(command="bash .snap-s8e/.notes/s8_exp_run.sh", carry=[".cutlass", ".snap-s8e"])
set -u
R=$PWD; S=$R/.snap-s8e; O=$OUT; C=$(cat $S/.commit)
L=$O/logs; mkdir -p $L
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a $O/summary.txt
log "commit $C"
VARIANTS="0 8 4 2"
build() {  # variant
  local v=$1 V=$R/src-v$1 B=$R/build-v$1 dims=128 types=bf16 tests=OFF targets=fna-bench
  rm -rf $V && cp -r $S $V && ln -sfn $R/.cutlass $V/.cutlass
  sed -i "s/kFmaExpEvery = 4;/kFmaExpEvery = $v;/" $V/src/cuda/fused/sm90/kernel_traits_fwd_sm90.cuh
  grep -q "kFmaExpEvery = $v;" $V/src/cuda/fused/sm90/kernel_traits_fwd_sm90.cuh || { echo "sed failed"; return 1; }
  if [ $v = 4 ]; then dims="64;128"; types="fp16;bf16"; tests=ON; targets="fna-bench fna_gpu_tests"; fi
  cmake -S $V -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="$dims" \
    -DFNA_DTYPES="$types" -DFNA_BUILD_TESTS=$tests -DFNA_BUILD_TOOLS=ON \
    -DFNA_CUTLASS_INCLUDE_DIR=$V/.cutlass/include > $L/configure-v$v.log 2>&1 &&
  ninja -C $B -j16 $targets > $L/build-v$v.log 2>&1
}
for v in $VARIANTS; do ( build $v; echo "rc $?" >> $L/build-v$v.log ) & done
wait
for v in $VARIANTS; do log "build v$v: $(tail -1 $L/build-v$v.log)"; done
timeout 120 $R/build-v4/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' > $L/gpu-tests.log 2>&1
log "CudaHopper* (v4) rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $L/gpu-tests.log | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure" $L/gpu-tests.log | head -6
cd $S
ARGS=""; for v in $VARIANTS; do [ -x $R/build-v$v/tools/fna-bench ] && ARGS="$ARGS --build e$v=$R/build-v$v/tools/fna-bench"; done
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
timeout 170 python3 bench/peers.py --commit "$C-${BEST}" \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided \
  --peers cudnn,fna --no-backward --fna-bench $R/build-v${BEST#e}/tools/fna-bench --fna-bench-backends cuda-hopper \
  --deadline-s 160 --out $O/peers.json > $L/peers.log 2>&1
log "peers rc $?"
sed -n '/^summary/,$p' $L/peers.log | tee -a $O/summary.txt
tar -czf $O/logs.tgz -C $O logs && rm -rf $L
log total
