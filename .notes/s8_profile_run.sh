#!/usr/bin/env bash
# Session 8, call 1 (~300 s): ncu --set full of the cuda-hopper forward on one unmasked
# block-sparse case (video-hunyuan-strided, H = 4; seq-32k-blocked) and of cuDNN's dense SDPA
# kernel on the same GPU, to see what limits the unmasked tile rate (tensor pipe, shared memory,
# issue, stalls) against the same-GPU dense peer.
#   rm -rf .snap-s8p && mkdir -p .snap-s8p && git archive HEAD | tar -x -C .snap-s8p && git rev-parse --short HEAD > .snap-s8p/.commit
#   run(command="bash .snap-s8p/.notes/s8_profile_run.sh", carry=[".cutlass", ".snap-s8p"])
set -u
R=$PWD; S=$R/.snap-s8p; O=$OUT; B=$R/build-s8p; C=$(cat $S/.commit)
L=$O/logs; mkdir -p $L
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee -a $O/summary.txt
log "commit $C"
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS=128 \
  -DFNA_DTYPES=bf16 -DFNA_BUILD_TESTS=OFF -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $L/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench > $L/build.log 2>&1 ||
  { log "BUILD FAILED"; grep -m5 -A5 error $L/build.log; tar -czf $O/logs.tgz -C $O logs; exit 1; }
log "build done"
FB=$B/tools/fna-bench
STRIDED="--extent 30,48,80 --window 18,24,24 --stride 16,8,8 --heads 4 --head-dim 128 --dtype bf16"
BLOCKED="--extent 32768 --window 2048 --stride 256 --heads 16 --head-dim 128 --dtype bf16"
# Plain timings first (no profiler): the ms each profiled launch should match.
for c in STRIDED BLOCKED; do
  timeout 60 $FB ${!c} --backend cuda-hopper --warmup 3 --iters 20 > $L/time-$c.log 2>&1
  log "$c: $(grep -E 'cuda-hopper' $L/time-$c.log | head -1)"
done
prof() {  # name, then the command
  local n=$1; shift
  timeout 150 ncu --set full --import-source no -f -o $O/$n "$@" > $L/ncu-$n.log 2>&1
  log "ncu $n rc $?"
  ncu --import $O/$n.ncu-rep --page details > $L/details-$n.txt 2>&1
  ncu --import $O/$n.ncu-rep --page raw --csv > $L/raw-$n.csv 2>&1
  grep -E "SM Frequency|Duration|Compute \(SM\) Throughput|Memory Throughput|Shared Memory|Issue Slots Busy|Executed Ipc A|No Eligible|Registers Per" $L/details-$n.txt | head -14 | sed "s/^/  $n /" | tee -a $O/summary.txt
}
prof strided -k regex:fwd_kernel_sm90 -s 1 -c 1 $FB $STRIDED --backend cuda-hopper --warmup 1 --iters 1
prof blocked -k regex:fwd_kernel_sm90 -s 1 -c 1 $FB $BLOCKED --backend cuda-hopper --warmup 1 --iters 1
cat > $L/cudnn_one.py <<'PY'
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
g = torch.Generator(device="cuda").manual_seed(1)
q, k, v = (torch.randn(1, 4, 32768, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    for _ in range(3):
        F.scaled_dot_product_attention(q, k, v)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    F.scaled_dot_product_attention(q, k, v)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
PY
prof cudnn --profile-from-start off python3 $L/cudnn_one.py
# Source-level stall sampling of our strided kernel (SASS CSV for bench/ncu_sass.py).
timeout 100 ncu --section SourceCounters --section WarpStateStats --import-source no -f -o $O/src \
  -k regex:fwd_kernel_sm90 -s 1 -c 1 $FB $STRIDED --backend cuda-hopper --warmup 1 --iters 1 > $L/ncu-src.log 2>&1
ncu --import $O/src.ncu-rep --page source --print-source sass --csv > $L/sass-strided.csv 2>&1
python3 bench/ncu_sass.py $L/sass-strided.csv > $L/sass-summary.txt 2>&1
head -40 $L/sass-summary.txt >> $O/summary.txt
rm -f $O/src.ncu-rep
tar -czf $O/logs.tgz -C $O logs && rm -rf $L
ls -la $O
log total
