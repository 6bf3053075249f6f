// Test buffers: typed host storage with arbitrary (padded, permuted, shared) strided views,
// poisoning, and conversion to and from canonical float64. Independent of fna's internal headers
// (its own fp16 / bf16 conversions), so a conversion bug in the library is caught too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "fna/tensor.h"

namespace fna_test {

// Storage conversions. `store` rounds to nearest even (via fp32 for fp16 / bf16, like a framework
// cast from fp32 would).
double load_element(const std::byte* p, fna::DType dtype);
void store_element(std::byte* p, fna::DType dtype, double value);
// The value `value` becomes once stored in `dtype`.
double round_to(fna::DType dtype, double value);

// A NaN with a recognizable payload: written over every byte of every output (and of the padding
// of every input) before a run, so unwritten elements, stray writes and stray reads all show.
void store_poison(std::byte* p, fna::DType dtype);
bool is_poison(const std::byte* p, fna::DType dtype);

enum class Layout {
  kContiguous,   // row-major, no padding
  kStrided,      // dims permuted in memory (last dim kept innermost), padded, offset start
  kInterleaved,  // q/k/v (and dq/dk/dv) as head ranges of one [..., Hq + 2 Hkv, D] buffer
};
const char* layout_name(Layout layout);

class Buffer {
 public:
  Buffer() = default;
  // A fresh, fully poisoned storage with a view of `shape`: contiguous, or (strided) padded and
  // permuted in memory with a random layout drawn from `rng`.
  static Buffer make(const std::vector<int64_t>& shape, fna::DType dtype, bool strided,
                     std::mt19937_64& rng);
  // Views of `shape` [..., H, D] with heads[i] heads each, sharing one poisoned storage
  // [..., sum(heads), D] as consecutive head ranges: q, k, v = qkv.unbind(-3) when the counts are
  // equal, the split of a fused GQA projection when they are not.
  static std::vector<Buffer> make_interleaved(const std::vector<int64_t>& shape,
                                              const std::vector<int64_t>& heads, fna::DType dtype);

  fna::TensorView view() const;
  int64_t numel() const;
  const std::vector<int64_t>& shape() const { return shape_; }
  fna::DType dtype() const { return dtype_; }

  // Element offsets of every index, in row-major index order.
  std::vector<int64_t> offsets() const;
  // Values in canonical row-major order (float64).
  std::vector<double> to_dense() const;
  // Writes `values` (canonical order), rounding to the storage dtype.
  void from_dense(const std::vector<double>& values);
  // Fills the view with uniform values in [-amplitude, amplitude] and returns them as stored
  // (rounded), in canonical order.
  std::vector<double> fill_random(std::mt19937_64& rng, double amplitude);

  // Whole storage, for snapshots ("nothing was written").
  const std::vector<std::byte>& storage_bytes() const { return *storage_; }
  bool shares_storage(const Buffer& other) const { return storage_ == other.storage_; }

  // Empty when every storage element outside the union of `views` (which must share one storage)
  // still holds the poison; otherwise a description of the first stray write.
  static std::string check_outside_untouched(const std::vector<const Buffer*>& views);

 private:
  std::shared_ptr<std::vector<std::byte>> storage_;
  fna::DType dtype_ = fna::DType::kFloat32;
  int64_t offset_ = 0;  // elements
  std::vector<int64_t> shape_, strides_;
};

// max|got - ref| / max(1, max|ref|); +inf when `got` holds a NaN or an Inf (never passes) or the
// sizes differ.
double relative_error(const std::vector<double>& got, const std::vector<double>& ref);

}  // namespace fna_test
