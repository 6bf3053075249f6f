#!/usr/bin/env bash
# Device call for branch s6-bwdred (sm_90a dK/dV kernel, dQ reductions), one `run`, ~250 s wall
# from a cold machine. Builds: base = main 9bd6f8c; v2 = 0ff794d (16-byte reductions after a
# lane-pair exchange + dQ block 1's wgmma overlapped with block 0's reductions); v3 = the branch
# tip (ws_dq rows in wgmma column order: 8 rows x 64 B per reduction, no exchange; + the overlap);
# v3b = branch s6-bwdred-v3b (v3 without the overlap: 0 spills instead of 56 B). From the main
# checkout (/work/main):
#   rm -rf .snap-bwdred && mkdir -p .snap-bwdred/base .snap-bwdred/v2 .snap-bwdred/v3 .snap-bwdred/v3b
#   git archive 9bd6f8c | tar -x -C .snap-bwdred/base
#   git archive 0ff794d | tar -x -C .snap-bwdred/v2
#   git archive s6-bwdred | tar -x -C .snap-bwdred/v3
#   git archive s6-bwdred-v3b | tar -x -C .snap-bwdred/v3b
#   cp .snap-bwdred/v3/.notes/bwdred_run_ab.sh .snap-bwdred/run_ab.sh
# then run(command='R=$PWD; bash .snap-bwdred/run_ab.sh $R', carry=[".cutlass", ".snap-bwdred"]).
#
# One CMake tree (the tip, bf16, D = 128, sm_90a: fna-bench, fna_gpu_tests, the layout test). The
# other builds differ from it only in three objects of libfna.a (the sm_90a and sm_80 bf16
# backward instances and backward.cu: every translation unit that includes a changed header, but
# the fp32 instance, whose code is the same for all): those are compiled from each snapshot with
# the tree's own compile commands, swapped into a copy of libfna.a, and fna-bench is relinked.
# That is ~9 extra compiles instead of three more trees (H = 24 and extra trees ran out of time
# in run S6-B1: keep to H = 4).
# Order: build; layout test; --verify (every-feature rank-3 problem on every build, the strided
# case at half extents on the tip); the tip's CudaFusedBackward.* + FusedBackward.*; then the A/B
# (3 rounds, builds interleaved) and a table, printed last. Logs come back tarred.
set -u
R=$1; S=$R/.snap-bwdred; O=$OUT
TIP=v3; SWAP="base v2 v3b"; ALL="base v2 v3 v3b"
B=$R/build-bwdred; X=$R/bwdred-swap; BIN=$R/bwdred-bin
OBJS="src/cuda/instances/fused_bwd_hdim128_bf16_sm90a.cu src/cuda/instances/fused_bwd_hdim128_bf16_sm80.cu src/cuda/fused/backward.cu"
mkdir -p $X $BIN
t0=$SECONDS
(cd $S/$TIP && ln -sfn $R/.cutlass .cutlass && cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON \
  -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS=128 -DFNA_DTYPES=bf16 -DFNA_BUILD_TESTS=ON \
  -DFNA_BUILD_TOOLS=ON -DFNA_CUTLASS_INCLUDE_DIR=$R/.cutlass/include > $O/cfg.log 2>&1) ||
  { echo CONFIGURE FAIL; tail -20 $O/cfg.log; }
# The swapped objects' compile commands: the tip's, with the snapshot root replaced; run from a
# scratch build directory per snapshot (the commands write relative object and depfile paths).
for v in $SWAP; do for o in $OBJS; do
  mkdir -p $X/$v/CMakeFiles/fna.dir/$(dirname $o)
  ninja -C $B -t commands CMakeFiles/fna.dir/$o.o | tail -1 | sed "s|$S/$TIP/|$S/$v/|g" > $X/$v/$(basename $o).sh
  grep -q "$S/$v/$o" $X/$v/$(basename $o).sh || echo "SWAP COMMAND FAIL $v $o"
done; done
(for v in $SWAP; do for o in $OBJS; do echo "$v $(basename $o)"; done; done |
  xargs -P 5 -n 2 sh -c 'cd '$X'/$0 && nice sh $1.sh > $1.log 2>&1 || echo "SWAP COMPILE FAIL $0 $1"'
 echo "swap objects $((SECONDS-t0)) s") &
ninja -C $B -j11 fna-bench fna_gpu_tests fna_fused_sm90_layout_test > $O/build-tip.log 2>&1 ||
  { echo TIP BUILD FAIL; grep -m5 -A8 error $O/build-tip.log; }
