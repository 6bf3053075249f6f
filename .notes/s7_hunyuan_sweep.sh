#!/usr/bin/env bash
# Session 7: video-hunyuan tile sweep with the planner's model top 20 (+ shapes the wgskip notes
# named), then same-run cuDNN vs cuda-hopper (planner, autotune) on video-hunyuan (~200 s wall).
#   rm -rf .snap-s7h && mkdir -p .snap-s7h && git archive HEAD | tar -x -C .snap-s7h && git rev-parse --short HEAD > .snap-s7h/.commit
#   run(command="bash .snap-s7h/.notes/s7_hunyuan_sweep.sh", carry=[".cutlass", ".snap-s7h"])
set -u
R=$PWD; S=$R/.snap-s7h; O=$OUT; B=$R/build-s7h; C=$(cat $S/.commit)
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS=128 \
  -DFNA_DTYPES=bf16 -DFNA_BUILD_TESTS=OFF -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $O/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench > $O/build.log 2>&1 || { log "BUILD FAILED"; exit 1; }
log "build done"
timeout 100 python3 bench/plan_sweep.py --fna-bench $B/tools/fna-bench --cases video-hunyuan \
  --top 20 --also video-hunyuan:16x8x1/1x8x16 --also video-hunyuan:8x16x1/4x4x8 --rounds 2 \
  --case-timeout 90 --out $O/sweep-hunyuan.json > $O/sweep.log 2>&1
log "sweep rc $?"
grep -E "^\| video-hunyuan" $O/sweep.log | head -30 | tee -a $O/summary.txt
timeout 60 python3 bench/peers.py --commit $C --cases video-hunyuan --peers cudnn,fna --no-backward \
  --fna-bench $B/tools/fna-bench --fna-bench-backends cuda-hopper --fna-bench-autotune \
  --deadline-s 50 --out $O/peers.json > $O/peers.log 2>&1
log "peers rc $?"
sed -n '/^summary/,$p' $O/peers.log | tee -a $O/summary.txt
log total
