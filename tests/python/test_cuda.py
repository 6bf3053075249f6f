"""CUDA paths (skipped without a GPU): every CUDA backend the build has against the float64
oracle (forward + backward), outputs on the input's device, work on the current stream (side
stream ordering and CUDA graph capture), bf16/fp16, mixed-device errors, torch.compile."""

import pytest
import torch

import fna
import oracle
from cases import TF32_TOL, random_case, run_case
from conftest import BASE_SEED, LONG

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA_BACKENDS = ([b for b in fna.compiled_backends() if b.startswith("cuda")] + [None]
                 if torch.cuda.is_available() else [])
N_CASES = 300 if LONG else 40
HEAD_DIMS = (32, 64, 128)


@pytest.mark.parametrize("backend", CUDA_BACKENDS, ids=lambda b: b or "auto")
@pytest.mark.parametrize("index", range(N_CASES))
def test_sweep_cuda(backend, index):
    case = random_case(BASE_SEED + 1000 + index, head_dims=HEAD_DIMS)
    run_case(case, "cuda", backend)


def test_some_cuda_backend_runs():
    assert fna.available_backends("cuda", "bfloat16", 2, 64), fna.compiled_backends()


def _problem(dtype=torch.bfloat16, extent=(24, 40), heads=4, dim=64):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, *extent, heads, dim, generator=g).to(dtype).cuda() for _ in range(3)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_output_device_dtype_and_values(dtype):
    q, k, v = _problem(dtype)
    out, lse = fna.na2d(q, k, v, (7, 9), dilation=(2, 1), return_lse=True)
    assert out.device == q.device and out.dtype == dtype and lse.dtype == torch.float32
    ref, ref_lse = oracle.attention(q.cpu(), k.cpu(), v.cpu(), (7, 9), (1, 1), (2, 1),
                                    (False, False))
    tol = TF32_TOL if dtype == torch.float32 else oracle.TOL[dtype]
    assert oracle.rel_err(out.cpu(), ref) <= tol
    assert oracle.rel_err(lse.cpu(), ref_lse) <= tol


def test_runs_on_current_stream():
    """Inputs written on a side stream right before the call, behind a long sleep: fna must be
    ordered after them, which only holds if it launches on the current (side) stream."""
    q, k, v = _problem()
    ref = fna.na2d(q, k, v, 5)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        q2 = torch.zeros_like(q)
        torch.cuda._sleep(200_000_000)  # ~0.1 s of spinning on the side stream
        q2.copy_(q)
        out = fna.na2d(q2, k, v, 5)
    side.synchronize()
    assert torch.equal(out, ref)


def test_cuda_graph_capture():
    """Capture puts work on a capturing stream; a launch on any other stream fails capture."""
    q, k, v = _problem()
    ref = fna.na2d(q, k, v, 5)
    static_q = q.clone()
    out = fna.na2d(static_q, k, v, 5)  # warm-up outside capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fna.na2d(static_q, k, v, 5)
    static_q.copy_(q)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, ref)


def test_non_default_device_index():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    q, k, v = (t.to("cuda:1") for t in _problem())
    out = fna.na2d(q, k, v, 5)
    assert out.device == q.device
    assert torch.equal(out.cpu(), fna.na2d(*(t.to("cuda:0") for t in (q, k, v)), 5).cpu())


def test_mixed_devices():
    q, k, v = _problem()
    with pytest.raises(ValueError, match="fna.na2d: key is on cpu but query is on cuda:0"):
        fna.na2d(q, k.cpu(), v, 5)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_cuda(backend):
    import torch._dynamo
    from torch._dynamo.utils import counters
    import fna.nn
    torch._dynamo.reset()
    counters.clear()
    model = fna.nn.NeighborhoodAttention3D(128, 2, (3, 5, 5), dilation=(1, 2, 1)).cuda()
    model = model.to(torch.bfloat16)
    x = torch.randn(1, 6, 12, 10, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = model(x)
    (gx,) = torch.autograd.grad(y.float().square().sum(), x)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x2 = x.detach().clone().requires_grad_()
    y2 = compiled(x2)
    (gx2,) = torch.autograd.grad(y2.float().square().sum(), x2)
    assert sum(counters["graph_break"].values()) == 0
    assert oracle.rel_err(y2.detach().cpu(), y.detach().cpu()) <= 3e-2
    assert oracle.rel_err(gx2.cpu(), gx.cpu()) <= 9e-2
