"""RoBERTa text tower and text embeddings against transformers' ClapModel."""

import mlx.core as mx
import numpy as np
import pytest
import torch
from transformers.models.clap.modeling_clap import ClapTextEmbeddings

from clap_mlx.text_encoder import TokenLayout, position_ids_from_input_ids

MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.99999

LABELS = [
    "dog",
    "a dog barking in the distance",
    "The sound of heavy rain falling on a metal roof during a storm, again and again!",
    "日本語 café 😀",
    " ".join(["birds chirping loudly in the forest"] * 15),  # truncated at 77 tokens
]


def reference_text_features(reference, tokenizer, texts):
    ids, mask = tokenizer(texts)
    with torch.no_grad():
        out = reference.get_text_features(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask))
    return out.pooler_output.numpy()


def mlx_text_features(bundle, texts):
    ids, mask = bundle.tokenizer(texts)
    return np.array(bundle.model.get_text_features(mx.array(ids), mx.array(mask)))


def assert_embeddings_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= MAX_ABS_DIFF
    cosine = (actual * expected).sum(-1) / (np.linalg.norm(actual, axis=-1) * np.linalg.norm(expected, axis=-1))
    assert cosine.min() >= MIN_COSINE


def test_position_ids_match_transformers():
    pad = 1
    ids = np.array([[0, 5, 6, 2, pad, pad], [0, 7, 2, pad, pad, pad], [0, 8, 9, 10, 11, 2]], dtype=np.int32)
    expected = ClapTextEmbeddings.create_position_ids_from_input_ids(torch.from_numpy(ids).long(), pad)
    np.testing.assert_array_equal(np.array(position_ids_from_input_ids(mx.array(ids), pad)), expected.numpy())


def test_tiny_text_features_match_transformers(tiny_bundle, tiny_reference):
    expected = reference_text_features(tiny_reference, tiny_bundle.tokenizer, LABELS)
    actual = mlx_text_features(tiny_bundle, LABELS)
    assert_embeddings_close(actual, expected)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=-1), 1.0, atol=1e-5)


def assert_single_labels_match(bundle, reference, monkeypatch):
    # one label at a time: the linear layers' few rows run the compiled few-rows kernel
    monkeypatch.setenv("CLAP_MLX_OPS", "kernels")
    for label in LABELS[:4]:
        expected = reference_text_features(reference, bundle.tokenizer, [label])
        assert_embeddings_close(mlx_text_features(bundle, [label]), expected)


def test_tiny_single_label_features_match_transformers(tiny_bundle, tiny_reference, monkeypatch):
    assert_single_labels_match(tiny_bundle, tiny_reference, monkeypatch)


@pytest.mark.full
def test_full_single_label_features_match_transformers(full_bundle, full_reference, monkeypatch):
    assert_single_labels_match(full_bundle, full_reference, monkeypatch)


def test_padding_does_not_change_an_embedding(tiny_bundle):
    alone = mlx_text_features(tiny_bundle, [LABELS[0]])
    batched = mlx_text_features(tiny_bundle, LABELS)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-6)


def test_attention_mask_is_used(tiny_bundle):
    ids, mask = tiny_bundle.tokenizer(LABELS[:2])
    masked = tiny_bundle.model.text_model(mx.array(ids), mx.array(mask))
    unmasked = tiny_bundle.model.text_model(mx.array(ids), mx.ones(mask.shape, dtype=mx.int32))
    assert not np.allclose(np.array(masked[0]), np.array(unmasked[0]), atol=1e-4)  # row 0 is padded
    np.testing.assert_allclose(np.array(masked[1]), np.array(unmasked[1]), atol=1e-6)  # row 1 is not


def test_bad_inputs_are_rejected(tiny_bundle):
    text_model = tiny_bundle.model.text_model
    with pytest.raises(ValueError, match="attention_mask"):
        text_model(mx.zeros((2, 5), dtype=mx.int32), mx.ones((2, 4), dtype=mx.int32))
    with pytest.raises(ValueError, match="at most 512"):
        text_model(mx.zeros((1, 513), dtype=mx.int32), mx.ones((1, 513), dtype=mx.int32))
    vocab_size = tiny_bundle.config.text.vocab_size
    with pytest.raises(ValueError, match=f"must be in \\[0, {vocab_size}\\)"):
        text_model(mx.array([[0, vocab_size, 2]]), mx.ones((1, 3), dtype=mx.int32))


@pytest.mark.full
def test_full_text_features_match_transformers(full_bundle, full_reference):
    expected = reference_text_features(full_reference, full_bundle.tokenizer, LABELS)
    assert_embeddings_close(mlx_text_features(full_bundle, LABELS), expected)


def test_token_layout_packs_kept_tokens_and_every_first_position():
    mask = np.array([[1, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=np.int32)
    layout = TokenLayout.from_mask(mx.array(mask))
    grid = mx.arange(12 * 2, dtype=mx.float32).reshape(3, 4, 2)
    packed = layout.pack(grid)
    # row 1 keeps position 0 although it is masked: the pooler reads it
    np.testing.assert_array_equal(np.array(packed)[:, 0] // 2, [0, 1, 2, 4, 5, 8, 9, 10, 11])
    np.testing.assert_array_equal(np.array(layout.first_rows), [0, 3, 5])
    expected = np.array(grid) * np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])[..., None]
    np.testing.assert_array_equal(np.array(layout.unpack(packed)), expected)


def test_unpadded_batch_has_no_gathers():
    layout = TokenLayout.from_mask(mx.ones((2, 5), dtype=mx.int32))
    assert layout.tokens is None and layout.padded_rows is None
    np.testing.assert_array_equal(np.array(layout.first_rows), [0, 5])


def test_unusual_masks_match_transformers(tiny_bundle, tiny_reference):
    """Holes in the mask and a masked first position: only the kept tokens are computed, as
    transformers' padded computation gives for them and for the pooled first position."""
    ids, mask = tiny_bundle.tokenizer(LABELS[:3])
    mask[1, 3] = 0
    mask[2, 0] = 0
    with torch.no_grad():
        expected = tiny_reference.get_text_features(
            input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask)
        ).pooler_output.numpy()
    actual = np.array(tiny_bundle.model.get_text_features(mx.array(ids), mx.array(mask)))
    assert_embeddings_close(actual, expected)
