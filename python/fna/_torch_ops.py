"""PyTorch integration: the custom ops ``fna::na_forward`` / ``fna::na_backward``.

Registered with ``torch.library.custom_op`` with fake (meta) implementations and an autograd
formula, so ``torch.compile(fullgraph=True)`` traces them as single opaque nodes (no graph breaks)
in the forward and the backward graph. The real implementations allocate outputs with torch on
the input's device and hand everything to the extension through DLPack, on the current CUDA
stream.
"""

import contextlib
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _C


def _stream_and_guard(t: Tensor):
    if t.device.type == "cuda":
        return torch.cuda.current_stream(t.device).cuda_stream, torch.cuda.device(t.device)
    return 0, contextlib.nullcontext()


def _d(t: Optional[Tensor]) -> Optional[Tensor]:
    # DLPack export refuses tensors that require grad; the kernels never record autograd anyway.
    return None if t is None else t.detach()


def _unit_last(t: Tensor) -> Tensor:
    # Incoming gradients can be expanded (stride 0) or transposed views; fna needs a unit-stride
    # last dimension.
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def _out_shapes(query: Tensor, value: Tensor):
    return (*query.shape[:-1], value.shape[-1]), tuple(query.shape[:-1])


def _forward_impl(query: Tensor, key: Tensor, value: Tensor, additional_keys: Optional[Tensor],
               additional_values: Optional[Tensor], kernel_size: List[int], stride: List[int],
               dilation: List[int], is_causal: List[bool], scale: float, backend: str,
               lse_grad: bool) -> Tuple[Tensor, Tensor]:
    """(out, lse). `lse_grad` only tells the autograd formula whether lse feeds a loss."""
    out_shape, lse_shape = _out_shapes(query, value)
    out = query.new_empty(out_shape)
    lse = query.new_empty(lse_shape, dtype=torch.float32)
    stream, guard = _stream_and_guard(query)
    with guard:
        _C.forward(_d(query), _d(key), _d(value), out, lse, _d(additional_keys),
                   _d(additional_values), kernel_size, stride, dilation, is_causal, scale,
                   backend, stream)
    return out, lse


na_forward = torch.library.custom_op("fna::na_forward", mutates_args=())(_forward_impl)


@na_forward.register_fake
def _(query, key, value, additional_keys, additional_values, kernel_size, stride, dilation,
      is_causal, scale, backend, lse_grad):
    out_shape, lse_shape = _out_shapes(query, value)
    return query.new_empty(out_shape), query.new_empty(lse_shape, dtype=torch.float32)


@torch.library.custom_op("fna::na_backward", mutates_args=())
def na_backward(query: Tensor, key: Tensor, value: Tensor, out: Tensor, lse: Tensor, dout: Tensor,
                additional_keys: Optional[Tensor], additional_values: Optional[Tensor],
                kernel_size: List[int], stride: List[int], dilation: List[int],
                is_causal: List[bool], scale: float, backend: str) -> List[Tensor]:
    """[dq, dk, dv] (+ [d_additional_keys, d_additional_values] when additional KV is given)."""
    grads = [torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in
             (query, key, value, additional_keys, additional_values) if t is not None]
    extra = grads[3:] if additional_keys is not None else [None, None]
    stream, guard = _stream_and_guard(query)
    with guard:
        _C.backward(_d(query), _d(key), _d(value), _d(out), _d(lse), _d(_unit_last(dout)),
                    grads[0], grads[1], grads[2], _d(additional_keys), _d(additional_values),
                    extra[0], extra[1], kernel_size, stride, dilation, is_causal, scale, backend,
                    stream, torch.are_deterministic_algorithms_enabled())
    return grads


@na_backward.register_fake
def _(query, key, value, out, lse, dout, additional_keys, additional_values, kernel_size, stride,
      dilation, is_causal, scale, backend):
    return [t.new_empty(t.shape) for t in (query, key, value, additional_keys, additional_values)
            if t is not None]


def _setup_context(ctx, inputs, output):
    (query, key, value, add_k, add_v, kernel_size, stride, dilation, is_causal, scale, backend,
     lse_grad) = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, add_k, add_v, out, lse)
    ctx.params = (kernel_size, stride, dilation, is_causal, scale, backend)
    ctx.lse_grad = lse_grad


def _backward(ctx, dout, dlse):
    query, key, value, add_k, add_v, out, lse = ctx.saved_tensors
    kernel_size, stride, dilation, is_causal, scale, backend = ctx.params
    window = (kernel_size, stride, dilation, is_causal, scale, backend)
    if dout is None:
        dout = torch.zeros_like(out)
    grads = na_backward(query, key, value, out, lse, dout, add_k, add_v, *window)
    dq, dk, dv = grads[0], grads[1], grads[2]
    dadd_k, dadd_v = (grads[3], grads[4]) if add_k is not None else (None, None)
    if ctx.lse_grad and dlse is not None:
        # lse = log sum_j exp(s_j), s_j = scale * q.k_j, so d lse / d s_j = P_j. With
        # w = scale * dlse per query: dq += w * sum_j P_j k_j, which is attention with V = K, and
        # dk_j += sum_i P_ij (w_i q_i), which is the dV of a backward with V = K and dout = w q.
        w = (dlse.float() * scale).unsqueeze(-1)
        kk, _ = na_forward(query, key, key, add_k, add_k, *window, False)
        dq = (dq.float() + w * kk.float()).to(dq.dtype)
        g = na_backward(query, key, key, kk, lse, (w * query.float()).to(query.dtype), add_k,
                        add_k, *window)
        dk = dk + g[2]
        if add_k is not None:
            dadd_k = dadd_k + g[4]
    return dq, dk, dv, dadd_k, dadd_v, None, None, None, None, None, None, None


torch.library.register_autograd("fna::na_forward", _backward, setup_context=_setup_context)


def torch_na(query, key, value, kernel_size, stride, dilation, is_causal, scale, additional_keys,
             additional_values, return_lse, backend):
    if scale is None:
        scale = query.shape[-1] ** -0.5
    args = (query, key, value, additional_keys, additional_values, kernel_size, stride, dilation,
            is_causal, float(scale), backend, bool(return_lse))
    if not torch.compiler.is_compiling() and not (
            torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:5])):
        # Eager inference: nothing to record, so skip the dispatcher (tens of microseconds per
        # call, which matters next to small GPU kernels). Same implementation as the op.
        out, lse = _forward_impl(*args)
    else:
        out, lse = na_forward(*args)
    return (out, lse) if return_lse else out
