"""Neighborhood attention layers: fna.nn.NeighborhoodAttention1D / 2D / 3D (need torch).

Input and output are channels-last token grids [B, *extent, dim]. One fused linear projection
makes q, k and v; they are strided views of its output (no copies) handed to fna.
"""

try:
    import torch
    from torch import nn
except ImportError as e:
    raise ImportError("fna.nn needs PyTorch (pip install torch); fna's functions work without "
                      "it on NumPy arrays") from e

from . import functional as F
from ._args import per_axis

_FUNCS = {1: F.na1d, 2: F.na2d, 3: F.na3d}


class _NeighborhoodAttention(nn.Module):
    rank = 0

    def __init__(self, dim, num_heads, kernel_size, stride=1, dilation=1, is_causal=False,
                 qkv_bias=True, qk_scale=None, proj_drop=0.0):
        super().__init__()
        name = type(self).__name__
        if dim % num_heads != 0:
            raise ValueError(f"fna.nn.{name}: dim = {dim} is not a multiple of num_heads = "
                             f"{num_heads}: each head gets dim // num_heads channels")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kernel_size = per_axis(name, "kernel_size", kernel_size, self.rank, int)
        self.stride = per_axis(name, "stride", stride, self.rank, int)
        self.dilation = per_axis(name, "dilation", dilation, self.rank, int)
        self.is_causal = per_axis(name, "is_causal", is_causal, self.rank, bool)
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.rank + 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"fna.nn.{type(self).__name__}: input has shape {tuple(x.shape)}: expected "
                f"[B, {', '.join('XYZ'[:self.rank])}, {self.dim}] (rank {self.rank + 2})")
        shape = x.shape[:-1]
        qkv = self.qkv(x).reshape(*shape, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(-3)
        out = _FUNCS[self.rank](q, k, v, self.kernel_size, self.stride, self.dilation,
                                self.is_causal, self.scale)
        return self.proj_drop(self.proj(out.reshape(*shape, self.dim)))

    def extra_repr(self):
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, dilation={self.dilation}, is_causal={self.is_causal}, "
                f"scale={self.scale:g}")


class NeighborhoodAttention1D(_NeighborhoodAttention):
    """Multi-head 1-D neighborhood attention on [B, X, dim]."""
    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    """Multi-head 2-D neighborhood attention on [B, X, Y, dim]."""
    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    """Multi-head 3-D neighborhood attention on [B, X, Y, Z, dim]."""
    rank = 3
