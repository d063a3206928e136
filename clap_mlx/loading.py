"""Find, read, convert and cache CLAP checkpoints.

A model is named by a local folder (hub layout, or one written by `convert`), a registry name
(`clap-htsat-fused`, ...) or a hub repo id. Names resolve to, in order: `$CLAP_MLX_MODEL_DIR/<name>/`,
then the Hugging Face hub (optional `huggingface_hub`; `HF_HUB_OFFLINE=1` keeps it to its local
cache); otherwise `ModelNotFoundError` says which files are missing and how to get them.

PyTorch weights (model.safetensors, or pytorch_model.bin read without torch by `torch_pickle`)
are converted to MLX layouts once and cached as `mlx_model.safetensors` under `$CLAP_MLX_CACHE`
(default ~/.cache/clap_mlx), keyed by the source files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from safetensors.numpy import load_file as load_safetensors

from .config import CLAPConfig
from .features import ClapFeatureExtractor, FeatureConfig
from .model import CLAPModel
from .tokenizer import ClapTokenizer
from .torch_pickle import read_torch_bin

DEFAULT_MODEL = "clap-htsat-fused"
REGISTRY = {
    "clap-htsat-fused": "laion/clap-htsat-fused",
    "clap-htsat-unfused": "laion/clap-htsat-unfused",
    "larger_clap_general": "laion/larger_clap_general",
    "larger_clap_music_and_speech": "laion/larger_clap_music_and_speech",
}
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
MLX_WEIGHTS = "mlx_model.safetensors"
SAFETENSORS_WEIGHTS = "model.safetensors"
TORCH_WEIGHTS = "pytorch_model.bin"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
HUB_FILES = (CONFIG_FILE, PREPROCESSOR_FILE, SAFETENSORS_WEIGHTS, *TOKENIZER_FILES)
# MLX keeps freed buffers for reuse up to its cache limit, 32 MB by default on the CPU. An
# audio forward's transient buffers are ~10 MB per clip, so past ~3 clips each forward got
# fresh ones from the kernel and faulted their pages in again (batch 8: ~12 K page faults,
# ~3 % of the forward on an AVX2 EPYC VM). Loading a model raises the limit to this: a batch
# of 8 leaves ~100 MB of buffers cached (256 MB measured no faster).
MIN_BUFFER_CACHE_BYTES = 128 << 20


class ModelNotFoundError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class CLAPBundle:
    model: CLAPModel
    tokenizer: ClapTokenizer
    feature_extractor: ClapFeatureExtractor
    config: CLAPConfig
    name: str


# ---------------------------------------------------------------- locating a checkpoint


def weights_file(folder: Path) -> Path | None:
    for name in (MLX_WEIGHTS, SAFETENSORS_WEIGHTS, TORCH_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    return None


def missing_files(folder: Path | None) -> list[str]:
    """What a checkpoint folder (None: no folder at all) lacks to be loadable; empty when complete."""

    def has(name: str) -> bool:
        return folder is not None and (folder / name).is_file()

    missing = [name for name in (CONFIG_FILE, PREPROCESSOR_FILE) if not has(name)]
    if not any(has(name) for name in (MLX_WEIGHTS, SAFETENSORS_WEIGHTS, TORCH_WEIGHTS)):
        missing.append(f"{SAFETENSORS_WEIGHTS} (or {TORCH_WEIGHTS})")
    if not has("tokenizer.json") and not (has("vocab.json") and has("merges.txt")):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    return missing


def _not_found(name: str, repo_id: str | None, looked_in: list[str], missing: list[str], reason: str) -> ModelNotFoundError:
    lines = [f"CLAP model {name!r} not found: {reason}."]
    if looked_in:
        lines.append("Looked in: " + ", ".join(looked_in))
    if missing:
        lines.append("Missing files: " + ", ".join(missing))
    if repo_id:
        short = repo_id.split("/")[-1]
        lines += [
            "To get them, on a machine with internet access run:",
            f'  hf download {repo_id} --include "*.json" --include "*.txt" --include "*.safetensors" '
            f'--include "{TORCH_WEIGHTS}" --local-dir {short}',
            f'  (older huggingface_hub: huggingface-cli download {repo_id} --include "*.json" "*.txt" "*.safetensors" '
            f'"{TORCH_WEIGHTS}" --local-dir {short})',
            f"then copy the folder here and either pass its path, set CLAP_MLX_MODEL_DIR to the folder "
            f"containing {short}/, or run `clap-mlx convert {short} <output folder>` and use that folder.",
            f"One weights file is enough: {SAFETENSORS_WEIGHTS}, or {TORCH_WEIGHTS} where the repo has no "
            f"safetensors (laion/clap-htsat-fused's main branch ships only {TORCH_WEIGHTS}).",
        ]
    else:
        lines.append(f"Known model names: {', '.join(REGISTRY)} (or a hub repo id, or a local folder).")
    return ModelNotFoundError("\n".join(lines))


def _complete_folder(folder: Path, name: str, repo_id: str | None) -> Path:
    missing = missing_files(folder)
    if missing:
        raise _not_found(name, repo_id, [str(folder)], missing, "the folder is incomplete")
    return folder


def _hub_snapshot(repo_id: str) -> Path | None:
    """The repo's files through huggingface_hub (its cache only when HF_HUB_OFFLINE is set)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES), local_files_only=offline))
        if weights_file(folder) is None:  # e.g. laion/clap-htsat-fused's main branch: pytorch_model.bin only
            folder = Path(snapshot_download(repo_id, allow_patterns=[TORCH_WEIGHTS], local_files_only=offline))
    except Exception:  # offline, unknown repo, network down: all mean "not available from the hub"
        return None
    return folder


