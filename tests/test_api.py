"""embed / classify / tag on the tiny random-weight checkpoint, against transformers and scoring."""

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

import clap_mlx as cm
from clap_mlx import api, scoring
from clap_mlx.audio_io import SAMPLE_RATE, AudioInputError, load_audio

LABELS = ["a dog barking", "a siren wailing", "heavy rain falling"]


def write_sound(path: Path, seconds: float = 2.0, freq: float = 440.0, sample_rate: int = SAMPLE_RATE) -> Path:
    """A decaying tone with a little noise, written in the format its suffix names."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(int(freq))
    wave = 0.4 * np.sin(2 * np.pi * freq * t) * np.exp(-t % 0.5 * 4) + 0.02 * rng.standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), sample_rate)
    return path


@pytest.fixture(scope="module")
def model_path(tiny_checkpoint) -> str:
    return str(tiny_checkpoint)


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sounds")
    return {
        "wav": write_sound(folder / "tone.wav", 2.0, 440.0),
        "flac": write_sound(folder / "low.flac", 1.5, 110.0),
        "ogg": write_sound(folder / "high.ogg", 1.0, 2000.0),
        "mp3": write_sound(folder / "mid.mp3", 1.0, 880.0),
        "long": write_sound(folder / "long.wav", 14.0, 330.0),
    }


@pytest.fixture(scope="module")
def reference(model_path):
    import torch
    from transformers import ClapModel

    torch.manual_seed(0)
    return ClapModel.from_pretrained(model_path).eval()


def reference_outputs(reference, clap: api.CLAP, waveforms: list[np.ndarray], texts: list[str]):
    """transformers' ClapModel on the same features and token ids."""
    import torch

    features, is_longer = clap.feature_extractor(waveforms)
    ids, mask = clap.tokenizer(texts)
    with torch.no_grad():
        return reference(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long(),
            input_features=torch.from_numpy(np.ascontiguousarray(features)),
            is_longer=torch.from_numpy(is_longer)[:, None],
        )


def test_get_model_loads_each_model_once(clap, model_path):
    assert api.get_model(model_path) is clap
    assert clap.logit_scale_audio == pytest.approx(float(np.exp(np.asarray(clap.model.logit_scale_a))))


def test_embed_audio_and_text_fields(clap, model_path, sounds):
    dim = clap.config.projection_dim
    result = cm.embed(audio=str(sounds["wav"]), text=LABELS, return_similarity=True, model=model_path)
    assert isinstance(result.audio_embedding, mx.array) and result.audio_embedding.shape == (1, dim)
    assert isinstance(result.text_embedding, mx.array) and result.text_embedding.shape == (3, dim)
    audio, text = np.asarray(result.audio_embedding), np.asarray(result.text_embedding)
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(result.similarity), audio @ text.T, atol=1e-6)
    assert result.best_match() == LABELS[int(np.argmax(audio @ text.T))]
    arrays = result.numpy()
    assert set(arrays) == {"audio_embedding", "text_embedding", "similarity"}
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    np.testing.assert_array_equal(arrays["audio_embedding"], audio)


def test_embed_matches_transformers(clap, model_path, sounds, reference):
    waveforms = [load_audio(sounds["wav"]), load_audio(sounds["long"])]
    result = cm.embed(audio=[str(sounds["wav"]), str(sounds["long"])], text=LABELS, model=model_path)
    ref = reference_outputs(reference, clap, waveforms, LABELS)
    np.testing.assert_allclose(np.asarray(result.audio_embedding), ref.audio_embeds.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(result.text_embedding), ref.text_embeds.numpy(), atol=1e-4)


def test_embed_single_text_string_and_text_only(model_path):
    result = cm.embed(text="a dog barking", model=model_path)
    assert result.audio_embedding is None and result.similarity is None
    assert result.text_embedding.shape[0] == 1
    assert set(result.numpy()) == {"text_embedding"}
    with pytest.raises(ValueError, match="both audio and text"):
        result.best_match()


def test_embed_batch_is_chunked_and_equals_single_clips(clap, model_path, sounds, monkeypatch):
    files = [str(sounds[k]) for k in ("wav", "flac", "ogg", "mp3", "long")]
    monkeypatch.setattr(clap, "batch_size", 2)
    calls = []
    encode = clap.model.get_audio_features
    monkeypatch.setattr(clap.model, "get_audio_features", lambda f, l: calls.append(f.shape[0]) or encode(f, l))
    batch = cm.embed(audio=files, text=LABELS, model=model_path)
    assert calls == [2, 2, 1]
    singles = np.concatenate([np.asarray(cm.embed(audio=f, model=model_path).audio_embedding) for f in files])
    np.testing.assert_allclose(np.asarray(batch.audio_embedding), singles, atol=1e-5)
    best = batch.best_match()
    assert isinstance(best, list) and len(best) == 5 and set(best) <= set(LABELS)


