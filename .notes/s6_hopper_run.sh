#!/usr/bin/env bash
# Session 6, one device call (<= ~400 s from cold): the cuda-hopper kernel after s6-hopclean.
#   rm -rf .snap-s6h && mkdir -p .snap-s6h && git archive HEAD | tar -x -C .snap-s6h
#   run(command="bash .snap-s6h/.notes/s6_hopper_run.sh", carry=[".cutlass", ".snap-s6h"])
# 1. build (sm_90a, D 64;128 x fp16;bf16), host replay, CudaHopper* + FusedBackward sm90 tests,
#    four --verify problems
# 2. bench/plan_sweep.py on every hopper case (the model's best shapes timed, model refit)
# 3. bench/peers.py forward, cudnn vs fna (cuda-hopper, cuda-fused) on the issue-6 cases
set -u
R=$PWD; S=$R/.snap-s6h; O=$OUT; B=$R/build-s6h
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="64;128" \
  -DFNA_DTYPES="fp16;bf16" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $O/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench fna_gpu_tests fna_fused_geometry_test > $O/build.log 2>&1 ||
  { log "BUILD FAILED"; grep -m5 -A5 error $O/build.log; cd $O && tar czf logs.tgz *.log; exit 1; }
log "build done"
timeout 30 $B/tests/gpu/fna_fused_geometry_test --gtest_color=no --gtest_filter='CudaHopperGeometry*' > $O/geometry.log 2>&1
log "host replay rc $?: $(grep -E '^\[  (PASSED|FAILED)' $O/geometry.log | tr '\n' ' ')"
timeout 150 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' > $O/gpu-tests.log 2>&1
log "CudaHopper* rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $O/gpu-tests.log | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure" $O/gpu-tests.log | head -5
verify() {
  local name=$1; shift
  timeout 30 $B/tools/fna-bench --backend cuda-hopper --warmup 0 --iters 1 --verify "$@" > $O/verify-$name.log 2>&1
  log "verify $name rc $?: $(grep -E '^cuda-hopper' $O/verify-$name.log | tr -s ' ')"
}
verify bf16-128 --extent 13,37 --window 5,8 --dtype bf16 --head-dim 128 --additional-kv 70
verify fp16-64 --extent 13,37 --window 5,8 --dtype fp16 --head-dim 64 --additional-kv 70
verify 3d-masked --extent 9,14,20 --window 5,7,9 --dtype bf16 --head-dim 128 --heads 2
verify 1d-blocked --extent 4096 --window 512 --stride 128 --dtype fp16 --head-dim 64 --heads 2
timeout 200 python3 bench/plan_sweep.py --fna-bench $B/tools/fna-bench --out $O/sweep.json \
  > $O/sweep.md 2> $O/sweep.err; log "plan_sweep rc $?"; tail -3 $O/sweep.err
timeout 150 python3 bench/peers.py --commit "$(cat $S/.commit 2>/dev/null || echo snapshot)" \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided,video-small \
  --peers cudnn,fna --no-backward --fna-bench $B/tools/fna-bench \
  --fna-bench-backends cuda-hopper,cuda-fused --deadline-s 140 --out $O/peers.json > $O/peers.log 2>&1
log "peers rc $?"; tail -12 $O/peers.log
cat $O/sweep.md
log "total"
cd $O && tar czf logs.tgz *.log sweep.err
