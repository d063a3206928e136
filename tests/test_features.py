"""clap_mlx.features against transformers' ClapFeatureExtractor (the reference the checkpoints were trained with)."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ClapFeatureExtractor as ReferenceExtractor
from transformers.utils import logging

from clap_mlx.audio_io import SAMPLE_RATE, load_audio
from clap_mlx.features import (
    ClapFeatureExtractor,
    FeatureConfig,
    fusion_chunk_starts,
    mel_filter_bank,
    resize_frames,
)

REAL_CLIPS = Path(__file__).parents[2] / "shared/audio/real-clips"
MAX_DB_DIFF = 1e-3
# The fields laion/clap-htsat-fused's preprocessor_config.json sets away from transformers' defaults.
HUB_FIELDS = dict(frequency_min=50, frequency_max=14000)

logging.set_verbosity_error()  # it warns on every call that no sampling_rate was passed


def synth_clip(seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp, noise bursts and a near-silent stretch: loud and -100 dB floor bins in one clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    chirp = 0.3 * np.sin(2 * np.pi * (100 + 2000 * t / seconds) * t)
    bursts = 0.2 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 0.7 * t) > 0.5)
    sound = chirp + bursts
    sound[t.size // 3 : t.size // 3 + SAMPLE_RATE // 2] *= 1e-5
    return sound.astype(np.float32)


def reference(truncation="fusion", padding="repeatpad") -> ReferenceExtractor:
    return ReferenceExtractor(**HUB_FIELDS, truncation=truncation, padding=padding)


def ours(truncation="fusion", padding="repeatpad") -> ClapFeatureExtractor:
    return ClapFeatureExtractor(FeatureConfig(**HUB_FIELDS, truncation=truncation, padding=padding))


def reference_features(extractor: ReferenceExtractor, waveforms) -> tuple[np.ndarray, np.ndarray]:
    out = extractor(waveforms, sampling_rate=SAMPLE_RATE, return_tensors="np")
    return out["input_features"], out["is_longer"][:, 0]


@pytest.fixture
def fixed_crops(monkeypatch):
    """Make transformers crop long audio by clap_mlx's CROP_RULE instead of at random.

    Per long clip it draws front, middle, back chunk starts (np.random.choice, in that order)
    and rand_trunc draws one sample offset (np.random.randint).
    """
    pickers = itertools.cycle([lambda r: r[0], lambda r: r[len(r) // 2], lambda r: r[-1]])
    monkeypatch.setattr(np.random, "choice", lambda r: next(pickers)(r))
    monkeypatch.setattr(np.random, "randint", lambda low, high: low + (high - 1 - low) // 2)


def test_config_from_hub_json(tmp_path):
    reference(padding="repeat").save_pretrained(tmp_path)
    cfg = FeatureConfig.from_json(tmp_path / "preprocessor_config.json")
    assert cfg == FeatureConfig(frequency_min=50, frequency_max=14000, truncation="fusion", padding="repeat")
    assert (cfg.max_samples, cfg.chunk_frames, cfg.num_channels) == (480000, 1001, 4)


def test_config_errors_name_the_problem(tmp_path):
    bad = tmp_path / "preprocessor_config.json"
    bad.write_text('{"truncation": "crop"}')
    with pytest.raises(ValueError, match=r"preprocessor_config.json: truncation must be one of .*'crop'"):
        FeatureConfig.from_json(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="preprocessor_config.json: invalid JSON"):
        FeatureConfig.from_json(bad)
    with pytest.raises(ValueError, match="padding must be one of"):
        FeatureConfig.from_dict({"padding": "zeros", "unknown_key": 1})


def test_mel_filters_match_transformers():
    cfg = FeatureConfig(**HUB_FIELDS)
    ref = reference()
    np.testing.assert_allclose(mel_filter_bank(cfg, "htk"), ref.mel_filters, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mel_filter_bank(cfg, "slaney"), ref.mel_filters_slaney, rtol=0, atol=1e-12)


@pytest.mark.parametrize("frames", [1002, 1500, 2501, 7003])
def test_resize_matches_torch_bilinear(frames):
    mel = np.random.default_rng(frames).normal(-30, 20, (frames, 64)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(mel)[None, None], size=[1001, 64], mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(resize_frames(mel, 1001), expected, rtol=0, atol=1e-5)


def test_fusion_chunk_starts_follow_crop_rule():
    # 1501 possible starts split 0..500, 501..1000, 1001..1500
    assert fusion_chunk_starts(2501, 1001) == (0, 751, 1500)
    assert fusion_chunk_starts(1003, 1001) == (0, 1, 2)
    assert fusion_chunk_starts(1002, 1001) == (0, 1, 0)  # empty back range: transformers falls back to 0


@pytest.mark.parametrize(
    "seconds, truncation, padding",
    [
        (3, "fusion", "repeatpad"),
        (3, "fusion", "repeat"),
        (3, "fusion", "pad"),
        (10, "fusion", "repeatpad"),
        (10 + 100 / SAMPLE_RATE, "fusion", "repeatpad"),  # longer, but by less than a hop: no fusion crops
        (25, "fusion", "repeatpad"),
        (3, "rand_trunc", "repeatpad"),
        (3, "rand_trunc", "repeat"),
        (3, "rand_trunc", "pad"),
        (25, "rand_trunc", "repeatpad"),
    ],
)
def test_matches_transformers(seconds, truncation, padding, fixed_crops):
    clip = synth_clip(seconds)
    features, is_longer = ours(truncation, padding)([clip])
    expected, expected_longer = reference_features(reference(truncation, padding), [clip])
    assert features.shape == expected.shape == (1, 4 if truncation == "fusion" else 1, 1001, 64)
    assert features.dtype == np.float32 and is_longer.dtype == np.bool_
    assert np.abs(features - expected).max() <= MAX_DB_DIFF
    assert features.min() == pytest.approx(-100.0)  # the near-silent stretch reaches the floor
    longer = len(clip) > 480000 and not (truncation == "fusion" and len(clip) < 480000 + 480)
    assert is_longer[0] == longer
    if longer:  # transformers flags a random clip when none is longer: compare only real ones
        assert expected_longer[0]


def test_batch_equals_each_clip_alone():
    extractor = ours()
    clips = [synth_clip(3, seed=1), synth_clip(25, seed=2), synth_clip(10, seed=3), synth_clip(12.5, seed=4)]
    features, is_longer = extractor(clips)
    for i, clip in enumerate(clips):
        alone, alone_longer = extractor([clip])
        np.testing.assert_array_equal(features[i], alone[0])
        assert is_longer[i] == alone_longer[0]
    assert is_longer.tolist() == [False, True, False, True]
    np.testing.assert_array_equal(extractor(clips[::-1])[0], features[::-1])


@pytest.mark.parametrize("padding", ["repeatpad", "repeat"])
def test_repeated_frames_are_computed_once_with_the_same_result(padding, monkeypatch):
    from clap_mlx import features as module
    from clap_mlx.features import fit_to_length

    extractor = ours(padding=padding)
    clip = synth_clip(5)  # 500 hops: a 10-s input of two repeats
    padded = fit_to_length(clip, extractor.cfg.max_samples, padding)
    every_frame = extractor.log_mel(padded)
    rows = []
    rfft = np.fft.rfft
    monkeypatch.setattr(module.np.fft, "rfft", lambda a, axis: rows.append(len(a)) or rfft(a, axis=axis))
    features, _ = extractor([clip])
    np.testing.assert_array_equal(features[0, 0], every_frame)
    # frames 2..498 come back 500 frames later; the edges (reflect padding, the repeat seam) do not
    assert sum(rows) == 1001 - 497
    # a period the waveform does not have changes nothing
    rows.clear()
    noise = np.random.default_rng(3).standard_normal(extractor.cfg.max_samples).astype(np.float32)
    with_period = extractor.log_mel(noise, period=len(clip))
    assert sum(rows) == 1001  # no frame repeats: each is computed
    np.testing.assert_array_equal(with_period, extractor.log_mel(noise))


def test_short_batch_has_no_longer_clip():
    clips = [synth_clip(2, seed=5), synth_clip(4, seed=6)]
    features, is_longer = ours()(clips)
    assert not is_longer.any()
    expected, _ = reference_features(reference(), clips)  # transformers' is_longer flags one at random
    assert np.abs(features - expected).max() <= MAX_DB_DIFF


def test_rejects_bad_waveforms():
    extractor = ours()
    with pytest.raises(ValueError, match=r"waveform #1 is empty"):
        extractor([synth_clip(1), np.zeros(0, np.float32)])
    with pytest.raises(ValueError, match=r"waveform #0: expected mono samples of shape \[n\], got shape \(2, 100\)"):
        extractor([np.zeros((2, 100), np.float32)])
    with pytest.raises(ValueError, match="wrap it in a list"):
        extractor(synth_clip(1))


@pytest.mark.skipif(not REAL_CLIPS.is_dir(), reason=f"real clips not found at {REAL_CLIPS}")
def test_real_clips_match_transformers(fixed_crops):
    clips = [load_audio(path) for path in sorted(REAL_CLIPS.glob("*.wav"))]
    assert len(clips) == 13
    features, is_longer = ours()(clips)
    for i, clip in enumerate(clips):
        expected, _ = reference_features(reference(), [clip])
        assert np.abs(features[i] - expected[0]).max() <= MAX_DB_DIFF
        assert is_longer[i] == (len(clip) > 480000)
    assert is_longer.sum() == 1  # Birds.wav, 11.5 s
