#!/usr/bin/env python3
"""Times cuda-hopper tile shapes against the planner's cost model and refits the model.

Per public case (bench/cases.json) it asks `fna-bench --plan --json --tile-list` for the model's
view of every power-of-two Q and KV box of 128 rows (predicted time, the persistent schedule's
most loaded SM and its counts, plus the plain counts), times the planner's pick, the model's best
--top shapes, the best --counts-top shapes of the count-only model (run S6-F1's: total work over
the machine, no schedule; a control for what the new ranking might miss) and any --also shapes,
all in ONE fna-bench process per case (inputs drawn and uploaded once; --rounds rounds listed in
alternating order), time-boxed by --case-timeout (fna-bench prints each result when measured, so
a case cut short keeps what it measured). Each case's results are printed and saved as soon as
they exist. Last it fits the model's three constants,

    t = 4 * D * (unmasked / rate_unmasked + masked / rate_masked) + items * t_item

per SM, on the most loaded SM's counts (under the shipped constants), by least squares on
relative error over every timed shape, and prints per case predicted / measured / refit times,
the planner's pick against the fastest shape, and the constants for plan_sm90.h.

  python3 bench/plan_sweep.py --fna-bench build/tools/fna-bench \\
      --cases img-128,video-hunyuan,video-small --out sweep.json
  python3 bench/plan_sweep.py --fna-bench build-cpu/tools/fna-bench \\
      --from bench/sweeps/s6f1.json --from bench/sweeps/s7-img-128.json   # refit only, no GPU

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
# The count-only model of run S6-F1 (machine-wide rates, seconds per item over the machine).
COUNTS_RATES = (603e12, 505e12, 4.09e-8)


def boxes(rank):
    for e in itertools.product(range(ROW_BITS + 1), repeat=rank):
        if sum(e) == ROW_BITS:
            yield ",".join(str(1 << x) for x in e)


def tile_file(shapes):
    f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    f.write("".join(f"{q.replace('x', ',')} {kv.replace('x', ',')}\n" for q, kv in shapes))
    f.close()
    return f.name


def bench(exe, flags, extra, timeout=None):
    """fna-bench's JSON lines; on a timeout, those printed so far (and timed_out = True)."""
    cmd = [exe, *flags, *extra]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, timed_out = r.stdout, False
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    except subprocess.TimeoutExpired as e:
        out, timed_out = e.stdout or "", True
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")], timed_out


def counts_model_ms(case, p):
    """Run S6-F1's count-only model: total work over the machine, no schedule."""
    bh4d = case["B"] * case["H"] * 4 * case["D"]
    u = bh4d * p["computed_pairs"] * (1 - p["masked_fraction"])
    m = bh4d * p["computed_pairs"] * p["masked_fraction"]
    return 1e3 * (u / COUNTS_RATES[0] + m / COUNTS_RATES[1] + p["blocks"] * COUNTS_RATES[2])


def plans(exe, case, shapes):
    """fna::plan of each (q_box, kv_box) under cuda-hopper, keyed by the pair."""
    flags = case_flags(case) + ["--plan", "--json", "--backend", "cuda-hopper"]
    got, _ = bench(exe, flags, ["--tile-list", tile_file(shapes)])
    return {(p["q_box"], p["kv_box"]): p for p in got}


def lstsq(rows, ys):
    """Least squares of y ~ row . x, each row weighted by 1 / y (relative error): normal
    equations, Gaussian elimination with partial pivoting."""
    n = len(rows[0])
    w = [[v / y for v in r] for r, y in zip(rows, ys)]
    m = [[sum(a[i] * a[j] for a in w) for j in range(n)] + [sum(a[i] for a in w)]
         for i in range(n)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[r][n] / m[r][r] for r in range(n)]


def features(case, p):
    """The most loaded SM's work: seconds = features . (1 / rate_u, 1 / rate_m, t_item)."""
    d4 = 4 * case["D"]
    return [d4 * p["critical_unmasked"], d4 * p["critical_masked"], p["critical_items"]]


