#!/usr/bin/env python3
"""Interleaved A/B of fna-bench `cpu` forward runs that differ in binary and/or environment
(session 5, cpufwd). Usage: cpufwd_env_ab.py ROUNDS THREADS NAME=BIN[:VAR=VAL,...] ...
Prints per configuration the min and median over runs of the fna-bench median (ms)."""
import json, os, statistics as st, subprocess, sys
rounds, threads = int(sys.argv[1]), sys.argv[2]
cfgs = []
for a in sys.argv[3:]:
    name, rest = a.split("=", 1)
    b, _, envs = rest.partition(":")
    env = dict(os.environ, OMP_NUM_THREADS=threads)
    for kv in filter(None, envs.split(",")):
        k, v = kv.split("=", 1)
        env[k] = v
    cfgs.append((name, b, env))
args = ["--extent", "64,64", "--window", "13,13", "--batch", "1", "--heads", "8", "--head-dim", "64",
        "--dtype", "fp32", "--backend", "cpu", "--warmup", "2", "--iters", os.environ.get("ITERS", "10"), "--json"]
res = {c[0]: [] for c in cfgs}
for r in range(rounds):
    order = cfgs[r % len(cfgs):] + cfgs[:r % len(cfgs)]
    for name, b, env in order:
        out = subprocess.run([b] + args, env=env, capture_output=True, text=True).stdout
        res[name].append(json.loads(out.strip().splitlines()[-1])["fwd_ms"])
for name, _, _ in cfgs:
    x = res[name]
    print(f"{name:12s} min {min(x):6.2f}  median {st.median(x):6.2f}  runs {' '.join(f'{v:.1f}' for v in x)}")
