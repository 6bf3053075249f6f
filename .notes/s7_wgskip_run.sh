#!/usr/bin/env bash
# Session 7 device call for branch s7-wgskip (fna issue 6: each consumer warpgroup skips the KV
# tiles none of its rows attends). <= ~300 s from cold: build sm_90a D 64;128 x fp16;bf16, host
# geometry replay, CudaHopper* (the new WarpgroupsSkipTiles first, each step under a timeout: a
# hang is a barrier deadlock, the log's last "[ RUN" names the test), racecheck of one skipping
# problem, then A/B forward timing against the same source built with -DFNA_WGSKIP_AB_OFF (no
# skipping: today's code path) on the masked cases' shapes, table last.
#   rm -rf .snap-wgskip && mkdir -p .snap-wgskip && git -C /work/wt-wgskip archive s7-wgskip | tar -x -C .snap-wgskip
#   run(command="bash .snap-wgskip/.notes/s7_wgskip_run.sh", carry=[".cutlass", ".snap-wgskip"])
set -u
R=$PWD; S=$R/.snap-wgskip; O=$OUT; B=$R/build-wgskip; BO=$R/build-wgskip-off
cd $S && ln -sfn $R/.cutlass .cutlass
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a $O/summary.txt; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee -a $O/summary.txt
cmake -S . -B $B -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS="64;128" \
  -DFNA_DTYPES="fp16;bf16" -DFNA_BUILD_TESTS=ON -DFNA_BUILD_TOOLS=ON \
  -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include > $O/build.log 2>&1 || log "CONFIGURE FAILED"
ninja -C $B -j16 fna-bench fna_gpu_tests fna_fused_geometry_test >> $O/build.log 2>&1 ||
  { log "BUILD FAILED"; grep -m5 -A5 error $O/build.log; tar -czf $O/logs.tgz -C $O build.log; exit 1; }
log "build done"
# The A/B baseline (bf16 D = 128 only) builds while the tests run.
( cmake -S . -B $BO -G Ninja -DFNA_ENABLE_CUDA=ON -DFNA_CUDA_ARCHS=90a -DFNA_HEAD_DIMS=128 \
    -DFNA_DTYPES=bf16 -DFNA_BUILD_TESTS=OFF -DFNA_BUILD_TOOLS=ON \
    -DCMAKE_CUDA_FLAGS=-DFNA_WGSKIP_AB_OFF -DFNA_CUTLASS_INCLUDE_DIR=$S/.cutlass/include &&
  nice ninja -C $BO -j12 fna-bench ) > $O/build-off.log 2>&1 &
off_pid=$!

hang() { [ $1 -eq 124 ] && log "  TIMEOUT (hang?) in: $(grep '^\[ RUN' $2 | tail -1)"; }
timeout 60 $B/tests/gpu/fna_fused_geometry_test --gtest_color=no --gtest_filter='CudaHopperGeometry*' > $O/geometry.log 2>&1
rc=$?; log "host CudaHopperGeometry* rc $rc: $(grep -E '^\[  (PASSED|FAILED)' $O/geometry.log | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure" $O/geometry.log | head -4
timeout 100 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopperForward.WarpgroupsSkipTiles' > $O/gpu-skip.log 2>&1
rc=$?; log "WarpgroupsSkipTiles rc $rc: $(grep -E '^\[  (PASSED|FAILED) ' $O/gpu-skip.log | tr '\n' ' ')"; hang $rc $O/gpu-skip.log
grep -E "Failure|error" $O/gpu-skip.log | head -6
timeout 150 $B/tests/gpu/fna_gpu_tests --gtest_color=no --gtest_filter='CudaHopper*:-CudaHopperForward.WarpgroupsSkipTiles' > $O/gpu-tests.log 2>&1
rc=$?; log "other CudaHopper* rc $rc: $(grep -E '^\[  (PASSED|FAILED) ' $O/gpu-tests.log | tr '\n' ' ')"; hang $rc $O/gpu-tests.log
grep -E "^\[  FAILED|Failure" $O/gpu-tests.log | head -6
# Both warpgroups skip (Q box 16x8x1: the second half of the last X box is padding only),
# additional KV, fp16, D = 128.
timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 $B/tools/fna-bench --backend cuda-hopper \
  --warmup 0 --iters 1 --verify --extent 20,24,16 --window 5,7,5 --tiles-q 16,8,1 --tiles-kv 4,4,8 \
  --dtype fp16 --head-dim 128 --additional-kv 70 > $O/racecheck.log 2>&1
