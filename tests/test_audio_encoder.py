"""HTSATAudioEncoder against transformers' ClapAudioModel (random weights, eval mode, float32)."""

import threading

import mlx.core as mx
from mlx.utils import tree_flatten
import numpy as np
import pytest
import torch
from transformers import ClapAudioConfig, ClapAudioModel

from clap_mlx import ops, swin_fused
from clap_mlx.audio_encoder import HTSATAudioEncoder, sanitize_audio_encoder
from clap_mlx.audio_layout import bicubic_resize, window_table
from clap_mlx.config import AudioConfig

torch.set_num_threads(2)

TINY = dict(depths=[2, 2], num_attention_heads=[2, 4], patch_embeds_hidden_size=16, hidden_size=32, window_size=8)
FULL: dict = {}  # ClapAudioConfig defaults: depths 2,2,6,2, heads 4,8,16,32, hidden 768
FUSED = dict(enable_fusion=True, fusion_type="aff_2d")
UNFUSED = dict(enable_fusion=False)

LONGER_PATTERNS = {
    "b1-short": [False],
    "b1-longer": [True],
    "b4-none": [False] * 4,
    "b4-all": [True] * 4,
    "b4-mixed": [True, False, False, True],
}


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Weights far from identity: non-trivial norms, BatchNorm statistics and position biases,
    and projections at PyTorch's fan-in scale so attention is sharp enough to expose mask errors."""
    generator = torch.Generator().manual_seed(seed)

    def normal(like, mean=0.0, std=1.0):
        return torch.randn(like.shape, generator=generator) * std + mean

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                module.weight.copy_(normal(module.weight, 1.0, 0.2))
                module.bias.copy_(normal(module.bias, 0.0, 0.2))
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(normal(module.running_mean, 0.0, 3.0))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) * 40 + 0.5)
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(normal(module.weight, std=fan_in**-0.5))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias, std=0.1))
            if hasattr(module, "relative_position_bias_table"):
                module.relative_position_bias_table.copy_(normal(module.relative_position_bias_table))


def build_pair(overrides: dict, seed: int = 0):
    torch.manual_seed(seed)
    torch_config = ClapAudioConfig(**overrides)
    reference = ClapAudioModel(torch_config).float().eval()
    randomize_(reference, seed)
    encoder = HTSATAudioEncoder(AudioConfig.from_dict(torch_config.to_dict()))
    state = reference.audio_encoder.state_dict()
    encoder.load_weights(list(sanitize_audio_encoder({k: mx.array(v.numpy()) for k, v in state.items()}).items()))
    return reference, encoder


