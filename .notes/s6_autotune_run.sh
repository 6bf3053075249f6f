#!/usr/bin/env bash
# Session 6 device call (<= ~330 s from cold): Options::autotune on cuda-hopper.
#   rm -rf .snap-at && mkdir -p .snap-at && git archive HEAD | tar -x -C .snap-at && git rev-parse --short HEAD > .snap-at/.commit
#   run(command="bash .snap-at/.notes/s6_autotune_run.sh", carry=[".cutlass", ".snap-at"])
set -u
R=$PWD; S=$R/.snap-at; O=$OUT; B=$R/build-at; C=$(cat $S/.commit)
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="64;128" \
  -DFNA_DTYPES="fp16;bf16" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $O/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench fna_gpu_tests fna_fused_geometry_test > $O/build.log 2>&1 ||
  { log "BUILD FAILED"; grep -m5 -A5 error $O/build.log; exit 1; }
log "build done"
timeout 60 $B/tests/gpu/fna_fused_geometry_test --gtest_color=no --gtest_filter='CudaHopperGeometry*' > $O/geometry.log 2>&1
log "host CudaHopperGeometry* rc $?: $(grep -E '^\[  (PASSED|FAILED)' $O/geometry.log | tr '\n' ' ')"
timeout 150 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' > $O/gpu-tests.log 2>&1
log "CudaHopper* rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $O/gpu-tests.log | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure|Autotune" $O/gpu-tests.log | head -8
timeout 30 $B/tools/fna-bench --backend cuda-hopper --autotune --verify --warmup 1 --iters 2 --extent 9,14,20 \
  --window 5,7,9 --dtype bf16 --head-dim 128 --heads 2 --additional-kv 70 2>&1 | tail -1 | sed 's/^/verify autotune: /'
timeout 200 python3 bench/peers.py --commit $C --cases seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided,video-small \
  --peers cudnn,fna --no-backward --fna-bench $B/tools/fna-bench --fna-bench-backends cuda-hopper \
  --fna-bench-autotune --deadline-s 190 --out $O/peers.json > $O/peers.log 2>&1
log "peers rc $?"
sed -n '/^summary/,$p' $O/peers.log
log total