echo "tip build $((SECONDS-t0)) s"; wait
grep -h "C75\|dkdv_kernel_sm90" -A2 $O/build-tip.log | grep -m3 "spill\|C75"
cp $B/tools/fna-bench $BIN/$TIP
LINK=$(ninja -C $B -t commands tools/fna-bench | tail -1)
for v in $SWAP; do
  cp $B/libfna.a $X/$v/libfna.a
  (cd $X/$v && for o in $OBJS; do ar r libfna.a CMakeFiles/fna.dir/$o.o; done) &&
    (cd $B && sh -c "$(echo "$LINK" | sed "s| libfna.a | $X/$v/libfna.a |; s|-o tools/fna-bench|-o $BIN/$v|")") ||
    echo "LINK FAIL $v"
done
ls $BIN | tr '\n' ' '; echo "binaries $((SECONDS-t0)) s"
cat $X/*/*.log > $O/swap.log 2>/dev/null

$B/tests/gpu/fna_fused_sm90_layout_test --gtest_color=no 2>&1 | tail -1 | sed "s/^/layout test: /"
# 1. Correctness: every feature at once (rank 3, stride, dilation, causal, GQA 4/2, 70 additional
# tokens) on every build; the strided case at half extents on the tip; the tip's GPU tests.
P3="--extent 5,8,9 --window 3,4,5 --stride 1,2,1 --dilation 1,2,1 --causal 1,0,1 --head-dim 128 --additional-kv 70"
for v in $ALL; do
  timeout 30 $BIN/$v --backend cuda-fused --backward --verify --warmup 0 --iters 1 --dtype bf16 --heads 4 --heads-kv 2 $P3 2>&1 | tail -1 | sed "s/^/verify $v: /"
done
timeout 40 $BIN/$TIP --backend cuda-fused --backward --verify --warmup 0 --iters 1 --dtype bf16 --extent 15,24,40 --window 9,12,12 --stride 8,4,4 --head-dim 128 --heads 1 2>&1 | tail -1 | sed "s/^/verify $TIP strided-half: /"
t=$SECONDS
timeout 75 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaFusedBackward.*:FusedBackward.*' > $O/tests-tip.log 2>&1
echo "tests ($TIP) rc $? $((SECONDS-t)) s"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|tests ran" $O/tests-tip.log | head -12
# 2. A/B on video-hunyuan-strided, bf16, H = 4: every build once per round, 3 rounds, the order
# reversed in round 2 (no build always first).
C="--extent 30,48,80 --window 18,24,24 --stride 16,8,8 --head-dim 128 --dtype bf16 --heads 4"
REV=$(echo $ALL | tr ' ' '\n' | tac | tr '\n' ' ')
for round in 1 2 3; do order=$ALL; [ $round = 2 ] && order=$REV; for v in $order; do
  ms=$(timeout 40 $BIN/$v --backend cuda-fused --backward --warmup 2 --iters 10 $C 2>&1 | awk '/^cuda-fused/{print $4, $5}')
  echo "AB r$round $v bwd_ms,GF/s: $ms"
done; done | tee $O/ab.txt
# 3. If time is left: where the tip's warps stall and what the dQ reductions cost L2 (requests vs
# sectors: v3 should need half the requests per sector of the base), H = 1.
if [ $((SECONDS-t0)) -lt 205 ]; then
  timeout 40 ncu -k regex:dkdv_kernel_sm90 --launch-count 1 --section SpeedOfLight \
    --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,lts__t_requests_srcunit_tex_op_red.sum,lts__t_sectors_srcunit_tex_op_red.sum' \
    $BIN/$TIP --backend cuda-fused --backward --warmup 0 --iters 1 ${C/--heads 4/--heads 1} > $O/ncu.log 2>&1
  echo "ncu rc $?"
  grep -E "Duration|SM Throughput|L2 Cache Throughput|op_red" $O/ncu.log | head -6
  grep "issue_stalled" $O/ncu.log | sort -k3 -g -r | head -6 | awk '{print "stall", $1, $3}'
fi
echo "total $((SECONDS-t0)) s"
# The table: backward ms per round, the best round's effective TF/s, speed-up over the base (best
# rounds) and the share of run V4's flash backward rate (321.8 TF/s; not this run).
awk -v order="$ALL" '$5 != "" { ms[$3] = ms[$3] " " $5
    if (!($3 in lo) || $5 + 0 < lo[$3]) { lo[$3] = $5 + 0; tf[$3] = $6 / 1000 } }
  END { print "| build | bwd ms per round | best TF/s | vs base | of flash 321.8 |"
        n = split(order, b, " ")
        for (i = 1; i <= n; ++i) {
          v = b[i]
          if (!(v in lo)) { print "| " v " | - | - | - | - |"; continue }
          printf "| %s |%s | %.1f | %.3fx | %.1f%% |\n", v, ms[v], tf[v],
                 ("base" in lo) ? lo["base"] / lo[v] : 0, 100 * tf[v] / 321.8 } }' $O/ab.txt
cd $O && tar czf logs.tgz *.log && rm -f *.log
