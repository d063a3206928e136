"""Random-weight CLAP checkpoints in the Hugging Face hub layout, built with transformers.

For the tests and benchmarks only: it needs torch and transformers (the `test` extra), imported
inside the functions that use them, so `import clap_mlx.testing` works without them.

No model hub is reachable, so tests build their own `laion/clap-htsat-*`-shaped folders:
config.json + model.safetensors (from `ClapModel.save_pretrained`), preprocessor_config.json
(from `ClapFeatureExtractor`) and a byte-level BPE tokenizer trained here on a generated
English corpus, saved through `RobertaTokenizerFast` (tokenizer.json, vocab.json,
merges.txt, tokenizer_config.json).

The trained vocabulary is much smaller than RoBERTa's 50265 tokens; `text_config.vocab_size`
is set to the trained size so the embedding table matches.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .audio_io import SAMPLE_RATE

if TYPE_CHECKING:
    import torch
    from transformers import ClapConfig, ClapModel, RobertaTokenizerFast

SEED = 0
TOKENIZER_VOCAB_SIZE = 2000
MODEL_MAX_LENGTH = 77
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa ids 0..4

TINY_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TINY_AUDIO = dict(
    depths=(1, 1),
    num_attention_heads=(2, 4),
    patch_embeds_hidden_size=16,
    hidden_size=32,
)
TINY_PROJECTION_DIM = 16
FULL_PROJECTION_DIM = 512

# Values of laion/clap-htsat-fused's preprocessor_config.json.
FEATURE_EXTRACTOR_ARGS = dict(
    feature_size=64,
    sampling_rate=SAMPLE_RATE,
    hop_length=480,
    max_length_s=10,
    fft_window_size=1024,
    padding_value=0.0,
    return_attention_mask=False,
    frequency_min=50,
    frequency_max=14_000,
    top_db=None,
    padding="repeatpad",
)

_SUBJECTS = [
    "a dog", "the cat", "a baby", "an old car", "the train", "a woman", "a man", "children",
    "the wind", "heavy rain", "a bird", "an engine", "the doorbell", "a phone", "the crowd",
    "a guitar", "the piano", "thunder", "a siren", "water", "the fire alarm", "footsteps",
]
_VERBS = [
    "barking", "meowing", "crying", "honking", "passing by", "speaking softly", "laughing",
    "shouting", "blowing", "falling", "singing", "running", "ringing", "playing", "rumbling",
    "wailing", "dripping", "beeping", "walking", "whistling", "clapping", "knocking",
]
_ADJECTIVES = [
    "loud", "faint", "distorted", "muffled", "rhythmic", "continuous", "sudden", "repeated",
    "high-pitched", "low", "metallic", "wooden", "electronic", "mechanical", "echoing", "harsh",
    "gentle", "steady", "irregular", "sharp", "deep", "bright", "noisy", "crackling", "humming",
    "buzzing", "squeaking", "rattling", "splashing", "thumping", "roaring", "chirping",
]
_PLACES = [
    "in the distance", "nearby", "in a small room", "outside", "on the street", "at night",
    "in the kitchen", "in a large hall", "through the window", "far away", "very loudly",
    "quietly", "in the forest", "near the sea", "during a storm", "in the background",
]


def english_corpus() -> list[str]:
    """Deterministic sound-description sentences to train the test tokenizer on."""
    sentences = [
        f"The sound of {s} {v} {p}." if i % 3 == 0 else f"{s.capitalize()} {v} {p}, again and again!"
        for i, (s, v, p) in enumerate(itertools.product(_SUBJECTS, _VERBS, _PLACES))
    ]
    sentences += [f"A {a} {b} noise." for a, b in itertools.permutations(_ADJECTIVES, 2)]
    random.Random(SEED).shuffle(sentences)
    return sentences


def train_tokenizer() -> RobertaTokenizerFast:
    """A RoBERTa-style byte-level BPE tokenizer trained on `english_corpus()`."""
    from transformers import RobertaTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(english_corpus(), trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    return RobertaTokenizerFast(vocab=trained["vocab"], merges=merges, model_max_length=MODEL_MAX_LENGTH)


def clap_config(size: str, vocab_size: int, fused: bool = True) -> ClapConfig:
    """laion/clap-htsat-fused's config ("full") or a tiny one with the same structure."""
    from transformers import ClapConfig

    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    text = dict(vocab_size=vocab_size, layer_norm_eps=1e-5)
    audio = dict(enable_fusion=fused, fusion_type="aff_2d" if fused else None)
    if size == "tiny":
        text.update(TINY_TEXT)
        audio.update(TINY_AUDIO)
    return ClapConfig(
        text_config=text,
        audio_config=audio,
        projection_dim=TINY_PROJECTION_DIM if size == "tiny" else FULL_PROJECTION_DIM,
    )


