"""Random neighborhood-attention problems for the sweeps, and input builders."""

import dataclasses

import numpy as np
import pytest
import torch

import fna
import oracle

FUNCS = {1: fna.na1d, 2: fna.na2d, 3: fna.na3d}


@dataclasses.dataclass
class Case:
    seed: int
    rank: int
    batch: int
    extent: tuple
    kernel_size: tuple
    stride: tuple
    dilation: tuple
    is_causal: tuple
    heads_q: int
    heads_kv: int
    head_dim: int
    head_dim_v: int
    n_additional: int
    scale: object
    dtype: torch.dtype
    layout: str  # "contiguous", "qkv-unbind" (strided views of one fused tensor), "sliced"
    return_lse: bool

    def kwargs(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, dilation=self.dilation,
                    is_causal=self.is_causal, scale=self.scale)


_EXTENTS = {1: [1, 2, 3, 7, 13, 37, 64], 2: [1, 3, 5, 6, 9, 13], 3: [1, 3, 4, 5]}


def random_case(seed, head_dims=(4, 8, 16), dtypes=(torch.float32,) * 3 + (torch.float16,
                                                                          torch.bfloat16)):
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    extent, ks, st, dl, ca = [], [], [], [], []
    for _ in range(rank):
        L = int(rng.choice(_EXTENTS[rank]))
        d = int(rng.integers(1, min(3, L) + 1))
        K = int(rng.integers(1, L // d + 1))
        s = int(rng.integers(1, K + 1))
        extent.append(L), ks.append(K), st.append(s), dl.append(d)
        ca.append(bool(rng.random() < 0.3))
    heads_kv = int(rng.integers(1, 3))
    heads_q = heads_kv * int(rng.choice([1, 1, 2, 3]))
    head_dim = int(rng.choice(head_dims))
    head_dim_v = head_dim if rng.random() < 0.6 else int(rng.choice(head_dims))
    layout = str(rng.choice(["contiguous", "qkv-unbind", "sliced"]))
    if layout == "qkv-unbind" and (heads_q != heads_kv or head_dim != head_dim_v):
        layout = "sliced"
    return Case(seed=seed, rank=rank, batch=int(rng.integers(1, 3)), extent=tuple(extent),
                kernel_size=tuple(ks), stride=tuple(st), dilation=tuple(dl), is_causal=tuple(ca),
                heads_q=heads_q, heads_kv=heads_kv, head_dim=head_dim, head_dim_v=head_dim_v,
                n_additional=int(rng.integers(1, 6)) if rng.random() < 0.3 else 0,
                # An explicit scale around the default head_dim ** -0.5 (far larger scales make
                # one-hot softmaxes whose values only test rounding).
                scale=None if rng.random() < 0.7 else float(rng.uniform(0.25, 2.0) * head_dim ** -0.5),
                dtype=dtypes[int(rng.integers(0, len(dtypes)))], layout=layout,
                return_lse=bool(rng.random() < 0.5))


def make_inputs(case, device="cpu", requires_grad=False):
    """q, k, v, additional_k, additional_v as `case.layout` describes (values in [-2, 2))."""
    g = torch.Generator().manual_seed(case.seed)

    def rnd(*shape):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * 4 - 2).to(case.dtype)

    B, sp = case.batch, case.extent
    if case.layout == "qkv-unbind":
        qkv = rnd(B, *sp, 3, case.heads_q, case.head_dim).to(device)
        q, k, v = qkv.unbind(-3)
    elif case.layout == "sliced":
        # Views into larger buffers: extra heads and extra channels, so no dim is dense.
        q = rnd(B, *sp, case.heads_q + 1, case.head_dim + 3).to(device)[..., 1:, 2:-1]
        k = rnd(B, *sp, case.heads_kv + 2, case.head_dim + 1).to(device)[..., :-2, :-1]
        v = rnd(B, *sp, case.heads_kv, case.head_dim_v + 5).to(device)[..., 5:]
    else:
        q = rnd(B, *sp, case.heads_q, case.head_dim).to(device)
        k = rnd(B, *sp, case.heads_kv, case.head_dim).to(device)
        v = rnd(B, *sp, case.heads_kv, case.head_dim_v).to(device)
    ak = av = None
    if case.n_additional:
        ak = rnd(B, case.n_additional, case.heads_kv, case.head_dim).to(device)
        av = rnd(B, case.n_additional, case.heads_kv, case.head_dim_v).to(device)
    ts = [q, k, v, ak, av]
    if requires_grad:
        ts = [None if t is None else t.detach().requires_grad_() for t in ts]
    return ts


# fp32 on CUDA tensor-core backends (and `auto`, which picks them) runs as TF32.
TF32_TOL = 2e-3


def run_case(case, device, backend, backward=True):
    inputs = make_inputs(case, device, requires_grad=backward)
    q, k, v, ak, av = inputs
    snapshot = [None if t is None else t.detach().clone() for t in inputs]
    try:
        res = FUNCS[case.rank](q, k, v, **case.kwargs(), additional_keys=ak,
                               additional_values=av, return_lse=case.return_lse, backend=backend)
    except ValueError as e:
        if backend is not None and f"'backend' = '{backend}' cannot run" in str(e):
            pytest.skip(str(e))  # the backend declines this problem (e.g. Dv != D, head dim)
        raise
    out, lse = res if case.return_lse else (res, None)
    assert out.shape == (*q.shape[:-1], v.shape[-1]) and out.dtype == q.dtype
    assert out.device == q.device
    ref_inputs = [None if t is None else t.detach().cpu().double().requires_grad_()
                  for t in inputs]
    rq, rk, rv, rak, rav = ref_inputs
    ref_out, ref_lse = oracle.attention(rq, rk, rv, case.kernel_size, case.stride, case.dilation,
                                        case.is_causal, case.scale, rak, rav)
    tol = oracle.TOL[case.dtype]
    if device != "cpu" and case.dtype == torch.float32 and backend != "cuda-naive":
        tol = TF32_TOL
    err = oracle.rel_err(out.detach().cpu(), ref_out.detach())
    assert err <= tol, f"out error {err:.3g} > {tol} for {case}"
    if lse is not None:
        assert lse.dtype == torch.float32 and lse.shape == q.shape[:-1]
        err = oracle.rel_err(lse.detach().cpu(), ref_lse.detach())
        assert err <= tol, f"lse error {err:.3g} > {tol} for {case}"
    for before, t in zip(snapshot, inputs):
        assert t is None or torch.equal(before, t.detach()), f"an input was modified: {case}"
    if not backward:
        return
    g = torch.Generator().manual_seed(case.seed + 1)
    gout = torch.randn(ref_out.shape, generator=g, dtype=torch.float64)
    glse = torch.randn(ref_lse.shape, generator=g, dtype=torch.float64)
    loss = (out.double() * gout.to(device)).sum()
    ref_loss = (ref_out * gout).sum()
    if lse is not None:
        loss = loss + (lse.double() * glse.to(device)).sum()
        ref_loss = ref_loss + (ref_lse * glse).sum()
    wrt = [t for t in inputs if t is not None]
    grads = torch.autograd.grad(loss, wrt)
    ref_grads = torch.autograd.grad(ref_loss, [t for t in ref_inputs if t is not None])
    names = ["dq", "dk", "dv", "d_additional_k", "d_additional_v"]
    for name, x, gr, ref in zip(names, wrt, grads, ref_grads):
        assert gr.shape == x.shape and gr.dtype == x.dtype
        err = oracle.rel_err(gr.cpu(), ref)
        assert err <= 3 * tol, f"{name} error {err:.3g} > {3 * tol} for {case}"
