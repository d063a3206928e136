"""Every ```python block of the reference CLAP docs (../shared/reference/clap-api-docs.md) runs.

The page is written for `mlx_audio` and read as `import clap_mlx as ma` (the module is aliased
under that name). Each block runs on its own namespace, in the docs test's work dir
(`docs_env`: the tiny random-weight checkpoint as `clap-htsat-fused`), with:

- the audio files the page names, as real recordings from ../shared/audio/real-clips;
- the names a block takes from the text around it (`given_names`);
- its shape comments checked: `x = ...  # [1, 512] mx.array` asserts x's rank, its numeric
  sizes (512 reads as the tiny model's projection size) and, when named, that x is an
  `mx.array` offering `.numpy()`. A value that is None is not checked (the page's
  `sim = result.similarity` is documented as present only with return_similarity=True).
"""

import csv
import re
import sys
from itertools import cycle
from pathlib import Path

import mlx.core as mx
import pytest

import clap_mlx
from tests.test_docs_examples import blocks, docs_env  # noqa: F401  (docs_env is a fixture)

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference" / "clap-api-docs.md"
REAL_CLIPS = SHARED / "audio" / "real-clips"
URBANSOUND = SHARED / "audio" / "urbansound8k-subset"
ABSENT = f"{REFERENCE} is absent: the shared test data (../shared) is not next to the repo"
AUDIO_NAME = re.compile(r"""["']([\w./-]+\.(?:wav|flac|ogg|mp3))["']""")
HEADING = re.compile(r"^#+ (.+)$", re.M)
SHAPE_COMMENT = re.compile(r"^\s*(\w+)\s*=.*#\s*\[([\w, ]+)\](.*)$", re.M)
DOCUMENTED_DIM = 512
TRAIN_CLASSES = {"car_horn", "dog_bark", "siren"}


def reference_blocks() -> list:
    """One pytest param per python block, named by its line and section heading."""
    if not REFERENCE.is_file():
        return [pytest.param(0, "", marks=pytest.mark.skip(reason=ABSENT), id="absent")]
    text = REFERENCE.read_text(encoding="utf-8")
    params = []
    for line_no, source in blocks(text, "python"):
        headings = HEADING.findall("\n".join(text.splitlines()[: line_no - 1]))
        section = re.sub(r"\W+", "-", headings[-1]).strip("-") if headings else "top"
        params.append(pytest.param(line_no, source, id=f"line{line_no}-{section}"))
    return params


def given_names() -> dict:
    """What the blocks take from the text around them rather than define themselves."""
    with (URBANSOUND / "labels.csv").open(newline="") as f:
        training = [row for row in csv.DictReader(f) if row["label"] in TRAIN_CLASSES]
    return {
        # "Working with Results" continues the page's `import mlx_audio as ma` without repeating it.
        "ma": clap_mlx,
        # "Adjusting Threshold" and "TaggingResult" use the tags of "Basic Tagging".
        "tags": ["jazz", "piano", "upbeat", "slow", "vocals"],
        # "ClassificationResult" uses the labels of "Basic Classification".
        "labels": ["dog barking", "cat meowing", "bird singing"],
        # "Audio Clustering": multiple audio files (KMeans(n_clusters=5) needs at least 5).
        "audio_files": [str(p) for p in sorted(REAL_CLIPS.glob("*.wav"))],
        # "Custom Classifiers": (audio_file, label) pairs; real labelled street sounds.
        "training_data": [(str(URBANSOUND / row["file"]), row["label"]) for row in training[::3]],
    }


@pytest.fixture
def reference_env(docs_env, monkeypatch):
    """docs_env plus the page's audio file names (real clips) and `mlx_audio` read as clap_mlx."""
    if not REFERENCE.is_file():
        pytest.skip(ABSENT)
    clips = cycle(sorted(REAL_CLIPS.glob("*.wav")))
    for name in sorted(set(AUDIO_NAME.findall(REFERENCE.read_text(encoding="utf-8")))):
        (docs_env / name).symlink_to(next(clips))
    monkeypatch.setitem(sys.modules, "mlx_audio", clap_mlx)
    return docs_env


def test_every_python_block_is_collected():
    if not REFERENCE.is_file():
        pytest.skip(ABSENT)
    text = REFERENCE.read_text(encoding="utf-8")
    assert len(blocks(text, "python")) == text.count("```python\n") > 0


@pytest.mark.parametrize(("line_no", "source"), reference_blocks())
def test_reference_example_runs(reference_env, line_no, source):
    namespace = {"__name__": "__reference__", **given_names()}
    try:
        exec(compile(source, f"{REFERENCE.name}:{line_no}", "exec"), namespace)
    except Exception as e:
        pytest.fail(f"{REFERENCE.name} line {line_no}: example raised {type(e).__name__}: {e}")
    dim = clap_mlx.get_model().config.projection_dim
    for name, dims, rest in SHAPE_COMMENT.findall(source):
        value = namespace[name]
        if value is None:
            continue
        sizes = [d.strip() for d in dims.split(",")]
        assert len(value.shape) == len(sizes), f"line {line_no}: {name}.shape {value.shape} vs [{dims}]"
        for size, want in zip(value.shape, sizes):
            if want.isdigit():
                assert size == (dim if int(want) == DOCUMENTED_DIM else int(want)), f"{name}.shape {value.shape} vs [{dims}]"
        if "mx.array" in rest:
            assert isinstance(value, mx.array) and value.numpy().shape == value.shape
