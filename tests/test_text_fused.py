"""The text encoder's host path (clap_mlx/text_fused.py) against its per-op form."""

import mlx.core as mx
import numpy as np
import pytest

from clap_mlx import linear_ops, text_fused
from tests.test_text_encoder import LABELS


@pytest.fixture
def host_runs(monkeypatch):
    """How many encoder forwards took the host path."""
    calls = []
    run_host = text_fused.run_host

    def spy(*args):
        calls.append(args[0].shape)
        return run_host(*args)

    monkeypatch.setattr(text_fused, "run_host", spy)
    return calls


def pooled(bundle, ids, mask, mode, monkeypatch):
    monkeypatch.setenv("CLAP_MLX_OPS", mode)
    return np.array(bundle.model.text_model(mx.array(ids), mx.array(mask)))


def masks(bundle):
    """One label; three padded to the longest; a hole in a mask; a masked first position."""
    one = bundle.tokenizer(LABELS[1:2])
    three = bundle.tokenizer(LABELS[:3])
    holes = tuple(a.copy() for a in three)
    holes[1][1, 3] = 0
    holes[1][2, 0] = 0
    return {"one label": one, "three labels": three, "holes": holes}


@pytest.mark.parametrize("case", ["one label", "three labels", "holes"])
def test_host_encoder_matches_the_per_op_path(tiny_bundle, monkeypatch, host_runs, case):
    ids, mask = masks(tiny_bundle)[case]
    per_op = pooled(tiny_bundle, ids, mask, "mlx", monkeypatch)
    assert not host_runs  # "mlx" (a GPU's path) never leaves MLX's graph
    host = pooled(tiny_bundle, ids, mask, "kernels", monkeypatch)
    assert len(host_runs) == 1
    np.testing.assert_allclose(host, per_op, atol=2e-6, rtol=0)


@pytest.mark.full
def test_full_host_encoder_matches_the_per_op_path(full_bundle, monkeypatch, host_runs):
    ids, mask = masks(full_bundle)["holes"]
    per_op = pooled(full_bundle, ids, mask, "mlx", monkeypatch)
    host = pooled(full_bundle, ids, mask, "kernels", monkeypatch)
    assert len(host_runs) == 1
    np.testing.assert_allclose(host, per_op, atol=1e-5, rtol=0)


def test_many_rows_run_per_op(tiny_bundle, monkeypatch, host_runs):
    """Past the few-rows kernel's range (BLAS's GEMMs win there) the encoder runs op by op."""
    texts = [LABELS[2]] * 4
    ids, mask = tiny_bundle.tokenizer(texts)
    assert mask.sum() > linear_ops.LINEAR_KERNEL_MAX_ROWS
    pooled(tiny_bundle, ids, mask, "kernels", monkeypatch)
    assert not host_runs


def test_half_precision_parameters_are_not_fusable(tiny_bundle):
    """run_encoder leaves an encoder that is not fusable to its per-op path."""
    layer = tiny_bundle.model.text_model.encoder.fused_params().layers[0]
    assert tiny_bundle.model.text_model.encoder.fused_params().fusable
    half = text_fused.LayerParams(tuple(None if a is None else a.astype(mx.float16) for a in layer.arrays),
                                  layer.heads, layer.eps)
    assert not text_fused.EncoderParams((half,)).fusable
