#!/usr/bin/env python3
"""Unfused neighborhood attention on one GPU: cuda-naive vs cuda-gemm vs cuda-fused vs dense.

NAT-like 2-D problems (grids 56x56, 28x28, 14x14, windows 7-13, D = 32, heads 2-16, batch 64-128)
and 1-D sequences (4k-16k tokens, windows 13-255), fp32 and fp16, forward pass (the published
figures are forward). The fna rows come from the C++ fna-bench (--json: CUDA events around each
call, median of --iters after --warmup); the dense row is PyTorch SDPA on the same tokens
([B, H, N, D], CUDA events, median), cuDNN for fp16 and the memory-efficient backend for fp32
(cuDNN and flash take no fp32). Prints per-problem ms and the average speedup of gemm over naive
and of fused over naive (mean of the per-problem ratios, as +percent) beside the published
figures. About 3 minutes on an H100.

  python3 bench/unfused.py --fna-bench build-device/tools/fna-bench [--out unfused.json]
"""

import argparse
import datetime
import json
import math
import subprocess
import sys
import time

BACKENDS = ("cuda-naive", "cuda-gemm", "cuda-fused")
# name, grid, window, dilation, batch, heads (D = 32 everywhere)
PROBLEMS = [
    ("nat-56-k7", (56, 56), 7, 1, 64, 2),
    ("nat-28-k7", (28, 28), 7, 1, 128, 4),
    ("nat-14-k7", (14, 14), 7, 1, 128, 8),
    ("dinat-56-k7-d4", (56, 56), 7, 4, 64, 2),
    ("nat-56-k13", (56, 56), 13, 1, 64, 2),
    ("nat-28-k13", (28, 28), 13, 1, 64, 4),
    ("nat-14-k13", (14, 14), 13, 1, 128, 16),
    ("seq-4k-k13", (4096,), 13, 1, 8, 4),
    ("seq-4k-k63", (4096,), 63, 1, 8, 4),
    ("seq-8k-k127", (8192,), 127, 1, 4, 4),
    ("seq-16k-k31", (16384,), 31, 1, 2, 4),
    ("seq-16k-k255", (16384,), 255, 1, 2, 4),
]
HEAD_DIM = 32
# Published speedups over naive (percent): gemm 1-D / 2-D in fp32 and half; fused 1-D.
PUBLISHED = {("gemm", "fp32", 1): 895, ("gemm", "fp32", 2): 272, ("gemm", "fp16", 1): 496,
             ("gemm", "fp16", 2): 113, ("fused", "fp32", 1): 1607, ("fused", "fp16", 1): 1607}


def log(*a):
    print(*a, flush=True)


def run_fna_bench(path, prob, dtype, warmup, iters):
    name, grid, window, dil, batch, heads = prob
    n = len(grid)
    cmd = [path, "--extent", ",".join(map(str, grid)), "--window", str(window),
           "--dilation", str(dil), "--batch", str(batch), "--heads", str(heads),
           "--head-dim", str(HEAD_DIM), "--dtype", dtype, "--backend", ",".join(BACKENDS),
           "--json", "--warmup", str(warmup), "--iters", str(iters)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    rows = {}
    for line in proc.stdout.splitlines():
        if line.strip().startswith("{"):
            j = json.loads(line)
            rows[j["backend"]] = j
    if not rows:
        raise RuntimeError(f"fna-bench exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return {b: (rows[b]["fwd_ms"] if rows.get(b, {}).get("ran") else None) for b in BACKENDS}


def dense_ms(torch, prob, dtype, iters):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    name, grid, window, dil, batch, heads = prob
    n = math.prod(grid)
    dt = {"fp16": torch.float16, "fp32": torch.float32}[dtype]
    be = SDPBackend.CUDNN_ATTENTION if dtype == "fp16" else SDPBackend.EFFICIENT_ATTENTION
    q, k, v = (torch.randn(batch, heads, n, HEAD_DIM, device="cuda", dtype=dt) for _ in range(3))
    F = torch.nn.functional
    times = []
    with torch.no_grad(), sdpa_kernel([be]):
        for i in range(2 + iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            F.scaled_dot_product_attention(q, k, v)
            b.record()
            b.synchronize()
            if i >= 2:
                times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fna-bench", default="build-device/tools/fna-bench", metavar="PATH")
    ap.add_argument("--dtypes", default="fp32,fp16")
    ap.add_argument("--problems", default="", help="comma-separated names (default: all)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--deadline-s", type=float, default=230,
                    help="skip the remaining problems after this many seconds")
    ap.add_argument("--out", default="", help="JSON file for every number")
    args = ap.parse_args()
    probs = [p for p in PROBLEMS if not args.problems or p[0] in args.problems.split(",")]
    torch = None
    if not args.no_dense:
        try:
            import torch as torch_mod
            torch = torch_mod if torch_mod.cuda.is_available() else None
        except ImportError:
            pass
    device = torch.cuda.get_device_name() if torch else "?"
    log(f"device: {device}; D = {HEAD_DIM}; forward ms, median of {args.iters}; dense = SDPA "
        "(fp16 cuDNN, fp32 memory-efficient)" + ("" if torch else " [not available]"))
    t0 = time.time()
    results = []
    for dtype in args.dtypes.split(","):
        log(f"\n{dtype}: {'problem':<16} {'naive':>9} {'gemm':>9} {'fused':>9} {'dense':>9}"
            f"  {'gemm/naive':>10} {'fused/naive':>11}")
        for prob in probs:
            if time.time() - t0 > args.deadline_s:
                log(f"  {prob[0]:<16} skipped: past --deadline-s")
                continue
            row = {"problem": prob[0], "rank": len(prob[1]), "dtype": dtype}
            try:
                row.update(run_fna_bench(args.fna_bench, prob, dtype, args.warmup, args.iters))
            except Exception as e:  # one failure must not hide the other problems
                log(f"  {prob[0]:<16} fna-bench failed: {e}")
                continue
            row["dense"] = dense_ms(torch, prob, dtype, args.iters) if torch else None
            results.append(row)
            f = lambda x: f"{x:9.3f}" if x else "        -"
            ratio = lambda a, b: f"{row[b] / row[a]:9.2f}x" if row[a] and row[b] else "         -"
            log(f"      {prob[0]:<16} {f(row['cuda-naive'])} {f(row['cuda-gemm'])} "
                f"{f(row['cuda-fused'])} {f(row['dense'])}  {ratio('cuda-gemm', 'cuda-naive')} "
                f"{ratio('cuda-fused', 'cuda-naive'):>11}")
    log("\naverage speedup over naive (mean of per-problem ratios, as +percent), vs published:")
    for dtype in args.dtypes.split(","):
        for rank in (1, 2):
            for fam in ("gemm", "fused"):
                ratios = [r["cuda-naive"] / r[f"cuda-{fam}"] for r in results
                          if r["dtype"] == dtype and r["rank"] == rank and r["cuda-naive"]
                          and r[f"cuda-{fam}"]]
                if not ratios:
                    continue
                pct = 100 * (sum(ratios) / len(ratios) - 1)
                pub = PUBLISHED.get((fam, dtype, rank))
                log(f"  {dtype} {rank}-D {fam:>5} over naive: {pct:+7.0f}% over {len(ratios)} "
                    f"problems   published: {'+%d%%' % pub if pub else '-'}")
    log(f"\ntotal {time.time() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                       "device": device, "head_dim": HEAD_DIM, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
