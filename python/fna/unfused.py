"""Unfused neighborhood attention: the attention weights as a tensor, with an optional relative
positional bias (RPB), as NAT / DiNAT use them (docs/unfused.md).

    attn = fna.na2d_qk(q * scale, k, kernel_size=7, rpb=rpb)   # [B, X, Y, heads, 49]
    out = fna.na2d_av(attn.softmax(-1), v, kernel_size=7)       # [B, X, Y, heads, head_dim_v]

Slot w of a query's last dim enumerates its window's per-axis offsets row-major from the window
start; slots past a causal window's end hold -inf (0 after softmax). No scaling happens inside:
scale the query first. rpb is [heads, 2*K0-1(, 2*K1-1(, 2*K2-1))]; it adds
rpb[h, j0 - i0 + K0 - 1, ...] where i / j are the query's / key's indices in their dilation group.
Torch tensors are differentiable (query, key, rpb, attn, value); NumPy arrays run forward on CPU.
"""

import contextlib
from typing import List, Optional

import numpy as np

from . import _C
from . import _args

try:
    import torch
    from torch import Tensor
except ImportError:
    torch = None

_AXES = {1: "X", 2: "X, Y", 3: "X, Y, Z"}


def _window(fn, rank, kernel_size, stride, dilation, is_causal):
    return (_args.per_axis(fn, "kernel_size", kernel_size, rank, int),
            _args.per_axis(fn, "stride", stride, rank, int),
            _args.per_axis(fn, "dilation", dilation, rank, int),
            _args.per_axis(fn, "is_causal", is_causal, rank, bool))


def _check_rank(fn, rank, name, x, dim):
    if len(x.shape) != rank + 3:
        raise ValueError(f"fna.{fn}: {name} has shape {tuple(x.shape)} (rank {len(x.shape)}): "
                         f"{fn} expects {name} as [B, {_AXES[rank]}, heads, {dim}] "
                         f"(rank {rank + 3})")


def _prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


