"""clap_mlx.ops against float64 references, on edge values and both execution paths."""

import math

import clap_mlx  # noqa: F401  (preloads OpenBLAS before mlx.core)
import mlx.core as mx
import numpy as np
import pytest

from clap_mlx import ops

RNG = np.random.default_rng(0)
# Larger than ops.PARALLEL_MIN_ELEMENTS, so the rows are split across threads and blocks.
PARALLEL_SHAPE = (3, 2000, 97)


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


def test_gelu_edge_values():
    got = as_numpy(ops.gelu(mx.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e30])))
    assert got[0] == np.inf and got[1] == 0 and np.isnan(got[2])
    np.testing.assert_array_equal(got[3:], np.float32([0.0, 0.0, 5e-31, 0.0]))


def test_gelu_parallel_path_and_shape():
    x = RNG.standard_normal(PARALLEL_SHAPE).astype(np.float32) * 4
    assert x.size >= ops.PARALLEL_MIN_ELEMENTS
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
def test_softmax_axes_and_parallel_path(axis):
    x = RNG.standard_normal(PARALLEL_SHAPE).astype(np.float32) * 5
    got = ops.softmax(mx.array(x), axis=axis)
    assert got.shape == PARALLEL_SHAPE
    assert np.abs(as_numpy(got) - softmax_reference(x, axis)).max() < 1e-6


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
