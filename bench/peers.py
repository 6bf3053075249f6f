#!/usr/bin/env python3
"""Neighborhood attention against its peers on one GPU, in one run (DESIGN.md sections 6 and 8).

For every case of bench/cases.json (or those chosen by --cases) it times, forward and backward:
  cudnn  PyTorch SDPA, cuDNN backend, dense attention on the same tokens ([B, H, N, D])
  flash  PyTorch SDPA, flash backend, dense
  flex   FlexAttention (compiled) with the NA mask of DESIGN.md section 2 and a block mask
  fna    this project, through `import fna` (or the C++ fna-bench with --fna-bench PATH)
and prints ms, effective TFLOP/s (attended pairs only), speedup over cuDNN dense and percent of
the speed of light (speedup / (1 / density)). All numbers go to a JSON file (--out).

`python3 bench/peers.py --check-mask` runs only the CPU self-check of the mask (needs numpy only).
"""

import argparse
import datetime
import json
import math
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = ("cudnn", "flash", "flex", "fna")


def log(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------------------------------------
# The neighborhood (DESIGN.md section 2), scalar form: pairs and FLOP counts.


class Axis:
    def __init__(self, extent, window, stride=1, dilation=1, causal=False):
        self.extent, self.window, self.stride = int(extent), int(window), int(stride)
        self.dilation, self.causal = int(dilation), bool(causal)
        if not (1 <= self.stride <= self.window and self.dilation >= 1 and
                self.window * self.dilation <= self.extent):
            raise ValueError(f"axis {vars(self)} breaks 1 <= s <= K, d >= 1, K * d <= L")


def axes_of(case):
    n = len(case["grid"])
    dil = case.get("dilation", [1] * n)
    causal = case.get("causal", [False] * n)
    return [Axis(case["grid"][r], case["window"][r], case["stride"][r], dil[r], causal[r])
            for r in range(n)]


def axis_window(a, x):
    """[start, end) of group coordinates attended by the query at x, and its group."""
    g, i = x % a.dilation, x // a.dilation
    lg = -(-(a.extent - g) // a.dilation)
    k, s = a.window, a.stride
    if a.causal:
        lead = min((i // s) * s + s - 1, lg - 1)
        return max(lead - k + 1, 0), min(i + 1, lg), g
    left = k // 2
    right = k - 1 - left
    lead = min((i // s) * s + s // 2, lg - 1)
    start = max(lead - left, 0)
    if lead + right >= lg:
        start = lg - k
    return start, start + k, g


def axis_pairs(a):
    """Sum over the queries of one axis of their window sizes."""
    total = 0
    for x in range(a.extent):
        start, end, _ = axis_window(a, x)
        total += end - start
    return total


def case_geometry(case):
    axes = axes_of(case)
    tokens = math.prod(a.extent for a in axes)
    pairs = math.prod(axis_pairs(a) for a in axes)  # per (batch, head)
    b, h, d = case["B"], case["H"], case["D"]
    fwd = 4.0 * b * h * pairs * d
    dense_fwd = 4.0 * b * h * tokens * tokens * d
    return {"tokens": tokens, "pairs": pairs, "density": pairs / (tokens * tokens),
            "flops_fwd": fwd, "flops_bwd": 2.5 * fwd,
            "dense_flops_fwd": dense_fwd, "dense_flops_bwd": 2.5 * dense_fwd}


# ---------------------------------------------------------------------------------------------
# The same neighborhood as a vectorized mask: works on torch tensors (FlexAttention's mask_mod,
# dense reference masks) and on numpy arrays (the CPU self-check).


def _axis_attends(a, x, y, where):
    vmin = lambda u, v: where(u < v, u, v)
    vmax = lambda u, v: where(u > v, u, v)
    d, k, s = a.dilation, a.window, a.stride
    g, i = x % d, x // d
    lg = (a.extent - g + d - 1) // d
    if a.causal:
        lead = vmin((i // s) * s + (s - 1), lg - 1)
        start = vmax(lead - (k - 1), 0)
        end = vmin(i + 1, lg)
    else:
        left = k // 2
        right = k - 1 - left
        lead = vmin((i // s) * s + s // 2, lg - 1)
        start = vmax(lead - left, 0)
        start = where(lead + right >= lg, lg - k, start)
        end = start + k
    j = y // d
    return (y % d == g) & (j >= start) & (j < end)


def na_mask_mod(axes, where=None):
    """mask_mod(b, h, q_idx, kv_idx) over row-major flattened tokens of the grid.

    `where` is torch.where (the default) or numpy.where; the body is branch-free on values."""
    if where is None:
        import torch
        where = torch.where
    inner = [math.prod(a.extent for a in axes[r + 1:]) for r in range(len(axes))]

    def mask_mod(b, h, q_idx, kv_idx):
        m = None
        for r, a in enumerate(axes):
            x = (q_idx // inner[r]) % a.extent
            y = (kv_idx // inner[r]) % a.extent
            t = _axis_attends(a, x, y, where)
            m = t if m is None else m & t
        return m

    return mask_mod


def brute_force_mask(axes):
    """Dense [N, N] bool mask from the definition, by enumeration per query (numpy).

    Written apart from the vectorized mask: window start as a clamp into [0, Lg - K] (equal to
    the definition's two-step rule since K <= Lg) and key sets enumerated explicitly."""
    import numpy as np
    shape = [a.extent for a in axes]
    n = math.prod(shape)
    mask = np.zeros((n, n), dtype=bool)
    per_axis = []
    for a in axes:
        rows = []
        for x in range(a.extent):
            g, i = x % a.dilation, x // a.dilation
            lg = len(range(g, a.extent, a.dilation))
            if a.causal:
                lead = min(i - i % a.stride + a.stride - 1, lg - 1)
                lo, hi = max(lead - a.window + 1, 0), min(i + 1, lg)
            else:
                lead = min(i - i % a.stride + a.stride // 2, lg - 1)
                lo = min(max(lead - a.window // 2, 0), lg - a.window)
                hi = lo + a.window
            rows.append([j * a.dilation + g for j in range(lo, hi)])
        per_axis.append(rows)
    for q in range(n):
        qc = np.unravel_index(q, shape)
        keys = np.zeros(shape, dtype=bool)
        idx = np.ix_(*[per_axis[r][qc[r]] for r in range(len(axes))])
        keys[idx] = True
        mask[q] = keys.reshape(-1)
    return mask


def random_axes(rng, max_tokens):
    while True:
        rank = rng.randint(1, 3)
        axes = []
        for _ in range(rank):
            extent = rng.randint(1, 13)
            dil = rng.randint(1, max(1, extent // 2)) if rng.random() < 0.4 else 1
            window = rng.randint(1, extent // dil)
            stride = rng.randint(1, window) if rng.random() < 0.5 else 1
            axes.append(Axis(extent, window, stride, dil, rng.random() < 0.3))
        if math.prod(a.extent for a in axes) <= max_tokens:
            return axes


def check_mask(problems=300, seed=0):
    """The vectorized mask and the pair counter against the brute-force mask, on CPU."""
    import numpy as np
    rng = random.Random(seed)
    for t in range(problems):
        axes = random_axes(rng, 300)
        n = math.prod(a.extent for a in axes)
        ref = brute_force_mask(axes)
        qi = np.arange(n).reshape(n, 1)
        ki = np.arange(n).reshape(1, n)
        got = na_mask_mod(axes, np.where)(None, None, qi, ki)
        desc = [vars(a) for a in axes]
        if not np.array_equal(got, ref):
            raise AssertionError(f"mask mismatch (seed {seed}, problem {t}): {desc}")
        if math.prod(axis_pairs(a) for a in axes) != int(ref.sum()):
            raise AssertionError(f"pair count mismatch (seed {seed}, problem {t}): {desc}")
        if not ref.any(axis=1).all():
            raise AssertionError(f"a query attends nothing (seed {seed}, problem {t}): {desc}")
    return problems


# ---------------------------------------------------------------------------------------------
# Timing.


class Timer:
    """CUDA-event timing: warm-up, a probe run to size the loop, then the median of many runs."""

    def __init__(self, torch, target_ms=300.0, min_iters=3, max_iters=100):
        self.torch, self.target_ms = torch, target_ms
        self.min_iters, self.max_iters = min_iters, max_iters

    def _one(self, fn, setup):
        if setup:
            setup()  # queued before the start event: not timed
        ev0 = self.torch.cuda.Event(enable_timing=True)
        ev1 = self.torch.cuda.Event(enable_timing=True)
        ev0.record()
        fn()
        ev1.record()
        ev1.synchronize()
        return ev0.elapsed_time(ev1)

    def __call__(self, fn, setup=None):
        if setup:
            setup()
        fn()  # first call: compilation, handle creation, autotuning
        self.torch.cuda.synchronize()
        probe = self._one(fn, setup)
        # Short kernels get more warm-up so clocks settle; long ones are warm after one run.
        for _ in range(int(min(10, 50.0 / max(probe, 1e-3)))):
            if setup:
                setup()
            fn()
        n = int(max(self.min_iters, min(self.max_iters, self.target_ms / max(probe, 1e-3))))
        times = sorted(self._one(fn, setup) for _ in range(n))
        return {"ms": times[len(times) // 2], "iters": n, "min_ms": times[0], "max_ms": times[-1]}


# ---------------------------------------------------------------------------------------------
# Peers: an attention callable over [B, H, N, D] (SDPA, flex) or [B, *grid, H, D] (fna) tensors.
# Each forward returns a new output; each backward runs on a graph built by an untimed forward
# just before it (no retain_graph: compiled graphs may donate their saved buffers) and returns
# fresh gradients.


def input_sets(torch, shape, dtype, count, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    sets = []
    for _ in range(count):
        sets.append([torch.randn(shape, device="cuda", dtype=dtype, generator=g).requires_grad_()
                     for _ in range(3)])
    return sets


def rotation_count(case, l2_bytes):
    # Inputs smaller than a few L2s would be timed from cache: rotate through enough sets.
    one = 3 * case["B"] * case["H"] * math.prod(case["grid"]) * case["D"] * 2
    return int(min(8, max(1, math.ceil(3 * l2_bytes / one))))


class Runner:
    """Forward/backward closures over rotating input sets for one attention callable."""

    def __init__(self, torch, attn, sets):
        self.torch, self.attn, self.sets = torch, attn, sets
        self.i = 0
        self.graph = None
        self.dout = None

    def forward(self):
        q, k, v = self.sets[self.i % len(self.sets)]
        self.i += 1
        with self.torch.no_grad():
            return self.attn(q, k, v)

    def backward_setup(self):
        q, k, v = self.sets[self.i % len(self.sets)]
        self.i += 1
        out = self.attn(q, k, v)
        if self.dout is None or self.dout.shape != out.shape:
            self.dout = self.torch.randn_like(out)
        self.graph = (out, (q, k, v))

    def backward(self):
        out, inputs = self.graph
        self.graph = None
        return self.torch.autograd.grad(out, inputs, self.dout)


def sdpa_attn(torch, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    be = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
    F = torch.nn.functional

    def attn(q, k, v):
        with sdpa_kernel([be]):
            return F.scaled_dot_product_attention(q, k, v)

    return attn


_block_mask_compiled = None


def make_block_mask(torch, axes, n):
    from torch.nn.attention.flex_attention import create_block_mask
    global _block_mask_compiled
    if _block_mask_compiled is None:
        # Compiled so that the N x N mask is reduced to blocks without being materialized.
        _block_mask_compiled = torch.compile(create_block_mask)
    return _block_mask_compiled(na_mask_mod(axes), None, None, n, n, device="cuda")


_flex_compiled = None


def flex_attn(torch, axes, n):
    global _flex_compiled
    from torch.nn.attention.flex_attention import flex_attention
    if _flex_compiled is None:
        # Every case is a new mask and block mask: let dynamo keep one graph per case.
        for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                     "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 256)
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    block_mask = make_block_mask(torch, axes, n)
    fa = _flex_compiled

    def attn(q, k, v):
        return fa(q, k, v, block_mask=block_mask)

    attn.block_mask = block_mask
    return attn


def fna_attn(fna, case):
    rank = len(case["grid"])
    fn = getattr(fna, f"na{rank}d")
    n = rank
    kw = dict(kernel_size=tuple(case["window"]), stride=tuple(case["stride"]),
              dilation=tuple(case.get("dilation", [1] * n)),
              is_causal=tuple(bool(c) for c in case.get("causal", [False] * n)))

    def attn(q, k, v):
        return fn(q, k, v, **kw)

    return attn


def masked_reference(torch, q, k, v, mask):
    """Dense float32 attention under a bool mask ([B, H, N, D] inputs)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    F = torch.nn.functional
    with sdpa_kernel([SDPBackend.MATH]):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)


def rel_error(out, ref):
    out, ref = out.float(), ref.float()
    if not bool(out.isfinite().all()):
        return float("inf")
    return float((out - ref).abs().max() / max(1.0, float(ref.abs().max())))


VERIFY_CASES = [
    {"name": "verify-3d", "grid": [6, 10, 12], "window": [3, 4, 5], "stride": [1, 2, 3],
     "dilation": [2, 1, 2], "causal": [False, True, False], "B": 2, "H": 3, "D": 64},
    {"name": "verify-2d", "grid": [20, 26], "window": [7, 8], "stride": [3, 1],
     "dilation": [1, 3], "causal": [False, False], "B": 1, "H": 2, "D": 64},
]


def dense_mask(torch, axes, n):
    idx = torch.arange(n, device="cuda")
    return na_mask_mod(axes)(None, None, idx[:, None], idx[None, :])


def verify_flex(torch, tol=3e-2):
    """FlexAttention with the NA block mask against dense masked SDPA (bf16 vs fp32)."""
    results = {}
    for vc in VERIFY_CASES[:1]:  # one compile: the 3-D case has stride, dilation and causal
        axes = axes_of(vc)
        n = math.prod(vc["grid"])
        shape = (vc["B"], vc["H"], n, vc["D"])
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        out = flex_attn(torch, axes, n)(q, k, v)
        ref = masked_reference(torch, q, k, v, dense_mask(torch, axes, n))
        err = rel_error(out, ref)
        results[vc["name"]] = err
        log(f"verify flex {vc['name']}: error {err:.2e} (tolerance {tol:g}) "
            f"{'ok' if err <= tol else 'FAILED'}")
    return results


def probe_fna(torch):
    """(module or None, reason): importable, and runs a small CUDA problem correctly."""
    try:
        import fna
    except Exception as e:  # any import failure means n/a, with the reason
        return None, f"import fna failed: {type(e).__name__}: {e}"
    vc = VERIFY_CASES[1]
    try:
        axes = axes_of(vc)
        n = math.prod(vc["grid"])
        shape = (vc["B"], *vc["grid"], vc["H"], vc["D"])
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        out = fna_attn(fna, vc)(q, k, v)
        to_bhnd = lambda t: t.reshape(vc["B"], n, vc["H"], -1).transpose(1, 2)
        ref = masked_reference(torch, to_bhnd(q), to_bhnd(k), to_bhnd(v),
                               dense_mask(torch, axes, n))
        err = rel_error(to_bhnd(out), ref)
    except Exception as e:
        return None, f"fna has no working CUDA path: {type(e).__name__}: {e}"
    if not err <= 3e-2:
        return None, f"fna CUDA output wrong on {vc['name']}: error {err:.2e}"
    log(f"verify fna {vc['name']}: error {err:.2e} ok")
    return fna, ""


def run_fna_bench(path, case, backends, backward=True, extra=()):
    """fna numbers from the C++ fna-bench (--json): {backend: {fwd_ms, bwd_ms} or note}."""
    n = len(case["grid"])
    join = lambda xs: ",".join(str(int(x)) for x in xs)
    cmd = [path, "--extent", join(case["grid"]), "--window", join(case["window"]),
           "--stride", join(case["stride"]), "--dilation", join(case.get("dilation", [1] * n)),
           "--causal", join(case.get("causal", [0] * n)), "--batch", str(case["B"]),
           "--heads", str(case["H"]), "--head-dim", str(case["D"]), "--dtype", "bf16",
           "--backend", ",".join(backends), "--json", "--warmup", "3", "--iters", "20"]
    if backward:
        cmd.append("--backward")
    cmd += list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rows = {}
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            j = json.loads(line)
            rows[j["backend"]] = j
    if not rows:
        raise RuntimeError(f"fna-bench exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return rows


# ---------------------------------------------------------------------------------------------
# Reporting.


def fill_metrics(entry, geo, dense_ms):
    """Adds TFLOP/s, speedup over cuDNN dense and percent of the speed of light."""
    for direction in ("fwd", "bwd"):
        r = entry.get(direction)
        if not r or r.get("ms") is None:
            continue
        ms = r["ms"]
        r["eff_tflops"] = geo[f"flops_{direction}"] / (ms * 1e9)
        r["dense_equiv_tflops"] = geo[f"dense_flops_{direction}"] / (ms * 1e9)
        base = dense_ms.get(direction)
        if base:
            r["speedup_vs_cudnn"] = base / ms
            r["pct_sol"] = 100.0 * r["speedup_vs_cudnn"] * geo["density"]


def fmt(x, spec):
    width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
    return "-".rjust(int(width or 0)) if x is None else format(x, spec)


def print_case_table(name, geo, entries):
    log(f"\n{name}: tokens {geo['tokens']}, density {geo['density']:.4f}, "
        f"speed of light {1 / geo['density']:.2f}x, fwd {geo['flops_fwd'] / 1e12:.3f} TFLOP "
        f"(dense {geo['dense_flops_fwd'] / 1e12:.3f})")
    log(f"  {'peer':<14}{'dir':<5}{'ms':>10}{'eff TF/s':>10}{'dense TF/s':>11}"
        f"{'x cuDNN':>9}{'% SoL':>8}  note")
    for peer, e in entries.items():
        for direction in ("fwd", "bwd"):
            r = e.get(direction) or {}
            dense_tf = r.get("dense_equiv_tflops") if peer in ("cudnn", "flash") else None
            log(f"  {peer:<14}{direction:<5}{fmt(r.get('ms'), '10.3f')}"
                f"{fmt(r.get('eff_tflops'), '10.1f')}{fmt(dense_tf, '11.1f')}"
                f"{fmt(r.get('speedup_vs_cudnn'), '9.2f')}{fmt(r.get('pct_sol'), '8.1f')}"
                f"  {r.get('note', e.get('note', ''))}")


def print_summary(report):
    log("\nsummary (ms fwd/bwd; x = speedup over cuDNN dense, forward)")
    peers = []
    for c in report["cases"]:
        for p in c["results"]:
            if p not in peers:
                peers.append(p)
    log(f"{'case':<24}{'SoL':>7}" + "".join(f"{p:>22}" for p in peers))
    for c in report["cases"]:
        cells = []
        for p in peers:
            e = c["results"].get(p, {})
            f, b = e.get("fwd") or {}, e.get("bwd") or {}
            if f.get("ms") is None:
                cells.append(f"{'n/a':>22}")
                continue
            x = f.get("speedup_vs_cudnn")
            cells.append(f"{f['ms']:>8.2f}/{fmt(b.get('ms'), '<7.2f')} {fmt(x, '5.2f')}x")
        log(f"{c['name']:<24}{1 / c['geometry']['density']:>6.1f}x" + "".join(cells))


# ---------------------------------------------------------------------------------------------


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=HERE, timeout=10).stdout.strip() or None
    except Exception:
        return None


def time_peer(torch, timer, attn, sets, want_bwd):
    runner = Runner(torch, attn, sets)
    out = {"fwd": timer(runner.forward)}
    if want_bwd:
        try:
            out["bwd"] = timer(runner.backward, setup=runner.backward_setup)
        except Exception as e:  # keep the forward numbers; say why the backward has none
            out["bwd"] = {"note": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            log(f"  backward FAILED {out['bwd']['note']}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases-file", default=os.path.join(HERE, "cases.json"))
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"subset of {','.join(PEERS)}")
    ap.add_argument("--fna-bench", default="", metavar="PATH",
                    help="take fna numbers from this fna-bench executable (--json) instead of "
                         "the Python package")
    ap.add_argument("--fna-bench-backends", default="cuda-fused",
                    help="backends for --fna-bench, comma-separated")
    ap.add_argument("--fna-bench-autotune", action="store_true",
                    help="also time cuda-hopper's forward with --autotune (Options::autotune: "
                         "the fastest of the cost model's top tile shapes, tuned in the warm-up), "
                         "reported as fna:cuda-hopper+autotune")
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--no-verify", action="store_true", help="skip the flex/fna checks")
    ap.add_argument("--check-mask", action="store_true", help="only the CPU mask self-check")
    ap.add_argument("--target-ms", type=float, default=300.0, help="timed time per measurement")
    ap.add_argument("--deadline-s", type=float, default=0,
                    help="skip remaining work after this many seconds (0: none)")
    ap.add_argument("--out", default=os.path.join(os.environ["OUT"], "peers.json")
                    if os.environ.get("OUT") else "peers.json")
    ap.add_argument("--commit", default="", help="commit to record (default: git rev-parse)")
    args = ap.parse_args()
    t_start = time.time()

    n_checked = check_mask()
    log(f"mask self-check: vectorized mask and pair counts equal brute force on {n_checked} "
        f"random problems (rank 1-3, stride, dilation, causal)")
    if args.check_mask:
        return 0

    with open(args.cases_file) as f:
        cases = json.load(f)["cases"]
    if args.cases:
        wanted = args.cases.split(",")
        unknown = set(wanted) - {c["name"] for c in cases}
        if unknown:
            ap.error(f"--cases: unknown {sorted(unknown)}; known: {[c['name'] for c in cases]}")
        cases = [c for c in cases if c["name"] in wanted]
    peers = [p for p in args.peers.split(",") if p]
    if set(peers) - set(PEERS):
        ap.error(f"--peers: unknown {sorted(set(peers) - set(PEERS))}; known {PEERS}")

    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.cuda.get_device_properties(0)
    l2 = getattr(dev, "L2_cache_size", 50 << 20)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "commit": args.commit or git_commit(), "command": " ".join([os.path.basename(sys.argv[0])]
                                                                    + sys.argv[1:]),
        "flop_convention": "forward 4*B*H*pairs*D, backward 2.5x; dense uses pairs = N^2",
        "verify": {}, "cases": []}
    log(f"device {report['device']}, torch {report['torch']}, CUDA {report['cuda']}, "
        f"cuDNN {report['cudnn']}, commit {report['commit']}")

    fna_mod, fna_reason = None, ""
    if "fna" in peers:
        if args.fna_bench:
            if not (os.path.isfile(args.fna_bench) and os.access(args.fna_bench, os.X_OK)):
                fna_reason = f"--fna-bench {args.fna_bench}: not an executable file"
        else:
            fna_mod, fna_reason = probe_fna(torch)
        if fna_reason:
            log(f"fna: n/a ({fna_reason})")
        report["fna_source"] = args.fna_bench or "python package fna"
    if "flex" in peers and not args.no_verify:
        try:
            report["verify"]["flex"] = verify_flex(torch)
        except Exception as e:
            report["verify"]["flex"] = f"failed: {type(e).__name__}: {e}"
            log(f"verify flex failed: {type(e).__name__}: {e}")

    timer = Timer(torch, target_ms=args.target_ms)
    dense_cache = {}  # dense timings depend only on (B, H, N, D): shared by same-token cases
    for ci, case in enumerate(cases):
        geo = case_geometry(case)
        axes = axes_of(case)
        b, h, d, n = case["B"], case["H"], case["D"], geo["tokens"]
        sets_count = rotation_count(case, l2)
        entries = {}
        log(f"\n[{time.time() - t_start:6.1f}s] case {case['name']} ({ci + 1}/{len(cases)}), "
            f"{sets_count} input set(s)")
        for peer in peers:
            if args.deadline_s and time.time() - t_start > args.deadline_s:
                entries[peer] = {"note": "skipped: --deadline-s reached"}
                log(f"  {peer}: skipped (deadline)")
                continue
            key = (peer, b, h, n, d)
            if peer in ("cudnn", "flash") and key in dense_cache:
                entries[peer] = json.loads(json.dumps(dense_cache[key]))
                entries[peer]["note"] = "same tokens as an earlier case: reused"
                log(f"  {peer}: reused dense timing")
                continue
            t0 = time.time()
            try:
                if peer == "fna" and fna_reason:
                    entries[peer] = {"note": f"n/a: {fna_reason}"}
                    continue
                if peer == "fna" and args.fna_bench:
                    rows = run_fna_bench(args.fna_bench, case, args.fna_bench_backends.split(","),
                                         backward=not args.no_backward)
                    if args.fna_bench_autotune:
                        tuned = run_fna_bench(args.fna_bench, case, ["cuda-hopper"],
                                              backward=False, extra=["--autotune"])
                        rows.update({f"{be}+autotune": j for be, j in tuned.items()})
                    for be, j in rows.items():
                        name = f"fna:{be}"
                        if not j.get("ran"):
                            entries[name] = {"note": f"n/a: {j.get('note', 'did not run')}"}
                            continue
                        entries[name] = {"fwd": {"ms": j["fwd_ms"]},
                                         "bwd": {"ms": j["bwd_ms"]} if j.get("bwd_ms") else None,
                                         "note": "from fna-bench"}
                    continue
                grid_layout = peer == "fna"
                shape = (b, *case["grid"], h, d) if grid_layout else (b, h, n, d)
                sets = input_sets(torch, shape, torch.bfloat16, sets_count, seed=1234 + ci)
                if peer in ("cudnn", "flash"):
                    attn = sdpa_attn(torch, peer)
                elif peer == "flex":
                    attn = flex_attn(torch, axes, n)
                    bm = attn.block_mask
                    log(f"  flex block mask: sparsity {bm.sparsity():.1f}% "
                        f"(block {bm.BLOCK_SIZE}), built in {time.time() - t0:.1f}s")
                else:
                    attn = fna_attn(fna_mod, case)
                entries[peer] = time_peer(torch, timer, attn, sets, not args.no_backward)
                if peer in ("cudnn", "flash"):
                    dense_cache[key] = entries[peer]
            except Exception as e:
                msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                entries[peer] = {"note": f"failed: {msg}"}
                log(f"  {peer}: FAILED {msg}")
            finally:
                sets = attn = None
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            if "fwd" in entries.get(peer, {}):
                f, bw = entries[peer]["fwd"], entries[peer].get("bwd") or {}
                log(f"  {peer}: fwd {f['ms']:.3f} ms, bwd {fmt(bw.get('ms'), '.3f')} ms "
                    f"({time.time() - t0:.1f}s incl. compile/warm-up)")
        dense_ms = {dr: (entries.get("cudnn", {}).get(dr) or {}).get("ms") for dr in ("fwd", "bwd")}
        for e in entries.values():
            fill_metrics(e, geo, dense_ms)
        print_case_table(case["name"], geo, entries)
        report["cases"].append({**case, "geometry": geo, "results": entries})
        with open(args.out, "w") as f:  # rewritten per case: a cut-off run still leaves data
            json.dump(report, f, indent=1)

    print_summary(report)
    log(f"\nwrote {args.out} ({time.time() - t_start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