if torch is not None:

    def _stream_and_guard(t):
        if t.device.type == "cuda":
            return torch.cuda.current_stream(t.device).cuda_stream, torch.cuda.device(t.device)
        return 0, contextlib.nullcontext()

    def _d(t):
        return None if t is None else t.detach()

    def _unit_last(t):
        return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()

    @torch.library.custom_op("fna::na_qk", mutates_args=())
    def _na_qk(query: Tensor, key: Tensor, rpb: Optional[Tensor], kernel_size: List[int],
               stride: List[int], dilation: List[int], is_causal: List[bool],
               fp32_attn: bool) -> Tensor:
        attn = query.new_empty((*query.shape[:-1], _prod(kernel_size)),
                               dtype=torch.float32 if fp32_attn else query.dtype)
        stream, guard = _stream_and_guard(query)
        with guard:
            _C.na_qk(_d(query), _d(key), attn, _d(rpb), kernel_size, stride, dilation, is_causal,
                     stream)
        return attn

    @_na_qk.register_fake
    def _(query, key, rpb, kernel_size, stride, dilation, is_causal, fp32_attn):
        return query.new_empty((*query.shape[:-1], _prod(kernel_size)),
                               dtype=torch.float32 if fp32_attn else query.dtype)

    @torch.library.custom_op("fna::na_qk_backward", mutates_args=())
    def _na_qk_backward(query: Tensor, key: Tensor, rpb: Optional[Tensor], d_attn: Tensor,
                        kernel_size: List[int], stride: List[int], dilation: List[int],
                        is_causal: List[bool]) -> List[Tensor]:
        """[dq, dk] (+ [d_rpb] when rpb is given)."""
        grads = [torch.empty(t.shape, dtype=t.dtype, device=t.device)
                 for t in (query, key, rpb) if t is not None]
        stream, guard = _stream_and_guard(query)
        with guard:
            _C.na_qk_backward(_d(query), _d(key), _d(_unit_last(d_attn)), grads[0], grads[1],
                              grads[2] if rpb is not None else None, kernel_size, stride,
                              dilation, is_causal, stream)
        return grads

    @_na_qk_backward.register_fake
    def _(query, key, rpb, d_attn, kernel_size, stride, dilation, is_causal):
        return [t.new_empty(t.shape) for t in (query, key, rpb) if t is not None]

    def _qk_setup(ctx, inputs, output):
        query, key, rpb, kernel_size, stride, dilation, is_causal, _ = inputs
        ctx.save_for_backward(query, key, rpb)
        ctx.window = (kernel_size, stride, dilation, is_causal)

    def _qk_backward(ctx, d_attn):
        query, key, rpb = ctx.saved_tensors
        grads = _na_qk_backward(query, key, rpb, d_attn, *ctx.window)
        d_rpb = grads[2] if rpb is not None else None
        return grads[0], grads[1], d_rpb, None, None, None, None, None

    torch.library.register_autograd("fna::na_qk", _qk_backward, setup_context=_qk_setup)

    @torch.library.custom_op("fna::na_av", mutates_args=())
    def _na_av(attn: Tensor, value: Tensor, kernel_size: List[int], stride: List[int],
               dilation: List[int], is_causal: List[bool]) -> Tensor:
        out = value.new_empty((*attn.shape[:-1], value.shape[-1]))
        stream, guard = _stream_and_guard(value)
        with guard:
            _C.na_av(_d(attn), _d(value), out, kernel_size, stride, dilation, is_causal, stream)
        return out

    @_na_av.register_fake
    def _(attn, value, kernel_size, stride, dilation, is_causal):
        return value.new_empty((*attn.shape[:-1], value.shape[-1]))

    @torch.library.custom_op("fna::na_av_backward", mutates_args=())
    def _na_av_backward(attn: Tensor, value: Tensor, d_out: Tensor, kernel_size: List[int],
                        stride: List[int], dilation: List[int],
                        is_causal: List[bool]) -> List[Tensor]:
        """[d_attn, dv]."""
        d_attn = torch.empty(attn.shape, dtype=attn.dtype, device=attn.device)
        dv = torch.empty(value.shape, dtype=value.dtype, device=value.device)
        stream, guard = _stream_and_guard(value)
        with guard:
            _C.na_av_backward(_d(attn), _d(value), _d(_unit_last(d_out)), d_attn, dv,
                              kernel_size, stride, dilation, is_causal, stream)
        return [d_attn, dv]

    @_na_av_backward.register_fake
    def _(attn, value, d_out, kernel_size, stride, dilation, is_causal):
        return [attn.new_empty(attn.shape), value.new_empty(value.shape)]

    def _av_setup(ctx, inputs, output):
        attn, value, kernel_size, stride, dilation, is_causal = inputs
        ctx.save_for_backward(attn, value)
        ctx.window = (kernel_size, stride, dilation, is_causal)

    def _av_backward(ctx, d_out):
        attn, value = ctx.saved_tensors
        d_attn, dv = _na_av_backward(attn, value, d_out, *ctx.window)
        return d_attn, dv, None, None, None, None

    torch.library.register_autograd("fna::na_av", _av_backward, setup_context=_av_setup)


def _is_torch(x):
    return torch is not None and isinstance(x, torch.Tensor)


def _attn_fp32(fn, attn_dtype, query):
    """Whether attn is float32 (True) or query's dtype (False)."""
    if attn_dtype is None:
        return False
    name = attn_dtype.__name__ if isinstance(attn_dtype, type) else str(attn_dtype)
    name = name.replace("torch.", "")
    if name == "float32":
        return True
    if name == str(query.dtype).replace("torch.", ""):
        return False
    raise TypeError(f"fna.{fn}: attn_dtype = {attn_dtype!r}: expected None (query's dtype) or "
                    f"float32")