def test_long_audio_uses_fused_views_deterministically(clap, model_path, sounds):
    waveform = load_audio(sounds["long"])
    assert len(waveform) > 10 * SAMPLE_RATE
    _, is_longer = clap.feature_extractor([waveform])
    assert bool(is_longer[0])
    first = np.asarray(cm.embed(audio=str(sounds["long"]), model=model_path).audio_embedding)
    again = np.asarray(cm.embed(audio=waveform, sample_rate=SAMPLE_RATE, model=model_path).audio_embedding)
    first_10s = np.asarray(cm.embed(audio=waveform[: 10 * SAMPLE_RATE], sample_rate=SAMPLE_RATE, model=model_path).audio_embedding)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, first_10s, atol=1e-4)


def test_array_inputs_with_sample_rate(model_path, sounds):
    from_file = np.asarray(cm.embed(audio=str(sounds["wav"]), model=model_path).audio_embedding)
    samples, rate = sf.read(sounds["wav"], dtype="float32")
    from_numpy = cm.embed(audio=samples, sample_rate=rate, model=model_path).audio_embedding
    from_mlx = cm.embed(audio=mx.array(samples), sample_rate=rate, model=model_path).audio_embedding
    np.testing.assert_allclose(np.asarray(from_numpy), from_file, atol=1e-6)
    np.testing.assert_allclose(np.asarray(from_mlx), from_file, atol=1e-6)
    at_16k = cm.embed(audio=samples[::3].copy(), sample_rate=16_000, model=model_path).audio_embedding
    assert at_16k.shape == from_numpy.shape


def test_classify_fields_and_transformers_probabilities(clap, model_path, sounds, reference):
    result = cm.classify(str(sounds["wav"]), LABELS, top_k=2, model=model_path)
    ref = reference_outputs(reference, clap, [load_audio(sounds["wav"])], LABELS)
    expected = ref.logits_per_audio.softmax(dim=-1).numpy()[0]
    assert isinstance(result.probabilities, mx.array) and result.probabilities.shape == (3,)
    np.testing.assert_allclose(np.asarray(result.probabilities), expected, atol=1e-4)
    order = np.argsort(-expected)
    assert result.class_names == LABELS
    assert result.predicted_class == LABELS[order[0]]
    assert result.confidence == pytest.approx(float(expected.max()), abs=1e-4)
    assert result.top_k_classes == [LABELS[i] for i in order[:2]]
    assert result.top_k_probs == pytest.approx(expected[order[:2]].tolist(), abs=1e-4)
    assert sum(np.asarray(result.probabilities).tolist()) == pytest.approx(1.0, abs=1e-5)


def test_classify_top_k_defaults_to_all_and_clamps(model_path, sounds):
    everything = cm.classify(str(sounds["wav"]), LABELS, model=model_path)
    clamped = cm.classify(str(sounds["wav"]), LABELS, top_k=10, model=model_path)
    assert len(everything.top_k_classes) == len(clamped.top_k_classes) == 3
    assert everything.top_k_probs == sorted(everything.top_k_probs, reverse=True)


def test_classify_batch_returns_one_result_per_clip(model_path, sounds):
    files = [str(sounds["wav"]), str(sounds["ogg"])]
    results = cm.classify(files, LABELS, model=model_path)
    assert isinstance(results, list) and len(results) == 2
    for f, r in zip(files, results):
        single = cm.classify(f, LABELS, model=model_path)
        np.testing.assert_allclose(np.asarray(r.probabilities), np.asarray(single.probabilities), atol=1e-5)


def test_prompt_template_formats_texts_but_keeps_label_names(model_path, sounds):
    prompt = "This is a sound of {}."
    templated = cm.classify(str(sounds["wav"]), LABELS, prompt=prompt, model=model_path)
    spelled_out = cm.classify(str(sounds["wav"]), [prompt.format(x) for x in LABELS], model=model_path)
    assert templated.class_names == LABELS
    np.testing.assert_allclose(np.asarray(templated.probabilities), np.asarray(spelled_out.probabilities), atol=1e-6)
    embedded = cm.embed(text=LABELS, prompt=prompt, model=model_path)
    np.testing.assert_allclose(
        np.asarray(embedded.text_embedding), np.asarray(cm.embed(text=[prompt.format(x) for x in LABELS], model=model_path).text_embedding), atol=1e-6
    )
    with pytest.raises(ValueError, match="placeholder"):
        cm.classify(str(sounds["wav"]), LABELS, prompt="no placeholder", model=model_path)


def test_tag_fields_are_background_contrast_probabilities(clap, model_path, sounds):
    result = cm.tag(str(sounds["wav"]), LABELS, threshold=0.5, model=model_path)
    audio = clap.embed_audio([load_audio(sounds["wav"])])
    expected = scoring.contrast_probabilities(
        audio, clap.embed_text(LABELS), clap.embed_text(list(scoring.DEFAULT_BACKGROUND_PROMPTS)), clap.logit_scale_audio
    )[0]
    assert result.tags == LABELS and result.threshold == 0.5
    assert isinstance(result.probabilities, list) and all(isinstance(p, float) for p in result.probabilities)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    active = sorted((i for i in range(3) if expected[i] >= 0.5), key=lambda i: -expected[i])
    assert result.active_tags == [LABELS[i] for i in active]
    assert result.scores() == dict(zip(LABELS, result.probabilities))


