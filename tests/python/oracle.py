"""An independent float64 oracle for neighborhood attention, written from DESIGN.md section 2.

It uses nothing from fna: a brute-force boolean mask over (query token, key token) pairs built
per axis straight from the text of the definition, and dense masked softmax attention in torch
float64 (differentiable, so torch.autograd gives reference gradients).
"""

import math

import numpy as np
import torch


def axis_keys(L, K, s, d, causal, x):
    """Key coordinates a query at coordinate x attends on one axis (DESIGN.md section 2)."""
    g, i = x % d, x // d
    Lg = math.ceil((L - g) / d)
    left = K // 2
    right = K - 1 - left
    if causal:
        lead = min((i // s) * s + s - 1, Lg - 1)
        start, end = max(lead - K + 1, 0), min(i + 1, Lg)
    else:
        lead = min((i // s) * s + s // 2, Lg - 1)
        start = max(lead - left, 0)
        if lead + right >= Lg:
            start = Lg - K
        end = start + K
    return [j * d + g for j in range(start, end)]


def axis_mask(L, K, s, d, causal):
    m = np.zeros((L, L), dtype=bool)
    for x in range(L):
        m[x, axis_keys(L, K, s, d, causal, x)] = True
    return m


def mask(extent, kernel_size, stride, dilation, is_causal):
    """[tokens, tokens] bool, row-major token order: a query attends a key iff every axis does."""
    m = np.ones((1, 1), dtype=bool)
    for L, K, s, d, c in zip(extent, kernel_size, stride, dilation, is_causal):
        m = np.kron(m, axis_mask(L, K, s, d, c)).astype(bool)
    return m


def attention(q, k, v, kernel_size, stride, dilation, is_causal, scale=None, add_k=None,
              add_v=None):
    """(out, lse) in float64 for [B, *extent, H, D] inputs (any float dtype; computed in fp64)."""
    q, k, v = q.double(), k.double(), v.double()
    B, *extent, Hq, D = q.shape
    Hkv, Dv = k.shape[-2], v.shape[-1]
    n = int(np.prod(extent))
    scale = D ** -0.5 if scale is None else scale
    rep = Hq // Hkv
    qf = q.reshape(B, n, Hq, D)
    kf = k.reshape(B, n, Hkv, D).repeat_interleave(rep, dim=2)
    vf = v.reshape(B, n, Hkv, Dv).repeat_interleave(rep, dim=2)
    logits = torch.einsum("bqhd,bkhd->bhqk", qf, kf) * scale
    allowed = torch.from_numpy(mask(extent, kernel_size, stride, dilation, is_causal))
    logits = logits.masked_fill(~allowed, float("-inf"))
    if add_k is not None:
        ak = add_k.double().repeat_interleave(rep, dim=2)
        av = add_v.double().repeat_interleave(rep, dim=2)
        logits = torch.cat([logits, torch.einsum("bqhd,bkhd->bhqk", qf, ak) * scale], dim=-1)
        vf = torch.cat([vf, av], dim=1)
    lse = torch.logsumexp(logits, dim=-1)  # [B, H, n]
    p = torch.exp(logits - lse.unsqueeze(-1))
    out = torch.einsum("bhqk,bkhd->bqhd", p, vf)
    return out.reshape(B, *extent, Hq, Dv), lse.permute(0, 2, 1).reshape(B, *extent, Hq)


def rel_err(x, ref):
    """max|x - ref| / max(1, max|ref|) (DESIGN.md section 7); NaN/Inf never pass."""
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float64))
    x = x.double()
    ref = torch.as_tensor(ref).double()
    if not torch.isfinite(x).all():
        return float("inf")
    return ((x - ref).abs().max() / max(1.0, ref.abs().max().item())).item()


# DESIGN.md section 7 tolerances (forward); gradients get 3x.
TOL = {torch.float32: 2e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}
