#!/usr/bin/env bash
# Session 7 device call 1 (<= ~400 s from cold): CudaHopper* GPU tests (AutotuneMatchesThePlanner
# as fixed in 991d160 has not run on a GPU yet) + a wide cuda-hopper tile-shape sweep (data for
# the cost-model refit: 12 shapes per masked-tile penalty per case).
#   rm -rf .snap-s7a && mkdir -p .snap-s7a && git archive HEAD | tar -x -C .snap-s7a && git rev-parse --short HEAD > .snap-s7a/.commit
#   run(command="bash .snap-s7a/.notes/s7_sweep_run.sh", carry=[".cutlass", ".snap-s7a"])
set -u
R=$PWD; S=$R/.snap-s7a; O=$OUT; B=$R/build-s7a
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee -a $O/summary.txt
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
timeout 200 python3 bench/plan_sweep.py --fna-bench $B/tools/fna-bench --per-penalty 12 --iters 8 \
  --cases img-128,video-small,video-hunyuan,seq-32k,seq-32k-blocked,video-hunyuan-strided \
  --out $O/sweep.json > $O/sweep.log 2>&1
log "sweep rc $?"
tail -5 $O/sweep.log
log total
