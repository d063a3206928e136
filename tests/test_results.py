"""Result arrays: the `mx.array`s the CLAP docs promise, with `.numpy()` (issue 16)."""

import mlx.core as mx
import numpy as np
import pytest

import clap_mlx as cm
from clap_mlx.results import CLAPEmbeddingResult, ResultArray
from tests.test_api import write_sound

LABELS = ["a dog barking", "a siren wailing", "rain"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return [str(write_sound(folder / f"clip{i}.wav", 1.0 + i, 300.0 * (i + 1))) for i in range(3)]


def assert_numpy_twin(array, shape):
    """`array` is an `mx.array` whose `.numpy()` is an independent NumPy copy of it."""
    assert isinstance(array, mx.array) and array.shape == shape
    copy = array.numpy()
    assert isinstance(copy, np.ndarray) and copy.shape == shape and copy.dtype == np.float32
    np.testing.assert_array_equal(copy, np.asarray(array))
    copy[...] = 7.0
    assert not np.any(np.asarray(array) == 7.0)


def test_embedding_arrays_offer_numpy(tiny_checkpoint, clips):
    model = str(tiny_checkpoint)
    dim = cm.get_model(model).config.projection_dim
    result = cm.embed(audio=clips, text=LABELS, return_similarity=True, model=model)
    assert_numpy_twin(result.audio_embedding, (3, dim))
    assert_numpy_twin(result.text_embedding, (3, dim))
    assert_numpy_twin(result.similarity, (3, 3))
    assert repr(result.similarity).startswith("array(")  # printed like any mx.array
    assert set(result.numpy()) == {"audio_embedding", "text_embedding", "similarity"}


def test_embedding_arrays_work_in_mlx_expressions(tiny_checkpoint, clips):
    """The docs' "Similarity Search": concatenate single-clip embeddings, query with @ and .T."""
    model = str(tiny_checkpoint)
    index = mx.concatenate([cm.embed(audio=c, model=model).audio_embedding for c in clips], axis=0)
    query = cm.embed(text="rain", model=model).text_embedding
    similarities = query @ index.T
    assert similarities.shape == (1, len(clips))
    expected = np.asarray(query) @ np.asarray(index).T
    np.testing.assert_allclose(np.asarray(similarities), expected, atol=1e-6)
    assert int(mx.argmax(similarities)) == int(expected.argmax())


def test_classification_probabilities_offer_numpy(tiny_checkpoint, clips):
    results = cm.classify(clips, LABELS, model=str(tiny_checkpoint))
    for r in results:
        assert_numpy_twin(r.probabilities, (len(LABELS),))
        assert r.probabilities.numpy().sum() == pytest.approx(1.0, abs=1e-5)


def test_result_built_from_numpy_holds_result_arrays():
    emb = np.eye(2, 4, dtype=np.float32)
    result = CLAPEmbeddingResult(audio_embedding=emb, texts=["x"])
    assert isinstance(result.audio_embedding, ResultArray) and result.text_embedding is None
    np.testing.assert_array_equal(result.audio_embedding.numpy(), emb)
