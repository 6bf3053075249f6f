"""Bad inputs raise ValueError / TypeError with messages that name the argument, value and rule."""

import re

import numpy as np
import pytest
import torch

import fna
import fna.nn


def qkv(shape=(1, 7, 2, 8), dtype=torch.float32, kv_heads=None):
    g = torch.Generator().manual_seed(0)
    kv_shape = shape[:-2] + (kv_heads or shape[-2], shape[-1])
    return (torch.randn(shape, generator=g, dtype=dtype), torch.randn(kv_shape, generator=g, dtype=dtype),
            torch.randn(kv_shape, generator=g, dtype=dtype))


def raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_rank_does_not_match_function():
    q, k, v = qkv((1, 7, 2, 8))
    raises(ValueError, re.escape("fna.na2d: query has shape (1, 7, 2, 8) (rank 4): na2d expects "
                                 "query as [B, X, Y, heads, head_dim] (rank 5)"),
           fna.na2d, q, k, v, 3)


def test_kernel_size_per_axis():
    q, k, v = qkv((1, 5, 6, 2, 8))
    raises(ValueError, re.escape("fna.na2d: kernel_size = (3, 3, 3): expected an int or a tuple "
                                 "of ints, one per spatial axis (2 for na2d)"),
           fna.na2d, q, k, v, (3, 3, 3))
    raises(ValueError, "is_causal = 1: expected a bool", fna.na2d, q, k, v, 3, is_causal=1)


def test_window_too_large_from_cpp():
    q, k, v = qkv((1, 7, 2, 8))
    raises(ValueError, re.escape("fna: problem.window[0] * dilation[0] = 4 * 2 exceeds extent[0] "
                                 "= 7: window * dilation must be <= extent"),
           fna.na1d, q, k, v, 4, dilation=2)


def test_stride_above_window_from_cpp():
    q, k, v = qkv((1, 7, 2, 8))
    raises(ValueError, re.escape("problem.stride[0] = 4 exceeds window[0] = 3: stride must be <= "
                                 "window"), fna.na1d, q, k, v, 3, stride=4)


def test_gqa_heads_not_multiple_from_cpp():
    q, k, v = qkv((1, 7, 3, 8), kv_heads=2)
    raises(ValueError, "heads_q = 3 is not a multiple of heads_kv = 2", fna.na1d, q, k, v, 3)


def test_mismatched_kv_shape_from_cpp():
    q, k, v = qkv((1, 7, 2, 8))
    raises(ValueError, re.escape("argument 'k': shape [1, 6, 2, 8] does not match the expected "
                                 "[1, 7, 2, 8]"), fna.na1d, q, k[:, :6], v, 3)


def test_mixed_dtypes():
    q, k, v = qkv()
    raises(TypeError, "fna.na1d: key has dtype float16 but query has float32: all inputs must share "
                      "one dtype", fna.na1d, q, k.half(), v, 3)


def test_unsupported_dtype():
    q, k, v = qkv(dtype=torch.float64)
    raises(TypeError, re.escape("fna.na1d: query has dtype float64: fna takes float32, float16, "
                                "bfloat16"), fna.na1d, q, k, v, 3)
    qn, kn, vn = (t.numpy() for t in (q, k, v))
    raises(TypeError, "NumPy has no bfloat16", fna.na1d, qn, kn, vn, 3)


def test_mixed_devices():
    q, k, v = qkv()
    raises(ValueError, "fna.na1d: value is on meta but query is on cpu: all inputs must be on one "
                       "device", fna.na1d, q, k, v.to("meta"), 3)


def test_last_dim_not_contiguous():
    q, k, v = qkv((1, 7, 8, 2))
    q, k, v = (t.transpose(-1, -2) for t in (q, k, v))
    raises(ValueError, re.escape("fna.na1d: query has strides (112, 16, 1, 2): the last dimension must "
                                 "be contiguous (stride 1)"), fna.na1d, q, k, v, 3)


def test_additional_kv_pairs():
    q, k, v = qkv()
    raises(ValueError, "additional_keys was given without additional_values: pass both or neither",
           fna.na1d, q, k, v, 3, additional_keys=k)
    raises(ValueError, re.escape("additional_keys has shape (1, 7, 8) (rank 3): na1d expects "
                                 "additional_keys as [B, n_additional, heads_kv, head_dim] (rank 4)"),
           fna.na1d, q, k, v, 3, additional_keys=k[:, :, 0], additional_values=v[:, :, 0])


def test_backend_names():
    q, k, v = qkv()
    raises(ValueError, "backend = 'fastest': expected None or one of auto, reference",
           fna.na1d, q, k, v, 3, backend="fastest")
    names = ("cpu", "cuda-naive", "cuda-gemm", "cuda-fused", "cuda-hopper")
    unavailable = [b for b in names if b not in fna.available_backends("cpu")]
    for b in unavailable:
        raises(ValueError, f"option 'backend' = '{b}' cannot run", fna.na1d, q, k, v, 3, backend=b)


def test_not_an_array():
    raises(TypeError, "fna.na1d: query is a list: expected a torch.Tensor, a NumPy array",
           fna.na1d, [[1.0]], [[1.0]], [[1.0]], 1)
    q, k, v = qkv()
    raises(TypeError, "fna.na1d: key is a Tensor but query is a NumPy array", fna.na1d,
           q.numpy(), k, v.numpy(), 3)


def test_merge_attentions_shapes():
    o = torch.zeros(1, 7, 2, 8)
    raises(ValueError, "got 2 outputs and 1 lses", fna.merge_attentions, [o, o], [o[..., 0]])
    raises(ValueError, re.escape("outputs[1] has shape (1, 7, 2, 4)"), fna.merge_attentions,
           [o, o[..., :4]], [o[..., 0], o[..., 0]])


def test_module_arguments():
    raises(ValueError, "dim = 10 is not a multiple of num_heads = 3", fna.nn.NeighborhoodAttention1D,
           10, 3, 3)
    m = fna.nn.NeighborhoodAttention2D(16, 2, 3)
    raises(ValueError, re.escape("input has shape (1, 5, 16): expected [B, X, Y, 16] (rank 4)"), m,
           torch.zeros(1, 5, 16))


def test_nothing_written_on_error():
    """Validation runs before any write: a failing call leaves a caller's buffers alone."""
    q, k, v = qkv()
    before = [t.clone() for t in (q, k, v)]
    with pytest.raises(ValueError):
        fna.na1d(q, k, v, 9)
    assert all(torch.equal(a, b) for a, b in zip(before, (q, k, v)))