def time_case(args, name, case, plan_of, chosen):
    """Times the chosen shapes of one case; returns {shape: [ms per round]}."""
    ranked = sorted(plan_of, key=lambda s: plan_of[s]["predicted_ms"])
    by_counts = sorted(plan_of, key=lambda s: counts_model_ms(case, plan_of[s]))
    timed = [chosen] + ranked[:args.top] + by_counts[:args.counts_top]
    for a in args.also:
        c, _, shape = a.partition(":")
        if c == name:
            timed.append(tuple(shape.split("/")))
    timed = list(dict.fromkeys(timed))  # no duplicates, first occurrence order
    order = []
    for r in range(args.rounds):
        order += timed if r % 2 == 0 else timed[::-1]
    flags = case_flags(case)
    got, timed_out = bench(args.fna_bench, flags,
                           ["--backend", "cuda-hopper", "--json", "--warmup", str(args.warmup),
                            "--iters", str(args.iters), "--tile-list", tile_file(order)],
                           timeout=args.case_timeout)
    runs = {s: [] for s in timed}
    for j in got:
        if not j["ran"]:
            raise RuntimeError(f"{name} {j.get('q_box')}/{j.get('kv_box')}: {j.get('note')}")
        runs[(j["q_box"], j["kv_box"])].append(j["fwd_ms"])
    if timed_out:
        print(f"{name}: time box of {args.case_timeout} s hit after {len(got)} of {len(order)} "
              "runs", file=sys.stderr)
    return {s: v for s, v in runs.items() if v}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fna-bench", required=True,
                    help="fna-bench built with cuda-hopper (with --from: any build, --plan only)")
    ap.add_argument("--cases", default="seq-32k,seq-32k-blocked,img-128,video-hunyuan,"
                    "video-hunyuan-strided,video-small")
    ap.add_argument("--top", type=int, default=8, help="the model's best shapes to time")
    ap.add_argument("--counts-top", type=int, default=3,
                    help="the count-only model's best shapes to time (a control)")
    ap.add_argument("--also", action="append", default=[], metavar="CASE:Q/KV",
                    help="another shape to time, e.g. video-small:2x8x8/2x8x8")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--case-timeout", type=float, default=None, help="seconds per case")
    ap.add_argument("--from", dest="sources", action="append", default=[], metavar="JSON",
                    help="refit on measured shapes saved here (--out files, bench/sweeps/*.json) "
                         "instead of timing; a shape in several files: the last file's")
    ap.add_argument("--out", help="write every plan and timing here (JSON), case by case")
    args = ap.parse_args()
    if not os.access(args.fna_bench, os.X_OK):
        sys.exit(f"--fna-bench {args.fna_bench}: not an executable file")
    cases = {c["name"]: c for c in json.load(open(os.path.join(HERE, "cases.json")))["cases"]}

    measured = {}  # case -> {shape: [ms, ...]}
    if args.sources:
        for path in args.sources:
            for e in json.load(open(path))["shapes"]:
                measured.setdefault(e["case"], {})[(e["q_box"], e["kv_box"])] = (
                    e.get("rounds_ms") or [e["measured_ms"]])
        wanted = list(measured)
    else:
        wanted = [w for w in args.cases.split(",") if w]
    unknown = set(wanted) - set(cases)
    if unknown:
        sys.exit(f"unknown case(s) {sorted(unknown)}")

    start = time.time()
    report = []
    for name in wanted:
        case = cases[name]
        rank = len(case["grid"])
        plan_of = plans(args.fna_bench, case, [(q, kv) for q in boxes(rank) for kv in boxes(rank)])
        flags = case_flags(case) + ["--plan", "--json", "--backend", "cuda-hopper"]
        pick = bench(args.fna_bench, flags, [])[0][0]
        chosen = (pick["q_box"], pick["kv_box"])
        # The count-only model's pick: what main's planner chose before this model (run S6-F1).
        counts_pick = min(plan_of, key=lambda s: counts_model_ms(case, plan_of[s]))
        runs = measured[name] if args.sources else time_case(args, name, case, plan_of, chosen)
        fastest = min(runs, key=lambda s: statistics.median(runs[s])) if runs else None
        for s, v in runs.items():
            p = plan_of[s]
            report.append({"case": name, "q_box": s[0], "kv_box": s[1],
                           "measured_ms": statistics.median(v), "rounds_ms": v,
                           "predicted_ms": p["predicted_ms"], "imbalance": p["imbalance"],
                           "counts_ms": counts_model_ms(case, p),
                           "useful_fraction": p["useful_fraction"],
                           "masked_fraction": p["masked_fraction"], "blocks": p["blocks"],
                           "features": features(case, p), "planner": s == chosen,
                           "counts_pick": s == counts_pick, "fastest": s == fastest})
        ms = lambda s: f"{statistics.median(runs[s]):.3f} ms" if s in runs else "not timed"
        print(f"{name}: {len(runs)} shapes at {time.time() - start:.0f} s; planner "
              f"{'/'.join(chosen)} {ms(chosen)}, fastest {'/'.join(fastest or ('-',))} "
              f"{ms(fastest)}", file=sys.stderr, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"fit": None, "shapes": report}, f, indent=1)

    fit = None
    # Only the features some shape has (block-sparse cases alone have no masked pairs).
    active = [i for i in range(3) if any(e["features"][i] for e in report)]
    if active and len(report) >= len(active):
        xa = lstsq([[e["features"][i] for i in active] for e in report],
                   [e["measured_ms"] * 1e-3 for e in report])
        x = [0.0] * 3
        for i, v in zip(active, xa):
            x[i] = v
        inv = lambda v: 1 / v if v else float("nan")
        fit = {"rate_unmasked_sm": inv(x[0]), "rate_masked_sm": inv(x[1]), "t_item_sm": x[2],
               "sms": pick["sms"]}
        for e in report:
            e["refit_ms"] = 1e3 * sum(a * b for a, b in zip(e["features"], x))
    print("| case | Q box / KV box | useful | masked | imbalance | predicted ms | counts-only ms "
          "| measured ms | refit ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in wanted:
        rows = sorted((e for e in report if e["case"] == name), key=lambda e: e["measured_ms"])
        for e in rows:
            tag = ((" (planner)" if e["planner"] else "") +
                   (" (count-only pick)" if e["counts_pick"] else "") +
                   (" (fastest)" if e["fastest"] else ""))
            refit = f"{e['refit_ms']:.3f}" if fit else "-"
            print(f"| {name} | {e['q_box']} / {e['kv_box']}{tag} | {e['useful_fraction']:.3f} | "
                  f"{e['masked_fraction']:.3f} | {e['imbalance']:.3f} | {e['predicted_ms']:.3f} | "
                  f"{e['counts_ms']:.3f} | {e['measured_ms']:.3f} | {refit} |")
    for name in wanted:
        rows = [e for e in report if e["case"] == name]
        if not rows:
            continue
        best = min(rows, key=lambda e: e["measured_ms"])
        mine = [e for e in rows if e["planner"]]
        if mine:
            gap = mine[0]["measured_ms"] / best["measured_ms"] - 1
            verdict = "IS the fastest" if mine[0] is best else f"is {100 * gap:.1f}% slower"
            print(f"{name}: planner {mine[0]['q_box']}/{mine[0]['kv_box']} "
                  f"{mine[0]['measured_ms']:.3f} ms {verdict} (fastest timed "
                  f"{best['q_box']}/{best['kv_box']} {best['measured_ms']:.3f} ms)")
        else:
            print(f"{name}: planner's pick not timed")
        old = [e for e in rows if e["counts_pick"]]
        if mine and old and old[0] is not mine[0]:
            print(f"  vs the count-only model's pick (main before this model) {old[0]['q_box']}/"
                  f"{old[0]['kv_box']} {old[0]['measured_ms']:.3f} ms: "
                  f"{old[0]['measured_ms'] / mine[0]['measured_ms']:.3f}x")
    err = [abs(e["predicted_ms"] / e["measured_ms"] - 1) for e in report]
    if err:
        print(f"model as shipped: relative error median {statistics.median(err):.3f}, "
              f"max {max(err):.3f} over {len(err)} shapes")
    if fit:
        err = [abs(e["refit_ms"] / e["measured_ms"] - 1) for e in report]
        print(f"refit (per SM; x {fit['sms']} SMs machine-wide): rate_unmasked "
              f"{fit['rate_unmasked_sm'] * fit['sms'] / 1e12:.0f} TFLOP/s, rate_masked "
              f"{fit['rate_masked_sm'] * fit['sms'] / 1e12:.0f} TFLOP/s, t_item "
              f"{fit['t_item_sm']:.3e} s; relative error median {statistics.median(err):.3f}, "
              f"max {max(err):.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"fit": fit, "shapes": report}, f, indent=1)


if __name__ == "__main__":
    main()
