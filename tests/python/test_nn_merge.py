"""fna.nn modules and fna.merge_attentions (values and gradients)."""

import pytest
import torch

import fna
import fna.nn
import oracle


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_module_matches_oracle(rank):
    torch.manual_seed(rank)
    cls = {1: fna.nn.NeighborhoodAttention1D, 2: fna.nn.NeighborhoodAttention2D,
           3: fna.nn.NeighborhoodAttention3D}[rank]
    extent = {1: (11,), 2: (5, 6), 3: (3, 4, 5)}[rank]
    m = cls(12, 3, kernel_size=3, stride=(2,) * rank, dilation=1, is_causal=(True,) + (False,) * (rank - 1),
            qkv_bias=True, qk_scale=0.4)
    x = torch.randn(2, *extent, 12, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape

    x64 = x.detach().double().requires_grad_()
    m64 = cls(12, 3, 3, 2, 1, (True,) + (False,) * (rank - 1), qk_scale=0.4).double()
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    qkv = m64.qkv(x64).reshape(2, *extent, 3, 3, 4)
    ref, _ = oracle.attention(*qkv.unbind(-3), (3,) * rank, (2,) * rank, (1,) * rank,
                              (True,) + (False,) * (rank - 1), 0.4)
    ref = m64.proj(ref.reshape(2, *extent, 12))
    assert oracle.rel_err(y.detach(), ref.detach()) <= 2e-4

    g = torch.randn_like(ref)
    (y.double() * g).sum().backward()
    (ref * g).sum().backward()
    assert oracle.rel_err(x.grad, x64.grad) <= 6e-4
    for (name, p), p64 in zip(m.named_parameters(), m64.parameters()):
        assert oracle.rel_err(p.grad, p64.grad) <= 6e-4, name


def test_module_repr_and_dropout():
    m = fna.nn.NeighborhoodAttention2D(32, 4, (7, 5), dilation=(1, 2), proj_drop=0.1,
                                       qkv_bias=False)
    assert "kernel_size=[7, 5]" in repr(m) and m.qkv.bias is None
    m.eval()
    x = torch.randn(1, 14, 10, 32)
    assert torch.equal(m(x), m(x))


def _dense(q, k, v, scale):
    s = torch.einsum("bxhd,bnhd->bhxn", q.float(), k.float()) * scale
    lse = torch.logsumexp(s, -1)
    out = torch.einsum("bhxn,bnhd->bxhd", torch.softmax(s, -1), v.float())
    return out.to(q.dtype), lse.transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_equals_additional_kv(dtype):
    """merge(NA, dense attention over extra tokens) == NA with additional KV, gradients included:
    the gradient reaches q and k through lse."""
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g).to(dtype).requires_grad_()
    q, k, v = mk(2, 5, 6, 4, 8), mk(2, 5, 6, 2, 8), mk(2, 5, 6, 2, 8)
    ak, av = mk(2, 3, 2, 8), mk(2, 3, 2, 8)
    kw = dict(kernel_size=(3, 5), dilation=(1, 1), is_causal=(False, True))
    full, full_lse = fna.na2d(q, k, v, **kw, additional_keys=ak, additional_values=av,
                              return_lse=True)
    o1, l1 = fna.na2d(q, k, v, **kw, return_lse=True)
    rep = lambda t: t.repeat_interleave(2, dim=2)
    o2, l2 = _dense(q.flatten(1, 2), rep(ak), rep(av), 8 ** -0.5)
    out, lse = fna.merge_attentions([o1, o2.reshape(o1.shape)], [l1, l2.reshape(l1.shape)])
    tol = oracle.TOL[dtype]
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert oracle.rel_err(out.detach(), full.detach()) <= tol
    assert oracle.rel_err(lse.detach(), full_lse.detach()) <= tol
    gout = torch.randn(out.shape, generator=g)
    wrt = [q, k, v, ak, av]
    ref = torch.autograd.grad((full.float() * gout).sum(), wrt)
    got = torch.autograd.grad((out.float() * gout).sum(), wrt)
    for name, a, b in zip("q k v ak av".split(), got, ref):
        assert oracle.rel_err(a, b) <= 3 * tol, name
