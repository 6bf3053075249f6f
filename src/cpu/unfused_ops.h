// CPU implementation of the unfused ops (include/fna/unfused.h). Called after validation.
#pragma once

#include "fna/unfused.h"

namespace fna::cpu {

void unfused_qk(const Problem& p, const QkArgs& a);
void unfused_qk_backward(const Problem& p, const QkBackwardArgs& a);
void unfused_av(const Problem& p, const AvArgs& a);
void unfused_av_backward(const Problem& p, const AvBackwardArgs& a);

}  // namespace fna::cpu
