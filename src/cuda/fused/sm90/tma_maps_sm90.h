// Host side of the Hopper forward's TMA: which tensors TMA can read, and the tensor maps of one
// forward call. Host-only (CUDA driver types, no CuTe).
//
// A map is 5-dim: (D, axis 2, axis 1, axis 0, head), innermost first, for one batch and one
// dilation group: the group's view of an axis starts at g * stride, steps by d * stride and has
// ceil((L - g) / d) tokens, so TMA's out-of-bounds zero fill ends every box at the group's end.
// Unused axes are extent 1. Batch is the sixth dim TMA lacks: one set of maps per batch.
#pragma once

#include <cuda.h>

#include <string>
#include <vector>

#include "cuda/fused/common/fused_params.h"
#include "fna/fna.h"

namespace fna::cuda::fused {

// Empty when TMA can read every tensor of `args` (16-byte aligned base pointers and strides of
// every dim of extent > 1 but the unit-stride last one), else the first violation.
std::string tma_unsupported(const Problem& p, const ForwardArgs& args);

// Maps of one forward call, in the order params_fwd_sm90.h describes: per (batch, group) Q, K, V,
// then per batch the additional K and V (when the problem has additional KV). Q boxes are
// (64, qt2, qt1, qt0, 1), K/V boxes (64, kt2, kt1, kt0, 1), additional KV boxes (64, block_n, 1,
// 1, 1): 64 elements of D (128 bytes, the swizzle width) per box.
std::vector<CUtensorMap> encode_forward_maps(const Problem& p, const ForwardArgs& args,
                                             const TileShape& tile, int block_n);

}  // namespace fna::cuda::fused
