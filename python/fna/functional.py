"""fna's functions: na1d / na2d / na3d, merge_attentions, available_backends, autotune.

Semantics: DESIGN.md section 2. Layout "heads last": query [B, *extent, heads, head_dim],
key [B, *extent, heads_kv, head_dim], value [B, *extent, heads_kv, head_dim_v],
out [B, *extent, heads, head_dim_v], lse [B, *extent, heads] (float32, natural log).
"""

import contextlib

import numpy as np

from . import _C
from . import _args

try:
    import torch
    from . import _torch_ops
except ImportError:  # NumPy and other DLPack producers still work without torch.
    torch = None
    _torch_ops = None

_BACKENDS = ["auto"] + _C.all_backends()
_NUMPY_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}
_TORCH_DTYPES = ({torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
                 if torch is not None else {})


def _is_torch(x):
    return torch is not None and isinstance(x, torch.Tensor)


def _dtype(t):
    return t.dtype


def _device(t):
    return t.device


def _torch_checks(fn, rank, tensors):
    named = [(n, t.shape, t.stride(), t) for n, t in tensors if t is not None]
    _args.check_tensors(fn, rank, named, _dtype, _device, _TORCH_DTYPES, "")


def _numpy_checks(fn, rank, tensors):
    named = []
    for n, a in tensors:
        if a is None:
            continue
        if not isinstance(a, np.ndarray):
            raise TypeError(f"fna.{fn}: {n} is a {type(a).__name__} but query is a NumPy array: "
                            f"all inputs must be of one kind")
        named.append((n, a.shape, tuple(s // a.itemsize for s in a.strides), a))
    _args.check_tensors(fn, rank, named, _dtype, lambda a: "cpu", _NUMPY_DTYPES,
                        " (NumPy has no bfloat16; cast with .astype(np.float32))")


def _numpy_na(fn, rank, q, k, v, ks, st, dl, ca, scale, ak, av, return_lse, backend):
    _numpy_checks(fn, rank, [("query", q), ("key", k), ("value", v), ("additional_keys", ak),
                             ("additional_values", av)])
    out = np.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)
    lse = np.empty(q.shape[:-1], dtype=np.float32)
    _C.forward(q, k, v, out, lse, ak, av, ks, st, dl, ca, scale, backend, 0)
    return (out, lse) if return_lse else out


def _from_dlpack(fn, name, x):
    """A torch tensor (when torch is installed) or a NumPy array (CPU) sharing x's memory."""
    if x is None:
        return None
    if not hasattr(x, "__dlpack__"):
        raise TypeError(f"fna.{fn}: {name} is a {type(x).__name__}: expected a torch.Tensor, a "
                        f"NumPy array or an object with __dlpack__")
    if torch is not None:  # handles bfloat16 and CUDA too
        return torch.from_dlpack(x)
    device_type = int(x.__dlpack_device__()[0]) if hasattr(x, "__dlpack_device__") else 1
    if device_type != 1:  # kDLCPU
        raise ValueError(f"fna.{fn}: {name} is a non-CPU DLPack array (device type "
                         f"{device_type}); fna needs torch installed to allocate its outputs there")
    return np.from_dlpack(x)


def _to_producer(like, x):
    """Hands `x` back as the kind of array `like` is, when its namespace can import DLPack."""
    ns = getattr(like, "__array_namespace__", None)
    if ns is None:
        return x
    return ns().from_dlpack(x)


def _na(rank, fn, query, key, value, kernel_size, stride, dilation, is_causal, scale,
        additional_keys, additional_values, return_lse, backend):
    ks = _args.per_axis(fn, "kernel_size", kernel_size, rank, int)
    st = _args.per_axis(fn, "stride", stride, rank, int)
    dl = _args.per_axis(fn, "dilation", dilation, rank, int)
    ca = _args.per_axis(fn, "is_causal", is_causal, rank, bool)
    scale = _args.check_scale(fn, scale)
    backend = _args.check_backend(fn, backend, _BACKENDS)
    _args.check_additional(fn, additional_keys, additional_values)
    if _is_torch(query):
        _torch_checks(fn, rank, [("query", query), ("key", key), ("value", value),
                                 ("additional_keys", additional_keys),
                                 ("additional_values", additional_values)])
        return _torch_ops.torch_na(query, key, value, ks, st, dl, ca, scale, additional_keys,
                                   additional_values, return_lse, backend)
    if isinstance(query, np.ndarray):
        return _numpy_na(fn, rank, query, key, value, ks, st, dl, ca, scale, additional_keys,
                         additional_values, return_lse, backend)
    # Any other DLPack producer: borrow its memory as a torch tensor (or NumPy array without
    # torch), run, and hand the result back through the producer's array namespace.
    args = [_from_dlpack(fn, n, x) for n, x in
            (("query", query), ("key", key), ("value", value),
             ("additional_keys", additional_keys), ("additional_values", additional_values))]
    res = _na(rank, fn, *args[:3], ks, st, dl, ca, scale, args[3], args[4], return_lse, backend)
    if return_lse:
        return _to_producer(query, res[0]), _to_producer(query, res[1])
    return _to_producer(query, res)


def na1d(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
         additional_keys=None, additional_values=None, return_lse=False, backend=None):
    """1-D neighborhood attention. query [B, X, heads, head_dim] -> out [B, X, heads, head_dim_v].

    kernel_size / stride / dilation: int or 1-tuple; is_causal: bool or 1-tuple. scale defaults
    to head_dim ** -0.5. additional_keys / additional_values [B, n_additional, heads_kv, dim] are
    attended by every query. Returns out, or (out, lse) with return_lse=True. backend: None
    (auto) or a name from fna.available_backends().
    """
    return _na(1, "na1d", query, key, value, kernel_size, stride, dilation, is_causal, scale,
               additional_keys, additional_values, return_lse, backend)


def na2d(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
         additional_keys=None, additional_values=None, return_lse=False, backend=None):
    """2-D neighborhood attention on [B, X, Y, heads, head_dim]; arguments as for na1d."""
    return _na(2, "na2d", query, key, value, kernel_size, stride, dilation, is_causal, scale,
               additional_keys, additional_values, return_lse, backend)


def na3d(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
         additional_keys=None, additional_values=None, return_lse=False, backend=None):
    """3-D neighborhood attention on [B, X, Y, Z, heads, head_dim]; arguments as for na1d."""
    return _na(3, "na3d", query, key, value, kernel_size, stride, dilation, is_causal, scale,
               additional_keys, additional_values, return_lse, backend)


def merge_attentions(outputs, lses):
    """Combines attentions over disjoint key sets into the attention over their union.

    outputs: sequence of [..., heads, head_dim_v]; lses: matching [..., heads] log-sum-exps (as
    returned with return_lse=True). Returns (out, lse). Differentiable with torch tensors (also
    through lse); NumPy arrays work too.
    """
    outputs, lses = list(outputs), list(lses)
    if len(outputs) == 0 or len(outputs) != len(lses):
        raise ValueError(f"fna.merge_attentions: got {len(outputs)} outputs and {len(lses)} lses: "
                         f"need at least one of each, as many lses as outputs")
    for i, (o, l) in enumerate(zip(outputs, lses)):
        if tuple(o.shape) != tuple(outputs[0].shape) or tuple(l.shape) != tuple(o.shape[:-1]):
            raise ValueError(
                f"fna.merge_attentions: outputs[{i}] has shape {tuple(o.shape)} and lses[{i}] "
                f"{tuple(l.shape)}: every output must have outputs[0]'s shape "
                f"{tuple(outputs[0].shape)} and its lse that shape without the last dim")
    if _is_torch(outputs[0]):
        stacked = torch.stack([l.float() for l in lses])
        lse = torch.logsumexp(stacked, dim=0)
        # A query with no keys in any part has lse = -inf everywhere; its weights are 0, not NaN.
        weights = torch.exp(stacked - lse.masked_fill(torch.isneginf(lse), 0.0)).unsqueeze(-1)
        out = sum(w * o.float() for w, o in zip(weights, outputs))
        return out.to(outputs[0].dtype), lse
    stacked = np.stack([np.asarray(l, dtype=np.float32) for l in lses])
    lse = np.logaddexp.reduce(stacked, axis=0)
    weights = np.exp(stacked - np.where(np.isneginf(lse), 0.0, lse))[..., None]
    out = sum(w * np.asarray(o, dtype=np.float32) for w, o in zip(weights, outputs))
    return out.astype(np.asarray(outputs[0]).dtype), lse.astype(np.float32)


def compiled_backends():
    """The backends compiled into this build (names for the `backend` argument)."""
    return _C.compiled_backends()


def available_backends(device="cpu", dtype="float32", rank=1, head_dim=64):
    """Compiled backends that can run a rank-`rank` problem of `head_dim` in `dtype` on `device`
    ("cpu", "cuda", "cuda:1" or a torch.device)."""
    device = str(device)
    device_type, _, index = device.partition(":")
    dtype = str(dtype).replace("torch.", "")
    return [b for b in _C.compiled_backends()
            if not _C.backend_unavailable_reason(b, dtype, device_type, int(index or 0), rank,
                                                 head_dim)]


def set_autotune(enabled):
    """Process-wide switch (off by default), like ``torch.backends.cudnn.benchmark``: with it on,
    the first cuda-hopper forward of each problem (shape, dtype, device) times the planner's tile
    shapes and the cost model's next-best ones on that call's tensors and keeps the fastest for
    later calls (fna::Options::autotune). That first call runs several forward passes; calls under
    CUDA graph capture and other backends use the planner's shapes."""
    _C.set_autotune(bool(enabled))


def autotune_enabled():
    """Whether :func:`set_autotune` is on."""
    return _C.autotune_enabled()


@contextlib.contextmanager
def autotune(enabled=True):
    """``with fna.autotune(): ...`` turns :func:`set_autotune` on inside the block and restores
    the previous setting after it (also on an exception)."""
    before = _C.autotune_enabled()
    _C.set_autotune(bool(enabled))
    try:
        yield
    finally:
        _C.set_autotune(before)