def mel_batch(is_longer: list[bool], channels: int, seed: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """dB-like log-mel features and their is_longer flags."""
    rng = np.random.default_rng(seed)
    features = (rng.standard_normal((len(is_longer), channels, frames, 64)) * 20 - 50).astype(np.float32)
    return features, np.array(is_longer)


def compare(
    reference: ClapAudioModel, encoder: HTSATAudioEncoder, is_longer: list[bool], seed: int, frames: int = 1001
) -> dict:
    features, longer = mel_batch(is_longer, encoder.input_channels, seed, frames)
    with torch.no_grad():
        expected = reference(
            input_features=torch.from_numpy(features), is_longer=torch.from_numpy(longer)[:, None]
        ).pooler_output.numpy()
    got = np.array(encoder(mx.array(features), mx.array(longer)))
    assert got.shape == expected.shape == (len(is_longer), encoder.num_features)
    scale = float(np.abs(expected).max())
    max_abs = float(np.abs(got - expected).max())
    cosine = np.sum(got * expected, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert max_abs <= 1e-4 * max(1.0, scale), (max_abs, scale)
    assert cosine.min() >= 0.99999, cosine
    return dict(max_abs=max_abs, relative=max_abs / scale, cosine=float(cosine.min()))


@pytest.fixture(scope="module")
def tiny_fused():
    return build_pair({**TINY, **FUSED}, seed=1)


@pytest.fixture(scope="module")
def tiny_unfused():
    return build_pair({**TINY, **UNFUSED}, seed=2)


@pytest.fixture(scope="module")
def full_fused():
    return build_pair({**FULL, **FUSED}, seed=3)


@pytest.mark.parametrize("pattern", LONGER_PATTERNS)
def test_tiny_fused_matches_transformers(tiny_fused, pattern):
    compare(*tiny_fused, LONGER_PATTERNS[pattern], seed=10)


@pytest.mark.parametrize("pattern", ["b1-short", "b4-none"])
def test_tiny_unfused_matches_transformers(tiny_unfused, pattern):
    compare(*tiny_unfused, LONGER_PATTERNS[pattern], seed=11)


@pytest.mark.parametrize("patch_stride", [4, 2])  # 4: patches tile the image (gather + GEMM); 2: overlapping, padded
def test_patch_projections_equal_transformers_convolutions(patch_stride):
    reference, encoder = build_pair({**TINY, **FUSED, "patch_stride": patch_stride}, seed=4)
    size = encoder.cfg.spec_size
    image = np.random.default_rng(4).standard_normal((2, 4, size, size)).astype(np.float32)
    torch_embed = reference.audio_encoder.patch_embed
    with torch.no_grad():  # global: channel 0 through proj; local: every crop through mel_conv2d
        global_expected = torch_embed.proj(torch.from_numpy(image[:, :1])).permute(0, 2, 3, 1)
        convolved = torch_embed.mel_conv2d(torch.from_numpy(image[:, 1:]).reshape(6, 1, size, size))
    _, channels, height, width = convolved.shape
    local_expected = convolved.reshape(2, 3, channels, height, width).permute(0, 3, 1, 4, 2).reshape(2, height, 3 * width, -1)
    image_nhwc = mx.array(image.transpose(0, 2, 3, 1))
    for got, expected in [
        (encoder.patch_embed.global_patches(image_nhwc[..., :1]), global_expected),
        (encoder.patch_embed.local_patches(image_nhwc[..., 1:]), local_expected),
    ]:
        assert got.shape == expected.shape
        assert np.abs(np.array(got) - expected.numpy()).max() < 1e-5


def test_spectrogram_already_1024_frames_skips_the_resize(tiny_fused):
    compare(*tiny_fused, [True, False], seed=14, frames=1024)


def test_window_not_dividing_the_map_pads_like_transformers():
    # 64x64 and 32x32 maps in windows of 6: zero padding, and the shifted mask on the padded map.
    reference, encoder = build_pair({**TINY, **FUSED, "window_size": 6}, seed=4)
    compare(reference, encoder, [True, False], seed=12)


@pytest.mark.parametrize("path", ["kernels", "numpy", "mlx"])
@pytest.mark.parametrize("size, shift", [((16, 16), 4), ((12, 10), 4), ((8, 8), 0)])
def test_window_attention_in_place_matches_gathered_windows(monkeypatch, path, size, shift):
    """ops.attention reads the windows through their token table (-1: a padding token
    projected as `pad`) and writes each token's row in place: the same as gathering the
    windows, attending inside each and scattering the tokens back."""
    monkeypatch.setenv("CLAP_MLX_OPS", path)
    batch, heads, head_dims, scale = 2, 2, 24, 0.2
    windows, tokens, dims = window_table(*size, 8, shift), size[0] * size[1], heads * head_dims
    rng = np.random.default_rng(7)
    qkv = rng.standard_normal((batch, tokens, 3 * dims)).astype(np.float32)
    pad = rng.standard_normal(3 * dims).astype(np.float32)
    bias = rng.standard_normal((len(windows), heads, 64, 64)).astype(np.float32)
    got = ops.attention(mx.array(qkv), heads, scale, mx.array(bias), windows, mx.array(pad))

    padded = np.concatenate([qkv, np.broadcast_to(pad, (batch, 1, 3 * dims))], axis=1).astype(np.float64)
    gathered = padded[:, np.where(windows < 0, tokens, windows)]  # [batch, windows, 64, 3 * dims]
    q, k, v = gathered.reshape(batch, len(windows), 64, 3, heads, head_dims).transpose(3, 0, 1, 4, 2, 5)
    scores = scale * q @ k.swapaxes(-1, -2) + bias
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    attended = (probs / probs.sum(-1, keepdims=True) @ v).transpose(0, 1, 3, 2, 4).reshape(batch, -1, dims)
    expected = np.full((batch, tokens, dims), np.nan)
    order = windows.reshape(-1)
    expected[:, order[order >= 0]] = attended[:, order >= 0]
    assert got.shape == (batch, tokens, dims)
    assert np.abs(np.asarray(got) - expected).max() < 2e-6


def test_last_stage_as_large_as_the_window_is_not_shifted():
    # Four stages: the last map is 8x8 = one window, where transformers turns the shift off.
    overrides = dict(depths=[1, 1, 1, 2], num_attention_heads=[1, 2, 2, 4], patch_embeds_hidden_size=8, hidden_size=64)
    reference, encoder = build_pair({**overrides, **FUSED}, seed=5)
    assert [block.shift for block in encoder.layers[-1].blocks] == [0, 0]
    compare(reference, encoder, [False, True], seed=13)


@pytest.mark.full
@pytest.mark.parametrize("pattern", LONGER_PATTERNS)
def test_full_fused_matches_transformers(full_fused, pattern):
    compare(*full_fused, LONGER_PATTERNS[pattern], seed=20)


SIMD_VARIANTS = ops._kernels.simd_variants() if ops.use_kernels() else ()


@pytest.fixture
def fused_stages(monkeypatch):
    """CLAP_MLX_OPS=kernels, and the stages the fused Swin kernels ran (their block counts)."""
    monkeypatch.setenv("CLAP_MLX_OPS", "kernels")
    ran, run = [], swin_fused._run_fused
    monkeypatch.setattr(swin_fused, "_run_fused", lambda x, stage: ran.append(len(stage.blocks)) or run(x, stage))
    return ran


@pytest.mark.parametrize("variant", SIMD_VARIANTS)
def test_fused_swin_blocks_match_transformers_on_every_variant(request, fused_stages, tiny_fused, variant):
    active = ops._kernels.simd()
    ops._kernels.set_simd(variant)
    request.addfinalizer(lambda: ops._kernels.set_simd(active))
    compare(*tiny_fused, LONGER_PATTERNS["b4-mixed"], seed=25)
    assert fused_stages == [2, 2]  # both stages (heads of 8 in 64-token windows) ran fused


def test_fused_stage_matches_per_op_leaves_its_input_and_falls_back_where_unsupported(fused_stages):
    _, encoder = build_pair({**TINY, **FUSED}, seed=26)
    stage = encoder.layers[0]
    x = mx.array(np.random.default_rng(27).standard_normal((2, 64 * 64, 16)).astype(np.float32))
    kept = np.array(x)
    fused = np.array(stage(x))
    np.testing.assert_array_equal(np.array(x), kept)
    assert fused_stages == [2]
    per_op = np.array(stage.per_op(x))
    np.testing.assert_allclose(fused, per_op, atol=2e-5)
    # a stage whose parameters are float16 (a model cast down) runs per op, on float32 input too
    half = build_pair({**TINY, **FUSED}, seed=26)[1].layers[0]
    half.set_dtype(mx.float16)
    assert half(x).shape == (2, 32 * 32, 32)
    assert fused_stages == [2]
    # 36-token windows: no attention kernel for them, so the stage runs per op
    reference, encoder = build_pair({**TINY, **FUSED, "window_size": 6}, seed=28)
    compare(reference, encoder, [False], seed=29)
    assert fused_stages == [2]


def test_fused_stages_running_in_two_threads_at_once_match_their_runs_alone(fused_stages):
    """The stages' host buffers come from a pool shared by the threads (scratch.py)."""
    _, encoder = build_pair({**TINY, **FUSED}, seed=30)
    stage = encoder.layers[0]
    rng = np.random.default_rng(31)
    inputs = [mx.array(rng.standard_normal((batch, 64 * 64, 16)).astype(np.float32)) for batch in (1, 3, 2, 1)]
    alone = [np.array(stage(x)) for x in inputs]
    together = [None] * len(inputs)
    start = threading.Barrier(2)

    def run(first: int) -> None:
        start.wait(10)
        for k in range(first, len(inputs), 2):
            together[k] = np.array(stage(inputs[k]))

    threads = [threading.Thread(target=run, args=(first,)) for first in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for got, expected in zip(together, alone):
        np.testing.assert_array_equal(got, expected)
    assert fused_stages == [2] * 2 * len(inputs)


@pytest.mark.parametrize("path", ["kernels", "mlx"])
def test_weights_loaded_after_a_forward_replace_the_derived_arrays(monkeypatch, fused_stages, path):
    """Arrays derived on the first forward (fused q/k/v weights, attention biases, folded AFF
    convs; on the fused path also the packed weights, host views and stage parameter sets) are
    rebuilt when load_weights replaces the parameters they came from."""
    monkeypatch.setenv("CLAP_MLX_OPS", path)
    _, encoder = build_pair({**TINY, **FUSED}, seed=21)
    features, longer = mel_batch([True, False], encoder.input_channels, seed=22, frames=1001)
    encoder(mx.array(features), mx.array(longer))
    reference, other = build_pair({**TINY, **FUSED}, seed=23)
    encoder.load_weights(list(tree_flatten(other.parameters())))
    compare(reference, encoder, [True, False], seed=24)
    assert fused_stages == ([2, 2, 2, 2] if path == "kernels" else [])


def test_fused_kernels_refuse_bad_row_ranges_and_missing_weights():
    kernels = ops._kernels
    x, y, panels = np.zeros((4, 8), np.float32), np.zeros((4, 16), np.float32), np.zeros((1, 8, 16), np.float32)
    with pytest.raises(ValueError, match=r"row range \[2, 5\) of 4 rows"):
        kernels.dense(x, panels, None, y, 4, 8, 16, 0, 2, 5)
    with pytest.raises(TypeError, match="panels"):
        kernels.dense(x, None, None, y, 4, 8, 16, 0, 0, 4)
    with pytest.raises(ValueError, match="panels: buffer"):
        kernels.dense(x, panels[:, :4], None, y, 4, 8, 16, 0, 0, 4)
    with pytest.raises(TypeError, match="norm_dense: x, panels and y"):
        kernels.norm_dense(x, None, None, 1e-5, None, None, y, 4, 8, 16, 0, 4)
    with pytest.raises(TypeError, match="qkv_w: expected float32 packed weights"):
        kernels.swin_mlp((None,) * 12, 1e-5, 8, 32, x, x, 4, 0, 4)
    with pytest.raises(TypeError, match="tuple of 12"):
        kernels.swin_mlp((None,) * 11, 1e-5, 8, 32, x, x, 4, 0, 4)


@pytest.mark.full
def test_full_fused_swin_blocks_match_transformers(fused_stages, full_fused):
    compare(*full_fused, LONGER_PATTERNS["b4-mixed"], seed=30)
    assert fused_stages == [2, 2, 6, 2]


@pytest.mark.full
def test_full_unfused_matches_transformers():
    compare(*build_pair({**FULL, **UNFUSED}, seed=6), LONGER_PATTERNS["b4-mixed"], seed=21)


def test_bicubic_resize_matches_torch_interpolate():
    # torch's response to each unit impulse along time is its interpolation matrix; the
    # remaining differences are float32 rounding of the cubic weights (torch contracts to FMA).
    impulses = torch.eye(1001)[None, None]
    expected = torch.nn.functional.interpolate(impulses, (1024, 1001), mode="bicubic", align_corners=True)
    got = np.asarray(bicubic_resize(mx.eye(1001), 1024))
    np.testing.assert_allclose(got, expected[0, 0].numpy(), rtol=0, atol=1e-6)


def test_sanitize_drops_buffers_and_transposes_convolutions():
    weights = {
        "patch_embed.proj.weight": mx.zeros((96, 1, 4, 12)),
        "batch_norm.num_batches_tracked": mx.array(0),
        "layers.0.blocks.0.attention.self.relative_position_index": mx.zeros((64, 64)),
        "norm.weight": mx.ones((768,)),
    }
    sanitized = sanitize_audio_encoder(weights)
    assert set(sanitized) == {"patch_embed.proj.weight", "norm.weight"}
    assert sanitized["patch_embed.proj.weight"].shape == (96, 4, 12, 1)


def test_bad_input_shapes_are_named(tiny_fused):
    _, encoder = tiny_fused
    with pytest.raises(ValueError, match="input_features"):
        encoder(mx.zeros((2, 1, 1001, 64)), mx.array([False, False]))
    with pytest.raises(ValueError, match="is_longer"):
        encoder(mx.zeros((2, 4, 1001, 64)), mx.array([False]))
