"""Random sweep over every parameter: fna forward (out, lse) and backward (q, k, v, additional KV,
through out and lse) against the float64 oracle, on every CPU backend the build can run and on
`auto` (backend=None)."""

import pytest
import torch

import fna
import oracle
from cases import make_inputs, random_case
from conftest import BASE_SEED, LONG

FUNCS = {1: fna.na1d, 2: fna.na2d, 3: fna.na3d}
CPU_BACKENDS = [b for b in fna.compiled_backends()
                if b in fna.available_backends("cpu", "float32", 1, 8)] + [None]
N_CASES = 300 if LONG else 40


def run_case(case, device, backend, backward=True):
    if backend is not None and backend not in fna.available_backends(device, case.dtype,
                                                                     case.rank, case.head_dim):
        pytest.skip(f"backend {backend} cannot run {case.dtype} head_dim {case.head_dim}")
    inputs = make_inputs(case, device, requires_grad=backward)
    q, k, v, ak, av = inputs
    snapshot = [None if t is None else t.detach().clone() for t in inputs]
    res = FUNCS[case.rank](q, k, v, **case.kwargs(), additional_keys=ak, additional_values=av,
                           return_lse=case.return_lse, backend=backend)
    out, lse = res if case.return_lse else (res, None)
    assert out.shape == (*q.shape[:-1], v.shape[-1]) and out.dtype == q.dtype
    assert out.device == q.device
    ref_inputs = [None if t is None else t.detach().cpu().double().requires_grad_()
                  for t in inputs]
    rq, rk, rv, rak, rav = ref_inputs
    ref_out, ref_lse = oracle.attention(rq, rk, rv, case.kernel_size, case.stride, case.dilation,
                                        case.is_causal, case.scale, rak, rav)
    tol = oracle.TOL[case.dtype]
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


@pytest.mark.parametrize("backend", CPU_BACKENDS, ids=lambda b: b or "auto")
@pytest.mark.parametrize("index", range(N_CASES))
def test_sweep_cpu(backend, index):
    run_case(random_case(BASE_SEED + index), "cpu", backend)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_special_shapes(rank):
    """Window = extent (self attention), window 1, even windows, stride = window (blocked),
    all causal, on odd extents."""
    ext = {1: (13,), 2: (5, 7), 3: (3, 4, 5)}[rank]
    for ks, st, dl, ca in [(ext, 1, 1, False), (1, 1, 1, False), (2, 1, 1, True),
                           (ext, ext, 1, True), (2, 2, 1, False), (1, 1, 2, True)]:
        case = random_case(BASE_SEED + 7)
        per = lambda x: tuple(x) if isinstance(x, tuple) else (x,) * rank
        case.rank, case.extent, case.layout, case.n_additional = rank, ext, "contiguous", 2
        case.kernel_size, case.stride, case.dilation = per(ks), per(st), per(dl)
        case.is_causal, case.dtype, case.return_lse = per(ca), torch.float32, True
        run_case(case, "cpu", None)
