"""ClapTokenizer gives exactly the token ids of transformers' RoBERTa tokenizer / ClapProcessor."""

import shutil

import numpy as np
import pytest
from transformers import ClapProcessor, RobertaTokenizerFast

from clap_mlx.tokenizer import MAX_LENGTH, ClapTokenizer

TEXTS = [
    "a dog barking",
    "The sound of heavy rain falling on a metal roof",
    "  leading and trailing spaces  ",
    "",
    " ",
    "!!!",
    "UPPER case and MiXeD",
    "tabs\tand\nnewlines",
    "café naïve résumé — “quotes” 日本語の音 😀🐶",
    "unseen words: xylophone quokka zeitgeist",
    "<s> literal special tokens </s> <mask>",
    " ".join(["a long description of many birds chirping in the forest"] * 12),
]


def _reference_ids(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    return enc["input_ids"], enc["attention_mask"]


@pytest.fixture(scope="module")
def reference_tokenizer(tiny_checkpoint):
    return RobertaTokenizerFast.from_pretrained(tiny_checkpoint)


def test_batch_matches_transformers(tiny_checkpoint, reference_tokenizer):
    ids, mask = ClapTokenizer.from_folder(tiny_checkpoint)(TEXTS)
    ref_ids, ref_mask = _reference_ids(reference_tokenizer, TEXTS)
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mask, ref_mask)
    assert ids.shape[1] == MAX_LENGTH  # the long text is truncated, the rest padded to it


@pytest.mark.parametrize("text", TEXTS, ids=[f"text{i}" for i in range(len(TEXTS))])
def test_single_text_matches_clap_processor(tiny_checkpoint, text):
    processor = ClapProcessor.from_pretrained(tiny_checkpoint)
    ids, mask = ClapTokenizer.from_folder(tiny_checkpoint)([text])
    ref_ids, ref_mask = _reference_ids(processor.tokenizer, [text])
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mask, ref_mask)
    assert mask.all()  # a lone text is never padded
    assert ids[0, 0] == processor.tokenizer.bos_token_id and ids[0, -1] == processor.tokenizer.eos_token_id


def test_padding_uses_pad_id_and_zero_mask(tiny_checkpoint, reference_tokenizer):
    ids, mask = ClapTokenizer.from_folder(tiny_checkpoint)(["a dog", "a dog barking loudly in the distance"])
    short_length = int(mask[0].sum())
    assert short_length < ids.shape[1]
    assert (ids[0, short_length:] == reference_tokenizer.pad_token_id).all()
    assert not mask[0, short_length:].any()


def test_vocab_and_merges_without_tokenizer_json(tiny_checkpoint, reference_tokenizer, tmp_path):
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / name, tmp_path / name)
    ids, mask = ClapTokenizer.from_folder(tmp_path)(TEXTS)
    ref_ids, ref_mask = _reference_ids(reference_tokenizer, TEXTS)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mask, ref_mask)


def test_folder_without_tokenizer_files_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json, nor vocab.json"):
        ClapTokenizer.from_folder(tmp_path)


def test_single_string_is_rejected(tiny_checkpoint):
    with pytest.raises(TypeError, match="list of texts"):
        ClapTokenizer.from_folder(tiny_checkpoint)("a dog")