def randomize_weights(model: ClapModel, generator: torch.Generator) -> None:
    """Re-draw every tensor at a scale where each one visibly shapes the embeddings.

    transformers' init (Linear std ~0.006, zero relative-position tables and biases, unit norms,
    0/1 BatchNorm stats) makes every text map to nearly the same embedding, which would hide
    masking, position or layout bugs in a port. Here Linear/Conv kernels have unit gain
    (std 1/sqrt(fan_in)), embeddings and attention-bias tables are O(1), biases and norm
    parameters are perturbed, the input BatchNorm stats look like log-mel dB statistics and the
    logit scales move off their init value.
    """
    import torch

    def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> torch.Tensor:
        return t.copy_(mean + std * torch.randn(t.shape, generator=generator, dtype=t.dtype))

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                normal(module.weight, module.weight[0].numel() ** -0.5)
                if module.bias is not None:
                    normal(module.bias, 0.1)
            elif isinstance(module, torch.nn.Embedding):
                normal(module.weight, 1.0)
            elif isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                normal(module.weight, 0.1, mean=1.0)
                normal(module.bias, 0.1)
            if isinstance(module, torch.nn.BatchNorm2d):
                uniform = torch.rand(module.running_var.shape, generator=generator)
                if module is model.audio_model.audio_encoder.batch_norm:  # normalises log-mel dB values
                    normal(module.running_mean, 10.0, mean=-50.0)
                    module.running_var.copy_((10.0 + 10.0 * uniform) ** 2)
                else:
                    normal(module.running_mean, 0.5)
                    module.running_var.copy_(0.5 + uniform)
        for name, param in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                normal(param, 1.0)
            elif name.startswith("logit_scale"):
                param.add_(0.5 * torch.randn((), generator=generator))


def make_checkpoint(folder: str | Path, size: str = "tiny", fused: bool = True) -> Path:
    """Write a random-weight CLAP checkpoint in the hub layout to `folder` and return it."""
    import torch
    from transformers import ClapFeatureExtractor, ClapModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    tokenizer.save_pretrained(folder)
    _write_bpe_files(tokenizer, folder)

    torch.manual_seed(SEED)
    model = ClapModel(clap_config(size, len(tokenizer), fused)).eval()
    randomize_weights(model, torch.Generator().manual_seed(SEED + 1))
    model.save_pretrained(folder)

    truncation = "fusion" if fused else "rand_trunc"
    ClapFeatureExtractor(truncation=truncation, **FEATURE_EXTRACTOR_ARGS).save_pretrained(folder)
    return folder


def _write_bpe_files(tokenizer: RobertaTokenizerFast, folder: Path) -> None:
    """vocab.json + merges.txt, as the hub repos ship them next to tokenizer.json."""
    if not (folder / "vocab.json").exists() or not (folder / "merges.txt").exists():
        tokenizer.backend_tokenizer.model.save(str(folder))


def copy_with_pytorch_bin(folder: str | Path, dst: str | Path) -> Path:
    """A copy of a checkpoint with pytorch_model.bin instead of model.safetensors.

    transformers 5 dropped `save_pretrained(safe_serialization=False)`; this writes what it did:
    `torch.save(model.state_dict())` (an OrderedDict carrying `_metadata`).
    """
    import torch
    from transformers import ClapModel

    folder, dst = Path(folder), Path(dst)
    shutil.copytree(folder, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    torch.save(ClapModel.from_pretrained(folder).state_dict(), dst / "pytorch_model.bin")
    return dst
