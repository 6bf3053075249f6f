#!/usr/bin/env bash
# Session 7 device call 2: the wide cuda-hopper tile-shape sweep of the masked cases again (call 1's
# sweep hit its limit before writing anything; plan_sweep.py now saves each case as it finishes).
#   rm -rf .snap-s7b && mkdir -p .snap-s7b && git archive HEAD | tar -x -C .snap-s7b && git rev-parse --short HEAD > .snap-s7b/.commit
#   run(command="bash .snap-s7b/.notes/s7_sweep2_run.sh", carry=[".cutlass", ".snap-s7b"])
set -u
R=$PWD; S=$R/.snap-s7b; O=$OUT; B=$R/build-s7b
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS=128 \
  -DFNA_DTYPES=bf16 -DFNA_BUILD_TESTS=OFF -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $O/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench > $O/build.log 2>&1 || { log "BUILD FAILED"; grep -m5 -A5 error $O/build.log; exit 1; }
log "build done"
for c in img-128 video-small video-hunyuan; do
  timeout 120 python3 bench/plan_sweep.py --fna-bench $B/tools/fna-bench --per-penalty 12 --iters 8 \
    --cases $c --out $O/sweep-$c.json > $O/sweep-$c.log 2>&1
  log "sweep $c rc $?: $(grep timed $O/sweep-$c.log)"
done
log total
