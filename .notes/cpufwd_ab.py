#!/usr/bin/env python3
"""Interleaved A/B of harness binaries (session 5, cpufwd). Usage: cpufwd_ab.py ROUNDS THREADS BIN...
Each round runs every binary once (order rotating); per binary prints the min and median of the
per-run best call and the median of the per-run medians (process CPU ms and wall ms)."""
import os, statistics as st, subprocess, sys
rounds, threads, bins = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
res = {b: [] for b in bins}
env = dict(os.environ, OMP_NUM_THREADS=threads)
for r in range(rounds):
    order = bins[r % len(bins):] + bins[:r % len(bins)]
    for b in order:
        f = subprocess.run([b, os.environ.get("ITERS", "8")], env=env, capture_output=True, text=True).stdout.split()
        res[b].append((float(f[4]), float(f[2]), float(f[9]), float(f[7])))
for b in bins:
    x = res[b]
    print(f"{b:24s} cpu best-min {min(v[0] for v in x):6.2f} best-med {st.median(v[0] for v in x):6.2f} "
          f"med-med {st.median(v[1] for v in x):6.2f} | wall best-min {min(v[2] for v in x):6.2f} "
          f"med-med {st.median(v[3] for v in x):6.2f} (n={len(x)})")
