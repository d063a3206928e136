"""CLAP_MLX_OPS=mlx, the path a GPU device takes: each tower is one lazy MLX graph from its
input to its embeddings (no host round trip, no NumPy inside a forward), and it matches
transformers with the same bounds as the default path."""

import mlx.core as mx
import numpy as np
import pytest

from clap_mlx import host_ops
from tests.test_model_parity import audio_features_pair, waveforms
from tests.test_text_encoder import LABELS, assert_embeddings_close, mlx_text_features, reference_text_features


def _host_path_called(*args, **kwargs):
    raise AssertionError("a host (NumPy / kernel) path ran inside a forward on the mlx path")


@pytest.fixture
def mlx_path(monkeypatch):
    """CLAP_MLX_OPS=mlx, with the host paths' views of evaluated arrays made to fail."""
    monkeypatch.setenv("CLAP_MLX_OPS", "mlx")
    for helper in ("rows_view", "float32_vector", "apply_rows"):
        monkeypatch.setattr(host_ops, helper, _host_path_called)


def audio_inputs(bundle) -> tuple[mx.array, mx.array]:
    features, is_longer = bundle.feature_extractor(waveforms([3.0, 12.5]))  # one clip through fusion
    assert is_longer.tolist() == [False, True]
    return mx.array(features), mx.array(is_longer)


# Inside mx.compile every array computed from a traced input is a tracer, and evaluating one
# (mx.eval, np.array, .item(), a host path's view) raises: tracing a forward succeeds only if
# it is one graph from the traced input to its output. Reading the untraced inputs (the
# is_longer flags, the token mask) on the host stays allowed: they are data, not results.


def test_audio_tower_evaluates_nothing_before_its_output(tiny_bundle, mlx_path):
    model = tiny_bundle.model
    features, is_longer = audio_inputs(tiny_bundle)
    # eager first: builds the position-bias tables, computed once from the parameters alone
    eager = model.get_audio_features(features, is_longer)
    traced = mx.compile(lambda f: model.get_audio_features(f, is_longer))(features)
    np.testing.assert_allclose(np.array(traced), np.array(eager), atol=1e-5)


def test_text_tower_evaluates_nothing_before_its_output(tiny_bundle, mlx_path):
    model = tiny_bundle.model
    ids, mask = (mx.array(a) for a in tiny_bundle.tokenizer(LABELS))
    eager = model.get_text_features(ids, mask)
    # the parameters are the traced inputs: everything the tower computes depends on them
    traced = mx.compile(lambda: model.get_text_features(ids, mask), inputs=model.state)()
    np.testing.assert_allclose(np.array(traced), np.array(eager), atol=1e-5)


def test_the_trace_catches_a_host_round_trip(tiny_bundle, monkeypatch):
    """The check above is not vacuous: on a host path the forward evaluates its
    intermediates, and tracing it fails."""
    monkeypatch.setenv("CLAP_MLX_OPS", "numpy")
    model = tiny_bundle.model
    features, is_longer = audio_inputs(tiny_bundle)
    with pytest.raises(ValueError, match="eval"):
        mx.compile(lambda f: model.get_audio_features(f, is_longer))(features)


def test_tiny_model_matches_transformers_on_the_mlx_path(tiny_bundle, tiny_reference, mlx_path):
    assert_embeddings_close(*audio_features_pair(tiny_bundle, tiny_reference, waveforms([3.0, 12.5, 10.0, 21.0])))
    assert_embeddings_close(
        mlx_text_features(tiny_bundle, LABELS), reference_text_features(tiny_reference, tiny_bundle.tokenizer, LABELS)
    )


@pytest.mark.full
def test_full_model_matches_transformers_on_the_mlx_path(full_bundle, full_reference, mlx_path):
    assert_embeddings_close(*audio_features_pair(full_bundle, full_reference, waveforms([4.0, 15.0])))
    assert_embeddings_close(
        mlx_text_features(full_bundle, LABELS), reference_text_features(full_reference, full_bundle.tokenizer, LABELS)
    )
