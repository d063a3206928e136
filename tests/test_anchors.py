"""Labels taught by example audio (clap_mlx.anchors) on the tiny random-weight checkpoint:
scores against an independent computation from the same embeddings, folders, the on-disk
example cache (hit, invalidation, per model) and errors naming the label and file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import clap_mlx as cm
from clap_mlx import anchors, scoring
from clap_mlx.audio_io import AudioInputError
from tests.test_api import write_sound

TEXT = "a dog barking"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("anchor_clips")
    (folder / "rings" / "more").mkdir(parents=True)
    return {
        "ring1": write_sound(folder / "rings" / "ring1.wav", 1.0, 1500.0),
        "ring2": write_sound(folder / "rings" / "more" / "ring2.flac", 1.2, 1600.0),
        "ring3": write_sound(folder / "rings" / "ring3.ogg", 0.8, 1400.0),
        "query": write_sound(folder / "query.wav", 2.0, 1550.0),
        "other": write_sound(folder / "other.wav", 3.0, 200.0),
        "long": write_sound(folder / "long.wav", 12.0, 700.0),  # > 10 s: the fused deterministic crop
    }


def unit_mean(rows) -> np.ndarray:
    return scoring.l2_normalize(np.asarray(rows, np.float64).mean(axis=0))


def expected_margins(clap, queries, text=None, examples=(), weight=0.5):
    """w (cos(x, t) - cos(x, b_text)) + (1 - w) (cos(x, a) - cos(x, b_audio)), from cm.embed."""
    x = np.asarray(cm.embed(audio=[str(q) for q in queries], model=clap).audio_embedding, np.float64)
    b_text = unit_mean(cm.embed(text=list(scoring.DEFAULT_BACKGROUND_PROMPTS), model=clap).text_embedding)
    margin = np.zeros(len(queries))
    w = weight if text and examples else float(bool(text))
    if text:
        t = unit_mean(cm.embed(text=[text], model=clap).text_embedding)
        margin += w * (x @ t - x @ b_text)
    if examples:
        a = unit_mean(cm.embed(audio=[str(e) for e in examples], model=clap).audio_embedding)
        generic = anchors.generic_sounds()
        b_audio = unit_mean(cm.embed(audio=generic, sample_rate=48000, model=clap).audio_embedding)
        margin += (1 - w) * (x @ a - x @ b_audio)
    return margin


def test_tag_scores_match_independent_computation(clap, clips):
    rings = [clips["ring1"], clips["ring2"], clips["ring3"]]
    queries = [clips["query"], clips["other"], clips["long"]]
    tags = {
        "text": TEXT,
        "doorbell": [str(p) for p in rings],
        "both": cm.anchor(text=TEXT, examples=rings, text_weight=0.3),
    }
    results = cm.tag([str(q) for q in queries], tags, model=clap)
    scale = clap.logit_scale_audio
    for label, margin in [
        ("text", expected_margins(clap, queries, text=TEXT)),
        ("doorbell", expected_margins(clap, queries, examples=rings)),
        ("both", expected_margins(clap, queries, text=TEXT, examples=rings, weight=0.3)),
    ]:
        expected = 1 / (1 + np.exp(-scale * margin))
        assert [r.scores()[label] for r in results] == pytest.approx(expected, abs=1e-5), label
    # a text label scores exactly as the plain list form does
    plain = cm.tag([str(q) for q in queries], [TEXT], model=clap)
    assert [r.probabilities[0] for r in plain] == pytest.approx([r.scores()["text"] for r in results], abs=1e-6)


def test_classify_with_examples_is_a_softmax_over_margins(clap, clips):
    labels = {"text": TEXT, "doorbell": [clips["ring1"], clips["ring2"]], "low": cm.anchor(examples=clips["other"])}
    result = cm.classify(str(clips["query"]), labels, model=clap)
    margins = np.array([
        expected_margins(clap, [clips["query"]], text=TEXT)[0],
        expected_margins(clap, [clips["query"]], examples=[clips["ring1"], clips["ring2"]])[0],
        expected_margins(clap, [clips["query"]], examples=[clips["other"]])[0],
    ])
    expected = scoring.softmax(clap.logit_scale_audio * margins)
    assert result.class_names == ["text", "doorbell", "low"]
    assert np.asarray(result.probabilities) == pytest.approx(expected, abs=1e-5)
    # text labels: the background term cancels, the softmax is transformers' logits_per_audio
    texts = ["a dog barking", "a siren wailing"]
    by_dict = cm.classify(str(clips["query"]), {t: t for t in texts}, model=clap)
    direct = scoring.softmax_probabilities(
        np.asarray(cm.embed(audio=str(clips["query"]), model=clap).audio_embedding)[0],
        np.asarray(cm.embed(text=texts, model=clap).text_embedding), clap.logit_scale_audio)
    assert np.asarray(by_dict.probabilities) == pytest.approx(direct, abs=1e-6)


def test_a_folder_is_its_audio_files_recursively(clap, clips):
    folder = clips["ring1"].parent
    assert anchors.example_files([folder]) == sorted([clips["ring1"], clips["ring3"], clips["ring2"]])
    by_folder = cm.tag(str(clips["query"]), {"bell": [folder]}, model=clap)
    by_files = cm.tag(str(clips["query"]), {"bell": [clips["ring1"], clips["ring2"], clips["ring3"]]}, model=clap)
    assert by_folder.probabilities == pytest.approx(by_files.probabilities, abs=1e-6)


def test_cache_hit_on_second_use_and_invalidated_when_a_file_changes(clap, clips, tmp_path, monkeypatch):
    files = [tmp_path / "a.wav", tmp_path / "b.wav"]
    write_sound(files[0], 1.0, 500.0)
    write_sound(files[1], 1.0, 900.0)
    first = anchors.ExampleCache(clap, root=tmp_path / "cache")
    embedded = first.embed_files(files)
    assert (first.hits, first.misses) == (0, 2)
    assert len(list(first.folder.glob("*.npy"))) == 2

    calls = []
    embed_audio = clap.embed_audio
    monkeypatch.setattr(clap, "embed_audio", lambda waveforms: calls.append(len(waveforms)) or embed_audio(waveforms))
    second = anchors.ExampleCache(clap, root=tmp_path / "cache")
    assert second.folder == first.folder
    assert np.array_equal(second.embed_files(files), embedded)
    assert (second.hits, second.misses) == (2, 0)
    assert calls == []  # nothing embedded (the model's fingerprint is computed once per model object)
    monkeypatch.undo()

    write_sound(files[1], 1.0, 950.0)  # same name, new content
    third = anchors.ExampleCache(clap, root=tmp_path / "cache")
    changed = third.embed_files(files)
    assert (third.hits, third.misses) == (1, 1)
    assert np.array_equal(changed[0], embedded[0]) and not np.allclose(changed[1], embedded[1])
    assert np.allclose(changed[1], clap.embed_audio([cm.load_audio(files[1])])[0], atol=1e-6)


def test_cache_is_per_model(clap, tiny_unfused_checkpoint, tmp_path):
    fused = anchors.ExampleCache(clap, root=tmp_path)
    unfused = anchors.ExampleCache(cm.get_model(str(tiny_unfused_checkpoint)), root=tmp_path)
    assert fused.folder != unfused.folder
    assert fused.folder == anchors.ExampleCache(clap, root=tmp_path).folder  # stable


def test_tag_uses_the_default_cache(clap, clips, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAP_MLX_CACHE", str(tmp_path))
    cm.tag(str(clips["query"]), {"bell": [clips["ring1"]]}, model=clap)
    [folder] = (tmp_path / "examples").iterdir()
    # the example and the generic background sounds
    assert len(list(folder.glob("*.npy"))) == 1 + len(anchors.generic_sounds())


def test_errors_name_the_label_and_file(clap, clips, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioInputError, match=r"examples of 'bell': audio file '.*corrupt.wav': cannot decode"):
        cm.tag(str(clips["query"]), {"bell": [clips["ring1"], corrupt]}, model=clap)
    with pytest.raises(AudioInputError, match=r"examples of 'bell': example '.*nope.wav': no such file or folder"):
        cm.tag(str(clips["query"]), {"bell": [tmp_path / "nope.wav"]}, model=clap)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(AudioInputError, match=r"examples of 'bell': example folder '.*empty': no audio files"):
        cm.tag(str(clips["query"]), {"bell": tmp_path / "empty"}, model=clap)
    with pytest.raises(ValueError, match=r"tags\['bell'\]: expected a text prompt \(str\), a list of example audio"):
        cm.tag(str(clips["query"]), {"bell": 3}, model=clap)
    with pytest.raises(ValueError, match=r"needs text prompts, example audio, or both"):
        cm.anchor()
    with pytest.raises(ValueError, match=r"text_weight must be in \[0, 1\]"):
        cm.anchor(text="x", examples=[clips["ring1"]], text_weight=1.5)
    with pytest.raises(ValueError, match=r"labels is empty"):
        cm.classify(str(clips["query"]), {}, model=clap)


def test_generic_sounds_are_deterministic():
    first, second = anchors.generic_sounds(), anchors.generic_sounds()
    assert len(first) == 10 and all(np.array_equal(a, b) for a, b in zip(first, second))
    assert all(s.dtype == np.float32 and np.isfinite(s).all() and 0 < np.abs(s).max() <= 1 for s in first)


def test_written_file_roundtrip_uses_content_not_name(clap, tmp_path):
    """Two files with the same samples share one cache entry; the key is the content."""
    samples, rate = sf.read(write_sound(tmp_path / "x.wav", 1.0, 300.0), dtype="float32")
    sf.write(tmp_path / "copy.wav", samples, rate)
    cache = anchors.ExampleCache(clap, root=tmp_path / "cache")
    cache.embed_files([tmp_path / "x.wav", tmp_path / "copy.wav"])
    assert (cache.hits, cache.misses) == (0, 2)
    assert len(list(cache.folder.glob("*.npy"))) == 1
