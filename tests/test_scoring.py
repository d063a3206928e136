"""Scoring functions against torch references and the properties the API documents."""

import numpy as np
import pytest
import torch

from clap_mlx import scoring

RNG = np.random.default_rng(0)


def unit_rows(n: int, d: int = 16) -> np.ndarray:
    x = RNG.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_softmax_probabilities_match_transformers_logits_per_audio_softmax():
    audio, text, scale = unit_rows(3), unit_rows(5), 14.3
    # transformers: logits_per_audio = audio_embeds @ text_embeds.T * logit_scale_a.exp()
    reference = (torch.from_numpy(audio) @ torch.from_numpy(text).T * scale).softmax(dim=-1).numpy()
    probs = scoring.softmax_probabilities(audio, text, scale)
    np.testing.assert_allclose(probs, reference, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_scores_ignore_embedding_norms_and_keep_single_rows_1d():
    audio, text, background = unit_rows(1), unit_rows(4), unit_rows(1)
    soft = scoring.softmax_probabilities(audio[0], text, 10.0)
    contrast = scoring.contrast_probabilities(audio[0], text, background[0], 10.0)
    assert soft.shape == contrast.shape == (4,)
    np.testing.assert_allclose(scoring.softmax_probabilities(3 * audio, 0.5 * text, 10.0)[0], soft, atol=1e-6)
    np.testing.assert_allclose(
        scoring.contrast_probabilities(3 * audio, 0.5 * text, 7 * background, 10.0)[0], contrast, atol=1e-6
    )


def test_contrast_probability_is_a_two_way_softmax_of_label_against_background():
    audio, labels, background, scale = unit_rows(2), unit_rows(3), unit_rows(1)[0], 20.0
    probs = scoring.contrast_probabilities(audio, labels, background, scale)
    for i in range(2):
        for j in range(3):
            logits = torch.tensor([audio[i] @ labels[j], audio[i] @ background], dtype=torch.float64) * scale
            assert probs[i, j] == pytest.approx(logits.softmax(0)[0].item(), abs=1e-6)


def test_contrast_probabilities_are_independent_of_the_other_labels():
    audio, labels, background = unit_rows(2), unit_rows(4), unit_rows(1)[0]
    all_four = scoring.contrast_probabilities(audio, labels, background, 30.0)
    first_two = scoring.contrast_probabilities(audio, labels[:2], background, 30.0)
    np.testing.assert_allclose(all_four[:, :2], first_two, atol=1e-7)
    assert not np.allclose(all_four.sum(axis=1), 1.0)  # not a softmax over labels


def test_label_equal_to_background_scores_one_half_and_closer_labels_score_higher():
    audio, background = unit_rows(1)[0], unit_rows(1)[0]
    towards_audio = scoring.l2_normalize(background + audio)
    away = scoring.l2_normalize(background - audio)
    probs = scoring.contrast_probabilities(audio, np.stack([background, towards_audio, away]), background, 10.0)
    assert probs[0] == pytest.approx(0.5, abs=1e-6)
    assert probs[1] > 0.5 > probs[2]


def test_extreme_logit_scales_stay_finite():
    audio, labels, background = unit_rows(3), unit_rows(3), unit_rows(1)
    for scale in (1e4, 1e6):
        soft = scoring.softmax_probabilities(audio, labels, scale)
        contrast = scoring.contrast_probabilities(audio, labels, background, scale)
        assert np.isfinite(soft).all() and np.isfinite(contrast).all()
        assert ((contrast >= 0) & (contrast <= 1)).all()
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)


def test_background_embedding_averages_normalised_prompts():
    prompts = unit_rows(4) * np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32)
    background = scoring.background_embedding(prompts)
    expected = scoring.l2_normalize(scoring.l2_normalize(prompts).mean(axis=0))
    np.testing.assert_allclose(background, expected, atol=1e-7)
    assert np.linalg.norm(background) == pytest.approx(1.0)
    # several prompts as background == their averaged direction as background
    audio, labels = unit_rows(2), unit_rows(3)
    np.testing.assert_allclose(
        scoring.contrast_probabilities(audio, labels, prompts, 12.0),
        scoring.contrast_probabilities(audio, labels, background, 12.0),
        atol=1e-6,
    )

