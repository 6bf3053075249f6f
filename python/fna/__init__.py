"""fna: fast neighborhood attention.

    out = fna.na2d(q, k, v, kernel_size=7)             # q, k, v: [B, X, Y, heads, head_dim]

Works on PyTorch tensors (CPU and CUDA, autograd, torch.compile), on NumPy arrays (CPU, forward)
and on other DLPack producers. The compiled extension links no framework: torch is optional.
"""

from . import _C
from .functional import (autotune, autotune_enabled, available_backends, compiled_backends,
                         merge_attentions, na1d, na2d, na3d, set_autotune)
from .unfused import na1d_av, na1d_qk, na2d_av, na2d_qk, na3d_av, na3d_qk

__version__ = _C.version()

__all__ = ["na1d", "na2d", "na3d", "merge_attentions", "available_backends",
           "compiled_backends", "nn", "__version__", "na1d_qk", "na2d_qk", "na3d_qk", "na1d_av",
           "na2d_av", "na3d_av", "set_autotune", "autotune_enabled", "autotune"]


def __getattr__(name):
    # fna.nn needs torch; load it on first use so `import fna` works without torch.
    if name == "nn":
        import importlib
        return importlib.import_module(".nn", __name__)
    raise AttributeError(f"module 'fna' has no attribute {name!r}")
