// Test buffers (see buffer.h).
#include "buffer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

namespace fna_test {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// bf16 is the top half of an fp32; round the dropped 16 bits to nearest, ties to even.
uint16_t to_bf16(float f) {
  const uint32_t u = bits_of(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

// Poison payloads: quiet NaNs with a recognizable mantissa.
constexpr uint32_t kPoison32 = 0x7fc0deadu;
constexpr uint16_t kPoison16 = 0x7e5au;
constexpr uint16_t kPoisonBf16 = 0x7fdau;

}  // namespace

double load_element(const std::byte* p, fna::DType dtype) {
  switch (dtype) {
    case fna::DType::kFloat32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case fna::DType::kFloat16: {
      _Float16 h;  // GCC/Clang on x86-64: IEEE binary16 with correct conversions
      std::memcpy(&h, p, 2);
      return static_cast<double>(h);
    }
    case fna::DType::kBFloat16: {
      uint16_t b;
      std::memcpy(&b, p, 2);
      return float_of(static_cast<uint32_t>(b) << 16);
    }
  }
  return std::numeric_limits<double>::quiet_NaN();
}

void store_element(std::byte* p, fna::DType dtype, double value) {
  const float f = static_cast<float>(value);
  switch (dtype) {
    case fna::DType::kFloat32:
      std::memcpy(p, &f, 4);
      return;
    case fna::DType::kFloat16: {
      const _Float16 h = static_cast<_Float16>(f);
      std::memcpy(p, &h, 2);
      return;
    }
    case fna::DType::kBFloat16: {
      const uint16_t b = to_bf16(f);
      std::memcpy(p, &b, 2);
      return;
    }
  }
}

double round_to(fna::DType dtype, double value) {
  std::byte tmp[4];
  store_element(tmp, dtype, value);
  return load_element(tmp, dtype);
}

void store_poison(std::byte* p, fna::DType dtype) {
  if (dtype == fna::DType::kFloat32) {
    std::memcpy(p, &kPoison32, 4);
  } else {
    const uint16_t b = dtype == fna::DType::kFloat16 ? kPoison16 : kPoisonBf16;
    std::memcpy(p, &b, 2);
  }
}

bool is_poison(const std::byte* p, fna::DType dtype) {
  if (dtype == fna::DType::kFloat32) {
    uint32_t u;
    std::memcpy(&u, p, 4);
    return u == kPoison32;
  }
  uint16_t b;
  std::memcpy(&b, p, 2);
  return b == (dtype == fna::DType::kFloat16 ? kPoison16 : kPoisonBf16);
}

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::kContiguous:
      return "contiguous";
    case Layout::kStrided:
      return "strided";
    case Layout::kInterleaved:
      return "interleaved";
  }
  return "?";
}

namespace {
std::shared_ptr<std::vector<std::byte>> poisoned_storage(int64_t elements, fna::DType dtype) {
  const int es = fna::dtype_size(dtype);
  auto s = std::make_shared<std::vector<std::byte>>(static_cast<size_t>(elements * es));
  for (int64_t i = 0; i < elements; ++i) store_poison(s->data() + i * es, dtype);
  return s;
}
}  // namespace

Buffer Buffer::make(const std::vector<int64_t>& shape, fna::DType dtype, bool strided,
                    std::mt19937_64& rng) {
  Buffer b;
  b.dtype_ = dtype;
  b.shape_ = shape;
  const int n = static_cast<int>(shape.size());
  b.strides_.assign(n, 0);
  // Memory order of the dims, innermost first: the last dim always innermost and unit-stride.
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::reverse(order.begin(), order.end());
  std::vector<int64_t> padded = shape;
  if (strided) {
    std::shuffle(order.begin() + 1, order.end(), rng);
    // Pad every dim but the innermost by 0..2 elements so no two dims are "packed".
    for (int i = 1; i < n; ++i) padded[order[i]] += static_cast<int64_t>(rng() % 3);
    if (n > 0) padded[order[0]] += static_cast<int64_t>(rng() % 2) * 3;  // row padding
    b.offset_ = static_cast<int64_t>(rng() % 4);
  }
  int64_t stride = 1;
  for (int i = 0; i < n; ++i) {
    b.strides_[order[i]] = stride;
    stride *= padded[order[i]];
  }
  b.storage_ = poisoned_storage(b.offset_ + stride, dtype);
  return b;
}

