// Block shape of the sm_80+ forward kernel per (operand type, head dim): rows of a Q tile, rows of
// a KV tile, warps. Host-safe constexpr: the kernel traits use it at compile time, the planner
// (tile_plan.h, fna::plan) at run time.
#pragma once

namespace fna::cuda::fused {

struct FwdBlock {
  int m;      // rows of a Q tile (queries of a Q box)
  int n;      // rows of a KV tile (keys of a KV box), at most 64 (64-bit column masks)
  int warps;  // each warp owns m / warps query rows
};

//  - 16-bit, D = 128: 128 x 64 x 4 warps. 128 queries keep a Q box large enough that its KV range
//    is mostly useful keys for the large windows D = 128 models use (video-hunyuan: 65% useful);
//    64-key KV boxes follow the range closely and keep S at 32 registers per thread next to a
//    64-register O accumulator.
//  - 16-bit, D <= 64: 64 x 64. Models with small heads tend to use small windows (NAT: 7x7),
//    where a Q box's KV range is dominated by the window's halo: an 8x8 box visits 16x16 keys
//    (23% useful) where a 8x16 box visits 16x24 (13%).
//  - 16-bit, D = 256: 64 x 64 (the O accumulator is 128 registers per thread).
//  - fp32 (3xTF32 MMA): 64 x 32, so the Q, K, V tiles and the P staging tile fit in shared memory
//    at D = 256 (64*256*4 + 2*32*256*4 + 64*36*4 bytes = 137 KiB).
constexpr FwdBlock fwd_block(bool tf32, int head_dim) {
  if (tf32) return {64, 32, 4};
  if (head_dim == 128) return {128, 64, 4};
  return {64, 64, 4};
}

}  // namespace fna::cuda::fused
