"""The audio tower's front on host kernels (front_fused.py): against transformers, against the
per-op path on every SIMD variant, its fallbacks, and the mel image kernel's own checks."""

import mlx.core as mx
import numpy as np
import pytest

from clap_mlx import front_fused, ops
from clap_mlx.audio_layout import bicubic_taps

from .test_audio_encoder import FUSED, LONGER_PATTERNS, SIMD_VARIANTS, TINY, UNFUSED, build_pair, compare, mel_batch

pytestmark = pytest.mark.skipif(not ops.use_kernels(), reason="built without the C kernels")


@pytest.fixture
def host_fronts(monkeypatch):
    """CLAP_MLX_OPS=kernels, and the batches the host front ran (their longer-row counts)."""
    monkeypatch.setenv("CLAP_MLX_OPS", "kernels")
    ran, run = [], front_fused.run_host
    monkeypatch.setattr(front_fused, "run_host", lambda f, rows, front: ran.append(rows.size) or run(f, rows, front))
    return ran


@pytest.fixture(scope="module")
def tiny_fused():
    return build_pair({**TINY, **FUSED}, seed=41)


@pytest.mark.parametrize("pattern", ["b1-short", "b1-longer", "b4-mixed"])
def test_host_front_matches_transformers(host_fronts, tiny_fused, pattern):
    compare(*tiny_fused, LONGER_PATTERNS[pattern], seed=42)
    assert host_fronts == [sum(LONGER_PATTERNS[pattern])]


def test_host_front_without_resize_fusion_or_patch_norm_matches_transformers(host_fronts, tiny_fused):
    compare(*tiny_fused, [True, False], seed=43, frames=1024)  # 1024 frames: the kernel runs without taps
    compare(*build_pair({**TINY, **UNFUSED}, seed=44), [False, False], seed=45)
    compare(*build_pair({**TINY, **UNFUSED, "enable_patch_layer_norm": False}, seed=54), [False], seed=55)
    assert host_fronts == [1, 0, 0]


@pytest.mark.parametrize("variant", SIMD_VARIANTS)
def test_host_front_equals_per_op_on_every_variant_and_leaves_its_input(request, tiny_fused, variant):
    active = ops._kernels.simd()
    ops._kernels.set_simd(variant)
    request.addfinalizer(lambda: ops._kernels.set_simd(active))
    encoder = tiny_fused[1]
    features, _ = mel_batch([True] * 3, encoder.input_channels, seed=46, frames=700)
    x = mx.array(features)
    for rows in (np.array([0, 2]), np.arange(3), np.arange(0)):
        host = np.array(front_fused.run_host(x, rows, encoder.front_params()))
        np.testing.assert_array_equal(np.array(x), features)
        per_op = np.array(encoder.front_per_op(x, rows))
        assert host.shape == per_op.shape == (3, 64 * 64, 16)
        np.testing.assert_allclose(host, per_op, rtol=1e-5, atol=1e-5 * float(np.abs(per_op).max()))


def test_front_runs_per_op_where_the_host_kernels_do_not_apply(monkeypatch, host_fronts):
    features, longer = mel_batch([True, False], 4, seed=47, frames=1001)
    # overlapping patches (stride 2 of 4): not a gather and one GEMM
    compare(*build_pair({**TINY, **FUSED, "patch_stride": 2}, seed=48), [True, False], seed=49)
    # a model cast to float16
    half = build_pair({**TINY, **FUSED}, seed=50)[1]
    half.set_dtype(mx.float16)
    assert half(mx.array(features), mx.array(longer)).shape == (2, 32)
    assert host_fronts == []
    # CLAP_MLX_OPS=mlx: one lazy MLX graph
    monkeypatch.setenv("CLAP_MLX_OPS", "mlx")
    compare(*build_pair({**TINY, **FUSED}, seed=51), [True, False], seed=52)
    assert host_fronts == []


def mel_image_reference(planes: np.ndarray, norm: np.ndarray, ratio: int, width: int) -> np.ndarray:
    """NumPy: the batch norm, torch's bicubic resize along time, the chunks stacked as rows."""
    count, frames, mels = planes.shape
    normed = (planes - norm[0]) / norm[1] * norm[2] + norm[3]
    if frames != ratio * width:
        taps, weights = bicubic_taps(frames, ratio * width)
        normed = np.einsum("pokm,ok->pom", normed[:, taps], weights)
    return normed.reshape(count, ratio, width, mels).transpose(0, 1, 3, 2).reshape(count, ratio * mels, width)


@pytest.mark.parametrize("variant", SIMD_VARIANTS)
@pytest.mark.parametrize("frames", [301, 40])  # resized (partial 16-frame blocks), and as they are
def test_mel_image_kernel_matches_numpy(request, variant, frames):
    active = ops._kernels.simd()
    ops._kernels.set_simd(variant)
    request.addfinalizer(lambda: ops._kernels.set_simd(active))
    rng = np.random.default_rng(53)
    planes = (rng.standard_normal((3, frames, 12)) * 20 - 50).astype(np.float32)
    norm = np.stack([rng.normal(0, 3, 12), rng.uniform(0.7, 6, 12), rng.normal(1, 0.2, 12), rng.normal(0, 0.2, 12)])
    norm = norm.astype(np.float32)
    ratio, width = 2, 20
    taps, weights = bicubic_taps(frames, ratio * width) if frames != ratio * width else (None, None)
    image = np.full((3, ratio * 12, width), np.nan, np.float32)
    # planes 1 and 2 split in units of one plane with the helper team; plane 0 left alone
    ops._kernels.mel_image(planes, norm, taps, weights, image, 3, frames, 12, ratio, width, 1, 3, 1)
    expected = mel_image_reference(planes.astype(np.float64), norm.astype(np.float64), ratio, width)
    assert np.isnan(image[0]).all()
    np.testing.assert_allclose(image[1:], expected[1:], rtol=1e-5, atol=1e-4)


def test_mel_image_kernel_refuses_bad_shapes_and_taps():
    kernel = ops._kernels.mel_image
    planes, norm = np.zeros((2, 10, 8), np.float32), np.ones((4, 8), np.float32)
    image = np.zeros((2, 16, 4), np.float32)
    taps, weights = bicubic_taps(10, 8)
    with pytest.raises(ValueError, match=r"taps: frame 10 is not in \[0, 10\)"):
        kernel(planes, norm, np.where(taps == 9, 10, taps).astype(np.int32), weights, image, 2, 10, 8, 2, 4, 0, 2)
    with pytest.raises(ValueError, match="without them the planes need ratio \\* width frames"):
        kernel(planes, norm, None, None, image, 2, 10, 8, 2, 4, 0, 2)
    with pytest.raises(ValueError, match="mels 300 of at most 256"):
        kernel(planes, norm, taps, weights, image, 2, 10, 300, 2, 4, 0, 2)
    with pytest.raises(ValueError, match=r"row range \[0, 3\) of 2 rows"):
        kernel(planes, norm, taps, weights, image, 2, 10, 8, 2, 4, 0, 3)
    with pytest.raises(ValueError, match="dst: buffer"):
        kernel(planes, norm, taps, weights, image[:1], 2, 10, 8, 2, 4, 0, 2)
    with pytest.raises(TypeError, match="taps: expected int32"):
        kernel(planes, norm, taps.astype(np.float32), weights, image, 2, 10, 8, 2, 4, 0, 2)