std::vector<Buffer> Buffer::make_interleaved(const std::vector<int64_t>& shape,
                                             const std::vector<int64_t>& heads, fna::DType dtype) {
  const int n = static_cast<int>(shape.size());
  int64_t total_heads = 0;
  for (int64_t h : heads) total_heads += h;
  std::vector<int64_t> strides(n);
  int64_t stride = 1;
  for (int i = n - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= i == n - 2 ? total_heads : shape[i];  // the H dim spans every view's heads
  }
  auto storage = poisoned_storage(stride, dtype);
  std::vector<Buffer> views(heads.size());
  int64_t first_head = 0;
  for (size_t c = 0; c < heads.size(); ++c) {
    views[c].storage_ = storage;
    views[c].dtype_ = dtype;
    views[c].shape_ = shape;
    views[c].shape_[n - 2] = heads[c];
    views[c].strides_ = strides;
    views[c].offset_ = first_head * shape[n - 1];
    first_head += heads[c];
  }
  return views;
}

fna::TensorView Buffer::view() const {
  fna::TensorView t;
  t.data = storage_->data() + offset_ * fna::dtype_size(dtype_);
  t.dtype = dtype_;
  t.shape = shape_;
  t.strides = strides_;
  return t;
}

int64_t Buffer::numel() const {
  int64_t n = 1;
  for (int64_t s : shape_) n *= s;
  return n;
}

std::vector<int64_t> Buffer::offsets() const {
  std::vector<int64_t> out(numel());
  const int n = static_cast<int>(shape_.size());
  for (int64_t i = 0; i < static_cast<int64_t>(out.size()); ++i) {
    int64_t rest = i, off = offset_;
    for (int d = n - 1; d >= 0; --d) {
      off += (rest % shape_[d]) * strides_[d];
      rest /= shape_[d];
    }
    out[i] = off;
  }
  return out;
}

std::vector<double> Buffer::to_dense() const {
  const int es = fna::dtype_size(dtype_);
  const std::vector<int64_t> offs = offsets();
  std::vector<double> out(offs.size());
  for (size_t i = 0; i < offs.size(); ++i)
    out[i] = load_element(storage_->data() + offs[i] * es, dtype_);
  return out;
}

void Buffer::from_dense(const std::vector<double>& values) {
  const int es = fna::dtype_size(dtype_);
  const std::vector<int64_t> offs = offsets();
  for (size_t i = 0; i < offs.size(); ++i)
    store_element(storage_->data() + offs[i] * es, dtype_, values[i]);
}

std::vector<double> Buffer::fill_random(std::mt19937_64& rng, double amplitude) {
  std::uniform_real_distribution<double> dist(-amplitude, amplitude);
  std::vector<double> v(numel());
  for (double& x : v) x = dist(rng);
  from_dense(v);
  return to_dense();
}

std::string Buffer::check_outside_untouched(const std::vector<const Buffer*>& views) {
  const Buffer& first = *views.front();
  const int es = fna::dtype_size(first.dtype_);
  const int64_t total = static_cast<int64_t>(first.storage_->size()) / es;
  std::vector<uint8_t> covered(total, 0);
  for (const Buffer* b : views)
    for (int64_t off : b->offsets()) covered[off] = 1;
  for (int64_t i = 0; i < total; ++i)
    if (!covered[i] && !is_poison(first.storage_->data() + i * es, first.dtype_))
      return "element " + std::to_string(i) + " of the storage lies outside every view but was " +
             "written (value " +
             std::to_string(load_element(first.storage_->data() + i * es, first.dtype_)) + ")";
  return "";
}

double relative_error(const std::vector<double>& got, const std::vector<double>& ref) {
  if (got.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, mag = 1;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::abs(got[i] - ref[i]));
    mag = std::max(mag, std::abs(ref[i]));
  }
  return diff / mag;
}

}  // namespace fna_test
