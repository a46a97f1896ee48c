"""The Triton flash-attention kernels (jepa.kernels.triton.attention) against a float64 reference.

Without a GPU they run on CPU tensors under TRITON_INTERPRET=1 (set by tests/conftest.py before triton
is imported). Every buffer the kernels write (out, lse, delta, dq, dk, dv) is poisoned with NaN first,
so an element a kernel forgets to write fails the comparison (NaN never passes).

bfloat16: the interpreter stores bf16 as raw uint16 and its tl.dot would multiply bit patterns, so under
the interpreter the kernels upcast bf16 dot operands to float32 (exact; the GPU's bf16 dot accumulates
in float32 as well). Everything else of the bf16 path (loads, masks, casts of P and dS, stores) is the
compiled code's.
"""

from __future__ import annotations


import pytest
import torch

from jepa.ops import BackendUnavailableError, attention, use_backend
from jepa.ops import _backend
from oracles import attention_ref64 as ref64, attention_rel_err as rel_err

pytestmark = pytest.mark.skipif(
    not _backend.triton_available() or not (_backend.triton_interpret() or torch.cuda.is_available()),
    reason="needs triton with a GPU or TRITON_INTERPRET=1",
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
if DEVICE == "cuda" and torch.backends.cuda.matmul.allow_tf32:  # pragma: no cover - GPU only
    TOL[torch.float32] = 5e-4


@pytest.fixture
def kern():
    from jepa.kernels.triton import attention as kern  # noqa: PLC0415

    return kern


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Every kernel buffer starts as NaN; returns the list of buffers handed out."""
    from jepa.kernels.triton import attention as kern  # noqa: PLC0415

    handed_out = []

    def alloc(shape, dtype, device):
        t = torch.full(shape, float("nan"), dtype=dtype, device=device)
        handed_out.append(t)
        return t

    monkeypatch.setattr(kern, "_alloc", alloc)
    return handed_out


def _inputs(b, h, n_q, n_k, d, dtype, *, pad, pad_all_first=False):
    q = torch.randn(b, h, n_q, d, device=DEVICE).to(dtype).requires_grad_()
    k = torch.randn(b, h, n_k, d, device=DEVICE).to(dtype).requires_grad_()
    v = torch.randn(b, h, n_k, d, device=DEVICE).to(dtype).requires_grad_()
    kpm = None
    if pad:
        kpm = torch.rand(b, n_k, device=DEVICE) < 0.3
        if pad_all_first:
            kpm[0] = True  # batch 0: every key padded -> every row empty
    return q, k, v, kpm


def _check_fwd_bwd(q, k, v, kpm, causal, dtype, scale=None):
    with use_backend("triton"):
        out = attention(q, k, v, causal=causal, key_padding_mask=kpm, scale=scale)
    grad = torch.randn_like(out)
    out.backward(grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = ref64(q64, k64, v64, causal=causal, key_padding_mask=kpm, scale=scale)
    ref.backward(grad.double())
    tol = TOL[dtype]
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) <= tol
    assert rel_err(q.grad, q64.grad) <= tol
    assert rel_err(k.grad, k64.grad) <= tol
    assert rel_err(v.grad, v64.grad) <= tol
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("b,n", [(1, 1), (3, 17), (1, 129)])
@pytest.mark.parametrize("mode", ["plain", "causal", "padded", "causal_padded"])
def test_forward_backward_match_float64(dtype, b, n, mode):
    causal = "causal" in mode
    q, k, v, kpm = _inputs(b, 2, n, n, 16, dtype, pad="padded" in mode, pad_all_first=(b == 3))
    _check_fwd_bwd(q, k, v, kpm, causal, dtype)


@pytest.mark.skipif(DEVICE == "cuda", reason="tile shapes are autotuned on a GPU")
@pytest.mark.parametrize(
    "fwd,dkdv,dq",
    [((16, 32), (32, 16), (16, 32)), ((32, 32), (16, 16), (64, 32)), ((16, 16), (16, 64), (32, 32))],
    ids=["flipped", "square", "mixed"],
)
def test_other_tile_shapes_match_float64(kern, monkeypatch, fwd, dkdv, dq):
    # The interpreter runs one configuration; force others (BLOCK_M <, =, > BLOCK_N in each kernel) so the
    # block-alignment logic of the causal and boundary phases is checked for every orientation.
    import triton  # noqa: PLC0415

    for name, (bm, bn) in (("fwd", fwd), ("dkdv", dkdv), ("dq", dq)):
        monkeypatch.setitem(kern.INTERPRET_CONFIGS, name,
                            triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=4, num_stages=1))
    for causal in (False, True):
        q, k, v, kpm = _inputs(2, 1, 75, 75, 16, torch.float32, pad=True)
        _check_fwd_bwd(q, k, v, kpm, causal, torch.float32)
    q, k, v, kpm = _inputs(1, 1, 50, 21, 16, torch.float32, pad=True)
    _check_fwd_bwd(q, k, v, kpm, True, torch.float32)


@pytest.mark.parametrize("d", [24, 64, 128])
def test_head_sizes_padded_in_kernel_match_float64(d):
    # d=24 (I-JEPA) runs as 32 with masked loads; 64 and 128 are native tile sizes.
    q, k, v, kpm = _inputs(2, 1, 19, 19, d, torch.float32, pad=True)
    _check_fwd_bwd(q, k, v, kpm, causal=d == 24, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("n_q,n_k,causal", [(7, 33, False), (40, 9, True), (9, 40, True), (1, 50, False)])
def test_cross_attention_shapes_match_float64(dtype, n_q, n_k, causal):
    q, k, v, kpm = _inputs(2, 1, n_q, n_k, 16, dtype, pad=True)
    _check_fwd_bwd(q, k, v, kpm, causal, dtype)


def test_custom_scale_matches_float64():
    q, k, v, _ = _inputs(1, 1, 21, 21, 16, torch.float32, pad=False)
    _check_fwd_bwd(q, k, v, None, False, torch.float32, scale=0.37)


def test_strided_inputs_from_a_fused_qkv_projection():
    # MultiHeadAttention passes views of one (B, N, 3, H, d) tensor: nothing is contiguous.
    b, n, h, d = 2, 23, 2, 16
    qkv = torch.randn(b, n, 3, h, d, device=DEVICE, requires_grad=True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous()
    kpm = torch.rand(b, n, device=DEVICE) < 0.25
    with use_backend("triton"):
        out = attention(q, k, v, key_padding_mask=kpm)
    # a non-contiguous upstream gradient too, as from out.transpose(1, 2).reshape(...)
    grad = torch.randn(b, n, h, d, device=DEVICE).transpose(1, 2)
    out.backward(grad)
    qkv64 = qkv.detach().double().requires_grad_()
    q64, k64, v64 = qkv64.permute(2, 0, 3, 1, 4)
    ref = ref64(q64, k64, v64, key_padding_mask=kpm)
    ref.backward(grad.double())
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(qkv.grad, qkv64.grad) <= 1e-5


def test_offsets_inside_a_slice_are_64_bit_once_a_slice_spans_2_to_the_31_elements(kern):
    import triton.language as tl  # noqa: PLC0415

    def meta(shape, stride):  # sizes and strides only: nothing is allocated
        return torch.empty_strided(shape, stride, device="meta")

    small = meta((64, 16, 4096, 128), (16 * 4096 * 128, 4096 * 128, 128, 1))  # 2**32 elements in all: bases are 64-bit
    assert kern.offsets_dtype(small, small) == tl.int32
    # a (B, N, 3, H, d) projection viewed as (B, H, N, d): row stride 3 * H * d; 2**31 / (3 * 16 * 128) rows
    rows = 2**31 // (3 * 16 * 128)
    qkv = meta((1, 16, rows, 128), (rows * 3 * 16 * 128, 128, 3 * 16 * 128, 1))
    assert kern.offsets_dtype(small, qkv) == tl.int64
    fits = meta((1, 16, rows - 300, 128), (rows * 3 * 16 * 128, 128, 3 * 16 * 128, 1))
    assert kern.offsets_dtype(fits) == tl.int32  # padded to a whole tile (256 rows), still below 2**31
    assert kern.offsets_dtype(meta((2, 2**31 - 200), (2**31, 1))) == tl.int64  # a (B, N_k) key padding mask
    assert kern.offsets_dtype(meta((2, 2**20), (2**20, 1))) == tl.int32


def test_64_bit_offsets_compute_what_32_bit_ones_do(kern, monkeypatch):
    # The OFFS=int64 build (huge slices) on a small problem: the same results as the int32 one, bit for bit.
    import triton.language as tl  # noqa: PLC0415

    b, n, h, d = 2, 37, 2, 16
    qkv = torch.randn(b, n, 3, h, d, device=DEVICE)
    kpm = torch.rand(b, n, device=DEVICE) < 0.25
    grad = torch.randn(b, n, h, d, device=DEVICE).transpose(1, 2)
    results = []
    for offs in (tl.int32, tl.int64):
        monkeypatch.setattr(kern, "offsets_dtype", lambda *tensors, offs=offs: offs)
        x = qkv.clone().requires_grad_()
        q, k, v = x.permute(2, 0, 3, 1, 4)
        with use_backend("triton"):
            out = attention(q, k, v, key_padding_mask=kpm, causal=True)
        out.backward(grad)
        results.append((out.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    q64, k64, v64 = qkv.double().permute(2, 0, 3, 1, 4)
    assert rel_err(results[1][0], ref64(q64, k64, v64, key_padding_mask=kpm, causal=True)) <= 1e-5


def test_lse_is_the_float64_logsumexp_and_inf_on_empty_rows(kern):
    q, k, v, kpm = _inputs(3, 2, 17, 17, 16, torch.float32, pad=True, pad_all_first=True)
    scale = 0.25
    out, lse = kern.attention_forward(q.detach(), k.detach(), v.detach(), kpm, False, scale)
    s = (q.detach().double() @ k.detach().double().transpose(-1, -2)) * scale
    s = s.masked_fill(kpm[:, None, None, :], -torch.inf)
    expected = torch.logsumexp(s, dim=-1)
    assert lse.dtype == torch.float32 and lse.shape == (3, 2, 17)
    assert torch.isposinf(lse[0]).all()  # batch 0 has no key
    assert rel_err(lse[1:], expected[1:]) <= 1e-6


@pytest.mark.parametrize("causal", [False, True])
def test_rows_with_every_key_masked_give_zeros_and_zero_grads_like_the_reference(causal):
    b, h, n, d = 2, 2, 13, 16
    q, k, v, _ = _inputs(b, h, n, n, d, torch.float32, pad=False)
    kpm = torch.zeros(b, n, dtype=torch.bool, device=DEVICE)
    kpm[0] = True  # batch 0: nothing to attend to
    kpm[1, :4] = True  # batch 1: with causal, rows 0..3 see only padded keys
    with use_backend("triton"):
        out = attention(q, k, v, causal=causal, key_padding_mask=kpm)
    out.backward(torch.ones_like(out))
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert torch.equal(q.grad[0], torch.zeros_like(q.grad[0]))
    assert torch.equal(k.grad[0], torch.zeros_like(k.grad[0]))
    if causal:
        assert torch.equal(out[1, :, :4], torch.zeros_like(out[1, :, :4]))
        assert torch.equal(q.grad[1, :, :4], torch.zeros_like(q.grad[1, :, :4]))
    # the torch path agrees, values and gradients
    qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))
    with use_backend("torch"):
        ref = attention(qr, kr, vr, causal=causal, key_padding_mask=kpm)
    ref.backward(torch.ones_like(ref))
    assert rel_err(out, ref.double()) <= 1e-5
    for got, want in ((q.grad, qr.grad), (k.grad, kr.grad), (v.grad, vr.grad)):
        assert rel_err(got, want.double()) <= 1e-5


def test_poisoning_covers_every_kernel_buffer(poison):
    q, k, v, kpm = _inputs(1, 1, 5, 5, 16, torch.float32, pad=True)
    with use_backend("triton"):
        out = attention(q, k, v, key_padding_mask=kpm)
    out.sum().backward()
    # out, lse (forward); dq, dk, dv, delta (backward): all came NaN-filled from the hook
    assert len(poison) == 6
    assert all(not torch.isnan(t).any() for t in poison)


def test_fp16_output_keeps_dtype_and_strides_contiguous():
    q, k, v, _ = _inputs(1, 2, 9, 9, 16, torch.float16, pad=False)
    with use_backend("triton"):
        out = attention(q, k, v)
    assert out.dtype == torch.float16 and out.is_contiguous()


def test_forced_triton_refuses_what_the_kernel_cannot_do(monkeypatch):
    q = torch.randn(1, 1, 4, 16, device=DEVICE)
    with use_backend("triton"):
        with pytest.raises(BackendUnavailableError, match="float64"):
            attention(q.double(), q.double(), q.double())
        big = torch.randn(1, 1, 4, 256, device=DEVICE)
        with pytest.raises(BackendUnavailableError, match="head size 256"):
            attention(big, big, big)
        with pytest.raises(BackendUnavailableError, match="head size"):
            attention(q, q, torch.randn(1, 1, 4, 8, device=DEVICE))
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with use_backend("triton"), pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
            attention(q, q, q)


def test_custom_op_passes_opcheck():
    q, k, v, kpm = _inputs(2, 1, 9, 9, 16, torch.float32, pad=True)
    args = (q, k, v, kpm, True, 0.3)
    torch.library.opcheck(torch.ops.jepa.attention_fwd.default, args)


def test_custom_op_passes_opcheck_with_fused_qkv_strides():
    qkv = torch.randn(2, 9, 3, 2, 16, device=DEVICE).permute(2, 0, 3, 1, 4)  # (3, B, H, N, d), strided
    q, k, v = (t.requires_grad_() for t in qkv.detach().clone().unbind(0))
    assert not q.is_contiguous()
    torch.library.opcheck(torch.ops.jepa.attention_fwd.default, (q, k, v, None, False, 0.25))


def test_torch_compile_fullgraph_with_the_triton_op_matches_eager():
    from jepa.models.layers import TransformerBlock  # noqa: PLC0415

    torch.manual_seed(3)
    block = TransformerBlock(32, 2).to(DEVICE)
    x = torch.randn(2, 11, 32, device=DEVICE)
    kpm = torch.zeros(2, 11, dtype=torch.bool, device=DEVICE)
    kpm[1, 7:] = True
    torch._dynamo.reset()
    with use_backend("triton"):
        explained = torch._dynamo.explain(block)(x, kpm)
        assert explained.graph_break_count == 0
        called = {str(n.target) for g in explained.graphs for n in g.graph.nodes if n.op == "call_function"}
        assert "jepa.attention_fwd.default" in called
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


def test_edge_shapes_no_query_no_key_zero_batch():
    with use_backend("triton"):
        q, k, v, _ = _inputs(2, 1, 0, 5, 16, torch.float32, pad=False)  # no query
        out = attention(q, k, v)
        assert out.shape == (2, 1, 0, 16)
        out.sum().backward()
        assert torch.equal(k.grad, torch.zeros_like(k.grad)) and torch.equal(v.grad, torch.zeros_like(v.grad))
        q, k, v, _ = _inputs(2, 1, 4, 0, 16, torch.float32, pad=False)  # no key: rows are empty
        out = attention(q, k, v)
        assert torch.equal(out, torch.zeros_like(out))
        out.sum().backward()
        assert torch.equal(q.grad, torch.zeros_like(q.grad))
        q, k, v, _ = _inputs(0, 2, 4, 4, 16, torch.float32, pad=False)  # no batch
        assert attention(q, k, v).shape == (0, 2, 4, 16)
        with pytest.raises(BackendUnavailableError, match="head size 0"):
            z = torch.zeros(1, 1, 3, 0, device=DEVICE)
            attention(z, z, z)


def test_random_shapes_match_float64():
    # Property check over shapes the parametrized tests do not list: head sizes that are not a tile size
    # (8 -> 16, 40 -> 64, 100 -> 128), N_q != N_k, causal x padded. Derandomized: the same examples each run.
    # N_k >= 2: with a single key dq and dk are exactly 0 and a relative error is meaningless (that case is
    # covered by test_forward_backward_match_float64 with N = 1).
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=10, deadline=None, derandomize=True, database=None)
    @hypothesis.given(
        b=st.integers(1, 3), h=st.integers(1, 2), n_q=st.integers(1, 70), n_k=st.integers(2, 70),
        d=st.sampled_from([8, 16, 40, 100]), causal=st.booleans(), padded=st.booleans(),
        dtype=st.sampled_from([torch.float32, torch.float16]),
    )
    def check(b, h, n_q, n_k, d, causal, padded, dtype):
        torch.manual_seed(n_q * 1000 + n_k)
        q, k, v, kpm = _inputs(b, h, n_q, n_k, d, dtype, pad=padded)
        _check_fwd_bwd(q, k, v, kpm, causal, dtype)

    check()


# ----------------------------------------------------------------------------- GPU launch logic on the CPU


class _Recorder:
    """Stands in for a Triton kernel: records the grid and launch options of ``kernel[grid](...)`` and runs
    nothing (the host logic of the GPU path is checked on the CPU)."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            g = grid(kwargs) if callable(grid) else grid
            self.calls.append((self.name, tuple(g), kwargs))

        return launch


@pytest.fixture
def gpu_host_path(monkeypatch, kern):
    """The launch logic of a GPU (pinned configurations, an H100's shared memory) with recording kernels."""
    calls = []
    monkeypatch.setattr(kern, "_interpreting", lambda: False)
    monkeypatch.setattr(kern, "device_smem_limit", lambda: 232448)
    monkeypatch.setattr(kern, "device_capability", lambda: 90)
    monkeypatch.setattr(kern, "autotune_enabled", lambda: False)
    for name in ("fwd", "dkdv", "dq"):
        monkeypatch.setitem(kern._KERNELS, name, _Recorder(name, calls))
    monkeypatch.setattr(kern, "_attn_bwd_delta", _Recorder("delta", calls))
    return calls


def test_grids_stay_within_cuda_limits_when_batch_times_heads_exceeds_65535(kern, gpu_host_path):
    """B*H = 70,000 programs per query block: grid axes 1 and 2 take at most 65,535, so every launch must
    put them on axis 0 (limit 2**31 - 1)."""
    b, h, n, d = 35_000, 2, 3, 16
    q = torch.zeros(b, h, n, d)
    out, lse = kern.attention_forward(q, q, q, None, False, 0.25)
    kern.attention_backward(out, q, q, q, out, lse, None, False, 0.25)
    assert [c[0] for c in gpu_host_path] == ["fwd", "delta", "dkdv", "dq"]
    for name, grid, _ in gpu_host_path:
        assert grid[0] <= 2**31 - 1 and all(g <= 65535 for g in grid[1:]), (name, grid)
        assert grid[0] * (grid[1] if len(grid) > 1 else 1) >= b * h, (name, grid)


@pytest.fixture
def set_tf32():
    """Sets torch.backends.cuda.matmul.allow_tf32 for the test (a property monkeypatch cannot patch)."""
    old = torch.backends.cuda.matmul.allow_tf32
    yield lambda value: setattr(torch.backends.cuda.matmul, "allow_tf32", value)
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("dtype, tf32, d", [(torch.float32, True, 80), (torch.float32, False, 128),
                                            (torch.bfloat16, False, 24), (torch.float16, False, 96)])
def test_autotune_off_launches_the_pinned_configuration(kern, gpu_host_path, monkeypatch, set_tf32, dtype, tf32, d):
    set_tf32(tf32)
    monkeypatch.setattr(kern, "_dot_precision", lambda dt: "tf32" if dt != torch.float32 or tf32 else "tf32x3")
    q = torch.zeros(2, 3, 50, d, dtype=dtype)
    out, lse = kern.attention_forward(q, q, q, None, True, 0.2)
    kern.attention_backward(out, q, q, q, out, lse, None, True, 0.2)
    precision = "tf32" if dtype != torch.float32 or tf32 else "tf32x3"
    for name, _, kwargs in gpu_host_path:
        if name == "delta":
            continue
        pinned = kern.pinned_config(name, dtype, precision, kern.padded_head_dim(d), 232448)
        assert kwargs["BLOCK_M"] == pinned.kwargs["BLOCK_M"] and kwargs["BLOCK_N"] == pinned.kwargs["BLOCK_N"]
        assert kwargs["num_warps"] == pinned.num_warps and kwargs["num_stages"] == pinned.num_stages
        assert kwargs["DOT_PRECISION"] == precision
        assert kern.smem_bytes(name, kern.dot_class(dtype, precision), kwargs["BLOCK_D"],
                               (kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["num_warps"], kwargs["num_stages"])) <= 232448


def test_autotune_switch_and_cuda_graph_capture(kern, monkeypatch):
    monkeypatch.delenv("JEPA_TRITON_AUTOTUNE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert kern.autotune_enabled()
    for off in ("0", "false", "off"):
        monkeypatch.setenv("JEPA_TRITON_AUTOTUNE", off)
        assert not kern.autotune_enabled()
    monkeypatch.setenv("JEPA_TRITON_AUTOTUNE", "1")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert not kern.autotune_enabled(), "the autotuner cannot benchmark inside a CUDA-graph capture"


def test_float32_without_tf32_uses_the_float32_accurate_split_on_gpus(kern, monkeypatch, set_tf32):
    monkeypatch.setattr(kern, "_interpreting", lambda: False)
    set_tf32(False)
    assert kern._dot_precision(torch.float32) == ("tf32x3" if torch.version.hip is None else "ieee")
    assert kern._dot_precision(torch.bfloat16) == "tf32"
    set_tf32(True)
    assert kern._dot_precision(torch.float32) == "tf32"
