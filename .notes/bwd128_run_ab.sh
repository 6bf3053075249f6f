#!/usr/bin/env bash
# Device call for the sm_90a wgmma dK/dV kernel (branch s5-bwd128), one `run` of <= ~330 s wall
# from a cold machine. From the main checkout (/work/main):
#   rm -rf .snap-bwd128 && mkdir -p .snap-bwd128/base .snap-bwd128/v1
#   git archive a6b5d57 | tar -x -C .snap-bwd128/base        # main's kernels (the base)
#   git archive s5-bwd128 | tar -x -C .snap-bwd128/v1         # the variant
#   cp .snap-bwd128/v1/.notes/bwd128_run_ab.sh .snap-bwd128/run_ab.sh
# then run(command='R=$PWD; bash .snap-bwd128/run_ab.sh $R', carry=[".cutlass", ".snap-bwd128"]).
# Steps, most important first (the stdout tail is the report; logs come back tarred, and only
# if the call ends in time): build base (fna-bench, bf16 D=128) and v1 (fna-bench + GPU tests,
# fp16;bf16 D=128) in parallel; v1's host layout test; v1's CudaFusedBackward.* + FusedBackward.*;
# the A/B of the backward (base, v1, v1 with FNA_BWD_SM90_LATE_LOADS=1, 2 rounds) on
# video-hunyuan-strided, bf16, H = 4 and 24; --verify problems; the late-loads kernel on the
# D = 128 tests; racecheck + memcheck of one fp16 rank-3 problem; ncu launch stats of the new
# kernel (shows it is the one that runs, its registers and CTAs per SM).
set -u
R=$1; S=$R/.snap-bwd128; O=$OUT
cfg() { (cd $1 && ln -sfn $R/.cutlass .cutlass && cmake -S . -B $2 -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS=128 -DFNA_DTYPES="$3" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON -DFNA_CUTLASS_INCLUDE_DIR=$R/.cutlass/include > $O/cfg-$(basename $2).log 2>&1); }
t0=$SECONDS
cfg $S/base $R/build-bwd128-base bf16 &
cfg $S/v1 $R/build-bwd128-v1 "fp16;bf16"; wait
(ninja -C $R/build-bwd128-base -j5 fna-bench > $O/build-base.log 2>&1; echo "base build rc $? $((SECONDS-t0)) s") &
ninja -C $R/build-bwd128-v1 -j11 fna-bench fna_gpu_tests fna_fused_sm90_layout_test > $O/build-v1.log 2>&1 || { echo V1 BUILD FAIL; grep -m5 -A8 error $O/build-v1.log; }
echo "v1 build $((SECONDS-t0)) s"; wait
B=$R/build-bwd128-base/tools/fna-bench; V=$R/build-bwd128-v1/tools/fna-bench; T=$R/build-bwd128-v1/tests/gpu
$T/fna_fused_sm90_layout_test --gtest_color=no 2>&1 | tail -1 | sed "s/^/layout test: /"
# 1. Correctness of the default (early-loads) kernel.
t=$SECONDS
timeout 100 $T/fna_gpu_tests --gtest_color=no --gtest_filter='CudaFusedBackward.*:FusedBackward.*' > $O/tests-v1.log 2>&1
echo "tests rc $? $((SECONDS-t)) s"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|tests ran" $O/tests-v1.log | head -20
# 2. A/B on video-hunyuan-strided, bf16, H = 4 and 24: base, v1 = loads issued during S^T / dP^T
# (the default), v1late = before them (FNA_BWD_SM90_LATE_LOADS=1). Time it even if a test failed.
C="--extent 30,48,80 --window 18,24,24 --stride 16,8,8 --head-dim 128"
for round in 1 2; do for h in 4 24; do for b in base v1 v1late; do
  bin=$B; late=0; [ $b != base ] && bin=$V; [ $b = v1late ] && late=1
  ms=$(FNA_BWD_SM90_LATE_LOADS=$late timeout 40 $bin --backend cuda-fused --backward --warmup 2 --iters 10 --dtype bf16 --heads $h $C 2>&1 | awk '/^cuda-fused/{print $4, $5}')
  echo "AB r$round bf16 H=$h $b bwd_ms,GF/s: $ms"
done; done; done | tee $O/ab.txt
echo "after A/B $((SECONDS-t0)) s"
# 3. Every feature at once (rank 3, stride, dilation, causal, GQA 4/2, 70 additional tokens) and
# the strided case at half extents (the full one is too large for the CPU reference).
P3="--extent 5,8,9 --window 3,4,5 --stride 1,2,1 --dilation 1,2,1 --causal 1,0,1 --head-dim 128 --additional-kv 70"
for late in 0 1; do for dt in bf16 fp16; do
  FNA_BWD_SM90_LATE_LOADS=$late timeout 30 $V --backend cuda-fused --backward --verify --warmup 0 --iters 1 --dtype $dt --heads 4 --heads-kv 2 $P3 2>&1 | tail -1 | sed "s/^/verify late=$late $dt: /"
done; done
timeout 40 $V --backend cuda-fused --backward --verify --warmup 0 --iters 1 --dtype bf16 --extent 15,24,40 --window 9,12,12 --stride 8,4,4 --head-dim 128 --heads 1 2>&1 | tail -1 | sed "s/^/verify strided-half: /"
# 4. The late-loads kernel on the D = 128 tests.
t=$SECONDS
FNA_BWD_SM90_LATE_LOADS=1 timeout 45 $T/fna_gpu_tests --gtest_color=no --gtest_filter='FusedBackward.Rank2And3:FusedBackward.GqaMqaAdditionalKv:FusedBackward.StridedLayouts:FusedBackward.AtomicAndDeterministicPaths' > $O/tests-v1late.log 2>&1
echo "tests (late loads) rc $? $((SECONDS-t)) s"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED" $O/tests-v1late.log | head -8
# 5. Sanitizers on the fp16 rank-3 problem, then ncu launch stats (registers, smem, CTAs per SM).
t=$SECONDS
timeout 45 compute-sanitizer --tool racecheck --error-exitcode 9 $V --backend cuda-fused --backward --verify --warmup 0 --iters 1 --dtype fp16 $P3 > $O/racecheck.log 2>&1; echo "racecheck rc $?"; grep -E "RACECHECK SUMMARY|ERROR SUMMARY" $O/racecheck.log | tail -2
timeout 45 compute-sanitizer --tool memcheck --error-exitcode 9 $V --backend cuda-fused --backward --verify --warmup 0 --iters 1 --dtype fp16 --heads 4 --heads-kv 2 $P3 > $O/memcheck.log 2>&1; echo "memcheck rc $? $((SECONDS-t)) s"; grep -E "ERROR SUMMARY" $O/memcheck.log | tail -1
timeout 40 ncu -k regex:dkdv_kernel_sm90 --launch-count 1 --section LaunchStats --section Occupancy $V --backend cuda-fused --backward --warmup 0 --iters 1 --dtype bf16 --heads 1 $C > $O/ncu.log 2>&1; echo "ncu rc $?"; grep -E "dkdv_kernel_sm90|Registers Per|Dynamic Shared|Achieved Occupancy|Block Limit (Reg|Shared)" $O/ncu.log | head -8
echo "total $((SECONDS-t0)) s"
cd $O && tar czf logs.tgz *.log && rm -f *.log
