"""NumPy arrays and other DLPack producers (forward), and `import fna` without torch."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fna
import oracle


def _np_inputs(seed, shape_q, shape_kv, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-2, 2, s).astype(dtype) for s in (shape_q, shape_kv, shape_kv)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_numpy_forward(dtype):
    q, k, v = _np_inputs(0, (2, 5, 6, 4, 8), (2, 5, 6, 2, 8), dtype)
    out, lse = fna.na2d(q, k, v, (3, 4), stride=(1, 2), dilation=(1, 1), is_causal=(True, False),
                        return_lse=True)
    assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == q.shape
    assert isinstance(lse, np.ndarray) and lse.dtype == np.float32 and lse.shape == q.shape[:-1]
    ref_out, ref_lse = oracle.attention(*(torch.from_numpy(a) for a in (q, k, v)), (3, 4), (1, 2),
                                        (1, 1), (True, False))
    tol = oracle.TOL[torch.float32 if dtype == np.float32 else torch.float16]
    assert oracle.rel_err(out, ref_out) <= tol
    assert oracle.rel_err(lse, ref_lse) <= tol


def test_numpy_strided_views_and_additional_kv():
    rng = np.random.default_rng(1)
    qkv = rng.standard_normal((1, 9, 3, 2, 8), dtype=np.float32)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # non-contiguous views, no copies
    ak = rng.standard_normal((1, 3, 2, 8), dtype=np.float32)
    av = rng.standard_normal((1, 3, 2, 8), dtype=np.float32)
    out = fna.na1d(q, k, v, 4, additional_keys=ak, additional_values=av, scale=0.3)
    ref, _ = oracle.attention(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (q, k, v)),
                              (4,), (1,), (1,), (False,), 0.3, torch.from_numpy(ak),
                              torch.from_numpy(av))
    assert oracle.rel_err(out, ref) <= 2e-4


def test_numpy_read_only_inputs():
    q, k, v = _np_inputs(2, (1, 7, 1, 4), (1, 7, 1, 4))
    for a in (q, k, v):
        a.flags.writeable = False
    out = fna.na1d(q, k, v, 3)
    ref, _ = oracle.attention(*(torch.from_numpy(a.copy()) for a in (q, k, v)), (3,), (1,), (1,),
                              (False,))
    assert oracle.rel_err(out, ref) <= 2e-4


def _dense_np(q, k, v, scale):
    """Unmasked attention over k/v [B, N, H, D] for every query of q [B, X, H, D]: (out, lse)."""
    s = np.einsum("bxhd,bnhd->bhxn", q.astype(np.float64), k.astype(np.float64)) * scale
    m = s.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(s - m).sum(-1, keepdims=True)))
    out = np.einsum("bhxn,bnhd->bxhd", np.exp(s - lse), v.astype(np.float64))
    return out, lse[..., 0].transpose(0, 2, 1)


def test_merge_attentions_numpy():
    """NA with additional KV == merge(NA without it, dense attention over the extra tokens)."""
    q, k, v = _np_inputs(3, (2, 9, 2, 4), (2, 9, 2, 4))
    ak, av = _np_inputs(4, (2, 5, 2, 4), (2, 5, 2, 4))[:2]
    full = fna.na1d(q, k, v, 3, additional_keys=ak, additional_values=av)
    o1, l1 = fna.na1d(q, k, v, 3, return_lse=True)
    o2, l2 = _dense_np(q, ak, av, 0.5)
    out, lse = fna.merge_attentions([o1, o2.astype(np.float32)], [l1, l2.astype(np.float32)])
    assert out.dtype == np.float32 and lse.shape == l1.shape
    assert np.abs(out - full).max() <= 2e-4


def test_array_api_strict_producer():
    xp = pytest.importorskip("array_api_strict")
    q, k, v = _np_inputs(4, (2, 6, 2, 8), (2, 6, 1, 8))
    out, lse = fna.na1d(xp.asarray(q), xp.asarray(k), xp.asarray(v), 3, return_lse=True)
    assert type(out).__module__.startswith("array_api_strict")
    ref, _ = oracle.attention(*(torch.from_numpy(a) for a in (q, k, v)), (3,), (1,), (1,),
                              (False,))
    assert oracle.rel_err(np.asarray(out), ref) <= 2e-4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_jax_producer(dtype):
    jnp = pytest.importorskip("jax.numpy")
    q, k, v = _np_inputs(5, (1, 5, 6, 2, 8), (1, 5, 6, 2, 8))
    jq, jk, jv = (jnp.asarray(a, dtype=dtype) for a in (q, k, v))
    out = fna.na2d(jq, jk, jv, (3, 3), dilation=(1, 2))
    assert "jax" in type(out).__module__ and str(out.dtype) == dtype
    tq, tk, tv = (torch.from_numpy(np.array(a.astype(jnp.float32))) for a in (jq, jk, jv))
    ref, _ = oracle.attention(tq, tk, tv, (3, 3), (1, 1), (1, 2), (False, False))
    tol = oracle.TOL[torch.float32 if dtype == "float32" else torch.bfloat16]
    assert oracle.rel_err(np.asarray(out.astype(jnp.float32)), ref) <= tol


def test_import_and_numpy_without_torch():
    """`import fna` and the NumPy path with torch made unimportable in a fresh interpreter."""
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        import fna
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        q = np.random.default_rng(0).standard_normal((1, 7, 2, 4)).astype(np.float32)
        out, lse = fna.na1d(q, q, q, 3, return_lse=True)
        assert out.shape == q.shape and lse.shape == q.shape[:-1]
        try:
            import fna.nn
        except ImportError:
            pass
        else:
            raise AssertionError("fna.nn imported without torch")
        print("ok", fna.__version__)
    """)
    # Only the directory fna was imported from on the path (an install with `pip --target`, as on
    # the GPU machine, lives outside site-packages), nothing else of the parent's PYTHONPATH.
    fna_root = os.path.dirname(os.path.dirname(os.path.abspath(fna.__file__)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": fna_root})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")
