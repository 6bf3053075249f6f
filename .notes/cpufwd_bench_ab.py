#!/usr/bin/env python3
"""Interleaved fna-bench A/B on the issue-2 bar problem (session 5, cpufwd).
Usage: cpufwd_bench_ab.py ROUNDS NAME=FNA_BENCH ...; alternates the binaries (order rotating),
prints one row per run (load before, reference ms, cpu ms, GF/s, ratio) and the medians."""
import json, os, statistics as st, subprocess, sys, time
rounds, bins = int(sys.argv[1]), [a.split("=", 1) for a in sys.argv[2:]]
args = ["--extent", "64,64", "--window", "13,13", "--batch", "1", "--heads", "8", "--head-dim", "64",
        "--dtype", "fp32", "--backend", "reference,cpu", "--warmup", "2", "--iters", "10",
        "--verify", "--json"]
rows = {n: [] for n, _ in bins}
print("| binary | run (UTC) | load before | reference fwd ms | cpu fwd ms (GF/s) | fwd speedup | max error |")
print("|---|---|---:|---:|---:|---:|---:|")
for r in range(rounds):
    order = bins[r % len(bins):] + bins[:r % len(bins)]
    for name, b in order:
        load = open("/proc/loadavg").read().split()[0]
        t = time.strftime("%H:%M:%S", time.gmtime())
        out = subprocess.run([b] + args, capture_output=True, text=True).stdout
        recs = {}
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("{"):
                j = json.loads(line)
                recs[j.get("backend")] = j
        ref, cpu = recs["reference"], recs["cpu"]
        rms, cms = ref["fwd_ms"], cpu["fwd_ms"]
        rows[name].append((rms, cms, cpu.get("fwd_gflops", 0)))
        print(f"| {name} | {t} | {load} | {rms:.1f} | {cms:.2f} ({cpu.get('fwd_gflops', 0):.1f}) | "
              f"{rms / cms:.1f}x | {cpu.get('max_error', '')} |", flush=True)
for name, _ in bins:
    x = rows[name]
    rm, cm = st.median(v[0] for v in x), st.median(v[1] for v in x)
    print(f"| **{name} median** ({len(x)} runs) | | | **{rm:.1f}** | **{cm:.2f}** | **{rm / cm:.1f}x** | |")
