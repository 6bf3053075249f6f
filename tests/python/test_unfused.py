"""The unfused ops fna.na{1,2,3}d_qk / na{1,2,3}d_av (docs/unfused.md) against a float64 torch
oracle built from the independent per-axis windows of oracle.axis_keys (DESIGN.md section 2):
forward, autograd gradients (query, key, rpb, attn, value), the composition
softmax(qk) -> av == fna.na{1,2,3}d, errors, torch.library.opcheck, torch.compile and NumPy.
"""

import itertools

import numpy as np
import pytest
import torch

import fna
import oracle

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
QK = {1: fna.na1d_qk, 2: fna.na2d_qk, 3: fna.na3d_qk}
AV = {1: fna.na1d_av, 2: fna.na2d_av, 3: fna.na3d_av}
NA = {1: fna.na1d, 2: fna.na2d, 3: fna.na3d}

# (extent, kernel_size, stride, dilation, is_causal, heads_q, heads_kv, head_dim, head_dim_v)
PROBLEMS = [
    ((13,), (5,), (1,), (1,), (False,), 2, 2, 4, 4),
    ((13,), (4,), (2,), (2,), (False,), 2, 1, 3, 5),
    ((11,), (4,), (3,), (1,), (True,), 2, 2, 4, 4),
    ((5, 7), (3, 4), (1, 2), (1, 1), (False, False), 4, 2, 4, 3),
    ((7, 6), (3, 2), (3, 1), (2, 3), (False, False), 2, 2, 3, 3),
    ((6, 5), (3, 3), (2, 1), (1, 1), (True, False), 2, 2, 4, 4),
    ((3, 4, 5), (2, 3, 3), (1, 2, 3), (1, 1, 1), (False, False, False), 2, 2, 4, 2),
    ((4, 3, 6), (2, 3, 2), (2, 1, 1), (2, 1, 2), (False, True, True), 2, 1, 3, 3),
]


def _ids(p):
    extent, ks, st, dl, ca = p[:5]
    return f"L{extent}-K{ks}-s{st}-d{dl}-c{tuple(int(c) for c in ca)}-H{p[5]}/{p[6]}"


def slot_tables(extent, ks, st, dl, ca):
    """Per query token: key token of each slot, slot validity and flat bias index, from the oracle
    windows (independent of fna)."""
    per_axis = []
    for L, K, s, d, c in zip(extent, ks, st, dl, ca):
        rows = []
        for x in range(L):
            keys = oracle.axis_keys(L, K, s, d, c, x)
            start, i = keys[0] // d, x // d
            slots = []
            for off in range(K):
                j = start + off
                valid = j * d + x % d in keys
                slots.append((j * d + x % d if valid else 0, valid, j - i + K - 1))
            rows.append(slots)
        per_axis.append(rows)
    T, W = int(np.prod(extent)), int(np.prod(ks))
    key = np.zeros((T, W), dtype=np.int64)
    valid = np.zeros((T, W), dtype=bool)
    bias = np.zeros((T, W), dtype=np.int64)
    for t, xs in enumerate(itertools.product(*[range(L) for L in extent])):
        for w, offs in enumerate(itertools.product(*[range(K) for K in ks])):
            k_tok, b_idx, ok = 0, 0, True
            for r, (x, off) in enumerate(zip(xs, offs)):
                y, v, rel = per_axis[r][x][off]
                ok = ok and v
                k_tok = k_tok * extent[r] + y
                b_idx = b_idx * (2 * ks[r] - 1) + rel
            key[t, w], valid[t, w], bias[t, w] = k_tok, ok, b_idx
    return torch.from_numpy(key), torch.from_numpy(valid), torch.from_numpy(bias)


