"""clap_mlx.ops against float64 references, on edge values, on one and two threads, on every
op path (the compiled kernels in each SIMD variant this CPU runs, NumPy, MLX): every test
runs on each (the settings and the auto path: test_op_paths.py)."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from clap_mlx import host_ops, linear_ops, ops

RNG = np.random.default_rng(0)
# Larger than host_ops.PARALLEL_MIN_ELEMENTS, so the rows are split across threads and blocks.
PARALLEL_SHAPE = (3, 2000, 97)
SIMD_VARIANTS = ops._kernels.simd_variants() if ops.use_kernels() else ()
BACKENDS = [*(f"kernels-{variant}" for variant in SIMD_VARIANTS), "numpy", "mlx"]


def test_the_kernels_are_built():
    # The extension is part of the package build (setup.py); a test run without it is a
    # broken install, not a skip.
    assert ops.use_kernels(), "clap_mlx._kernels was not built (pip install -e . compiles it)"


@pytest.fixture(autouse=True, params=BACKENDS)
def backend(request, monkeypatch):
    path, _, variant = request.param.partition("-")
    monkeypatch.setenv("CLAP_MLX_OPS", path)
    if variant:
        active = ops._kernels.simd()
        ops._kernels.set_simd(variant)
        request.addfinalizer(lambda: ops._kernels.set_simd(active))
    return path


def as_numpy(x: mx.array) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def gelu_reference(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x * 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2.0))


def softmax_reference(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def test_gelu_matches_erf_gelu_over_whole_range():
    x = np.linspace(-40, 40, 160_001, dtype=np.float32)
    got = ops.gelu(mx.array(x))
    assert got.dtype == mx.float32 and got.shape == x.shape
    err = np.abs(as_numpy(got) - gelu_reference(x))
    # float32 rounding of the output alone is up to 2e-6 at |x| = 40.
    assert err[np.abs(x) <= 8].max() < 5e-7
    assert (err / np.maximum(np.abs(x), 1)).max() < 2e-7


def test_gelu_edge_values(backend):
    got = as_numpy(ops.gelu(mx.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e30])))
    assert got[0] == np.inf and np.isnan(got[2])
    # MLX's nn.gelu computes x * Phi(x), NaN at -inf (-inf * 0); the host paths give the limit
    assert np.isnan(got[1]) if backend == "mlx" else got[1] == 0
    np.testing.assert_array_equal(got[3:], np.float32([0.0, 0.0, 5e-31, 0.0]))


def test_gelu_parallel_path_and_shape():
    x = RNG.standard_normal(PARALLEL_SHAPE).astype(np.float32) * 4
    assert x.size >= host_ops.PARALLEL_MIN_ELEMENTS
    got = ops.gelu(mx.array(x))
    assert got.shape == PARALLEL_SHAPE
    assert np.abs(as_numpy(got) - gelu_reference(x)).max() < 5e-7


def test_softmax_with_masks_and_far_apart_rows():
    x = RNG.standard_normal((64, 77)).astype(np.float32) * 8
    x[1] = np.finfo(np.float32).min  # masked with finfo.min: uniform, as torch
    x[:, 60:] = -np.inf  # additive -inf padding mask
    x[2, :5] += 300.0  # one row far above the others: the block-wide shift must fall back
    x[3] -= 1e4
    got = ops.softmax(mx.array(x))
    assert np.abs(as_numpy(got) - softmax_reference(x)).max() < 1e-6
    np.testing.assert_array_equal(as_numpy(got)[:, 60:], 0.0)


def test_softmax_all_minus_inf_row_is_nan_like_mlx():
    x = mx.array([[-np.inf, -np.inf], [0.0, -np.inf]])
    got = as_numpy(ops.softmax(x))
    assert np.isnan(got[0]).all()
    np.testing.assert_array_equal(got[1], [1.0, 0.0])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_axes_and_parallel_path(axis, backend):
    x = RNG.standard_normal(PARALLEL_SHAPE).astype(np.float32) * 5
    got = ops.softmax(mx.array(x), axis=axis)
    assert got.shape == PARALLEL_SHAPE
    # Rows of 2000 along axis 1: NumPy's float32 row sum reaches 1e-6 (measured up to 9.8e-7),
    # MLX's sequential float32 sum ~6e-6; the kernels' lane accumulators as much (measured up
    # to 1.07e-6 with 4 lanes, depending on the draw: the tests' order changes it).
    bound = {"kernels": 2e-6, "numpy": 2e-6, "mlx": 1e-5}[backend]
    assert np.abs(as_numpy(got) - softmax_reference(x, axis)).max() < bound


def test_softmax_of_strided_view():
    x = RNG.standard_normal((50, 40)).astype(np.float32)
    got = ops.softmax(mx.array(x).T)
    assert np.abs(as_numpy(got) - softmax_reference(x.T)).max() < 1e-6


@pytest.mark.parametrize("shape", [(2, 5, 96), PARALLEL_SHAPE])
def test_layer_norm(shape):
    x = (RNG.standard_normal(shape) * 30 + 100).astype(np.float32)
    w = RNG.standard_normal(shape[-1]).astype(np.float32)
    b = RNG.standard_normal(shape[-1]).astype(np.float32)
    got = ops.layer_norm(mx.array(x), mx.array(w), mx.array(b), 1e-5)
    assert got.shape == shape and got.dtype == mx.float32
    assert np.abs(as_numpy(got) - layer_norm_reference(x, w, b, 1e-5)).max() < 2e-5


def test_layer_norm_without_affine_and_constant_rows():
    x = np.full((4, 8), 3.0, np.float32)
    x[1] = RNG.standard_normal(8)
    got = as_numpy(ops.layer_norm(mx.array(x), None, None, 1e-12))
    ref = layer_norm_reference(x, np.ones(8), np.zeros(8), 1e-12)
    np.testing.assert_array_equal(got[0], 0.0)
    assert np.abs(got - ref).max() < 1e-5


def test_tanh_and_sigmoid_over_whole_range():
    x = np.concatenate([np.linspace(-120, 120, 100_001), [np.inf, -np.inf]]).astype(np.float32)
    x64 = x.astype(np.float64)
    tanh = as_numpy(ops.tanh(mx.array(x)))
    assert np.abs(tanh - np.tanh(x64)).max() < 2e-7
    sigmoid = as_numpy(ops.sigmoid(mx.array(x)))
    ref = 1.0 / (1.0 + np.exp(-x64))
    assert np.abs(sigmoid - ref).max() < 2e-7
    # relative accuracy in the lower tail, where 0.5 * (1 + tanh(x/2)) would give 0
    tail = (x64 < -10) & (x64 > -80)
    assert (np.abs(sigmoid - ref)[tail] / ref[tail]).max() < 1e-5


def test_parallel_sigmoid_and_tanh_keep_shape():
    x = RNG.standard_normal(PARALLEL_SHAPE).astype(np.float32) * 6
    assert np.abs(as_numpy(ops.sigmoid(mx.array(x))) - 1 / (1 + np.exp(-x.astype(np.float64)))).max() < 2e-7
    assert np.abs(as_numpy(ops.tanh(mx.array(x))) - np.tanh(x.astype(np.float64))).max() < 2e-7


def aff_blend_reference(x, residual, local, pooled):
    x, residual, local, pooled = (a.astype(np.float64) for a in (x, residual, local, pooled))
    return 2 * (residual + (x - residual) / (1 + np.exp(-(local + pooled))))


def test_aff_blend_per_item_gate(backend):
    # 3 items of a 40 x 33 map of 97 channels: each item's rows gated by its own pooled row
    x, residual = (RNG.standard_normal((3, 40, 33, 97)).astype(np.float32) * 3 for _ in range(2))
    local = RNG.standard_normal((3, 40, 33, 97)).astype(np.float32) * 20
    pooled = RNG.standard_normal((3, 1, 1, 97)).astype(np.float32) * 20
    local[0, 0, 0, :3] = [np.inf, -np.inf, np.nan]
    want = aff_blend_reference(x, residual, local, pooled)
    source = mx.array(local)
    kept = ops.aff_blend(*(mx.array(a) for a in (x, residual)), source, mx.array(pooled))
    np.testing.assert_array_equal(np.asarray(source), local)  # not donated: the input stays
    np.testing.assert_array_equal(np.isnan(np.asarray(kept)), np.isnan(want))
    result = ops.aff_blend(*(mx.array(a) for a in (x, residual)), source, mx.array(pooled), donate=True)
    assert result.shape == x.shape
    got = as_numpy(result)
    assert np.isnan(got[0, 0, 0, 2])
    got[0, 0, 0, 2] = want[0, 0, 0, 2] = 0.0
    # float32 rounding of r + gate (x - r): a few ulps of the inputs' size
    assert (np.abs(got - want) / (1 + np.abs(x) + np.abs(residual))).max() < 1e-6
    if backend == "kernels":  # the result lives in the donated buffer
        np.testing.assert_array_equal(np.asarray(source), np.asarray(result))


def test_aff_blend_keeps_its_inputs_and_broadcasts_other_shapes():
    x, residual, local = (RNG.standard_normal((2, 4, 4, 8)).astype(np.float32) for _ in range(3))
    pooled = RNG.standard_normal((1, 1, 1, 8)).astype(np.float32)  # one row for both items: MLX's path
    arrays = [mx.array(a) for a in (x, residual, local, pooled)]
    got = ops.aff_blend(*arrays)
    assert np.abs(as_numpy(got) - aff_blend_reference(x, residual, local, pooled)).max() < 1e-5
    for array, original in zip(arrays, (x, residual, local, pooled), strict=True):
        np.testing.assert_array_equal(np.asarray(array), original)


@pytest.mark.parametrize("dtype", [mx.bfloat16])
def test_other_dtypes_keep_dtype_and_agree(dtype):
    x = mx.array(RNG.standard_normal((4, 32)).astype(np.float32)).astype(dtype)
    w, b = mx.ones((32,), dtype), mx.zeros((32,), dtype)
    x32 = x.astype(mx.float32)
    for op, ref in [
        (ops.gelu, ops.gelu(x32)),
        (ops.softmax, ops.softmax(x32)),
        (ops.tanh, ops.tanh(x32)),
        (ops.sigmoid, ops.sigmoid(x32)),
        (lambda v: ops.layer_norm(v, w, b, 1e-5), ops.layer_norm(x32, None, None, 1e-5)),
    ]:
        got = op(x)
        assert got.dtype == dtype
        assert np.abs(as_numpy(got.astype(mx.float32)) - as_numpy(ref)).max() < 0.05


def test_scalar_and_empty_inputs():
    assert ops.tanh(mx.array(0.5)).shape == ()
    assert abs(ops.tanh(mx.array(0.5)).item() - math.tanh(0.5)) < 1e-7
    assert ops.gelu(mx.zeros((0, 3))).shape == (0, 3)


def test_gelu_with_bias_and_donated_buffer(backend):
    x = RNG.standard_normal((64, 384)).astype(np.float32) * 3
    bias = RNG.standard_normal(384).astype(np.float32)
    source = mx.array(x)
    got = ops.gelu(source, mx.array(bias), donate=True)
    assert np.abs(as_numpy(got) - gelu_reference(x + bias)).max() < 5e-7
    if backend == "kernels":  # the result lives in the donated buffer
        np.testing.assert_array_equal(np.asarray(source), np.asarray(got))


def test_gelu_keeps_its_input_unless_donated():
    x = RNG.standard_normal((8, 16)).astype(np.float32)
    source = mx.array(x)
    ops.gelu(source, mx.ones((16,)))
    np.testing.assert_array_equal(np.asarray(source), x)


def test_linear_gelu_equals_gelu_of_linear():
    linear = nn.Linear(32, 48)
    x = mx.array(RNG.standard_normal((5, 32)).astype(np.float32))
    expected = gelu_reference(as_numpy(linear(x)))
    assert np.abs(as_numpy(linear_ops.linear_gelu(linear, x)) - expected).max() < 1e-6


@pytest.mark.parametrize(
    "shape, out_dims, bias",
    [
        ((1, 33), 7, True),  # one row, a scalar tail in K, a partial block of weight rows
        ((5, 64), 96, False),
        ((2, 4, 40), 10, True),  # leading axes: 8 rows
        ((13, 768), 768, True),  # weight past host_ops.PARALLEL_MIN_ELEMENTS: columns split across threads
        ((linear_ops.LINEAR_KERNEL_MAX_ROWS + 1, 16), 8, True),  # too many rows for the kernel: MLX's matmul
    ],
)
def test_linear_matches_float64_reference(shape, out_dims, bias, backend, monkeypatch):
    layer = nn.Linear(shape[-1], out_dims, bias=bias)
    x = RNG.standard_normal(shape).astype(np.float32)
    calls = []
    if ops.use_kernels():  # count the kernel's calls: the host path must take it where it fits
        kernel = ops._kernels.linear
        monkeypatch.setattr(ops._kernels, "linear", lambda *args: calls.append(args) or kernel(*args))
    got = linear_ops.linear(mx.array(x), layer)
    assert got.shape == (*shape[:-1], out_dims) and got.dtype == mx.float32
    expected = x.astype(np.float64) @ as_numpy(layer.weight).T + (as_numpy(layer.bias) if bias else 0.0)
    assert np.abs(as_numpy(got) - expected).max() < 1e-6 * max(1.0, np.abs(expected).max()) * np.sqrt(shape[-1])
    rows = x.size // shape[-1]
    assert bool(calls) == (backend == "kernels" and rows <= linear_ops.LINEAR_KERNEL_MAX_ROWS)
    if backend == "kernels" and layer.weight.size >= host_ops.PARALLEL_MIN_ELEMENTS and host_ops._pool is not None:
        unit = calls[0][9]
        assert 0 < unit < out_dims and unit % linear_ops.LINEAR_UNIT_COLS == 0  # the team splits the columns


def test_linears_equal_each_layer_alone(backend):
    # unequal widths and a layer without bias: each output is its own layer's, each layer's
    # columns split across the helper team
    layers = [nn.Linear(512, 700), nn.Linear(512, 333, bias=False), nn.Linear(512, 5)]
    assert sum(layer.weight.size for layer in layers) >= host_ops.PARALLEL_MIN_ELEMENTS
    x = RNG.standard_normal((3, 7, 512)).astype(np.float32)
    outputs = linear_ops.linears(mx.array(x), layers)
    assert [o.shape for o in outputs] == [(3, 7, 700), (3, 7, 333), (3, 7, 5)]
    for layer, got in zip(layers, outputs):
        expected = x.astype(np.float64) @ as_numpy(layer.weight).T + (as_numpy(layer.bias) if "bias" in layer else 0.0)
        assert np.abs(as_numpy(got) - expected).max() < 1e-5


def test_linear_of_a_strided_input_and_other_dtypes():
    layer = nn.Linear(24, 6)
    x = RNG.standard_normal((24, 5)).astype(np.float32)
    expected = x.T.astype(np.float64) @ as_numpy(layer.weight).T + as_numpy(layer.bias)
    assert np.abs(as_numpy(linear_ops.linear(mx.array(x).T, layer)) - expected).max() < 1e-5
    half = linear_ops.linear(mx.array(x).T.astype(mx.bfloat16), layer)
    assert half.dtype == mx.float32  # as nn.Linear: bfloat16 input, float32 weight
    assert np.abs(as_numpy(half) - expected).max() < 0.1


@pytest.mark.parametrize("rows", [0, 1, 13, 1001])  # 1001 rows: split across the cores
def test_host_matmul_matches_float64_reference(rows, backend, monkeypatch):
    matrix = RNG.standard_normal((297, 64)).astype(np.float32)
    x = RNG.standard_normal((rows, 297)).astype(np.float32)
    calls = []
    if ops.use_kernels():
        kernel = ops._kernels.dense
        monkeypatch.setattr(ops._kernels, "dense", lambda *args: calls.append(args) or kernel(*args))
    product = linear_ops.HostMatmul(matrix)
    got = product(x)
    assert got.shape == (rows, 64) and got.dtype == np.float32
    expected = x.astype(np.float64) @ matrix
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # NumPy's matmul only where the kernels are not to run (or have nothing to do)
    assert len(calls) == (backend == "kernels" and rows > 0)
    if calls and rows >= 1001 and host_ops._pool is not None:
        assert calls[0][-1] > 0  # a unit: the team shares the rows
    np.testing.assert_array_equal(product(x), got)  # the packed matrix is reused as it was
    np.testing.assert_allclose(product(x[:, ::-1].copy()[:, ::-1]), expected, rtol=0, atol=1e-4)  # a strided view


def test_host_matmul_of_other_dtypes_is_numpys():
    matrix = RNG.standard_normal((8, 3)).astype(np.float32)
    x = RNG.standard_normal((5, 8))
    got = linear_ops.HostMatmul(matrix)(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, x @ matrix.astype(np.float64), rtol=1e-6)


def test_softmax_with_scale_and_broadcast_bias(backend):
    scores = RNG.standard_normal((2, 4, 3, 64, 64)).astype(np.float32) * 10
    bias = RNG.standard_normal((4, 3, 64, 64)).astype(np.float32)
    bias[1, :, :, 10:] = -1e9  # a shifted-window mask
    source = mx.array(scores)
    got = as_numpy(ops.softmax(source, scale=0.125, add=mx.array(bias), donate=True))
    expected = softmax_reference(scores.astype(np.float64) * 0.125 + bias)
    assert np.abs(got - expected).max() < 1e-6
    np.testing.assert_array_equal(got[:, 1, :, :, 10:], 0.0)


def test_softmax_rejects_a_bias_that_does_not_broadcast():
    with pytest.raises(ValueError, match=r"add \[3, 5\] is not the trailing shape of x \[2, 4, 5\]"):
        ops.softmax(mx.zeros((2, 4, 5)), add=mx.zeros((3, 5)))
    with pytest.raises(ValueError, match="only supported along the last axis"):
        ops.softmax(mx.zeros((2, 4, 5)), axis=0, add=mx.zeros((4, 5)))


@pytest.mark.parametrize("shape", [(2, 5, 96), PARALLEL_SHAPE])
def test_layer_norm_of_a_sum_and_the_sum_itself(shape):
    x = (RNG.standard_normal(shape) * 3).astype(np.float32)
    residual = (RNG.standard_normal(shape) * 30 + 100).astype(np.float32)
    w = RNG.standard_normal(shape[-1]).astype(np.float32)
    b = RNG.standard_normal(shape[-1]).astype(np.float32)
    expected = layer_norm_reference(x.astype(np.float64) + residual, w, b, 1e-5)
    normed = ops.layer_norm(mx.array(x), mx.array(w), mx.array(b), 1e-5, residual=mx.array(residual))
    assert np.abs(as_numpy(normed) - expected).max() < 2e-5
    total, normed = ops.add_layer_norm(mx.array(x), mx.array(residual), mx.array(w), mx.array(b), 1e-5)
    np.testing.assert_array_equal(np.asarray(total), x + residual)
    assert np.abs(as_numpy(normed) - expected).max() < 2e-5


def test_layer_norm_rejects_a_residual_of_another_shape():
    with pytest.raises(ValueError, match="residual"):
        ops.layer_norm(mx.zeros((2, 8)), None, None, 1e-5, residual=mx.zeros((1, 8)))


def attention_reference(qkv: np.ndarray, heads: int, scale: float, bias: np.ndarray | None) -> np.ndarray:
    items, tokens, packed = qkv.shape
    q, k, v = qkv.astype(np.float64).reshape(items, tokens, 3, heads, -1).transpose(2, 0, 3, 1, 4)
    scores = scale * q @ k.swapaxes(-1, -2)
    if bias is not None:
        scores = (scores.reshape(-1, *bias.shape) + bias).reshape(scores.shape)
    return (softmax_reference(scores) @ v).transpose(0, 2, 1, 3).reshape(items, tokens, packed // 3)


@pytest.mark.parametrize(
    "items, tokens, heads, head_dims, groups",
    [
        (6, 64, 4, 24, 3),  # HTSAT's windows and heads: the compiled kernel
        (2, 64, 2, 32, None),
        (4, 64, 2, 8, 2),
        (4, 9, 2, 8, 2),  # any other shape: MLX's path on both backends
        (3, 17, 1, 5, None),
    ],
)
def test_attention_matches_float64_reference(items, tokens, heads, head_dims, groups):
    qkv = RNG.standard_normal((items, tokens, 3 * heads * head_dims)).astype(np.float32)
    bias = None
    if groups:
        bias = RNG.standard_normal((groups, heads, tokens, tokens)).astype(np.float32)
        bias[0, :, :, tokens // 2 :] = -1e9  # a shifted-window mask on one group
    scale = head_dims**-0.5
    got = ops.attention(mx.array(qkv), heads, scale, None if bias is None else mx.array(bias))
    assert got.shape == (items, tokens, heads * head_dims)
    assert np.abs(as_numpy(got) - attention_reference(qkv, heads, scale, bias)).max() < 2e-6


def test_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="not 3 x a multiple of 4 heads"):
        ops.attention(mx.zeros((2, 8, 30)), 4, 1.0)
    with pytest.raises(ValueError, match=r"bias \[3, 2, 8, 8\] is not \[groups dividing 2, 2, 8, 8\]"):
        ops.attention(mx.zeros((2, 8, 24)), 2, 1.0, mx.zeros((3, 2, 8, 8)))


def test_attention_kernel_refuses_shapes_it_is_not_specialised_for():
    from clap_mlx import _kernels  # the extension itself, whichever backend ops uses here

    qkv, out = np.zeros((1, 64, 3 * 12), np.float32), np.zeros((1, 64, 12), np.float32)
    window = np.arange(64, dtype=np.int32)
    with pytest.raises(ValueError, match="needs a head width of 8, 16, 24 or 32, got 12"):
        _kernels.attention(qkv, out, window, 1, 64, None, None, 0, 1.0, 1, 1, 12, 0, 1)
    with pytest.raises(ValueError, match="qkv: buffer of 96 bytes, need 4608 float32 values"):
        _kernels.attention(np.zeros(24, np.float32), out, window, 1, 64, None, None, 0, 1.0, 1, 3, 8, 0, 1)
    with pytest.raises(TypeError, match="windows: expected int32 values, got buffer format 'l'"):
        _kernels.attention(qkv, out, window.astype(np.int64), 1, 64, None, None, 0, 1.0, 1, 1, 8, 0, 1)
    window[5] = 64  # the kernel would read past the tokens
    with pytest.raises(ValueError, match=r"windows: token 64 is not in \[0, 64\) \(or -1 with a pad row\)"):
        _kernels.attention(qkv, out, window, 1, 64, None, None, 0, 1.0, 1, 1, 8, 0, 1)


def test_kernels_check_every_buffer_size():
    from clap_mlx import _kernels

    rows = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="dst: buffer of 32 bytes, need 16 float32 values"):
        _kernels.gelu(rows, np.zeros(8, np.float32), None, 8, 0, 2)
    with pytest.raises(ValueError, match="residual: buffer of 4 bytes"):
        _kernels.layer_norm(rows, np.zeros(1, np.float32), None, rows.copy(), None, None, 1e-5, 8, 0, 2)
    with pytest.raises(ValueError, match="add: buffer of 8 bytes, need 16 float32 values"):
        _kernels.softmax(rows, rows.copy(), 1.0, np.zeros(2, np.float32), 2, 8, 0, 2)
    with pytest.raises(TypeError, match="src: expected float32 values, got buffer format 'd'"):
        _kernels.gelu(np.zeros((2, 8)), rows.copy(), None, 8, 0, 2)
    with pytest.raises(ValueError, match="w: buffer of 32 bytes, need 24 float32 values"):
        _kernels.linear(rows, np.zeros(8, np.float32), None, np.zeros((2, 3), np.float32), 2, 8, 3, 0, 3)
    with pytest.raises(ValueError, match="bad linear shape or column range"):
        _kernels.linear(rows, rows, None, rows.copy(), 2, 8, 2, 0, 3)
    with pytest.raises(ValueError, match="unit must be >= 0, got -1"):
        _kernels.linear(rows, rows, None, rows.copy(), 2, 8, 2, 0, 2, -1)
    with pytest.raises(ValueError, match="global: buffer of 32 bytes, need 16 float32 values"):
        _kernels.aff_blend(rows, rows, rows, rows[:1], 1, 8, rows.copy(), 0, 2)
    with pytest.raises(ValueError, match="item_rows must be positive"):
        _kernels.aff_blend(rows, rows, rows, rows, 0, 8, rows.copy(), 0, 2)
    with pytest.raises(TypeError, match="aff_blend: every buffer is required"):
        _kernels.aff_blend(rows, None, rows, rows, 1, 8, rows.copy(), 0, 2)
    # an evaluated MLX array is accepted directly (its buffer is float32)
    _kernels.gelu(mx.zeros((2, 8)), rows, None, 8, 0, 2)
    np.testing.assert_array_equal(rows, 0.0)
