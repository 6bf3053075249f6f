"""fna.set_autotune / fna.autotune: the process-wide switch for fna::Options::autotune. CPU parts
run everywhere; the cuda-hopper part needs an sm_90 GPU and a build with that backend."""

import numpy as np
import pytest

import fna
import oracle


@pytest.fixture(autouse=True)
def _restore():
    before = fna.autotune_enabled()
    yield
    fna.set_autotune(before)


def test_switch_defaults_off_and_toggles():
    assert fna.autotune_enabled() is False
    fna.set_autotune(True)
    assert fna.autotune_enabled() is True
    fna.set_autotune(False)
    assert fna.autotune_enabled() is False


def test_context_manager_restores_on_exception():
    with pytest.raises(RuntimeError, match="inside"):
        with fna.autotune():
            assert fna.autotune_enabled()
            raise RuntimeError("inside")
    assert not fna.autotune_enabled()
    fna.set_autotune(True)
    with fna.autotune(False):
        assert not fna.autotune_enabled()
    assert fna.autotune_enabled()


def test_cpu_backends_ignore_it():
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((1, 11, 9, 2, 16)).astype(np.float32) for _ in range(3))
    for backend in ("cpu", "reference"):
        off = fna.na2d(q, k, v, (5, 4), backend=backend)
        with fna.autotune():
            on = fna.na2d(q, k, v, (5, 4), backend=backend)
        np.testing.assert_array_equal(on, off)


def test_cuda_hopper_autotuned_matches_oracle():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if "cuda-hopper" not in fna.available_backends("cuda", "bfloat16", 3, 128):
        pytest.skip("cuda-hopper is not available (needs sm_90 and a build with it)")
    g = torch.Generator().manual_seed(11)
    # Masked tiles on every axis, an even window, and extents no tile shape divides.
    q, k, v = (torch.randn(1, 9, 14, 21, 2, 128, generator=g).to(torch.bfloat16).cuda()
               for _ in range(3))
    window = (5, 6, 9)
    ref, ref_lse = oracle.attention(q.cpu(), k.cpu(), v.cpu(), window, (1, 1, 1), (1, 1, 1),
                                    (False, False, False))
    with fna.autotune():
        for _ in range(2):  # the tuning call, then a call on the kept shape
            out, lse = fna.na3d(q, k, v, window, backend="cuda-hopper", return_lse=True)
            assert oracle.rel_err(out.cpu(), ref) <= oracle.TOL[torch.bfloat16]
            assert oracle.rel_err(lse.cpu(), ref_lse) <= oracle.TOL[torch.bfloat16]
