// Persistent schedule of the Hopper forward: which work items a block takes, in which order
// (params_fwd_sm90.h); host-callable for tests/gpu/hopper_geometry_test.cpp. Only the producer
// walks it (items w = blockIdx.x, + gridDim.x, ..., skipping empty ones): it hands each item to
// the consumers through a slot in shared memory (ItemSlot, kernel_traits_fwd_sm90.cuh), so the
// consumers spend no per-item arithmetic on the schedule.
#pragma once

#include <cstdint>

#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/sm90/params_fwd_sm90.h"

namespace fna::cuda::fused {

struct WorkItem {
  int box_index;  // Q box over all dilation groups (tile_geometry.cuh's `index`)
  int h;
  int64_t b;
};

FNA_DEVICE WorkItem work_item(const FwdParamsSm90& p, int64_t w) {
  const int64_t per_batch = int64_t(p.boxes) * p.base.heads_q;
  return WorkItem{int(w % p.boxes), int((w % per_batch) / p.boxes), w / per_batch};
}

// False for a Q box entirely past its group's end on some axis (groups differ in length by one,
// so the box grid of the longest group leaves such boxes in the shorter ones).
FNA_DEVICE bool item_nonempty(const FwdParamsSm90& p, int box_index) {
  const Neighborhood& nb = p.base.nb;
  const TileShape& ts = p.base.tile;
  bool nonempty = true;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) {
    const int ai = q_box_axis_index(nb, ts, box_index, r);
    const int g = ai / ts.q_tiles[r];
    const int i0 = (ai % ts.q_tiles[r]) << ts.q_shift[r];
    nonempty = nonempty && i0 < group_length(nb.axis[r], g);
  }
  return nonempty;
}

// The first non-empty item of this block at or after w (w steps by the grid size), or a value
// >= p.items when none is left.
FNA_DEVICE int64_t next_nonempty_item(const FwdParamsSm90& p, int64_t w, int64_t step) {
  while (w < p.items && !item_nonempty(p, int(w % p.boxes))) w += step;
  return w;
}

}  // namespace fna::cuda::fused