rc=$?; log "racecheck rc $rc: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' $O/racecheck.log | tail -1) $(grep cuda-hopper $O/racecheck.log | tail -1)"; hang $rc $O/racecheck.log

wait $off_pid; rc=$?
log "A/B baseline build rc $rc"
[ $rc -ne 0 ] && grep -m5 -A5 error $O/build-off.log
# A/B: forward ms, bf16 D = 128, H of bench/cases.json; --tile-list runs a case's shapes in one
# process; builds alternate per round. "pairs" = (tile, warpgroup) pairs skipped, from
# wg_skip_count.h on the host (what the skipping can save at most).
timeout 150 python3 - "$B/tools/fna-bench" "$BO/tools/fna-bench" > $O/ab.log 2>&1 <<'EOF'
import json, statistics, subprocess, sys, tempfile
on, off = sys.argv[1], sys.argv[2]
cases = {c["name"]: c for c in json.load(open("bench/cases.json"))["cases"]}
runs = [("video-hunyuan", [("16,8,1", "4,4,8", 8.3), ("2,8,8", "2,8,8", 2.1),
                           ("16,8,1", "1,8,16", 11.7)]),
        ("img-128", [("16,8", "8,16", 13.6), ("32,4", "8,16", 21.4), ("8,16", "8,16", 0.0),
                     ("16,8", "16,8", 0.0)]),
        ("video-small", [("1,8,16", "4,4,8", 10.0), ("2,8,8", "2,8,8", 5.6)]),
        ("seq-32k-blocked", [None])]
def flags(c):
    j = lambda xs: ",".join(str(int(x)) for x in xs)
    return ["--extent", j(c["grid"]), "--window", j(c["window"]), "--stride", j(c["stride"]),
            "--dilation", j(c["dilation"]), "--causal", j(c["causal"]), "--batch", str(c["B"]),
            "--heads", str(c["H"]), "--head-dim", str(c["D"]), "--dtype", c["dtype"]]
times = {}
for rnd in range(3):
    for name, shapes in runs:
        extra = []
        if shapes[0] is not None:
            f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
            f.write("".join(f"{q} {kv}\n" for q, kv, _ in shapes)); f.close()
            extra = ["--tile-list", f.name]
        for label, exe in ([("off", off), ("on", on)] if rnd % 2 == 0 else [("on", on), ("off", off)]):
            r = subprocess.run([exe, "--backend", "cuda-hopper", "--json", "--warmup", "2",
                                "--iters", "8"] + flags(cases[name]) + extra,
                               capture_output=True, text=True, timeout=60)
            for l in r.stdout.splitlines():
                if not l.startswith("{"): continue
                j = json.loads(l)
                key = (name, j.get("q_box", "plan"), j.get("kv_box", ""))
                if j.get("ran"): times.setdefault(key, {}).setdefault(label, []).append(j["fwd_ms"])
                else: print(name, label, "did not run:", j.get("note"))
            if r.returncode: print(name, label, "rc", r.returncode, r.stderr[-300:])
        print(f"round {rnd} {name} done", flush=True)
saved = {(n, q.replace(",", "x"), kv.replace(",", "x")): s for n, sh in runs if sh[0] for q, kv, s in sh}
print(f"\n{'case':16} {'Q box / KV box':18} {'pairs':>6} {'off ms':>8} {'on ms':>8} {'off/on':>7}")
for key in sorted(times):
    t = times[key]
    if "on" not in t or "off" not in t: print(key, t); continue
    a, b = statistics.median(t["off"]), statistics.median(t["on"])
    s = saved.get(key)
    print(f"{key[0]:16} {key[1] + ' / ' + key[2]:18} {'-' if s is None else f'{s:.1f}%':>6} {a:8.3f} {b:8.3f} {a / b:7.3f}")
EOF
log "A/B rc $?"
log total
tar -czf $O/logs.tgz -C $O build.log build-off.log geometry.log gpu-skip.log gpu-tests.log racecheck.log 2>/dev/null
rm -f $O/build.log $O/build-off.log $O/geometry.log $O/gpu-skip.log $O/gpu-tests.log $O/racecheck.log
echo "---- A/B (forward, bf16, D = 128; off = -DFNA_WGSKIP_AB_OFF build of the same source)"
tail -12 $O/ab.log
