"""jepa.ops.attention: the torch path against a float64 reference, backend dispatch, input checks,
torch.compile without graph breaks, and the models' attention going through the op.

The Triton kernels themselves are tested in test_attention_triton.py.
"""

from __future__ import annotations


import importlib

import pytest
import torch

import jepa.ops
from jepa.ops import BackendUnavailableError, attention, attention_reference, use_backend
from oracles import attention_ref64 as ref64, attention_rel_err as rel_err

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _qkv(b, h, n_q, n_k, d, dtype=torch.float32, d_v=None):
    q = torch.randn(b, h, n_q, d).to(dtype).requires_grad_()
    k = torch.randn(b, h, n_k, d).to(dtype).requires_grad_()
    v = torch.randn(b, h, n_k, d if d_v is None else d_v).to(dtype).requires_grad_()
    return q, k, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("n_q,n_k", [(1, 1), (17, 17), (129, 129), (7, 33), (40, 9)])
def test_torch_path_matches_float64_forward_and_backward(dtype, causal, padded, n_q, n_k):
    b = 3
    q, k, v = _qkv(b, 2, n_q, n_k, 24, dtype)
    kpm = None
    if padded:
        kpm = torch.rand(b, n_k) < 0.3
        kpm[0] = True  # a batch with no key at all
    with use_backend("torch"):
        out = attention(q, k, v, causal=causal, key_padding_mask=kpm)
    grad = torch.randn_like(out)
    out.backward(grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = ref64(q64, k64, v64, causal=causal, key_padding_mask=kpm)
    ref.backward(grad.double())
    tol = TOL[dtype]
    assert out.dtype == dtype
    assert rel_err(out, ref) <= tol
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert rel_err(got, want) <= tol


def test_value_head_size_may_differ_on_the_torch_path():
    q, k, v = _qkv(2, 2, 5, 6, 16, d_v=8)
    out = attention(q, k, v, scale=0.5)
    assert out.shape == (2, 2, 5, 8)
    assert rel_err(out, ref64(q, k, v, scale=0.5)) <= 1e-5


def test_empty_rows_are_zero_with_zero_gradients_never_nan():
    q, k, v = _qkv(2, 1, 6, 6, 16)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[0] = True
    kpm[1, :2] = True
    out = attention_reference(q, k, v, causal=True, key_padding_mask=kpm)
    out.sum().backward()
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert torch.equal(out[1, :, :2], torch.zeros_like(out[1, :, :2]))
    assert (out[1, :, 2:].abs() > 0).all()
    for g in (q.grad, k.grad, v.grad):
        assert torch.isfinite(g).all()
    assert torch.equal(q.grad[0], torch.zeros_like(q.grad[0]))
    assert torch.equal(q.grad[1, :, :2], torch.zeros_like(q.grad[1, :, :2]))


def test_no_keys_gives_zeros():
    q, k, v = _qkv(1, 2, 3, 0, 16)
    out = attention(q, k, v)
    assert out.shape == (1, 2, 3, 16) and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("backend", ["cuda", "cpp"])
def test_cuda_and_cpp_raise_per_op_and_are_skipped_globally(backend, monkeypatch):
    q, k, v = _qkv(1, 1, 4, 4, 16)
    with use_backend(attention=backend), pytest.raises(BackendUnavailableError, match=f"'{backend}' does not implement attention"):
        attention(q, k, v)
    monkeypatch.setenv("JEPA_BACKEND", f"attention={backend}")
    with pytest.raises(BackendUnavailableError, match=f"'{backend}' does not implement attention"):
        attention(q, k, v)
    # A global JEPA_BACKEND=cpp/cuda must not break a model: attention (no such path) stays on auto.
    monkeypatch.setenv("JEPA_BACKEND", backend)
    ref = attention_reference(q, k, v)
    assert torch.equal(attention(q, k, v), ref)


def test_auto_on_cpu_tensors_uses_the_torch_reference(monkeypatch):
    # Even under TRITON_INTERPRET=1, auto keeps CPU tensors on torch; the kernel would raise here.
    kern = pytest.importorskip("jepa.kernels.triton.attention")

    def boom(*args, **kwargs):
        raise AssertionError("auto must not run the Triton kernel on CPU tensors")

    monkeypatch.setattr(kern, "attention_forward", boom)
    q, k, v = _qkv(2, 2, 9, 9, 16)
    out = attention(q, k, v, causal=True)
    assert rel_err(out, ref64(q, k, v, causal=True)) <= 1e-5


def test_forced_triton_runs_the_kernel(monkeypatch):
    kern = pytest.importorskip("jepa.kernels.triton.attention")
    if not jepa.ops._backend.triton_can_run(torch.empty(0)):
        pytest.skip("triton cannot run on CPU tensors here (TRITON_INTERPRET unset)")
    calls = []
    real = kern.attention_forward

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(kern, "attention_forward", spy)
    q, k, v = _qkv(1, 1, 5, 5, 16)
    with use_backend("triton"):
        attention(q, k, v)
    assert calls == [torch.Size([1, 1, 5, 16])]


def test_bad_inputs_raise_errors_naming_the_argument():
    q, k, v = _qkv(2, 2, 5, 5, 16)
    with pytest.raises(ValueError, match=r"q, k, v must be \(B, H, N, d\)"):
        attention(q[0], k, v)
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        attention([1.0], k, v)
    with pytest.raises(TypeError, match="dtypes"):
        attention(q, k.double(), v)
    with pytest.raises(TypeError, match="floating-point"):
        attention(q.long(), k.long(), v.long())
    with pytest.raises(ValueError, match="share B and H"):
        attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match="v has 4"):
        attention(q, k, v[:, :, :4])
    with pytest.raises(ValueError, match="head size 16 but k has 8"):
        attention(q, k[..., :8], v)
    with pytest.raises(TypeError, match="causal must be a bool"):
        attention(q, k, v, causal=1)
    with pytest.raises(TypeError, match="key_padding_mask must be bool"):
        attention(q, k, v, key_padding_mask=torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, N_k\)=\(2, 5\), got \(2, 4\)"):
        attention(q, k, v, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="scale must be a real number"):
        attention(q, k, v, scale="0.5")
    with pytest.raises(ValueError, match="scale must be finite"):
        attention(q, k, v, scale=float("nan"))