def _qk(rank, fn, query, key, kernel_size, stride, dilation, is_causal, rpb, attn_dtype):
    ks, st, dl, ca = _window(fn, rank, kernel_size, stride, dilation, is_causal)
    _check_rank(fn, rank, "query", query, "head_dim")
    _check_rank(fn, rank, "key", key, "head_dim")
    if rpb is not None and any(ca):
        raise ValueError(f"fna.{fn}: rpb was given with is_causal = {tuple(ca)}: a relative "
                         f"positional bias is defined for non-causal windows only")
    fp32 = _attn_fp32(fn, attn_dtype, query)
    if _is_torch(query):
        return _na_qk(query, key, rpb, ks, st, dl, ca, fp32)
    if isinstance(query, np.ndarray):
        attn = np.empty(query.shape[:-1] + (_prod(ks),),
                        dtype=np.float32 if fp32 else query.dtype)
        _C.na_qk(query, key, attn, rpb, ks, st, dl, ca, 0)
        return attn
    raise TypeError(f"fna.{fn}: query is a {type(query).__name__}: expected a torch.Tensor or a "
                    f"NumPy array")


def _av(rank, fn, attn, value, kernel_size, stride, dilation, is_causal):
    ks, st, dl, ca = _window(fn, rank, kernel_size, stride, dilation, is_causal)
    _check_rank(fn, rank, "attn", attn, "prod(kernel_size)")
    _check_rank(fn, rank, "value", value, "head_dim_v")
    if _is_torch(attn):
        return _na_av(attn, value, ks, st, dl, ca)
    if isinstance(attn, np.ndarray):
        out = np.empty(attn.shape[:-1] + (value.shape[-1],), dtype=value.dtype)
        _C.na_av(attn, value, out, ks, st, dl, ca, 0)
        return out
    raise TypeError(f"fna.{fn}: attn is a {type(attn).__name__}: expected a torch.Tensor or a "
                    f"NumPy array")


def na1d_qk(query, key, kernel_size, stride=1, dilation=1, is_causal=False, rpb=None,
            attn_dtype=None):
    """Neighborhood logits. query / key [B, X, heads(_kv), head_dim] -> attn
    [B, X, heads, kernel_size] (no scaling: scale the query). rpb: optional [heads, 2K-1].
    attn_dtype: None (query's dtype, as NATTEN) or float32."""
    return _qk(1, "na1d_qk", query, key, kernel_size, stride, dilation, is_causal, rpb,
               attn_dtype)


def na2d_qk(query, key, kernel_size, stride=1, dilation=1, is_causal=False, rpb=None,
            attn_dtype=None):
    """2-D na1d_qk: [B, X, Y, heads, head_dim] -> [B, X, Y, heads, K0*K1]; rpb
    [heads, 2*K0-1, 2*K1-1]."""
    return _qk(2, "na2d_qk", query, key, kernel_size, stride, dilation, is_causal, rpb,
               attn_dtype)


def na3d_qk(query, key, kernel_size, stride=1, dilation=1, is_causal=False, rpb=None,
            attn_dtype=None):
    """3-D na1d_qk: [B, X, Y, Z, heads, head_dim] -> [B, X, Y, Z, heads, K0*K1*K2]; rpb
    [heads, 2*K0-1, 2*K1-1, 2*K2-1]."""
    return _qk(3, "na3d_qk", query, key, kernel_size, stride, dilation, is_causal, rpb,
               attn_dtype)


def na1d_av(attn, value, kernel_size, stride=1, dilation=1, is_causal=False):
    """Weighted sum over each query's window. attn [B, X, heads, kernel_size] (float32 or
    value's dtype), value [B, X, heads_kv, head_dim_v] -> [B, X, heads, head_dim_v]."""
    return _av(1, "na1d_av", attn, value, kernel_size, stride, dilation, is_causal)


def na2d_av(attn, value, kernel_size, stride=1, dilation=1, is_causal=False):
    """2-D na1d_av on [B, X, Y, ...]."""
    return _av(2, "na2d_av", attn, value, kernel_size, stride, dilation, is_causal)


def na3d_av(attn, value, kernel_size, stride=1, dilation=1, is_causal=False):
    """3-D na1d_av on [B, X, Y, Z, ...]."""
    return _av(3, "na3d_av", attn, value, kernel_size, stride, dilation, is_causal)
