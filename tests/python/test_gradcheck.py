"""Finite-difference gradient checks in float64.

fna computes in fp32/fp16/bf16 storage, so a float64 gradcheck of fna alone is impossible (it
rejects float64 inputs; see test_errors). What is checked instead, all with
torch.autograd.gradcheck in float64 on tiny problems:
  1. the oracle's own gradients (it is the reference of the sweeps);
  2. fna's backward (its whole autograd formula: q, k, v, additional KV, and the path through lse)
     as the analytic Jacobian of the *float64 oracle's* forward: a Function whose forward is the
     oracle and whose backward calls fna (fp32, then widened). gradcheck's numerical Jacobian is
     then float64 finite differences of the exact function, and any error in fna's gradient
     formula shows up; the tolerance only has to absorb fp32 rounding of the gradient values.
fna's forward itself is checked against the same oracle in test_sweep.
"""

import pytest
import torch

import fna
import oracle

FUNCS = {1: fna.na1d, 2: fna.na2d, 3: fna.na3d}

PROBLEMS = [
    # rank, extent, kernel, stride, dilation, causal, Hq, Hkv, D, Dv, n_additional
    (1, (7,), (3,), (1,), (2,), (False,), 2, 1, 3, 2, 0),
    (1, (6,), (4,), (2,), (1,), (True,), 1, 1, 2, 3, 2),
    (2, (4, 5), (2, 3), (1, 2), (2, 1), (False, True), 2, 2, 2, 2, 1),
    (3, (3, 3, 4), (2, 3, 2), (2, 1, 1), (1, 1, 2), (True, False, False), 2, 1, 2, 2, 0),
]


def make(problem, seed):
    rank, ext, ks, st, dl, ca, hq, hkv, d, dv, nadd = problem
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
    q, k, v = r(1, *ext, hq, d), r(1, *ext, hkv, d), r(1, *ext, hkv, dv)
    ak, av = (r(1, nadd, hkv, d), r(1, nadd, hkv, dv)) if nadd else (None, None)
    return (q, k, v, ak, av), dict(kernel_size=ks, stride=st, dilation=dl, is_causal=ca)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_oracle_gradcheck(problem):
    inputs, kw = make(problem, 0)
    given = [t for t in inputs if t is not None]

    def f(*ts):
        it = iter(ts)
        q, k, v, ak, av = [None if t is None else next(it) for t in inputs]
        return oracle.attention(q, k, v, kw["kernel_size"], kw["stride"], kw["dilation"],
                                kw["is_causal"], 0.7, ak, av)

    assert torch.autograd.gradcheck(f, given, eps=1e-6, atol=1e-8, rtol=1e-6)


class _OracleForwardFnaBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rank, kw, q, k, v, ak, av):
        ctx.rank, ctx.kw = rank, kw
        ctx.save_for_backward(q, k, v, ak, av)
        return oracle.attention(q, k, v, kw["kernel_size"], kw["stride"], kw["dilation"],
                                kw["is_causal"], kw["scale"], ak, av)

    @staticmethod
    def backward(ctx, gout, glse):
        saved = ctx.saved_tensors
        x32 = [None if t is None else t.detach().float().requires_grad_() for t in saved]
        with torch.enable_grad():
            out, lse = FUNCS[ctx.rank](*x32[:3], **ctx.kw, additional_keys=x32[3],
                                       additional_values=x32[4], return_lse=True)
            wrt = [t for t in x32 if t is not None]
            grads = iter(torch.autograd.grad((out, lse), wrt, (gout.float(), glse.float())))
        return (None, None) + tuple(None if t is None else next(grads).double() for t in x32)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_fna_backward_gradcheck(problem):
    inputs, kw = make(problem, 1)
    kw["scale"] = 0.7
    given = [t for t in inputs if t is not None]

    def f(*ts):
        it = iter(ts)
        full = [None if t is None else next(it) for t in inputs]
        return _OracleForwardFnaBackward.apply(problem[0], kw, *full)

    # atol/rtol: fp32 rounding of gradients of size ~1 (fna accumulates in fp64 or fp32).
    assert torch.autograd.gradcheck(f, given, eps=1e-6, atol=2e-5, rtol=1e-4)
