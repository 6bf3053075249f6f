// fna-bench: runs one neighborhood-attention problem on chosen backends and prints a table (median
// time, effective GFLOP/s over attended pairs only, error against `reference`).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench_buffers.h"
#include "fna/fna.h"

namespace {

using fna::Backend;
using fna::DType;
using fna::Problem;
using fna::TensorView;

std::vector<int64_t> parse_list(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    try {
      size_t used = 0;
      out.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw CLI::ValidationError(flag, "'" + text + "' is not a comma-separated list of integers");
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

// Per-axis value: one entry broadcasts to every axis, else exactly `rank` entries.
std::array<int64_t, 3> per_axis(const std::string& flag, const std::string& text, int rank) {
  const std::vector<int64_t> v = parse_list(flag, text);
  if (v.size() != 1 && static_cast<int>(v.size()) != rank)
    throw CLI::ValidationError(flag, "has " + std::to_string(v.size()) +
                                         " entries but --extent has rank " + std::to_string(rank) +
                                         ": give 1 or " + std::to_string(rank));
  std::array<int64_t, 3> out{1, 1, 1};
  for (int r = 0; r < rank; ++r) out[r] = v.size() == 1 ? v[0] : v[r];
  return out;
}

fna::TileBoxes tile_boxes(const std::string& flag, const std::string& q, const std::string& kv,
                          int rank) {
  const auto qa = per_axis(flag, q, rank), kva = per_axis(flag, kv, rank);
  fna::TileBoxes t;
  for (int r = 0; r < rank; ++r) {
    t.q[r] = static_cast<int>(qa[r]);
    t.kv[r] = static_cast<int>(kva[r]);
  }
  return t;
}

// --tile-list: one "Q_BOX KV_BOX" pair per line (e.g. "2,8,8 1,4,32"); blank lines and lines
// starting with '#' are skipped.
std::vector<fna::TileBoxes> read_tile_list(const std::string& path, int rank) {
  std::ifstream in(path);
  if (!in) throw CLI::ValidationError("--tile-list", "cannot open '" + path + "'");
  std::vector<fna::TileBoxes> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::istringstream words(line);
    std::string q, kv, extra;
    if (!(words >> q) || q[0] == '#') continue;
    if (!(words >> kv) || (words >> extra))
      throw CLI::ValidationError("--tile-list", path + ":" + std::to_string(n) +
                                                    ": expected 'Q_BOX KV_BOX', got '" + line +
                                                    "'");
    out.push_back(tile_boxes("--tile-list " + path + ":" + std::to_string(n), q, kv, rank));
  }
  if (out.empty()) throw CLI::ValidationError("--tile-list", "'" + path + "' lists no tiles");
  return out;
}

std::string box_name(const std::array<int, 3>& v, int rank) {
  std::string t;
  for (int r = 0; r < rank; ++r) t += (r ? "x" : "") + std::to_string(v[r]);
  return t;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// DESIGN.md section 7 tolerances. fp32 on tensor-core CUDA backends goes through TF32.
double tolerance(DType dtype, Backend b, bool gradient) {
  double t = dtype == DType::kFloat16 ? 5e-3 : dtype == DType::kBFloat16 ? 3e-2 : 2e-4;
  if (dtype == DType::kFloat32 &&
      (b == Backend::kCudaGemm || b == Backend::kCudaFused || b == Backend::kCudaHopper))
    t = 2e-3;
  return gradient ? 3 * t : t;
}

struct Result {
  Backend backend;
  std::optional<fna::TileBoxes> tiles;
  double fwd_ms = 0, bwd_ms = 0, max_error = 0;
  bool ran = true, passed = true, verified = false;
  std::string note;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "fna-bench: neighborhood attention on chosen backends (time, effective GFLOP/s, "
      "error vs reference). With no arguments it runs a built-in default problem on "
      "every available backend, forward and backward, with verification."};
  std::string extent = "64,64", window = "13", stride = "1", dilation = "1", causal = "0";
  std::string dtype_s = "fp32", backends_s = "all", device_s = "auto";
  int64_t batch = 1, heads = 8, heads_kv = 0, head_dim = 64, head_dim_v = 0, additional = 0;
  int warmup = 2, iters = 10;
  uint64_t seed = 0;
  bool backward = false, verify = false, json = false, show_plan = false, deterministic = false;
  bool autotune = false;
  std::string tiles_q, tiles_kv, tile_list;
  double scale = 0;
  app.add_option("--extent", extent, "grid extents, comma-separated; rank from the count")
      ->capture_default_str();
  app.add_option("--window", window, "window per axis (one value broadcasts)")
      ->capture_default_str();
  app.add_option("--stride", stride, "stride per axis")->capture_default_str();
  app.add_option("--dilation", dilation, "dilation per axis")->capture_default_str();
  app.add_option("--causal", causal, "causal flag per axis, 0 or 1")->capture_default_str();
  app.add_option("--batch", batch, "batch size")->capture_default_str();
  app.add_option("--heads", heads, "query heads")->capture_default_str();
  app.add_option("--heads-kv", heads_kv, "key/value heads (default: --heads)");
  app.add_option("--head-dim", head_dim, "head dim of q and k")->capture_default_str();
  app.add_option("--head-dim-v", head_dim_v, "head dim of v (default: --head-dim)");
  app.add_option("--additional-kv", additional, "additional KV tokens attended by every query")
      ->capture_default_str();
  app.add_option("--scale", scale, "softmax scale (default head_dim^-0.5)");
  app.add_option("--dtype", dtype_s, "fp32|fp16|bf16")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "fp16", "bf16"}));
  app.add_option("--backend", backends_s, "NAME[,NAME...] or all")->capture_default_str();
  app.add_option("--device", device_s, "cpu|cuda|auto: where tensors live (auto: by backend)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_flag("--backward", backward, "also time the backward pass");
  app.add_flag("--deterministic", deterministic,
               "Options::deterministic (cuda-fused: the atomic-free backward)");
  app.add_flag("--autotune", autotune,
               "Options::autotune (cuda-hopper: time the cost model's best tile shapes on the "
               "first call, keep the fastest; that call is part of the warm-up)");
  app.add_option("--warmup", warmup, "warm-up runs")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--iters", iters, "timed runs (median reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--verify", verify,
               "compare with `reference` on the same inputs; exit 1 on failure");
  app.add_flag("--json", json, "one JSON object per backend on stdout instead of the table");
  app.add_option("--seed", seed, "random seed of the inputs")->capture_default_str();
  app.add_flag(
      "--plan", show_plan,
      "print the forward tile plan (tiles, useful fraction, predicted time) of cuda-fused, "
      "or of cuda-hopper with --backend cuda-hopper, and exit");
  app.add_option("--tiles-q", tiles_q, "Q tile box per axis, e.g. 2,8,8 (overrides the planner)");
  app.add_option("--tiles-kv", tiles_kv, "KV tile box per axis (with --tiles-q)");
  app.add_option("--tile-list", tile_list,
                 "file of 'Q_BOX KV_BOX' lines: plan (--plan) or time every listed tile shape "
                 "on the same inputs, one result per shape (bench/plan_sweep.py)");
  if (argc == 1) {  // the built-in default problem
    verify = true;
    backward = true;
  }
  CLI11_PARSE(app, argc, argv);

  Problem p;
  std::vector<Backend> backends;
  DType dtype;
  std::vector<std::optional<fna::TileBoxes>> shapes{std::nullopt};  // nullopt: the planner's
  try {
    const std::vector<int64_t> ext = parse_list("--extent", extent);
    if (ext.empty() || ext.size() > 3)
      throw CLI::ValidationError(
          "--extent", "has " + std::to_string(ext.size()) + " entries: rank must be 1, 2 or 3");
    p.rank = static_cast<int>(ext.size());
    for (int r = 0; r < p.rank; ++r) p.extent[r] = ext[r];
    p.window = per_axis("--window", window, p.rank);
    p.stride = per_axis("--stride", stride, p.rank);
    p.dilation = per_axis("--dilation", dilation, p.rank);
    const auto c = per_axis("--causal", causal, p.rank);
    for (int r = 0; r < p.rank; ++r) {
      if (c[r] != 0 && c[r] != 1) throw CLI::ValidationError("--causal", "entries must be 0 or 1");
      p.causal[r] = c[r] == 1;
    }
    p.batch = batch;
    p.heads_q = heads;
    p.heads_kv = heads_kv ? heads_kv : heads;
    p.head_dim = head_dim;
    p.head_dim_v = head_dim_v ? head_dim_v : head_dim;
    p.additional_kv = additional;
    if (app.count("--scale")) p.scale = scale;
    fna::validate_problem(p);
    dtype = fna::parse_dtype(dtype_s);
    if (!tiles_q.empty() || !tiles_kv.empty()) {
      if (tiles_q.empty() || tiles_kv.empty())
        throw CLI::ValidationError("--tiles-q/--tiles-kv", "give both or neither");
      if (!tile_list.empty())
        throw CLI::ValidationError("--tile-list", "give it or --tiles-q/--tiles-kv, not both");
      shapes = {tile_boxes("--tiles-q/--tiles-kv", tiles_q, tiles_kv, p.rank)};
    }
    if (!tile_list.empty()) {
      shapes.clear();
      for (const fna::TileBoxes& t : read_tile_list(tile_list, p.rank)) shapes.emplace_back(t);
    }
    for (const auto& tiles : shapes) {
      if (!show_plan) break;
      fna::Options o;
      o.tiles = tiles;
      if (backends_s != "all" && backends_s.find(',') == std::string::npos)
        o.backend = fna::parse_backend(backends_s);  // e.g. --backend cuda-hopper --plan
      const fna::Plan pl = fna::plan(p, dtype, o);
      if (json) {
        nlohmann::json j;
        j["problem"] = p.to_string();
        j["backend"] = fna::backend_name(pl.backend);
        j["q_box"] = box_name(pl.tiles.q, p.rank);
        j["kv_box"] = box_name(pl.tiles.kv, p.rank);
        j["overridden"] = pl.overridden;
        j["blocks"] = pl.q_tiles;
        j["computed_pairs"] = pl.computed_pairs;
        j["useful_fraction"] = pl.useful_fraction;
        j["masked_fraction"] = pl.masked_fraction;
        j["predicted_ms"] = pl.predicted_ms;
        if (pl.sms > 0) {  // cuda-hopper: the persistent schedule's most loaded SM
          j["sms"] = pl.sms;
          j["imbalance"] = pl.imbalance;
          j["critical_unmasked"] = pl.critical_unmasked;
          j["critical_masked"] = pl.critical_masked;
          j["critical_items"] = pl.critical_items;
        }
        std::cout << j.dump() << "\n";
      } else {
        std::printf("problem: %s dtype=%s\n", p.to_string().c_str(), fna::dtype_name(dtype));
        std::printf("%s forward plan%s: Q box %s (%d rows), KV box %s (%d rows), %.0f blocks\n",
                    fna::backend_name(pl.backend), pl.overridden ? " (override)" : "",
                    box_name(pl.tiles.q, p.rank).c_str(), pl.q_tile_rows,
                    box_name(pl.tiles.kv, p.rank).c_str(), pl.kv_tile_rows, pl.q_tiles);
        std::printf("useful fraction of tensor-core work: %.3f (masked tiles: %.3f of it)\n",
                    pl.useful_fraction, pl.masked_fraction);
        std::printf("predicted forward time: %.3f ms (model: %s)\n", pl.predicted_ms,
                    pl.model.c_str());
        if (pl.sms > 0)
          std::printf("most loaded SM of %d: %.3f x the mean SM load\n", pl.sms, pl.imbalance);
      }
    }
    if (show_plan) return 0;
    if (backends_s == "all") {
      backends = fna::compiled_backends();
    } else {
      for (const auto& name : CLI::detail::split(backends_s, ','))
        backends.push_back(fna::parse_backend(name));
    }
  } catch (const CLI::Error& e) {
    return app.exit(e);
  } catch (const fna::Error& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }

  fna::bench::Problem io(p, dtype, seed, backward);
  std::vector<Result> results;
  bool any_fail = false;
  const double ffl = fna::forward_flops(p), bfl = fna::backward_flops(p);
  if (verify) io.run_reference(backward);

  // Runs r.backend on r.tiles (nullopt: the planner's) with the backend's buffers `run` (made on
  // its first shape); false when the backend is skipped (then the skipped row is already in
  // results).
  auto run_backend = [&](Result& r, std::unique_ptr<fna::bench::Run>& run) {
    const Backend b = r.backend;
    const bool cuda = b != Backend::kReference && b != Backend::kCpu;
    const fna::Device dev = cuda ? fna::Device{fna::DeviceType::kCUDA, 0} : fna::Device{};
    if (device_s != "auto" && (device_s == "cuda") != cuda) return false;
    const std::string why = fna::backend_unavailable_reason(b, p, dtype, dev);
    if (!why.empty()) {
      r.ran = false;
      r.note = why;
      if (backends_s != "all") any_fail = true;
      results.push_back(r);
      return false;
    }
    try {
      if (!run) run = std::make_unique<fna::bench::Run>(io, dev);
      fna::Options opt;
      opt.backend = b;
      opt.tiles = r.tiles;
      opt.deterministic = deterministic;
      opt.autotune = autotune;
      std::vector<double> fwd, bwd;
      for (int i = 0; i < warmup + iters; ++i) {
        const double ms = run->time([&] { fna::forward(p, run->forward_args(), opt); });
        if (i >= warmup) fwd.push_back(ms);
      }
      r.fwd_ms = median(fwd);
      if (backward) {
        for (int i = 0; i < warmup + iters; ++i) {
          const double ms = run->time([&] { fna::backward(p, run->backward_args(), opt); });
          if (i >= warmup) bwd.push_back(ms);
        }
        r.bwd_ms = median(bwd);
      }
      if (verify) {
        // A fresh, poisoned run so nothing left from timing hides an unwritten element.
        run->poison_outputs();
        fna::forward(p, run->forward_args(), opt);
        if (backward) fna::backward(p, run->backward_args(), opt);
        const fna::bench::Errors e = run->errors_vs_reference(backward);
        r.verified = true;
        r.max_error = std::max(e.forward, e.gradient);
        r.passed =
            e.forward <= tolerance(dtype, b, false) && e.gradient <= tolerance(dtype, b, true);
        if (!r.passed) {
          any_fail = true;
          r.note = "error above tolerance (fwd " + std::to_string(e.forward) + ", grad " +
                   std::to_string(e.gradient) + ")";
        }
      }
    } catch (const fna::Error& e) {
      r.ran = false;
      r.passed = false;
      r.note = e.what();
      any_fail = true;
    }
    return true;
  };
  // --json: one object per result, printed (and flushed) as soon as it exists, so that a caller
  // that stops a long --tile-list run (bench/plan_sweep.py's time box) keeps what was measured.
  size_t printed = 0;
  auto print_json = [&]() {
    for (; json && printed < results.size(); ++printed) {
      const Result& r = results[printed];
      nlohmann::json j;
      j["backend"] = fna::backend_name(r.backend);
      if (r.tiles) {
        j["q_box"] = box_name(r.tiles->q, p.rank);
        j["kv_box"] = box_name(r.tiles->kv, p.rank);
      }
      j["problem"] = p.to_string();
      j["dtype"] = fna::dtype_name(dtype);
      j["ran"] = r.ran;
      j["fwd_ms"] = r.ran ? nlohmann::json(r.fwd_ms) : nlohmann::json(nullptr);
      j["bwd_ms"] = r.ran && backward ? nlohmann::json(r.bwd_ms) : nlohmann::json(nullptr);
      j["fwd_gflops"] = r.ran ? nlohmann::json(ffl / (r.fwd_ms * 1e6)) : nlohmann::json(nullptr);
      j["bwd_gflops"] =
          r.ran && backward ? nlohmann::json(bfl / (r.bwd_ms * 1e6)) : nlohmann::json(nullptr);
      j["max_error"] = r.verified ? nlohmann::json(r.max_error) : nlohmann::json(nullptr);
      j["passed"] = r.passed;
      if (!r.note.empty()) j["note"] = r.note;
      std::cout << j.dump() << std::endl;
    }
  };
  for (Backend b : backends) {
    std::unique_ptr<fna::bench::Run> run;  // one upload of the inputs per backend
    for (const auto& tiles : shapes) {
      Result r;
      r.backend = b;
      r.tiles = tiles;
      if (!run_backend(r, run)) {  // not available: one skipped row, not one per shape
        print_json();
        break;
      }
      results.push_back(r);
      print_json();
    }
  }

  if (json) {
    print_json();
  } else {
    std::printf("problem: %s dtype=%s density=%.4f fwd=%.3f GFLOP bwd=%.3f GFLOP\n",
                p.to_string().c_str(), fna::dtype_name(dtype), fna::density(p), ffl * 1e-9,
                bfl * 1e-9);
    std::printf("%-12s %10s %10s %10s %10s %10s  %s\n", "backend", "fwd_ms", "fwd_GF/s", "bwd_ms",
                "bwd_GF/s", "error", "status");
    for (const Result& r : results) {
      std::string name = fna::backend_name(r.backend);  // + the tile shape when one was given
      if (r.tiles) name += " " + box_name(r.tiles->q, p.rank) + "/" + box_name(r.tiles->kv, p.rank);
      if (!r.ran) {
        std::printf("%-12s %10s %10s %10s %10s %10s  %s\n", name.c_str(), "-", "-",
                    "-", "-", "-", ("skipped: " + r.note).c_str());
        continue;
      }
      char err[32] = "-";
      if (r.verified) std::snprintf(err, sizeof err, "%.2e", r.max_error);
      std::printf("%-12s %10.3f %10.2f ", name.c_str(), r.fwd_ms,
                  ffl / (r.fwd_ms * 1e6));
      if (backward)
        std::printf("%10.3f %10.2f ", r.bwd_ms, bfl / (r.bwd_ms * 1e6));
      else
        std::printf("%10s %10s ", "-", "-");
      std::printf("%10s  %s\n", err,
                  !r.verified ? "ok"
                  : r.passed  ? "pass"
                              : ("FAIL: " + r.note).c_str());
    }
  }
  return any_fail ? 1 : 0;
}
