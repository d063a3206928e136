"""The assembled CLAPModel (features -> audio embeddings, logit scales) against transformers' ClapModel."""

import mlx.core as mx
import numpy as np
import pytest
import torch

from clap_mlx.audio_io import SAMPLE_RATE
from tests.test_text_encoder import assert_embeddings_close


def waveforms(seconds: list[float], seed: int = 0) -> list[np.ndarray]:
    """Deterministic test clips, each a different chirp, tremolo and noise level."""
    rng = np.random.default_rng(seed)
    clips = []
    for s in seconds:
        t = np.arange(int(s * SAMPLE_RATE)) / SAMPLE_RATE
        f0, tremolo, noise = 100 * 2 ** (5 * rng.random()), 0.5 + 8 * rng.random(), 10 ** (-2 + 1.5 * rng.random())
        chirp = np.sin(2 * np.pi * f0 * t * (1 + t / s)) * (0.6 + 0.4 * np.sin(2 * np.pi * tremolo * t))
        clips.append((0.3 * chirp + noise * rng.standard_normal(t.size)).astype(np.float32))
    return clips


def audio_features_pair(bundle, reference, clips) -> tuple[np.ndarray, np.ndarray]:
    features, is_longer = bundle.feature_extractor(clips)
    actual = np.array(bundle.model.get_audio_features(mx.array(features), mx.array(is_longer)))
    with torch.no_grad():
        out = reference.get_audio_features(
            input_features=torch.from_numpy(features), is_longer=torch.from_numpy(is_longer)[:, None]
        )
    return actual, out.pooler_output.numpy()


# (clip lengths in seconds, expected is_longer flags)
CASES = {
    "short": ([4.0], [False]),
    "longer": ([15.0], [True]),
    "batch4_mixed": ([3.0, 12.5, 10.0, 21.0], [False, True, False, True]),
}


@pytest.mark.parametrize("case", CASES)
def test_tiny_audio_features_match_transformers(tiny_bundle, tiny_reference, case):
    seconds, flags = CASES[case]
    clips = waveforms(seconds)
    np.testing.assert_array_equal(tiny_bundle.feature_extractor(clips)[1], flags)
    actual, expected = audio_features_pair(tiny_bundle, tiny_reference, clips)
    assert_embeddings_close(actual, expected)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=-1), 1.0, atol=1e-5)


def test_tiny_unfused_audio_features_match_transformers(tiny_unfused_bundle, tiny_unfused_reference):
    clips = waveforms([5.0, 13.0])
    assert tiny_unfused_bundle.feature_extractor(clips)[0].shape[1] == 1  # rand_trunc: one channel
    assert_embeddings_close(*audio_features_pair(tiny_unfused_bundle, tiny_unfused_reference, clips))


def test_logit_scales_match_checkpoint(tiny_bundle, tiny_reference):
    for name in ("logit_scale_a", "logit_scale_t"):
        np.testing.assert_allclose(
            np.array(getattr(tiny_bundle.model, name)), getattr(tiny_reference, name).detach().numpy(), rtol=1e-7
        )


@pytest.mark.full
@pytest.mark.parametrize("case", CASES)
def test_full_audio_features_match_transformers(full_bundle, full_reference, case):
    seconds, _ = CASES[case]
    assert_embeddings_close(*audio_features_pair(full_bundle, full_reference, waveforms(seconds)))


def test_tiny_model_matches_transformers_without_the_compiled_kernels(tiny_bundle, tiny_reference, monkeypatch):
    """An install that could not build clap_mlx._kernels runs ops' NumPy/MLX paths end to end."""
    from clap_mlx import ops
    from tests.test_text_encoder import LABELS, mlx_text_features, reference_text_features

    monkeypatch.setattr(ops, "_kernels", None)
    assert not ops.use_kernels()
    assert_embeddings_close(*audio_features_pair(tiny_bundle, tiny_reference, waveforms([3.0, 12.5])))
    assert_embeddings_close(
        mlx_text_features(tiny_bundle, LABELS), reference_text_features(tiny_reference, tiny_bundle.tokenizer, LABELS)
    )