def test_models_route_attention_through_jepa_ops(monkeypatch):
    from jepa.models.layers import MultiHeadAttention  # noqa: PLC0415

    seen = []
    real = jepa.ops.attention

    def spy(q, k, v, **kwargs):
        seen.append((tuple(q.shape), kwargs.get("key_padding_mask") is not None))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(jepa.ops, "attention", spy)
    mha = MultiHeadAttention(32, 4)
    x = torch.randn(3, 7, 32)
    out = mha(x, torch.zeros(3, 7, dtype=torch.bool))
    assert out.shape == (3, 7, 32)
    assert seen == [((3, 4, 7, 8), True)]


def test_torch_compile_has_no_graph_breaks_and_matches_eager():
    from jepa.models.layers import TransformerBlock  # noqa: PLC0415

    block = TransformerBlock(32, 4)
    x = torch.randn(2, 9, 32)
    kpm = torch.zeros(2, 9, dtype=torch.bool)
    kpm[1, 6:] = True
    torch._dynamo.reset()
    explained = torch._dynamo.explain(block)(x, kpm)
    assert explained.graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye, yc = block(xe, kpm), compiled(xc, kpm)
    ye.square().sum().backward()
    ge = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    yc.square().sum().backward()
    torch._dynamo.reset()
    assert torch.allclose(yc, ye, rtol=1e-5, atol=1e-6)
    assert torch.allclose(xc.grad, xe.grad, rtol=1e-5, atol=1e-6)
    for p, g in zip(block.parameters(), ge):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- auto's routes on CUDA


