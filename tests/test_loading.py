"""Checkpoint resolution (local folders, the hub cache), the converted-weights cache and `convert`."""

import shutil

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from clap_mlx import loading
from clap_mlx.loading import ModelNotFoundError, convert, load, read_state_dict
from clap_mlx.testing import copy_with_pytorch_bin
from clap_mlx.torch_pickle import read_torch_bin


def parameters(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def assert_same_parameters(a, b) -> None:
    pa, pb = parameters(a), parameters(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


@pytest.fixture(scope="module")
def bin_checkpoint(tiny_checkpoint, tmp_path_factory):
    return copy_with_pytorch_bin(tiny_checkpoint, tmp_path_factory.mktemp("bin") / "clap-htsat-fused")


def test_safetensors_weights_land_in_the_model(tiny_bundle, tiny_reference):
    loaded = parameters(tiny_bundle.model)
    for key, value in tiny_reference.state_dict().items():
        if key.endswith(("num_batches_tracked", "position_ids", "token_type_ids", "relative_position_index")):
            continue
        value = value.numpy()
        if value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)  # conv kernels are OHWI in MLX
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_pytorch_bin_reads_as_the_same_weights(tiny_checkpoint, bin_checkpoint):
    from_bin = read_torch_bin(bin_checkpoint / "pytorch_model.bin")
    from_safetensors = read_state_dict(tiny_checkpoint / "model.safetensors")
    assert from_bin.keys() == from_safetensors.keys()
    for key, value in from_safetensors.items():
        assert from_bin[key].dtype == value.dtype
        np.testing.assert_array_equal(from_bin[key], value, err_msg=key)
    assert_same_parameters(load(bin_checkpoint).model, load(tiny_checkpoint).model)


def test_missing_files_are_named(tiny_checkpoint, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_checkpoint, partial, ignore=shutil.ignore_patterns("model.safetensors", "tokenizer.json", "merges.txt"))
    with pytest.raises(ModelNotFoundError) as error:
        load(partial)
    message = str(error.value)
    assert "model.safetensors (or pytorch_model.bin)" in message
    assert "tokenizer.json (or vocab.json + merges.txt)" in message
    assert "config.json" not in message.split("Missing files:")[1]


def test_unknown_name_lists_the_registry():
    with pytest.raises(ModelNotFoundError, match="clap-htsat-fused, clap-htsat-unfused"):
        load("no-such-model")


def test_path_that_is_not_a_folder_is_not_looked_up_on_the_hub(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not an existing folder"):
        load(tmp_path / "nowhere")
    a_file = tmp_path / "model.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="not an existing folder"):
        load(a_file)


def test_registry_name_without_any_copy_explains_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CLAP_MLX_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError) as error:
        load("larger_clap_general")
    message = str(error.value)
    assert str(tmp_path / "larger_clap_general") in message
    assert "hf download laion/larger_clap_general" in message
    assert "config.json, preprocessor_config.json, model.safetensors (or pytorch_model.bin)" in message


def test_model_dir_serves_registry_names(tiny_checkpoint, tiny_unfused_checkpoint, tmp_path, monkeypatch):
    for folder in (tiny_checkpoint, tiny_unfused_checkpoint):
        (tmp_path / folder.name).symlink_to(folder)
    monkeypatch.setenv("CLAP_MLX_MODEL_DIR", str(tmp_path))
    fused = load()
    assert fused.name == "clap-htsat-fused" and fused.config.audio.enable_fusion
    unfused = load("clap-htsat-unfused")
    assert not unfused.config.audio.enable_fusion
    assert unfused.feature_extractor.cfg.truncation == "rand_trunc"


def test_hub_cache_is_used_offline(tiny_checkpoint, tmp_path, monkeypatch):
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--laion--clap-htsat-fused"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CLAP_MLX_MODEL_DIR", raising=False)
    folder, name = loading.resolve("clap-htsat-fused")
    assert name == "clap-htsat-fused"
    assert folder == repo / "snapshots" / revision


def test_converted_weights_are_cached_and_reused(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAP_MLX_CACHE", str(tmp_path / "cache"))
    first = load(tiny_checkpoint).model
    cached = list((tmp_path / "cache").glob("*/mlx_model.safetensors"))
    assert len(cached) == 1
    assert (cached[0].parent / "config.json").read_bytes() == (tiny_checkpoint / "config.json").read_bytes()

    def no_conversion(path):
        raise AssertionError(f"re-read {path} although a converted copy is cached")

    monkeypatch.setattr(loading, "read_state_dict", no_conversion)
    assert_same_parameters(load(tiny_checkpoint).model, first)


def test_convert_writes_a_loadable_mlx_folder(tiny_checkpoint, tiny_bundle, tmp_path):
    out = convert(tiny_checkpoint, tmp_path / "converted")
    assert (out / "mlx_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    converted = load(out)
    assert_same_parameters(converted.model, tiny_bundle.model)
    ids, mask = converted.tokenizer(["a dog barking"])
    np.testing.assert_array_equal(
        np.array(converted.model.get_text_features(mx.array(ids), mx.array(mask))),
        np.array(tiny_bundle.model.get_text_features(mx.array(ids), mx.array(mask))),
    )


def test_weights_not_matching_config_name_the_file(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    config = (broken / "config.json").read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3')
    (broken / "config.json").write_text(config)
    with pytest.raises(ValueError, match=r"model\.safetensors: weights do not match config\.json"):
        load(broken)
