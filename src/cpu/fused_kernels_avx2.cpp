// The fused CPU kernels compiled for AVX2 + FMA (chosen at run time by cpu_backend.cpp when the CPU
// has both). Built with -mavx2 -mfma; see fused_kernels_impl.h.
#define FNA_FUSED_ISA avx2
#define FNA_FUSED_ISA_NAME "avx2+fma"
#define FNA_FUSED_WIDE 1
#include "cpu/fused_kernels_impl.h"

namespace fna::cpu::fused {
const KernelTable& kernels_avx2() { return avx2::table(); }
}  // namespace fna::cpu::fused