def resolve(name_or_path: str | os.PathLike) -> tuple[Path, str]:
    """A checkpoint folder with every needed file, and the model's display name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _complete_folder(path, str(name_or_path), None), path.name
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or path.is_absolute():
        raise _not_found(name, None, [str(path)], [], "not an existing folder")
    repo_id = REGISTRY.get(name, name if name.count("/") == 1 else None)
    if repo_id is None:
        raise _not_found(name, None, [], [], "it is neither a folder nor a known model name")
    short = name if name in REGISTRY else repo_id.split("/")[-1]
    looked_in = []
    model_dir = os.environ.get("CLAP_MLX_MODEL_DIR")
    if model_dir:
        local = Path(model_dir).expanduser() / short
        if local.is_dir():
            return _complete_folder(local, name, repo_id), short
        looked_in.append(str(local))
    snapshot = _hub_snapshot(repo_id)
    if snapshot is not None and not missing_files(snapshot):
        return snapshot, short
    looked_in.append(f"Hugging Face hub {repo_id}")
    raise _not_found(name, repo_id, looked_in, missing_files(snapshot), "no local copy, and the hub is unreachable or incomplete")


# ---------------------------------------------------------------- reading PyTorch weights


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """PyTorch-layout weights from model.safetensors or pytorch_model.bin."""
    if path.name.endswith(".safetensors"):
        return load_safetensors(str(path))
    return read_torch_bin(path)


# ---------------------------------------------------------------- building and caching the model


def cache_root() -> Path:
    return Path(os.environ.get("CLAP_MLX_CACHE") or Path.home() / ".cache" / "clap_mlx").expanduser()


def cache_folder(folder: Path, weights: Path) -> Path:
    """Where converted weights of this checkpoint live: keyed by its config and weight file identity."""
    stat = weights.stat()
    digest = hashlib.sha256((folder / CONFIG_FILE).read_bytes())
    digest.update(f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_root() / digest.hexdigest()[:24]


def _set_weights(model: CLAPModel, weights: dict[str, mx.array], source: Path) -> None:
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        raise ValueError(f"{source}: weights do not match {CONFIG_FILE}: {e}") from None
    mx.eval(model.parameters())


def save_mlx_weights(model: CLAPModel, folder: Path, config_source: Path) -> None:
    """mlx_model.safetensors + config.json, written atomically so readers never see partial files."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        mx.save_safetensors(str(Path(tmp) / MLX_WEIGHTS), dict(tree_flatten(model.parameters())))
        shutil.copyfile(config_source, Path(tmp) / CONFIG_FILE)
        os.replace(Path(tmp) / CONFIG_FILE, folder / CONFIG_FILE)
        os.replace(Path(tmp) / MLX_WEIGHTS, folder / MLX_WEIGHTS)


def reserve_buffer_cache() -> None:
    """Raise MLX's buffer cache limit to MIN_BUFFER_CACHE_BYTES; a higher limit stays (set a
    lower one after loading to trade speed for idle memory)."""
    previous = mx.set_cache_limit(MIN_BUFFER_CACHE_BYTES)
    if previous > MIN_BUFFER_CACHE_BYTES:
        mx.set_cache_limit(previous)


def load_model(folder: str | os.PathLike, use_cache: bool = True) -> CLAPModel:
    """CLAPModel from a complete checkpoint folder; PyTorch weights go through the converted cache."""
    folder = Path(folder)
    reserve_buffer_cache()
    weights = weights_file(folder)
    if weights is None:
        raise _not_found(str(folder), None, [str(folder)], missing_files(folder), "no weights file")
    model = CLAPModel(CLAPConfig.from_json(folder / CONFIG_FILE))
    if weights.name == MLX_WEIGHTS:
        _set_weights(model, mx.load(str(weights)), weights)
        return model
    cached = cache_folder(folder, weights) / MLX_WEIGHTS if use_cache else None
    if cached is not None and cached.is_file():
        _set_weights(model, mx.load(str(cached)), cached)
        return model
    _set_weights(model, CLAPModel.sanitize(read_state_dict(weights)), weights)
    if cached is not None:
        try:
            save_mlx_weights(model, cached.parent, folder / CONFIG_FILE)
        except OSError:
            pass  # a read-only cache only costs the conversion next time
    return model


def feature_extractor_for(folder: Path, config: CLAPConfig) -> ClapFeatureExtractor:
    """The extractor from preprocessor_config.json, its channel layout matched to the audio tower."""
    cfg = FeatureConfig.from_json(folder / PREPROCESSOR_FILE)
    truncation = "fusion" if config.audio.enable_fusion else "rand_trunc"
    return ClapFeatureExtractor(dataclasses.replace(cfg, truncation=truncation))


def load(name_or_path: str | os.PathLike = DEFAULT_MODEL) -> CLAPBundle:
    """Model, tokenizer and feature extractor for a registry name, hub repo id or local folder."""
    folder, name = resolve(name_or_path)
    model = load_model(folder)
    return CLAPBundle(
        model=model,
        tokenizer=ClapTokenizer.from_folder(folder),
        feature_extractor=feature_extractor_for(folder, model.config),
        config=model.config,
        name=name,
    )


def convert(src: str | os.PathLike, dst_folder: str | os.PathLike) -> Path:
    """Write an MLX checkpoint folder (mlx_model.safetensors + config, tokenizer and preprocessor files)."""
    folder, _ = resolve(src)
    dst = Path(dst_folder)
    model = load_model(folder, use_cache=False)
    save_mlx_weights(model, dst, folder / CONFIG_FILE)
    for name in (PREPROCESSOR_FILE, *TOKENIZER_FILES):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, dst / name)
    return dst
