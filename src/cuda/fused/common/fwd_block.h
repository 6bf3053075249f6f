// Block shape of the sm_80+ forward kernel per (operand type, head dim): rows of a Q tile, rows of
// a KV tile, warps. Host-safe constexpr: the kernel traits use it at compile time, the planner
// (tile_plan.h, fna::plan) at run time.
#pragma once

namespace fna::cuda::fused {

struct FwdBlock {
  int m;           // rows of a Q tile (queries of a Q box)
  int n;           // rows of a KV tile (keys of a KV box), at most 64 (64-bit column masks)
  int warps;       // each warp owns m / warps query rows
  int stages;      // K/V shared-memory buffers: tiles t+1 .. t+stages-1 load while tile t computes
  int min_blocks;  // blocks per SM the register allocation must allow (__launch_bounds__)
};

//  - 16-bit, D = 128: 128 x 64 x 4 warps. 128 queries keep a Q box large enough that its KV range
//    is mostly useful keys for the large windows D = 128 models use (video-hunyuan: 65% useful);
//    64-key KV boxes follow the range closely and keep S at 32 registers per thread next to a
//    64-register O accumulator. 2 stages: 96 KiB, 2 blocks per SM (the register limit anyway).
//  - 16-bit, D <= 64: 64 x 64. Models with small heads tend to use small windows (NAT: 7x7),
//    where a Q box's KV range is dominated by the window's halo: an 8x8 box visits 16x16 keys
//    (23% useful) where a 8x16 box visits 16x24 (13%). Such boxes visit only a few KV tiles, so
//    a block is latency-bound: 3 stages (D = 32: 28 KiB, D = 64: 56 KiB) keep two tiles in
//    flight. At D = 32 the registers are capped for 6 blocks per SM (80 per thread; nat-56 went
//    from 0.585 to 0.464 ms on the H100 together with the per-axis window tables, ncu:
//    instruction-issue and latency bound at 4 blocks per SM).
//  - 16-bit, D = 256: 64 x 32, 2 stages (96 KiB: 2 blocks per SM; 64 x 64 would need 160 KiB).
//  - fp32 (3xTF32 MMA): 64 x 32 and 2 stages, 64 x 16 at D = 256, so Q, 2 K/V stages and the P
//    staging tile fit in sm_80's 163 KiB (D = 256: 64*256*4 + 4*16*256*4 + 64*20*4 = 133 KiB).
constexpr FwdBlock fwd_block(bool tf32, int head_dim) {
  if (tf32) return {64, head_dim == 256 ? 16 : 32, 4, 2, 1};
  if (head_dim == 128) return {128, 64, 4, 2, 1};
  if (head_dim == 256) return {64, 32, 4, 2, 1};
  if (head_dim == 64) return {64, 64, 4, 3, 1};
  return {64, 64, 4, 3, 6};
}

}  // namespace fna::cuda::fused
