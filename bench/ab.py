#!/usr/bin/env python3
"""A/B timing of fna builds on the same problems, in one run on the GPU machine.

Runs each build's fna-bench (--json) on the public cases of bench/cases.json (--cases) and on
extra problems given as fna-bench flags (--extra), alternating the builds for --rounds rounds so
that clock and thermal drift hit every build alike, and prints the median forward (and, with
--backward, backward) time and effective TFLOP/s per build, with the ratio to the first build.

  python3 bench/ab.py --build A=build-a/tools/fna-bench --build B=build-b/tools/fna-bench \
      --backend cuda-hopper --cases seq-32k,video-hunyuan-strided \
      --extra "--extent 32768 --window 4096 --stride 512 --heads 16 --head-dim 128"

Every figure it prints belongs in bench/RESULTS.md with the commit of each build.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def case_flags(c):
    join = lambda xs: ",".join(str(int(x)) for x in xs)
    n = len(c["grid"])
    return ["--extent", join(c["grid"]), "--window", join(c["window"]),
            "--stride", join(c["stride"]), "--dilation", join(c.get("dilation", [1] * n)),
            "--causal", join(c.get("causal", [0] * n)), "--batch", str(c["B"]),
            "--heads", str(c["H"]), "--head-dim", str(c["D"]), "--dtype", c["dtype"]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="append", required=True, metavar="LABEL=PATH",
                    help="an fna-bench executable; the first is the baseline")
    ap.add_argument("--backend", default="cuda-hopper")
    ap.add_argument("--cases", default="", help="public cases, comma-separated")
    ap.add_argument("--extra", action="append", default=[], help="fna-bench problem flags")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--backward", action="store_true")
    ap.add_argument("--json-out", metavar="PATH", help="also write the medians (ms) as JSON")
    args = ap.parse_args()

    builds = [b.split("=", 1) for b in args.build]
    for label, path in builds:
        if not os.access(path, os.X_OK):
            sys.exit(f"--build {label}={path}: not an executable file")
    cases = json.load(open(os.path.join(HERE, "cases.json")))["cases"]
    wanted = [w for w in args.cases.split(",") if w]
    unknown = set(wanted) - {c["name"] for c in cases}
    if unknown:
        sys.exit(f"--cases: unknown case(s) {sorted(unknown)}")
    problems = [(c["name"], case_flags(c)) for c in cases if c["name"] in wanted]
    problems += [(e, shlex.split(e) + ["--dtype", "bf16"] * ("--dtype" not in e))
                 for e in args.extra]

    dirs = ["fwd", "bwd"] if args.backward else ["fwd"]
    times = {(p, b, d): [] for p, _ in problems for b, _ in builds for d in dirs}
    flops = {}
    for r in range(args.rounds):
        for name, flags in problems:
            order = builds if r % 2 == 0 else builds[::-1]
            for label, path in order:
                cmd = [path, "--backend", args.backend, "--json", "--warmup", "3",
                       "--iters", str(args.iters)] + flags + (["--backward"] * args.backward)
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
                if proc.returncode != 0 or not rows or not rows[-1].get("ran"):
                    note = rows[-1].get("note", "") if rows else proc.stderr.strip()[-200:]
                    print(f"{name} [{label}]: did not run: {note}", flush=True)
                    continue
                j = rows[-1]
                print(f"{name} [{label}]: " + ", ".join(
                    f"{d} {j[d + '_ms']:.3f} ms" for d in dirs if j.get(f"{d}_ms")), flush=True)
                for d in dirs:
                    if j.get(f"{d}_ms"):
                        times[(name, label, d)].append(j[f"{d}_ms"])
                        flops[(name, d)] = j[f"{d}_gflops"] * j[f"{d}_ms"] * 1e-3  # GFLOP
    print(f"\n{args.backend}: median of {args.rounds} rounds x median of {args.iters} iterations")
    print("%-44s %-4s" % ("problem", "dir") +
          "".join("%26s" % f"{label} ms (TF/s, x)" for label, _ in builds))
    for name, _ in problems:
        for d in dirs:
            base = None
            line = "%-44s %-4s" % (name[:44], d)
            for label, _ in builds:
                t = times[(name, label, d)]
                if not t:
                    line += "%26s" % "-"
                    continue
                ms = statistics.median(t)
                base = base or ms
                tf = flops[(name, d)] / ms  # GFLOP / ms = TFLOP/s
                line += "%26s" % f"{ms:.3f} ({tf:.1f}, {base / ms:.3f})"
            print(line, flush=True)
    if args.json_out:
        med = {f"{name}/{d}": {label: statistics.median(times[(name, label, d)])
                               for label, _ in builds if times[(name, label, d)]}
               for name, _ in problems for d in dirs}
        json.dump({"builds": [label for label, _ in builds], "median_ms": med},
                  open(args.json_out, "w"), indent=1)


if __name__ == "__main__":
    main()
