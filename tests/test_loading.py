"""Checkpoint resolution (local folders, the hub cache), the converted-weights cache and `convert`."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from clap_mlx import loading
from clap_mlx.loading import ModelNotFoundError, convert, load, read_state_dict
from clap_mlx.testing import copy_with_pytorch_bin
from clap_mlx.torch_pickle import read_torch_bin
from tests.fake_hub import COMMIT, FakeHub


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


def test_loading_a_model_raises_mlx_buffer_cache_limit_and_keeps_a_higher_one(tiny_checkpoint, request):
    restore = mx.set_cache_limit(32 << 20)  # MLX's CPU default
    request.addfinalizer(lambda: mx.set_cache_limit(restore))
    loading.load_model(tiny_checkpoint)
    assert mx.set_cache_limit(1 << 30) == loading.MIN_BUFFER_CACHE_BYTES
    loading.load_model(tiny_checkpoint)
    assert mx.set_cache_limit(1 << 30) == 1 << 30


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
    assert '--include "pytorch_model.bin"' in message  # the only weights on laion/clap-htsat-fused's main branch
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


def download_from_hub(repo: Path, cache: Path) -> tuple[Path, list[str]]:
    """`resolve("clap-htsat-fused")` in a fresh process whose hub is `repo`, served as laion/clap-htsat-fused
    by a FakeHub, with `cache` as the hub cache: the snapshot folder and the files fetched."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "CLAP_MLX_MODEL_DIR")}
    code = "from clap_mlx import loading; print(loading.resolve('clap-htsat-fused')[0])"
    with FakeHub({"laion/clap-htsat-fused": repo}) as hub:
        env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY="1")
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return Path(run.stdout.strip()), hub.requested


@pytest.mark.parametrize("weights", [["pytorch_model.bin"], ["model.safetensors", "pytorch_model.bin"]])
def test_hub_download_fetches_one_weights_file(tiny_checkpoint, bin_checkpoint, weights, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(bin_checkpoint, repo)
    if "model.safetensors" in weights:
        shutil.copy(tiny_checkpoint / "model.safetensors", repo)
    (repo / "README.md").write_text("not needed to run the model\n")
    snapshot, requested = download_from_hub(repo, tmp_path / "hub")
    assert snapshot == tmp_path / "hub" / "models--laion--clap-htsat-fused" / "snapshots" / COMMIT
    # The config, preprocessor and tokenizer files, and safetensors when the repo has it, else the pickle.
    wanted = {f.name for f in repo.iterdir() if f.name in loading.HUB_FILES} | {weights[0]}
    assert sorted(requested) == sorted(wanted)
    assert not loading.missing_files(snapshot)


def test_hub_repo_with_only_pytorch_bin_loads_from_its_cache_offline(bin_checkpoint, tiny_bundle, tmp_path, monkeypatch):
    snapshot, _ = download_from_hub(bin_checkpoint, tmp_path / "hub")
    assert (snapshot / "pytorch_model.bin").is_symlink()  # the hub cache's layout: snapshots link to blobs
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CLAP_MLX_MODEL_DIR", raising=False)
    bundle = load("clap-htsat-fused")  # the fake hub is gone: only the cache can serve it
    assert bundle.name == "clap-htsat-fused"
    assert_same_parameters(bundle.model, tiny_bundle.model)


def test_download_instructions_fetch_a_loadable_folder(bin_checkpoint, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAP_MLX_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(ModelNotFoundError) as error:
        load("clap-htsat-fused")
    command = next(line for line in str(error.value).splitlines() if line.startswith("  hf download "))
    (tmp_path / "models").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    with FakeHub({"laion/clap-htsat-fused": bin_checkpoint}) as hub:  # a repo like the hub's: no safetensors
        env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "hub"))
        hf = [sys.executable, "-m", "huggingface_hub.cli.hf", *shlex.split(command)[1:]]
        run = subprocess.run(hf, cwd=tmp_path / "models", env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "pytorch_model.bin" in hub.requested
    assert_same_parameters(load("clap-htsat-fused").model, tiny_bundle.model)  # found in CLAP_MLX_MODEL_DIR now
