#!/usr/bin/env python3
"""Summarize an ncu source-level profile (warp stall sampling per SASS instruction).

Make the CSV on the GPU machine (one launch of the kernel, sections that sample stalls):
  ncu --section SourceCounters --section WarpStateStats --import-source no \
      -k regex:fwd_kernel_sm90 --launch-count 1 -f -o prof <fna-bench ...>
  ncu --import prof.ncu-rep --page source --print-source sass --csv > prof.csv
then here:
  bench/ncu_sass.py prof.csv                    # stall reasons, top instructions, landmarks
  bench/ncu_sass.py prof.csv --regions 0,716,2800,4087 --names prologue,first,loop
Instruction indices (first column of every listing) are positions in the CSV, so regions are
chosen after reading the landmark listing (barrier waits, wgmma, stores, calls).
"""
import argparse
import csv
import re

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"
LANDMARK = re.compile(r"BAR|SYNCS|WARPGROUP|STG|EXIT|CALL|RET|HGMMA|UTMA|SETMAXREG")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=30, help="instructions with the most samples")
    ap.add_argument("--min", type=int, default=300, help="landmark listing: also rows >= MIN")
    ap.add_argument("--regions", help="comma-separated instruction indices bounding regions")
    ap.add_argument("--names", help="comma-separated region names")
    a = ap.parse_args()

    rows = list(csv.reader(open(a.csv)))
    header = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    ix = {h: i for i, h in enumerate(rows[header])}
    data = rows[header + 1:]
    stalls = [h for h in rows[header] if h.startswith("stall_") and "Not Issued" not in h]
    n = [int(r[ix[SAMPLES]]) for r in data]
    total = sum(n)
    pct = lambda x: 100.0 * x / max(total, 1)

    print(f"{total} samples over {len(data)} instructions")
    by_reason = {s[6:]: sum(int(r[ix[s]]) for r in data) for s in stalls}
    print("stall reasons:", ", ".join(f"{k} {pct(v):.1f}%" for k, v in
                                       sorted(by_reason.items(), key=lambda kv: -kv[1])[:10]))

    if a.regions:
        bounds = [int(x) for x in a.regions.split(",")]
        names = a.names.split(",") if a.names else [str(i) for i in range(len(bounds) - 1)]
        for lo, hi, name in zip(bounds, bounds[1:], names):
            s = sum(n[lo:hi])
            print(f"region {name:16s} [{lo},{hi}) {s:8d} {pct(s):5.1f}%")
        return

    print(f"\ntop {a.top} instructions (index, samples, executed, sass, top stall reasons)")
    for i in sorted(range(len(data)), key=lambda i: -n[i])[:a.top]:
        r = data[i]
        top = sorted(((int(r[ix[s]]), s[6:]) for s in stalls), reverse=True)[:2]
        print(f"{i:6d} {n[i]:7d} {pct(n[i]):5.2f}% {r[ix[EXECUTED]]:>9} "
              f"{r[ix['Source']].strip()[:64]:64s} {top}")

    print("\nlandmarks (samples since the previous landmark, then the row itself)")
    seg = 0
    for i, r in enumerate(data):
        seg += n[i]
        src = r[ix["Source"]].strip()
        if LANDMARK.search(src) or n[i] >= a.min:
            print(f"{i:6d} seg {seg:7d} ({pct(seg):4.1f}%) n {n[i]:6d} ex {r[ix[EXECUTED]]:>9} "
                  f"{src[:80]}")
            seg = 0


if __name__ == "__main__":
    main()
