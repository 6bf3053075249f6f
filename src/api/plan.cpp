// fna::plan: the cuda-fused (or cuda-hopper) forward's tile plan and a cost-model time for one
// problem (what fna-bench --plan prints). Host arithmetic only: the planner (tile_plan.h) has no
// CUDA code.
#include "fna/plan.h"

#include <string>

#include "common/problem_util.h"
#include "cuda/fused/common/fwd_block.h"
#include "cuda/fused/common/small_window.h"
#include "cuda/fused/common/tile_plan.h"
#include "cuda/fused/sm90/plan_sm90.h"
#include "fna/fna.h"

namespace fna {
namespace {

// Cost model of the sm_80 forward on an H100 (16-bit inputs; cuda-hopper's is plan_sm90.h's):
//   t = B * Hq * (4 * D * (unmasked / rate_unmasked + masked / rate_masked) + q_boxes * t_box)
// with pairs counted per (batch, head) by the planner. Rates are the executed tensor-core
// throughputs of unmasked and masked tiles, t_box the per-block setup and epilogue spread over
// the SMs; fitted on the bench/RESULTS.md measurements named in kCalibration.
struct Model {
  double rate_unmasked;  // FLOP/s on tiles that skip the mask
  double rate_masked;    // FLOP/s on tiles with a column mask
  double t_box;          // seconds per block (Q tile), machine-wide
};

// Least-squares fit (relative error) on the forward times of commit ead98d5 (bench/RESULTS.md,
// "cuda-fused forward, session 2"): D = 128 on six public cases (within -6%..+3%), D = 32 on
// nat-56 with three tile shapes (within 3%; every nat-56 tile is masked, so one rate). Then
// rescaled to commit 23aaff3 ("cuda-fused forward, session 3"): D = 128's unmasked rate from
// video-hunyuan-strided (47.09 ms, every tile unmasked), D = 32's rate from nat-56 (0.374 ms);
// D = 128's masked rate was not re-measured (its masks got cheaper, so it is likely low). D = 64
// is interpolated and D = 256 reuses D = 128: neither was measured.
Model model_for(int head_dim) {
  if (head_dim <= 32) return {70.1e12, 70.1e12, 2.0e-9};
  if (head_dim <= 64) return {150e12, 110e12, 5.0e-8};
  return {326.3e12, 215.6e12, 9.8e-8};
}

constexpr const char* kCalibration =
    "H100 bf16, ead98d5 measurements rescaled to 23aaff3 (bench/RESULTS.md)";

// The small-window kernel (small_window.h) does the same work per block whatever the window
// (16 x 112 scores per warp), so its time is blocks x one per-block time, measured on nat-56
// (bench/RESULTS.md, "cuda-fused forward nat-56, session 4").
constexpr double kSmallWindowBlockSeconds = 1.12e-8;  // 0.140 ms / 12544 blocks (commit a4bdefe)
constexpr const char* kSmallWindowCalibration =
    "H100 bf16, small-window kernel, nat-56 (bench/RESULTS.md, session 4)";

// The plan of the small-window kernel: 8 x 8 Q boxes, each loading a 14 x 14 KV region; a warp
// scores its 2 x 8 queries against 8 x 14 keys, all of them with a mask.
Plan small_window_plan(const Neighborhood& nb, const Problem& problem) {
  using cuda::fused::SmallWindow;
  const int64_t l0 = nb.axis[0].extent, l1 = nb.axis[1].extent;
  const double bh = static_cast<double>(problem.batch * problem.heads_q);
  const double blocks = static_cast<double>(ceil_div(l0, SmallWindow::kBoxRows) *
                                            ceil_div(l1, SmallWindow::kBoxCols));
  // Warps whose rows lie past the grid return before computing.
  const double warps = static_cast<double>(ceil_div(l0, SmallWindow::kWarpRows) *
                                           ceil_div(l1, SmallWindow::kBoxCols));
  const double useful =
      static_cast<double>(axis_attended_pairs(nb.axis[0]) * axis_attended_pairs(nb.axis[1]));
  Plan out;
  out.tiles.q = {SmallWindow::kBoxRows, SmallWindow::kBoxCols, 1};
  out.tiles.kv = {SmallWindow::kRegionRows, SmallWindow::kRegionCols, 1};
  out.q_tile_rows = SmallWindow::kBoxRows * SmallWindow::kBoxCols;
  out.kv_tile_rows = SmallWindow::kRegionRows * SmallWindow::kRegionCols;
  out.q_tiles = blocks * bh;
  out.computed_pairs =
      warps * SmallWindow::kWarpRows * SmallWindow::kBoxCols * SmallWindow::kWarpKeys;
  out.useful_fraction = useful / out.computed_pairs;
  out.masked_fraction = 1;
  out.predicted_ms = blocks * bh * kSmallWindowBlockSeconds * 1e3;
  out.model = kSmallWindowCalibration;
  out.backend = Backend::kCudaFused;
  return out;
}

}  // namespace

Plan plan(const Problem& problem, DType dtype, const Options& options) {
  validate_problem(problem);
  const bool hopper = options.backend == Backend::kCudaHopper;
  if (options.backend != Backend::kAuto && options.backend != Backend::kCudaFused && !hopper)
    throw Error(ErrorKind::kInvalidArgument,
                std::string("fna: plan: backend '") + backend_name(options.backend) +
                    "' has no tile plan (cuda-fused and cuda-hopper have)");
  using namespace cuda::fused;
  const Neighborhood nb = make_neighborhood(problem);
  const int d = static_cast<int>(problem.head_dim);
  FwdBlock block = fwd_block(dtype == DType::kFloat32, d);
  if (hopper) {  // only the tile rows enter the plan
    block.m = FwdBlockShapeSm90::kBlockM;
    block.n = FwdBlockShapeSm90::kBlockN;
  }
  // As run_forward decides, assuming 16-byte aligned rows (a plan sees no tensors).
  if (!hopper && !options.tiles &&
      small_window_runs(nb, d, dtype != DType::kFloat32, true,
                        static_cast<int>(problem.additional_kv),
                        static_cast<float>(problem.effective_scale())))
    return small_window_plan(nb, problem);
  TilePlan tp;
  Plan out;
  if (options.tiles) {
    const std::string why = tile_override_error(nb, *options.tiles, block.m, block.n);
    if (!why.empty())
      throw Error(ErrorKind::kInvalidArgument, "fna: option " + why + " (backend " +
                                                   (hopper ? "cuda-hopper" : "cuda-fused") + ")");
    tp = evaluate_tiles(nb, shape_from_boxes(nb, *options.tiles), block.m);
    out.overridden = true;
  } else {
    tp = hopper ? plan_tiles_sm90(nb, d, hopper_work(problem, kHopperCostModel.sms))
                : plan_tiles(nb, block.m, block.n);
  }
  out.tiles = boxes_of(tp.shape);
  out.q_tile_rows = block.m;
  out.kv_tile_rows = block.n;
  const double bh = static_cast<double>(problem.batch * problem.heads_q);
  out.q_tiles = tp.q_boxes * bh;
  out.computed_pairs = tp.visited;
  out.useful_fraction = tp.visited > 0 ? tp.useful / tp.visited : 0;
  out.masked_fraction = tp.visited > 0 ? (tp.visited - tp.unmasked) / tp.visited : 0;
  out.backend = hopper ? Backend::kCudaHopper : Backend::kCudaFused;
  if (hopper) {
    const HopperTime t =
        HopperModel(nb, d, hopper_work(problem, kHopperCostModel.sms)).time(tp.shape);
    out.predicted_ms = t.seconds * 1e3;
    out.model = kHopperCalibration;
    out.sms = kHopperCostModel.sms;
    out.imbalance = t.imbalance;
    out.critical_unmasked = t.unmasked;
    out.critical_masked = t.masked;
    out.critical_items = t.items;
    return out;
  }
  // Additional KV: every block visits ceil(Nadd / block.n) tiles, unmasked but the last.
  const double extra = tp.q_boxes * block.m * static_cast<double>(problem.additional_kv);
  const Model m = model_for(d);
  const double flop_per_pair = 4.0 * d;
  const double seconds = bh * (flop_per_pair * ((tp.unmasked + extra) / m.rate_unmasked +
                                                (tp.visited - tp.unmasked) / m.rate_masked) +
                               tp.q_boxes * m.t_box);
  out.predicted_ms = seconds * 1e3;
  out.model = kCalibration;
  return out;
}

}  // namespace fna
