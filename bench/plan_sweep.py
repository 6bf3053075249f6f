#!/usr/bin/env python3
"""Times cuda-hopper tile shapes against the planner's cost model and refits the model.

For each public case (bench/cases.json) it asks `fna-bench --plan --json --tile-list` for the
counts of every power-of-two Q and KV box of 128 rows (computed pairs, masked fraction, Q boxes),
picks the shapes the model ranks best under a few masked-tile penalties (so that a model that is
off still has its true optimum in the set), times them in one fna-bench process per case (the same
inputs, rounds in alternating order) and fits the model's three constants,

    t = B * Hq * 4 * D * (unmasked / rate_unmasked + masked / rate_masked) + q_boxes * t_item,

by least squares on relative error over every timed shape of every case. It prints, per case,
each shape's predicted (current model), measured and refitted time, and marks the planner's pick
and the fastest shape; then the fitted constants (for src/cuda/fused/sm90/plan_sm90.h).

  python3 bench/plan_sweep.py --fna-bench build/tools/fna-bench \\
      --cases img-128,video-hunyuan,video-small --out sweep.json

Every figure it prints belongs in bench/RESULTS.md with the commit of the build.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ab import case_flags

HERE = os.path.dirname(os.path.abspath(__file__))
ROW_BITS = 7  # Q and KV tiles of 2^7 = 128 rows (FwdBlockShapeSm90)
# The current model (plan_sm90.h kHopperCostModel): the penalties below scale its masked rate.
RATE_UNMASKED, T_ITEM = 511e12, 4.93e-8
PENALTIES = (1.0, 1.15, 1.3, 1.46)  # masked-tile cost / unmasked-tile cost


def boxes(rank):
    for e in itertools.product(range(ROW_BITS + 1), repeat=rank):
        if sum(e) == ROW_BITS:
            yield ",".join(str(1 << x) for x in e)


def bench(exe, flags, extra):
    r = subprocess.run([exe, *flags, *extra], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join([exe, *flags, *extra])}: exit {r.returncode}: "
                           f"{r.stderr.strip()[-400:]}")
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


def tile_file(shapes):
    f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    f.write("".join(f"{q} {kv}\n" for q, kv in shapes))
    f.close()
    return f.name


def solve3(a, b):
    """Solves the 3x3 system a x = b (Gaussian elimination with partial pivoting)."""
    m = [row[:] + [v] for row, v in zip(a, b)]
    for c in range(3):
        p = max(range(c, 3), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(3):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[r][3] / m[r][r] for r in range(3)]


def fit(points):
    """Least squares of t ~ u * x0 + m * x1 + items * x2, each row weighted by 1 / t."""
    rows = [([u / t, m / t, n / t], 1.0) for u, m, n, t in points]
    ata = [[sum(r[i] * r[j] for r, _ in rows) for j in range(3)] for i in range(3)]
    atb = [sum(r[i] * y for r, y in rows) for i in range(3)]
    return solve3(ata, atb)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fna-bench", required=True, help="an fna-bench built with cuda-hopper")
    ap.add_argument("--cases", default="seq-32k,seq-32k-blocked,img-128,video-hunyuan,"
                    "video-hunyuan-strided,video-small")
    ap.add_argument("--per-penalty", type=int, default=4,
                    help="shapes taken from the top of each penalty's ranking")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", help="write every plan and timing here (JSON)")
    args = ap.parse_args()
    if not os.access(args.fna_bench, os.X_OK):
        sys.exit(f"--fna-bench {args.fna_bench}: not an executable file")
    cases = {c["name"]: c for c in json.load(open(os.path.join(HERE, "cases.json")))["cases"]}
    wanted = [w for w in args.cases.split(",") if w]
    unknown = set(wanted) - set(cases)
    if unknown:
        sys.exit(f"--cases: unknown case(s) {sorted(unknown)}")

    start = time.time()
    plan_flags = ["--plan", "--json", "--backend", "cuda-hopper"]
    report, points = [], []
    for name in wanted:
        c = cases[name]
        flags = case_flags(c)
        rank = len(c["grid"])
        shapes = [(q, kv) for q in boxes(rank) for kv in boxes(rank)]
        plans = bench(args.fna_bench, flags, plan_flags + ["--tile-list", tile_file(shapes)])
        chosen = bench(args.fna_bench, flags, plan_flags)[0]
        bh4d = c["B"] * c["H"] * 4 * c["D"]
        for p in plans:
            p["unmasked"] = bh4d * p["computed_pairs"] * (1 - p["masked_fraction"])
            p["masked"] = bh4d * p["computed_pairs"] * p["masked_fraction"]
        picked = {(chosen["q_box"], chosen["kv_box"])}
        for pen in PENALTIES:
            key = lambda p: ((p["unmasked"] + pen * p["masked"]) / RATE_UNMASKED +
                             p["blocks"] * T_ITEM)
            picked |= {(p["q_box"], p["kv_box"]) for p in sorted(plans, key=key)[:args.per_penalty]}
        by_box = {(p["q_box"], p["kv_box"]): p for p in plans}
        timed = sorted(picked)
        runs = {s: [] for s in timed}
        for r in range(args.rounds):
            order = timed if r % 2 == 0 else timed[::-1]
            listed = [(q.replace("x", ","), kv.replace("x", ",")) for q, kv in order]
            out = bench(args.fna_bench, flags,
                        ["--backend", "cuda-hopper", "--json", "--warmup", str(args.warmup),
                         "--iters", str(args.iters), "--tile-list", tile_file(listed)])
            for j in out:
                if not j["ran"]:
                    raise RuntimeError(f"{name} {j.get('q_box')}/{j.get('kv_box')}: {j['note']}")
                runs[(j["q_box"], j["kv_box"])].append(j["fwd_ms"])
        for s in timed:
            p = by_box[s]
            ms = statistics.median(runs[s])
            points.append((p["unmasked"], p["masked"], p["blocks"], ms * 1e-3))
            report.append({"case": name, "q_box": s[0], "kv_box": s[1], "measured_ms": ms,
                           "rounds_ms": runs[s], "predicted_ms": p["predicted_ms"],
                           "useful_fraction": p["useful_fraction"],
                           "masked_fraction": p["masked_fraction"], "blocks": p["blocks"],
                           "computed_pairs": p["computed_pairs"], "unmasked": p["unmasked"],
                           "masked": p["masked"],
                           "planner": s == (chosen["q_box"], chosen["kv_box"])})
        # Each case's measurements as soon as they exist: a sweep cut short by a time limit
        # still leaves them (stderr and --out).
        for e in report:
            if e["case"] == name:
                print(f"{name} {e['q_box']} / {e['kv_box']}: {e['measured_ms']:.3f} ms "
                      f"(rounds {e['rounds_ms']})", file=sys.stderr)
        print(f"{name}: timed {len(timed)} shapes at {time.time() - start:.0f} s", file=sys.stderr,
              flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"fit": None, "shapes": report}, f, indent=1)

    x = fit(points)
    ru, rm, ti = 1 / x[0], 1 / x[1], x[2]
    for e in report:
        e["refit_ms"] = 1e3 * (e["unmasked"] * x[0] + e["masked"] * x[1] + e["blocks"] * x[2])
    print("| case | Q box / KV box | useful | masked | predicted ms | measured ms | refit ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in wanted:
        rows = [e for e in report if e["case"] == name]
        best = min(e["measured_ms"] for e in rows)
        for e in sorted(rows, key=lambda e: e["measured_ms"]):
            tag = (" (planner)" if e["planner"] else "") + (" (fastest)" if e["measured_ms"] == best else "")
            print(f"| {name} | {e['q_box']} / {e['kv_box']}{tag} | {e['useful_fraction']:.3f} | "
                  f"{e['masked_fraction']:.3f} | {e['predicted_ms']:.3f} | {e['measured_ms']:.3f} | "
                  f"{e['refit_ms']:.3f} |")
    err = [abs(e["refit_ms"] / e["measured_ms"] - 1) for e in report]
    print(f"refit: rate_unmasked {ru / 1e12:.0f} TFLOP/s, rate_masked {rm / 1e12:.0f} TFLOP/s, "
          f"t_item {ti:.3e} s; relative error median {statistics.median(err):.3f}, "
          f"max {max(err):.3f} over {len(err)} shapes")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"fit": {"rate_unmasked": ru, "rate_masked": rm, "t_item": ti},
                       "shapes": report}, f, indent=1)


if __name__ == "__main__":
    main()
