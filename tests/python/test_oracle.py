"""The oracle itself: its mask against invariants that do not depend on the window formula."""

import numpy as np
import pytest
import torch

import oracle


@pytest.mark.parametrize("L", [1, 2, 5, 13, 20])
def test_window_sizes(L):
    for d in range(1, L + 1):
        for K in range(1, L // d + 1):
            for s in range(1, K + 1):
                m = oracle.axis_mask(L, K, s, d, False)
                assert (m.sum(1) == K).all()  # clamped windows: every query sees K keys
                mc = oracle.axis_mask(L, K, s, d, True)
                assert not np.triu(mc, 1).any()  # causal: no key after the query
                assert mc[np.arange(L), np.arange(L)].all() and (mc.sum(1) <= K).all()
                for x in range(L):  # same dilation group only
                    assert all(y % d == x % d for y in np.nonzero(m[x])[0])


def test_full_window_is_self_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 4, 3, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out, _ = oracle.attention(q, k, v, (5, 4), (1, 1), (1, 1), (False, False))
    ref = torch.nn.functional.scaled_dot_product_attention(
        *(t.reshape(2, 20, 3, 8).transpose(1, 2) for t in (q, k, v)))
    assert torch.allclose(out, ref.transpose(1, 2).reshape(out.shape), atol=1e-12)


def test_window_one_is_identity_on_v():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 4, 3, 5, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
    out, _ = oracle.attention(q, k, v, (1, 1, 1), (1, 1, 1), (1, 1, 1), (False,) * 3)
    assert torch.allclose(out, v, atol=1e-12)


def test_dilation_is_interleaved_subgrids():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 12, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
    out, _ = oracle.attention(q, k, v, (3,), (1,), (3,), (False,))
    for grp in range(3):
        sub, _ = oracle.attention(q[:, grp::3], k[:, grp::3], v[:, grp::3], (3,), (1,), (1,),
                                  (False,))
        assert torch.allclose(out[:, grp::3], sub, atol=1e-12)