def _cuda_like(b, h, n, d, dtype=torch.bfloat16):
    """Stands in for a CUDA tensor where only device, dtype and shape are read (routing, not compute)."""
    import types  # noqa: PLC0415

    return types.SimpleNamespace(device=torch.device("cuda", 0), dtype=dtype, shape=(b, h, n, d))


@pytest.fixture
def routes(tmp_path, monkeypatch):
    """Writes a route table to a file JEPA_ATTENTION_ROUTES points at; the GPU is an sm_90."""
    from jepa.ops import attention_routes  # noqa: PLC0415

    path = tmp_path / "routes.json"
    monkeypatch.setenv("JEPA_ATTENTION_ROUTES", str(path))
    monkeypatch.setattr(attention_routes, "_arch", lambda device: "sm_90")
    attention_routes.clear_cache()

    def write(entries):
        import json  # noqa: PLC0415

        path.write_text(json.dumps({"format": 1, "entries": entries}))
        attention_routes.clear_cache()

    yield write
    attention_routes.clear_cache()


def test_unmasked_cuda_calls_go_to_sdpa_unless_the_table_measured_triton_faster(routes):
    attn = importlib.import_module("jepa.ops.attention")
    q = _cuda_like(8, 12, 196, 24)
    routes([])
    assert attn._auto_order(q, q, False, None) == ("torch",)  # nothing measured: SDPA
    routes([{"arch": "sm_90", "dtype": "bfloat16", "head_dim": 32, "n": 256, "causal": False, "backend": "triton"}])
    assert attn._auto_order(q, q, False, None) == ("triton", "torch")  # d=24 -> 32, N=196 -> 256
    assert attn._auto_order(q, q, True, None) == ("torch",)  # causal is another bucket
    assert attn._auto_order(_cuda_like(8, 12, 300, 24), q, False, None) == ("torch",)  # N bucket 512
    assert attn._auto_order(_cuda_like(8, 12, 196, 24, torch.float16), q, False, None) == ("torch",)
    routes([{"arch": "sm_80", "dtype": "bfloat16", "head_dim": 32, "n": 256, "causal": False, "backend": "triton"}])
    assert attn._auto_order(q, q, False, None) == ("torch",)  # measured on another architecture


def test_masked_cuda_calls_go_to_triton_and_cpu_calls_to_torch(routes):
    attn = importlib.import_module("jepa.ops.attention")
    routes([])
    q = _cuda_like(2, 2, 9, 16)
    assert attn._auto_order(q, q, False, torch.zeros(2, 9, dtype=torch.bool)) == ("triton", "torch")
    cpu = torch.zeros(2, 2, 9, 16)
    assert attn._auto_order(cpu, cpu, False, torch.zeros(2, 9, dtype=torch.bool)) == ("torch",)


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ('{"format": 2, "entries": []}', "expected"),
        ('{"format": 1, "entries": [{"arch": "sm_90"}]}', "needs 'backend'"),
        ('{"format": 1, "entries": [{"arch": "sm_90", "backend": "triton", "dtype": "int8", "head_dim": 32, '
         '"n": 256, "causal": false}]}', "bad attention route entry"),
    ],
)
def test_a_broken_route_table_is_refused_naming_the_file(tmp_path, monkeypatch, content, match):
    from jepa.ops import attention_routes  # noqa: PLC0415

    path = tmp_path / "bad.json"
    path.write_text(content)
    attention_routes.clear_cache()
    with pytest.raises(ValueError, match=match):
        attention_routes.load_routes(path)
    attention_routes.clear_cache()


def test_the_shipped_route_table_loads():
    from jepa.ops import attention_routes  # noqa: PLC0415

    attention_routes.clear_cache()
    table = attention_routes.load_routes(attention_routes.ROUTES_FILE)
    assert all(v in ("triton", "torch") for v in table.values())


