#!/usr/bin/env bash
# Session 6 bench call (<= ~450 s from cold): same-run peers for the issue-4 and issue-6 bars, and
# the cuda-hopper plan sweep (model refit).
#   rm -rf .snap-fb && mkdir -p .snap-fb && git archive HEAD | tar -x -C .snap-fb && git rev-parse --short HEAD > .snap-fb/.commit
#   run(command="bash .snap-fb/.notes/s6_final_bench.sh", carry=[".cutlass", ".snap-fb"])
set -u
R=$PWD; S=$R/.snap-fb; O=$OUT; B=$R/build-fb; C=$(cat $S/.commit)
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="32;128" \
  -DFNA_DTYPES=bf16 -DFNA_BUILD_TESTS=OFF -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $O/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench > $O/build.log 2>&1 || { log "BUILD FAILED"; grep -m5 -A5 error $O/build.log; exit 1; }
log "build done"
F=$B/tools/fna-bench
# Issue 4: strided forward and backward against flash (and cuDNN), cuda-fused and cuda-hopper.
timeout 220 python3 bench/peers.py --commit $C --cases video-hunyuan-strided --peers cudnn,flash,fna \
  --fna-bench $F --fna-bench-backends cuda-fused,cuda-hopper --deadline-s 200 \
  --out $O/peers-strided.json > $O/peers-strided.log 2>&1
log "peers strided rc $?"
# Issues 4 and 6: forward of the other cases against cuDNN.
timeout 160 python3 bench/peers.py --commit $C --cases nat-56,seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-small \
  --peers cudnn,fna --no-backward --fna-bench $F --fna-bench-backends cuda-fused,cuda-hopper \
  --deadline-s 150 --out $O/peers-fwd.json > $O/peers-fwd.log 2>&1
log "peers fwd rc $?"
timeout 150 python3 bench/plan_sweep.py --fna-bench $F --out $O/sweep.json > $O/sweep.md 2> $O/sweep.err
log "plan_sweep rc $?"; tail -2 $O/sweep.err
grep -E "^[a-z].*tokens|fna:|cudnn |flash " $O/peers-strided.log $O/peers-fwd.log | grep -v " - " | sed 's/^[^:]*://'
cat $O/sweep.md
log total
