// Host-side entry of the CUDA unfused ops (include/fna/unfused.h), defined in unfused_ops.cu.
// Host-only header. Called after validation; run on options.stream.
#pragma once

#include "fna/unfused.h"

namespace fna::cuda::naive {

void unfused_qk(const Problem& p, const QkArgs& a, const Options& o);
void unfused_qk_backward(const Problem& p, const QkBackwardArgs& a, const Options& o);
void unfused_av(const Problem& p, const AvArgs& a, const Options& o);
void unfused_av_backward(const Problem& p, const AvBackwardArgs& a, const Options& o);

}  // namespace fna::cuda::naive
