// The fused CPU kernels for the portable baseline (x86-64 SSE2, or any GCC/Clang target): the same
// source as the AVX2 build, with each 8-lane vector split into two 4-lane registers.
#define FNA_FUSED_ISA generic
#define FNA_FUSED_ISA_NAME "generic"
#include "cpu/fused_kernels_impl.h"

namespace fna::cpu::fused {
const KernelTable& kernels_generic() { return generic::table(); }
}  // namespace fna::cpu::fused
