"""torch.compile(fullgraph=True) on models using fna: forward and backward, no graph breaks,
same numbers as eager."""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import fna
import fna.nn


class Block(torch.nn.Module):
    """A NA layer plus a second attention over extra tokens merged by LSE (exercises lse grads)."""

    def __init__(self):
        super().__init__()
        self.na = fna.nn.NeighborhoodAttention2D(16, 2, kernel_size=(3, 5), dilation=(2, 1),
                                                 is_causal=(False, True))
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, x, q, k, v, ak, av):
        y = self.na(self.norm(x)) + x
        o1, l1 = fna.na1d(q, k, v, 5, stride=2, return_lse=True)
        o2, l2 = fna.na1d(q, ak, av, ak.shape[1], return_lse=True)  # window = all extra tokens
        o, _ = fna.merge_attentions([o1, o2], [l1, l2])
        return y.square().mean() + o.square().mean()


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 6, 16, generator=g)
    q, k, v = (torch.randn(2, 11, 2, 8, generator=g) for _ in range(3))
    ak, av = (torch.randn(2, 11, 2, 8, generator=g) for _ in range(2))
    return [t.requires_grad_() for t in (x, q, k, v, ak, av)]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_forward_backward(backend):
    torch._dynamo.reset()
    counters.clear()
    model = Block()
    inputs = _inputs()
    loss = model(*inputs)
    grads = torch.autograd.grad(loss, inputs + list(model.parameters()))

    compiled = torch.compile(model, fullgraph=True, backend=backend)
    inputs2 = [t.detach().clone().requires_grad_() for t in inputs]
    loss2 = compiled(*inputs2)
    grads2 = torch.autograd.grad(loss2, inputs2 + list(model.parameters()))

    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    assert torch.allclose(loss, loss2, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, grads2):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_explain_reports_no_breaks():
    torch._dynamo.reset()
    model = Block()
    explanation = torch._dynamo.explain(model)(*_inputs())
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    ops = "\n".join(str(g.graph) for g in explanation.graphs)
    assert "fna.na_forward" in ops or "na_forward" in ops


def test_custom_ops_pass_opcheck():
    """torch.library.opcheck: schema, fake tensor and autograd registration consistency."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 7, 2, 4, generator=g, requires_grad=True) for _ in range(3))
    args = (q, k, v, None, None, [3], [1], [1], [False], 0.5, "auto", True)
    torch.library.opcheck(torch.ops.fna.na_forward.default, args)
    out, lse = torch.ops.fna.na_forward(*args)
    bargs = (q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(),
             torch.randn_like(out), None, None, [3], [1], [1], [False], 0.5, "auto")
    torch.library.opcheck(torch.ops.fna.na_backward.default, bargs)