def _untraceable_capability(index=None):
    """Stands in for the CUDA driver query (C code dynamo cannot trace) on an sm_90 GPU."""
    import os  # noqa: PLC0415

    os.stat(__file__)  # a builtin dynamo refuses, as it refuses the real driver call
    return (9, 0)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_routing_traces_under_fullgraph_with_a_cold_cache(tmp_path, monkeypatch, dynamic):
    # The first unmasked CUDA call of a compiled model routes while dynamo traces it: reading the table
    # file and asking the GPU for its architecture must not happen inside the trace.
    import json  # noqa: PLC0415

    from jepa.ops import attention_routes  # noqa: PLC0415

    path = tmp_path / "routes.json"
    path.write_text(json.dumps({"format": 1, "entries": [
        {"arch": "sm_90", "dtype": "float32", "head_dim": 16, "n": 16, "causal": False, "backend": "triton"}]}))
    monkeypatch.setenv("JEPA_ATTENTION_ROUTES", str(path))
    monkeypatch.setattr(torch.cuda, "get_device_capability", _untraceable_capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(attention_routes, "_arch_cache", {})
    attention_routes.clear_cache()

    def f(q, k):  # a graph whose value shows the route taken
        return q * 2 if attention_routes.route(q, k, False) == "triton" else q - 1

    torch._dynamo.reset()
    try:
        compiled = torch.compile(f, fullgraph=True, backend="eager", dynamic=dynamic)
        q = torch.randn(1, 2, 9, 16)  # bucket (sm_90, float32, 16, 16, False): measured faster
        assert torch.equal(compiled(q, q), q * 2)
        q = torch.randn(1, 2, 40, 16)  # bucket n=64: not in the table -> SDPA
        assert torch.equal(compiled(q, q), q - 1)
    finally:
        torch._dynamo.reset()
        attention_routes.clear_cache()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_unmasked_block_compiles_fullgraph_on_cuda_with_auto_routing(tmp_path, monkeypatch):  # pragma: no cover
    # GPU only: the real driver query and the route table read on the first (traced) CUDA call.
    import json  # noqa: PLC0415

    from jepa.models.layers import TransformerBlock  # noqa: PLC0415
    from jepa.ops import attention_routes  # noqa: PLC0415

    major, minor = torch.cuda.get_device_capability()
    path = tmp_path / "routes.json"
    path.write_text(json.dumps({"format": 1, "entries": [
        {"arch": f"sm_{major}{minor}", "dtype": "float32", "head_dim": 16, "n": 16, "causal": False,
         "backend": "triton"}]}))
    monkeypatch.setenv("JEPA_ATTENTION_ROUTES", str(path))
    monkeypatch.setenv("JEPA_TRITON_AUTOTUNE", "0")
    monkeypatch.setattr(attention_routes, "_arch_cache", {})
    attention_routes.clear_cache()
    torch.manual_seed(0)
    block = TransformerBlock(32, 2).cuda()
    x = torch.randn(2, 11, 32, device="cuda")
    torch._dynamo.reset()
    try:
        compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
        ye, yc = block(x), compiled(x)  # d=16, N=11: bucket routed to Triton by the table
        torch.testing.assert_close(yc, ye, rtol=1e-4, atol=1e-5)
        attention_routes.clear_cache()
        monkeypatch.delenv("JEPA_ATTENTION_ROUTES")
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(block, fullgraph=True, backend="aot_eager")(x), ye,
                                   rtol=1e-4, atol=1e-5)  # the shipped table: SDPA
    finally:
        torch._dynamo.reset()
        attention_routes.clear_cache()


def test_route_arch_is_marked_constant_the_way_torch_compiler_marks_it():
    """jepa marks ``_arch_if_routed`` for dynamo itself (torch.compiler's decorator imports torch._dynamo,
    a second at every ``import jepa``): the marks must be the ones torch's decorator sets."""
    import jepa.ops.attention_routes as routes  # noqa: PLC0415

    def probe() -> str:
        return ""

    marked = torch.compiler.assume_constant_result(probe)
    assert vars(marked) and all(getattr(routes._arch_if_routed, k, object()) == v for k, v in vars(marked).items())


def test_importing_jepa_and_its_cli_does_not_import_dynamo():
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = "import sys, jepa, jepa.cli.main, jepa.trainer; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