def test_tag_thresholds_independence_and_custom_background(model_path, sounds):
    wav = str(sounds["wav"])
    assert cm.tag(wav, LABELS, threshold=0.0, model=model_path).active_tags != []
    assert set(cm.tag(wav, LABELS, threshold=0.0, model=model_path).active_tags) == set(LABELS)
    three = cm.tag(wav, LABELS, model=model_path).probabilities
    one = cm.tag(wav, LABELS[0], model=model_path).probabilities
    assert one == pytest.approx(three[:1], abs=1e-7)
    custom = cm.tag(wav, LABELS, background=["silence."], model=model_path).probabilities
    assert custom != pytest.approx(three, abs=1e-6)
    batch = cm.tag([wav, str(sounds["flac"])], LABELS, model=model_path)
    assert isinstance(batch, list) and batch[0].probabilities == pytest.approx(three, abs=1e-5)


def test_text_embeddings_are_cached_with_an_lru_bound(clap, monkeypatch):
    clap._text_cache.clear()
    first = clap.embed_text(["a dog barking", "rain"])
    np.testing.assert_array_equal(clap.embed_text(["rain"])[0], first[1])
    np.testing.assert_allclose(clap._embed_text_batch(["rain"])[0], first[1], atol=1e-6)
    monkeypatch.setattr(api, "TEXT_CACHE_SIZE", 2)
    clap.embed_text(["thunder"])
    assert list(clap._text_cache) == ["rain", "thunder"]  # least recently used evicted


def test_model_instance_can_be_passed_directly(clap, sounds):
    result = cm.classify(str(sounds["wav"]), LABELS, model=clap)
    assert result.predicted_class in LABELS


# --- errors: clear messages naming the problem -------------------------------------------------


def test_missing_and_corrupt_files_name_the_file(model_path, tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioInputError, match="nope.wav.*no such file"):
        cm.embed(audio=str(missing), model=model_path)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    with pytest.raises(AudioInputError, match="corrupt.wav"):
        cm.classify(str(corrupt), LABELS, model=model_path)


@pytest.mark.parametrize(
    "samples, match",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.1, np.nan, 0.2] * 100, np.float32), "NaN|non-finite"),
        (np.array([0.1, np.inf, 0.2] * 100, np.float32), "Inf|non-finite"),
    ],
)
def test_bad_arrays_are_rejected(model_path, samples, match):
    with pytest.raises(AudioInputError, match=match):
        cm.embed(audio=samples, sample_rate=SAMPLE_RATE, model=model_path)
    with pytest.raises(AudioInputError, match=r"audio\[1\]"):
        cm.embed(audio=[np.ones(4800, np.float32), samples], sample_rate=SAMPLE_RATE, model=model_path)


def test_array_without_sample_rate_and_wrong_types(model_path):
    with pytest.raises(AudioInputError, match="sample_rate"):
        cm.embed(audio=np.zeros(4800, np.float32), model=model_path)
    with pytest.raises(AudioInputError, match=r"audio\[0\]: .*float"):
        cm.embed(audio=[0.5, 0.2], model=model_path)
    with pytest.raises(ValueError, match="empty list"):
        cm.embed(audio=[], model=model_path)


def test_label_and_option_errors(model_path, sounds):
    wav = str(sounds["wav"])
    cases = [
        (lambda: cm.classify(wav, [], model=model_path), "labels is empty"),
        (lambda: cm.classify(wav, ["dog", "cat", "dog"], model=model_path), "duplicates: 'dog'"),
        (lambda: cm.classify(wav, ["dog", ""], model=model_path), r"labels\[1\]"),
        (lambda: cm.classify(wav, LABELS, top_k=0, model=model_path), "top_k must be >= 1"),
        (lambda: cm.tag(wav, [], model=model_path), "tags is empty"),
        (lambda: cm.tag(wav, ["x", "x"], model=model_path), "duplicates"),
        (lambda: cm.tag(wav, LABELS, threshold=1.5, model=model_path), r"threshold must be in \[0, 1\]"),
        (lambda: cm.tag(wav, LABELS, threshold=-0.1, model=model_path), r"threshold must be in \[0, 1\]"),
        (lambda: cm.embed(model=model_path), "needs audio"),
        (lambda: cm.embed(text="x", return_similarity=True, model=model_path), "both audio and text"),
        (lambda: cm.embed(text=[], model=model_path), "text is empty"),
        (lambda: cm.tag(wav, LABELS, background=[], model=model_path), "background is empty"),
        (lambda: api.CLAP(model_path, batch_size=0), "batch_size must be >= 1"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
