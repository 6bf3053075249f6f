#!/usr/bin/env bash
# The device call of run S5-AB1 (bench/RESULTS.md), for reuse: from the main checkout, snapshot
# base and variant with `git archive` into .snap-hopper/{base,v1}, carry [".cutlass", ".snap-hopper"]
# and run `R=$PWD; bash .snap-hopper/run_ab.sh $R`: builds base (bf16/128) and v1 (64;128 x
# fp16;bf16), runs CudaHopper* on v1, times both alternately (2 rounds), racecheck + memcheck.
# ~330 s wall from a cold machine. Only 8 files come back per call: logs are tarred.
set -u
R=$1; S=$R/.snap-hopper; O=$OUT
cfg() { (cd $1 && ln -sfn $R/.cutlass .cutlass && cmake -S . -B $2 -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="$3" -DFNA_DTYPES="$4" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON -DFNA_CUTLASS_INCLUDE_DIR=$R/.cutlass/include > $O/cfg-$(basename $2).log 2>&1); }
t0=$SECONDS
cfg $S/base $R/build-hopper-base 128 bf16
cfg $S/v1 $R/build-hopper-v1 "64;128" "fp16;bf16"
(ninja -C $R/build-hopper-base -j6 fna-bench > $O/build-base.log 2>&1; echo "base build rc $? $((SECONDS-t0)) s") &
ninja -C $R/build-hopper-v1 -j12 fna-bench fna_gpu_tests > $O/build-v1.log 2>&1 || { echo V1 BUILD FAIL; grep -m5 -A5 error $O/build-v1.log; }
echo "v1 build $((SECONDS-t0)) s"; wait
grep -h "spill\|C75" $O/build-v1.log | head -5
t=$SECONDS
timeout 200 $R/build-hopper-v1/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' > $O/tests-v1.log 2>&1
echo "tests rc $? $((SECONDS-t)) s"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|cases" $O/tests-v1.log | head -20
B=$R/build-hopper-base/tools/fna-bench; V=$R/build-hopper-v1/tools/fna-bench
C1="--extent 32768 --window 2048 --stride 256 --heads 16"
C2="--extent 30,48,80 --window 18,24,24 --stride 16,8,8 --heads 4"
C3="--extent 30,48,80 --window 18,24,24 --heads 4"
C4="--extent 128,128 --window 31,31 --heads 24"
C5="--extent 32768 --window 2048 --heads 16"
for round in 1 2; do for c in C1 C2 C3 C4; do for b in base v1; do
  bin=$B; [ $b = v1 ] && bin=$V
  ms=$(timeout 60 $bin --backend cuda-hopper --warmup 3 --iters 20 --head-dim 128 --dtype bf16 ${!c} 2>&1 | awk '/^cuda-hopper/{print $2, $3}')
  echo "AB r$round $c $b $ms"
done; done; done | tee $O/ab.txt
t=$SECONDS
timeout 60 $V --backend cuda-hopper --warmup 0 --iters 1 --verify --extent 13,37 --window 5,8 --dtype bf16 --head-dim 128 --additional-kv 70 | tail -2
timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 $V --backend cuda-hopper --warmup 0 --iters 1 --verify --extent 5,8,9 --window 3,4,5 --stride 1,2,1 --dilation 1,2,1 --causal 1,0,1 --dtype fp16 --head-dim 128 --additional-kv 70 > $O/racecheck.log 2>&1; echo "racecheck rc $?"; grep -E "RACECHECK SUMMARY|ERROR SUMMARY" $O/racecheck.log | tail -2
timeout 120 env FNA_TEST_COUNT=12 compute-sanitizer --tool memcheck --error-exitcode 9 $R/build-hopper-v1/tests/gpu/fna_gpu_tests --gtest_filter='CudaHopperForward.RandomSweep' --gtest_color=no > $O/memcheck.log 2>&1; echo "memcheck rc $? $((SECONDS-t)) s"; grep -E "ERROR SUMMARY|PASSED|FAILED" $O/memcheck.log | tail -3
cd $O && tar czf logs.tgz *.log && rm -f *.log
