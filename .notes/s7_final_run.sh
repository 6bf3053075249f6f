#!/usr/bin/env bash
# Session 7 final device call (~420 s wall): main after the revert (planner model kept).
#   rm -rf .snap-s7f && mkdir -p .snap-s7f && git archive HEAD | tar -x -C .snap-s7f && git rev-parse --short HEAD > .snap-s7f/.commit
#   run(command="bash .snap-s7f/.notes/s7_final_run.sh", carry=[".cutlass", ".snap-s7f", ".whl"])
# C++ build (sm_90a, D 64;128 x fp16;bf16) -> host CudaHopperGeometry* + GPU CudaHopper* ->
# Python package (sm_90a, D 128, bf16) built in the background while peers run -> same-run peers
# (cuDNN vs cuda-hopper, planner and --autotune) -> pytest test_autotune.py + test_cuda.py -k hopper.
set -u
R=$PWD; S=$R/.snap-s7f; O=$OUT; B=$R/build-s7f; C=$(cat $S/.commit)
L=$O/logs; mkdir -p $L
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a $O/summary.txt
log "commit $C"
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="64;128" \
  -DFNA_DTYPES="fp16;bf16" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $L/configure.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench fna_gpu_tests fna_fused_geometry_test > $L/build.log 2>&1 ||
  { log "BUILD FAILED"; grep -m5 -A5 error $L/build.log; tar -czf $O/logs.tgz -C $O logs; exit 1; }
log "build done"
# The Python package, in the background (CPU) while the GPU runs tests and peers.
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site $R/.whl/*.whl > $L/wheels.log 2>&1
( PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH timeout 300 python3 -m pip install --no-build-isolation \
  --no-deps --no-index --target /tmp/fna-py . -Cbuild-dir=$R/build-s7f-py -Ccmake.define.FNA_ENABLE_CUDA=ON \
  -Ccmake.define.FNA_CUDA_ARCHS=90a -Ccmake.define.FNA_HEAD_DIMS=128 -Ccmake.define.FNA_DTYPES=bf16 \
  -Ccmake.define.FNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $L/pip.log 2>&1; echo "pip rc $?" >> $L/pip.log ) &
PIP=$!
timeout 60 $B/tests/gpu/fna_fused_geometry_test --gtest_color=no --gtest_filter='CudaHopperGeometry*' > $L/geometry.log 2>&1
log "host CudaHopperGeometry* rc $?: $(grep -E '^\[  (PASSED|FAILED)' $L/geometry.log | tr '\n' ' ')"
timeout 150 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*' > $L/gpu-tests.log 2>&1
log "CudaHopper* rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $L/gpu-tests.log | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure" $L/gpu-tests.log | head -6
timeout 150 python3 bench/peers.py --commit $C \
  --cases seq-32k,seq-32k-blocked,img-128,video-hunyuan,video-hunyuan-strided,video-small \
  --peers cudnn,fna --no-backward --fna-bench $B/tools/fna-bench --fna-bench-backends cuda-hopper \
  --fna-bench-autotune --deadline-s 140 --out $O/peers.json > $L/peers.log 2>&1
log "peers rc $?"
timeout 40 $B/tools/fna-bench --plan --extent 30,48,80 --window 18,24,24 --heads 24 --head-dim 128 --dtype bf16 --backend cuda-hopper > $L/plan.log 2>&1
wait $PIP; log "python: $(tail -1 $L/pip.log)"
PYTHONPATH=/tmp/fna-py:/tmp/site timeout 120 python3 -m pytest -q -p no:cacheprovider -rs \
  tests/python/test_autotune.py tests/python/test_cuda.py -k "autotune or hopper or output_device" > $L/pytest.log 2>&1
log "pytest rc $?: $(tail -1 $L/pytest.log)"
grep -E "planner|Q box|predicted" $L/plan.log | tee -a $O/summary.txt
sed -n '/^summary/,$p' $L/peers.log | tee -a $O/summary.txt
tar -czf $O/logs.tgz -C $O logs && rm -rf $L
log total
