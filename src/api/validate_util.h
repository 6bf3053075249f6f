// Validation helpers shared by validate.cpp (forward / backward) and unfused.cpp (the unfused
// ops). Every failure throws fna::Error naming the argument, its value and the rule.
#pragma once

#include <string>
#include <vector>

#include "fna/error.h"
#include "fna/tensor.h"

namespace fna::detail {

std::string shape_str(const std::vector<int64_t>& s);

// Throws fna::Error(kind, "fna: " + msg).
[[noreturn]] void fail(const std::string& msg, ErrorKind kind = ErrorKind::kInvalidArgument);

struct Named {
  const char* name;
  const TensorView* view;
};

// Rank, shape (== expected), one non-negative stride per dim, unit-stride last dim, non-null.
// `layout` spells the expected layout in the message, e.g. "[B, *extent, heads_q, head_dim]".
void check_view(const char* name, const TensorView& t, const std::vector<int64_t>& expected,
                const char* layout);

// Every view has `dtype` (else kTypeError naming `what` and `dtype_ref`) and `device` (the device
// of the argument named `device_ref`).
void check_same(const char* what, const std::vector<Named>& views, DType dtype,
                const Device& device, const char* dtype_ref, const char* device_ref = "q");

// Outputs do not overlap themselves, any input, or each other.
void check_no_overlap(const std::vector<Named>& outputs, const std::vector<Named>& inputs);

}  // namespace fna::detail
