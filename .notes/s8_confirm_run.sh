#!/usr/bin/env bash
# Session 8, call 5 (~400 s): a second same-run peers measurement of main (the merged trims) on all
# six hopper cases, and an A/B of branch s8-sum4 (4 partial row sums) against main, with its GPU
# tests at every instance so it can be merged if it wins.
#   for x in u:s8-sum4 m:main; do d=.snap-s8${x%%:*}; rm -rf $d && mkdir -p $d && git archive ${x#*:} | tar -x -C $d && git rev-parse --short ${x#*:} > $d/.commit; done
#   run(command="bash .snap-s8m/.notes/s8_confirm_run.sh", carry=[".cutlass", ".snap-s8m", ".snap-s8u"])
set -u
R=$PWD; O=$OUT
L=$O/logs; mkdir -p $L
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a $O/summary.txt
log "commits main $(cat $R/.snap-s8m/.commit), sum4 $(cat $R/.snap-s8u/.commit)"
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
log "CudaHopper* (sum4) rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $L/gpu-tests-u.log | tr '\n' ' ')"
cd $R/.snap-s8m
timeout 120 python3 bench/peers.py --commit "$(cat $R/.snap-s8m/.commit)" \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided,video-small \
  --peers cudnn,fna --no-backward --fna-bench $R/build-s8m/tools/fna-bench --fna-bench-backends cuda-hopper \
  --deadline-s 110 --out $O/peers.json > $L/peers.log 2>&1
log "peers rc $?"
sed -n '/^summary/,$p' $L/peers.log | tee -a $O/summary.txt
timeout 150 python3 bench/ab.py --build main=$R/build-s8m/tools/fna-bench --build sum4=$R/build-s8u/tools/fna-bench \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided \
  --rounds 3 --iters 10 --json-out $O/ab.json > $L/ab.log 2>&1
log "ab rc $?"
sed -n '/median of/,$p' $L/ab.log | tee -a $O/summary.txt
for c in "--extent 30,48,80 --window 18,24,24" "--extent 30,48,80 --window 18,24,24 --stride 16,8,8" "--extent 128,128 --window 31,31" "--extent 32768 --window 2048 --stride 256"; do
  timeout 20 $R/build-s8m/tools/fna-bench --plan $c --heads 24 --head-dim 128 --dtype bf16 --backend cuda-hopper 2>&1 | grep -E "Q box|useful|predicted" | head -3 | sed "s/^/  plan [$c] /" >> $O/summary.txt
done
tar -czf $O/logs.tgz -C $O logs && rm -rf $L
log total
