"""Random sweep over every parameter: fna forward (out, lse) and backward (q, k, v, additional KV,
through out and lse) against the float64 oracle, on every CPU backend the build can run and on
`auto` (backend=None)."""

import pytest
import torch

import fna
from cases import random_case, run_case
from conftest import BASE_SEED, LONG

CPU_BACKENDS = [b for b in fna.compiled_backends()
                if b in fna.available_backends("cpu", "float32", 1, 8)] + [None]
N_CASES = 300 if LONG else 40


@pytest.mark.parametrize("backend", CPU_BACKENDS, ids=lambda b: b or "auto")
@pytest.mark.parametrize("index", range(N_CASES))
def test_sweep_cpu(backend, index):
    run_case(random_case(BASE_SEED + index), "cpu", backend)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_special_shapes(rank):
    """Window = extent (self attention), window 1, even windows, stride = window (blocked),
    all causal, on odd extents."""
    ext = {1: (13,), 2: (5, 7), 3: (3, 4, 5)}[rank]
    for ks, st, dl, ca in [(ext, 1, 1, False), (1, 1, 1, False), (2, 1, 1, True),
                           (ext, ext, 1, True), (2, 2, 1, False), (1, 1, 2, True)]:
        case = random_case(BASE_SEED + 7)
        per = lambda x: tuple(x) if isinstance(x, tuple) else (x,) * rank
        case.rank, case.extent, case.layout, case.n_additional = rank, ext, "contiguous", 2
        case.kernel_size, case.stride, case.dilation = per(ks), per(st), per(dl)
        case.is_causal, case.dtype, case.return_lse = per(ca), torch.float32, True
        run_case(case, "cpu", None)
