"""ClapTokenizer gives exactly the token ids of transformers' RoBERTa tokenizer / ClapProcessor.

Each check runs on two vocabularies, the small one the tiny checkpoint trains and the real
RoBERTa-base BPE files of ../shared/tokenizer/roberta-base (50265 tokens, as laion/clap-htsat-*
use), and for each through both routes a checkpoint may ship: tokenizer.json, or only
vocab.json + merges.txt. The reference is always transformers built from the same files.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from transformers import ClapFeatureExtractor, ClapProcessor, RobertaTokenizerFast

from clap_mlx.config import TextConfig
from clap_mlx.tokenizer import MAX_LENGTH, ClapTokenizer

ROBERTA_BASE = Path(__file__).parents[2] / "shared/tokenizer/roberta-base"
BPE_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")

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


@pytest.fixture(scope="module", params=["tiny", "roberta-base"])
def vocabulary(request) -> Path:
    """A folder with a vocabulary's tokenizer files: the tiny checkpoint's or the real RoBERTa-base."""
    if request.param == "tiny":
        return request.getfixturevalue("tiny_checkpoint")
    if not (ROBERTA_BASE / "tokenizer.json").is_file():
        pytest.skip(f"the real RoBERTa-base vocabulary (../shared/tokenizer/roberta-base) is not at {ROBERTA_BASE}")
    return ROBERTA_BASE


@pytest.fixture(scope="module", params=["tokenizer.json", "vocab.json+merges.txt"])
def tokenizer_folder(request, vocabulary: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vocabulary's files as one route sees them: the whole folder, or the BPE files alone."""
    if request.param == "tokenizer.json":
        return vocabulary
    folder = tmp_path_factory.mktemp("bpe-files")
    for name in BPE_FILES:
        if (vocabulary / name).is_file():
            shutil.copy(vocabulary / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def ours(tokenizer_folder: Path) -> ClapTokenizer:
    return ClapTokenizer.from_folder(tokenizer_folder)


@pytest.fixture(scope="module")
def reference_tokenizer(tokenizer_folder: Path) -> RobertaTokenizerFast:
    return RobertaTokenizerFast.from_pretrained(tokenizer_folder)


@pytest.fixture(scope="module")
def processor(reference_tokenizer: RobertaTokenizerFast) -> ClapProcessor:
    return ClapProcessor(feature_extractor=ClapFeatureExtractor(), tokenizer=reference_tokenizer)


def test_batch_matches_transformers(ours, reference_tokenizer):
    ids, mask = ours(TEXTS)
    ref_ids, ref_mask = _reference_ids(reference_tokenizer, TEXTS)
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mask, ref_mask)
    assert ids.shape[1] == MAX_LENGTH  # the long text is truncated, the rest padded to it


@pytest.mark.parametrize("text", TEXTS, ids=[f"text{i}" for i in range(len(TEXTS))])
def test_single_text_matches_clap_processor(ours, processor, text):
    ids, mask = ours([text])
    ref = processor(text=[text], padding="longest", truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
    assert mask.all()  # a lone text is never padded
    assert ids[0, 0] == processor.tokenizer.bos_token_id and ids[0, -1] == processor.tokenizer.eos_token_id


def test_long_labels_are_cut_at_77_tokens_like_transformers(ours, reference_tokenizer):
    # One word repeated: lengths on both sides of the 77-token limit (BOS and EOS included).
    labels = [" ".join(["dog"] * n) for n in range(MAX_LENGTH - 4, MAX_LENGTH + 4)] + ["dog barking " * 200]
    ids, mask = ours(labels)
    ref_ids, ref_mask = _reference_ids(reference_tokenizer, labels)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mask, ref_mask)
    lengths = mask.sum(axis=1)
    assert lengths.max() == MAX_LENGTH and (lengths[:-1] < MAX_LENGTH).any()
    assert (ids[lengths == MAX_LENGTH, -1] == reference_tokenizer.eos_token_id).all()


def test_padding_uses_pad_id_and_zero_mask(ours, reference_tokenizer):
    ids, mask = ours(["a dog", "a dog barking loudly in the distance"])
    short_length = int(mask[0].sum())
    assert short_length < ids.shape[1]
    assert (ids[0, short_length:] == reference_tokenizer.pad_token_id).all()
    assert not mask[0, short_length:].any()


@pytest.mark.skipif(not ROBERTA_BASE.is_dir(), reason=f"the real RoBERTa-base vocabulary is not at {ROBERTA_BASE}")
def test_real_vocabulary_fits_the_real_text_tower(tmp_path):
    for name in BPE_FILES[:2]:
        shutil.copy(ROBERTA_BASE / name, tmp_path / name)
    for folder in (ROBERTA_BASE, tmp_path):
        ours = ClapTokenizer.from_folder(folder)
        assert ours.tokenizer.get_vocab_size() == TextConfig().vocab_size, folder  # laion/clap-htsat-*'s 50265
        assert ours(TEXTS)[0].max() < TextConfig().vocab_size


def test_folder_without_tokenizer_files_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json, nor vocab.json"):
        ClapTokenizer.from_folder(tmp_path)


def test_single_string_is_rejected(tiny_checkpoint):
    with pytest.raises(TypeError, match="list of texts"):
        ClapTokenizer.from_folder(tiny_checkpoint)("a dog")