def oracle_qk(q, k, ks, st, dl, ca, rpb=None):
    B, *extent, Hq, D = q.shape
    Hkv = k.shape[-2]
    key, valid, bias = slot_tables(extent, ks, st, dl, ca)
    T, W = key.shape
    qf = q.double().reshape(B, T, Hq, D)
    kf = k.double().reshape(B, T, Hkv, D).repeat_interleave(Hq // Hkv, dim=2)
    kg = kf[:, key]  # [B, T, W, Hq, D]
    attn = torch.einsum("bthd,btwhd->bthw", qf, kg)
    if rpb is not None:
        attn = attn + rpb.double().reshape(Hq, -1)[:, bias].permute(1, 0, 2).unsqueeze(0)
    attn = attn.masked_fill(~valid[None, :, None, :], float("-inf"))
    return attn.reshape(B, *extent, Hq, W)


def oracle_av(attn, v, ks, st, dl, ca):
    B, *extent, Hq, W = attn.shape
    Hkv, Dv = v.shape[-2:]
    key, valid, _ = slot_tables(extent, ks, st, dl, ca)
    T = key.shape[0]
    a = attn.double().reshape(B, T, Hq, W).masked_fill(~valid[None, :, None, :], 0.0)
    vf = v.double().reshape(B, T, Hkv, Dv).repeat_interleave(Hq // Hkv, dim=2)
    out = torch.einsum("bthw,btwhd->bthd", a, vf[:, key])
    return out.reshape(B, *extent, Hq, Dv)


def rel_err_masked(x, ref):
    """rel_err where -inf positions must match exactly."""
    inf = torch.isinf(ref)
    if not torch.equal(torch.isinf(x.double()) & (x.double() < 0), inf):
        return float("inf")
    return oracle.rel_err(x.double().masked_fill(inf, 0), ref.masked_fill(inf, 0))


TOL = {torch.float32: 2e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def make_inputs(p, dtype, device, seed):
    extent, ks, st, dl, ca, hq, hkv, d, dv = p
    g = torch.Generator().manual_seed(seed)
    B = 2
    rnd = lambda *s: (torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1)
    q = (2 * rnd(B, *extent, hq, d)).to(dtype).to(device)
    k = (2 * rnd(B, *extent, hkv, d)).to(dtype).to(device)
    v = rnd(B, *extent, hkv, dv).to(dtype).to(device)
    rpb = None if any(ca) else rnd(hq, *[2 * K - 1 for K in ks]).to(dtype).to(device)
    return q, k, v, rpb


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("p", PROBLEMS, ids=_ids)
def test_forward_and_gradients_match_oracle(p, dtype, device):
    extent, ks, st, dl, ca = p[:5]
    rank = len(extent)
    q, k, v, rpb = make_inputs(p, dtype, device, seed=len(extent) * 100 + ks[0])
    leaves = [t.clone().requires_grad_() for t in (q, k, v) + ((rpb,) if rpb is not None else ())]
    ql, kl, vl = leaves[:3]
    rl = leaves[3] if rpb is not None else None
    attn = QK[rank](ql, kl, ks, st, dl, ca, rpb=rl)
    assert attn.dtype == dtype and attn.shape == (*q.shape[:-1], int(np.prod(ks)))
    ref = oracle_qk(q.cpu(), k.cpu(), ks, st, dl, ca, None if rpb is None else rpb.cpu())
    assert rel_err_masked(attn.cpu(), ref) <= TOL[dtype]
    # Gradients of qk (upstream gradient everywhere, including the -inf slots, which must be
    # ignored) and of av on softmax weights.
    g = torch.Generator().manual_seed(5)
    g_attn = (torch.rand(attn.shape, generator=g, dtype=torch.float64) * 2 - 1)
    attn.backward(g_attn.to(dtype).to(device))
    o_leaves = [t.cpu().double().requires_grad_() for t in (q, k) + ((rpb,) if rpb is not None
                                                                      else ())]
    o_attn = oracle_qk(o_leaves[0], o_leaves[1], ks, st, dl, ca,
                       o_leaves[2] if rpb is not None else None)
    fin = torch.isfinite(o_attn)
    (o_attn.masked_fill(~fin, 0) * g_attn.to(dtype).double()).sum().backward()
    for got, want in zip([ql, kl] + ([rl] if rl is not None else []), o_leaves):
        assert oracle.rel_err(got.grad.cpu(), want.grad) <= 3 * TOL[dtype]

    weights = torch.softmax(ref, dim=-1).to(dtype).to(device).requires_grad_()
    out = AV[rank](weights, vl, ks, st, dl, ca)
    w_o = weights.detach().cpu().double().requires_grad_()
    v_o = v.cpu().double().requires_grad_()
    out_ref = oracle_av(w_o, v_o, ks, st, dl, ca)
    assert oracle.rel_err(out.cpu(), out_ref) <= TOL[dtype]
    g_out = (torch.rand(out.shape, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    out.backward(g_out.to(device))
    (out_ref * g_out.double()).sum().backward()
    assert oracle.rel_err(weights.grad.cpu(), w_o.grad) <= 3 * TOL[dtype]
    assert oracle.rel_err(vl.grad.cpu(), v_o.grad) <= 3 * TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", PROBLEMS, ids=_ids)
def test_softmax_composition_equals_fused(p, device):
    extent, ks, st, dl, ca = p[:5]
    rank = len(extent)
    q, k, v, _ = make_inputs(p, torch.float32, device, seed=7)
    scale = q.shape[-1] ** -0.5
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    attn = QK[rank](leaves[0] * scale, leaves[1], ks, st, dl, ca)
    out = AV[rank](attn.softmax(-1), leaves[2], ks, st, dl, ca)
    fused = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = NA[rank](*fused, ks, st, dl, ca)
    assert oracle.rel_err(out, ref.detach()) <= 2e-5
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(device)
    out.backward(g)
    ref.backward(g)
    for a, b in zip(leaves, fused):
        assert oracle.rel_err(a.grad, b.grad) <= 1e-4


def test_attn_dtype_float32_with_bf16_inputs():
    p = PROBLEMS[3]
    extent, ks, st, dl, ca = p[:5]
    q, k, v, rpb = make_inputs(p, torch.bfloat16, "cpu", seed=11)
    attn = fna.na2d_qk(q, k, ks, st, dl, ca, rpb=rpb.float(), attn_dtype=torch.float32)
    assert attn.dtype == torch.float32
    ref = oracle_qk(q, k, ks, st, dl, ca, rpb.float())
    assert rel_err_masked(attn, ref) <= 2e-4  # bf16 inputs are exact; fp32 accumulation only
    out = fna.na2d_av(attn.softmax(-1), v, ks, st, dl, ca)  # fp32 weights, bf16 values
    assert out.dtype == torch.bfloat16


def test_numpy_forward():
    p = PROBLEMS[0]
    extent, ks, st, dl, ca = p[:5]
    q, k, v, rpb = make_inputs(p, torch.float32, "cpu", seed=13)
    attn = fna.na1d_qk(q.numpy(), k.numpy(), ks, rpb=rpb.numpy(), attn_dtype=np.float32)
    assert isinstance(attn, np.ndarray) and attn.dtype == np.float32
    assert rel_err_masked(torch.from_numpy(attn), oracle_qk(q, k, ks, st, dl, ca, rpb)) <= 2e-4
    w = torch.softmax(torch.from_numpy(attn), -1)
    out = fna.na1d_av(w.numpy(), v.numpy(), ks)
    assert isinstance(out, np.ndarray)
    assert oracle.rel_err(out, oracle_av(w, v, ks, st, dl, ca)) <= 2e-4


def test_errors_are_clear():
    q = torch.randn(1, 8, 6, 2, 4)
    with pytest.raises(ValueError, match=r"rpb was given with is_causal = \(True, False\)"):
        fna.na2d_qk(q, q, 3, is_causal=(True, False), rpb=torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match=r"argument 'rpb': shape \[2, 3, 3\] does not match the "
                                         r"expected \[2, 5, 5\]"):
        fna.na2d_qk(q, q, 3, rpb=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"fna.na2d_qk: query has shape \(1, 6, 2, 4\) \(rank 4\)"):
        fna.na2d_qk(q[:, 0], q[:, 0], 3)
    with pytest.raises(TypeError, match=r"attn_dtype"):
        fna.na2d_qk(q, q, 3, attn_dtype=torch.float16)
    with pytest.raises(ValueError, match=r"argument 'attn': shape \[1, 8, 6, 2, 8\] does not "
                                         r"match the expected \[1, 8, 6, 2, 9\]"):
        fna.na2d_av(torch.zeros(1, 8, 6, 2, 8), q, 3)
    with pytest.raises(TypeError, match=r"argument 'attn': dtype bf16: must be fp32 or v's dtype"):
        fna.na2d_av(torch.zeros(1, 8, 6, 2, 9, dtype=torch.bfloat16), q.half(), 3)
    with pytest.raises(ValueError, match=r"kernel_size"):
        fna.na2d_qk(q, q, (3, 3, 3))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    from fna import unfused
    q = torch.randn(2, 5, 6, 2, 4, device=device)
    rpb = torch.randn(2, 5, 5, device=device, requires_grad=True)
    ks, st, dl, ca = [3, 3], [1, 2], [1, 1], [False, False]
    qr, kr = q.clone().requires_grad_(), q.clone().requires_grad_()
    torch.library.opcheck(unfused._na_qk, (qr, kr, rpb, ks, st, dl, ca, False))
    attn = torch.rand(2, 5, 6, 2, 9, device=device, requires_grad=True)
    torch.library.opcheck(unfused._na_av, (attn, q.clone().requires_grad_(), ks, st, dl, ca))


def test_torch_compile_fullgraph():
    q = torch.randn(1, 9, 8, 2, 4, requires_grad=True)
    rpb = torch.randn(2, 5, 5, requires_grad=True)

    def layer(q, rpb):
        attn = fna.na2d_qk(q * 0.5, q, 3, dilation=(2, 1), rpb=rpb)
        return fna.na2d_av(attn.softmax(-1), q, 3, dilation=(2, 1))

    eager = layer(q, rpb)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")(q, rpb)
    assert torch.allclose(eager, compiled)
    compiled.sum().backward()
    assert rpb.grad is not None and torch.isfinite(rpb.grad).all()
