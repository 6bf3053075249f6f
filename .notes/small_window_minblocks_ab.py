# Snapshot-only experiment for a device run (never commit its result): apply to a copy of the
# tree with `python3 .notes/small_window_minblocks_ab.py <copy root>` after
# .notes/small_window_setup.patch; then FNA_SMALL_MB=4|5|6 picks the small-window kernel's
# __launch_bounds__ min-blocks at run time, so one build A/Bs the three register budgets.
import sys
root = sys.argv[1]
k = root + '/src/cuda/fused/sm80/kernel_fwd_small_sm80.cuh'
s = open(k).read()
old = '''template <class Element>
__global__ void __launch_bounds__(SmallWindow::kWarps * 32, SmallWindow::kMinBlocks)'''
assert old in s
s = s.replace(old, '''template <class Element, int kMB = SmallWindow::kMinBlocks>
__global__ void __launch_bounds__(SmallWindow::kWarps * 32, kMB)''')
open(k, 'w').write(s)
l = root + '/src/cuda/fused/sm80/launch_fwd_sm80.cuh'
s = open(l).read()
old = '''      fwd_small_kernel_sm80<Element><<<grid, SmallWindow::kWarps * 32, 0, stream>>>(p);'''
assert old in s
s = s.replace(old, '''      const char* e = getenv("FNA_SMALL_MB");
      const int mb = e ? atoi(e) : SmallWindow::kMinBlocks;
      if (mb == 4) fwd_small_kernel_sm80<Element, 4><<<grid, SmallWindow::kWarps * 32, 0, stream>>>(p);
      else if (mb == 6) fwd_small_kernel_sm80<Element, 6><<<grid, SmallWindow::kWarps * 32, 0, stream>>>(p);
      else fwd_small_kernel_sm80<Element, 5><<<grid, SmallWindow::kWarps * 32, 0, stream>>>(p);''')
s = s.replace('#include <type_traits>\n', '#include <cstdlib>\n#include <type_traits>\n', 1)
open(l, 'w').write(s)
print("patched")
