"""RoBERTa byte-level BPE tokenizer for the CLAP text tower, on the `tokenizers` library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

MAX_LENGTH = 77  # LAION CLAP's text context
BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"


def roberta_bpe(folder: Path) -> Tokenizer:
    """Rebuild RoBERTa's tokenizer from vocab.json + merges.txt (repos without tokenizer.json)."""
    bpe = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    add_prefix_space = _tokenizer_config(folder).get("add_prefix_space", False)
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS, PAD, EOS, UNK, MASK)])
    bpe.post_processor = processors.RobertaProcessing(
        (EOS, _token_id(bpe, EOS, folder)), (BOS, _token_id(bpe, BOS, folder)), add_prefix_space=add_prefix_space
    )
    return bpe


def _tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _token_id(tokenizer: Tokenizer, token: str, folder: Path) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"{folder}: the tokenizer vocabulary has no {token!r} token")
    return token_id


class ClapTokenizer:
    """texts -> (input_ids, attention_mask) int32 [B, L], padded to the longest text, at most 77 tokens."""

    def __init__(self, tokenizer: Tokenizer, source: Path):
        self.tokenizer = tokenizer
        self.pad_token_id = _token_id(tokenizer, PAD, source)
        tokenizer.enable_truncation(MAX_LENGTH)
        tokenizer.enable_padding(pad_id=self.pad_token_id, pad_token=PAD)

    @classmethod
    def from_folder(cls, path: str | Path) -> "ClapTokenizer":
        folder = Path(path)
        if (folder / "tokenizer.json").exists():
            return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), folder)
        if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
            return cls(roberta_bpe(folder), folder)
        raise FileNotFoundError(f"{folder}: no tokenizer.json, nor vocab.json + merges.txt")

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("expected a list of texts, got one string: wrap it in a list")
        if not texts:
            raise ValueError("expected at least one text")
        encodings = self.tokenizer.encode_batch(list(texts))
        input_ids = np.array([e.ids for e in encodings], dtype=np.int32)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int32)
        return input_ids, attention_mask
