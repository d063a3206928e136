"""clap_mlx.audio_io: decoding, channel mixing, resampling and input validation.

Resampled audio is checked against the `sox` CLI (an independent decoder, mixer and resampler)
and against signal invariants (length, tone frequency, RMS).
"""

import subprocess
import warnings
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

from clap_mlx.audio_io import SAMPLE_RATE, AudioInputError, TruncatedAudioWarning, load_audio, load_audio_batch
from tests.helpers import tone

REAL_CLIPS = Path(__file__).parents[2] / "shared/audio/real-clips"


def channels(mono: np.ndarray, n: int) -> np.ndarray:
    """[samples, n]: channel c is `mono` scaled by (c + 1) / n."""
    return np.stack([mono * (c + 1) / n for c in range(n)], axis=1)


def peak_hz(mono: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / rate)[spectrum.argmax()])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def sox_48k_mono(path: Path, tmp_path: Path) -> np.ndarray:
    raw = tmp_path / f"{path.stem}.f32"
    subprocess.run(["sox", str(path), "-r", str(SAMPLE_RATE), "-c", "1", "-t", "f32", str(raw)], check=True)
    return np.fromfile(raw, np.float32)


@pytest.mark.parametrize(
    "suffix, subtype, tolerance",
    [("wav", "PCM_24", 1e-4), ("flac", "PCM_16", 1e-4), ("ogg", "VORBIS", None), ("mp3", "MPEG_LAYER_III", None)],
)
def test_decodes_formats_stereo_44k(tmp_path, suffix, subtype, tolerance):
    path = tmp_path / f"tone.{suffix}"
    sf.write(path, channels(tone(440, 2.0, 44100), 2), 44100, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.flags.c_contiguous
    assert len(audio) == 2 * SAMPLE_RATE
    assert peak_hz(audio) == pytest.approx(440, abs=1)
    assert rms(audio) == pytest.approx(0.75 * 0.5 / np.sqrt(2), rel=0.03)  # mean of 1.0x and 0.5x channels
    if tolerance is not None:  # lossless: sample-exact against sox; lossy codecs only keep the invariants
        expected = sox_48k_mono(path, tmp_path)
        assert len(expected) == len(audio)
        assert np.abs(audio - expected).max() < tolerance


def test_speech_22k_matches_sox(tmp_path):
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "the quick brown fox jumps over the lazy dog"], check=True)
    assert sf.info(path).samplerate == 22050
    audio = load_audio(path)
    expected = sox_48k_mono(path, tmp_path)
    assert len(audio) == len(expected) == round(sf.info(path).frames * SAMPLE_RATE / 22050)
    assert np.abs(audio - expected).max() < 1e-3
    assert rms(audio) > 0.01


@pytest.mark.skipif(not REAL_CLIPS.is_dir(), reason=f"real clips not found at {REAL_CLIPS}")
def test_real_clips_match_sox(tmp_path):
    clips = sorted(REAL_CLIPS.glob("*.wav"))
    assert len(clips) == 13
    resampled = 0
    for path in clips:
        info = sf.info(path)
        audio = load_audio(path)
        expected = sox_48k_mono(path, tmp_path)
        assert len(audio) == len(expected) == round(info.frames * SAMPLE_RATE / info.samplerate), path.name
        assert np.abs(audio - expected).max() < 1e-3, path.name
        assert rms(audio) == pytest.approx(rms(expected), rel=1e-3), path.name
        resampled += info.samplerate != SAMPLE_RATE and info.channels == 2
    assert resampled == 4  # the 44.1 kHz stereo 24-bit clips went through mixing and soxr


def test_array_layouts_mix_to_the_same_mono():
    stereo = channels(tone(300, 0.5, SAMPLE_RATE), 2)
    mono = load_audio(stereo, SAMPLE_RATE)
    np.testing.assert_array_equal(mono, stereo.mean(axis=1))
    np.testing.assert_array_equal(load_audio(np.ascontiguousarray(stereo.T), SAMPLE_RATE), mono)
    np.testing.assert_array_equal(load_audio(mx.array(stereo), SAMPLE_RATE), mono)
    np.testing.assert_allclose(load_audio(mx.array(stereo).astype(mx.bfloat16), SAMPLE_RATE), mono, atol=4e-3)  # 8-bit mantissa
    eight = np.tile(stereo[:, :1], (1, 8))
    np.testing.assert_array_equal(load_audio(eight, SAMPLE_RATE), stereo[:, 0])


def test_mono_48k_array_passes_through():
    samples = np.random.default_rng(0).uniform(-1, 1, 1000)  # float64 in
    audio = load_audio(samples, SAMPLE_RATE)
    assert audio.dtype == np.float32
    np.testing.assert_array_equal(audio, samples.astype(np.float32))


def test_array_resampled_to_48k():
    audio = load_audio(tone(1000, 1.0, 16000), 16000)
    assert len(audio) == SAMPLE_RATE
    assert peak_hz(audio) == pytest.approx(1000, abs=1)
    assert rms(audio[1000:-1000]) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


def test_batch_mixes_files_and_arrays(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(500, 1.0, 44100), 44100)
    batch = load_audio_batch([path, str(path), tone(500, 1.0, 24000)], sample_rate=24000)
    assert [len(a) for a in batch] == [SAMPLE_RATE, SAMPLE_RATE, SAMPLE_RATE]
    np.testing.assert_array_equal(batch[0], batch[1])
    assert load_audio_batch([]) == []


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.wav", r"audio file '.*missing\.wav': no such file"),
        (lambda d: d, r"audio file '.*': is a directory"),
        (lambda d: write(d / "noise.wav", np.random.default_rng(0).bytes(4000)), r"noise\.wav': cannot decode it"),
        (lambda d: write(d / "notes.txt", b"not audio\n" * 50), r"notes\.txt': cannot decode it .*Format not recognised"),
        (lambda d: write(d / "empty.wav", b""), r"empty\.wav': cannot decode it"),
    ],
)
def test_unreadable_files(tmp_path, make, message):
    with pytest.raises(AudioInputError, match=message):
        load_audio(make(tmp_path))


def test_truncated_and_empty_and_nan_files(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(440, 0.5, SAMPLE_RATE), SAMPLE_RATE)
    cut = write(tmp_path / "cut.wav", good.read_bytes()[:30])
    with pytest.raises(AudioInputError, match=r"cut\.wav': cannot decode it"):
        load_audio(cut)
    silent = tmp_path / "zero.wav"
    sf.write(silent, np.zeros((0, 1), np.float32), SAMPLE_RATE)
    with pytest.raises(AudioInputError, match=r"zero\.wav': audio is empty"):
        load_audio(silent)
    bad = tone(440, 0.5, SAMPLE_RATE)
    bad[100] = np.nan
    nan_file = tmp_path / "nan.wav"
    sf.write(nan_file, bad, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioInputError, match=r"nan\.wav': 1 NaN/Inf sample\(s\), first at sample 100"):
        load_audio(nan_file)


def with_value(index: int, value: float) -> np.ndarray:
    samples = np.zeros(1000, np.float32)
    samples[index] = value
    return samples


@pytest.mark.parametrize(
    "source, rate, message",
    [
        (np.zeros(1000, np.float32), None, "array: sample_rate is required for array input"),
        (np.zeros(1000, np.float32), 0, "array: sample_rate must be positive, got 0"),
        (np.zeros(1000, np.float32), -44100, "array: sample_rate must be positive, got -44100"),
        (np.zeros(1000, np.float32), 44100.0, "array: sample_rate must be an integer, got 44100.0"),
        (np.zeros(0, np.float32), SAMPLE_RATE, r"array: audio is empty \(zero samples\)"),
        (np.zeros((0, 2), np.float32), SAMPLE_RATE, r"array: audio is empty"),
        (with_value(7, np.nan), SAMPLE_RATE, r"array: 1 NaN/Inf sample\(s\), first at sample 7"),
        (with_value(9, np.inf), SAMPLE_RATE, r"array: 1 NaN/Inf sample\(s\), first at sample 9"),
        (np.zeros(1000, np.int16), SAMPLE_RATE, r"array: expected floating-point samples, got dtype int16 \(integer PCM"),
        (np.zeros(1000, np.complex64), SAMPLE_RATE, "array: expected floating-point samples, got dtype complex64"),
        (mx.zeros((1000,), dtype=mx.int32), SAMPLE_RATE, "array: expected floating-point samples, got dtype int32"),
        (np.zeros((2, 3, 1000), np.float32), SAMPLE_RATE, r"array: expected shape \[samples\] or \[samples, channels\], got \(2, 3, 1000\)"),
        (np.array(0.5, np.float32), SAMPLE_RATE, r"array: expected shape .* got \(\)"),
        (np.zeros((16, 16), np.float32), SAMPLE_RATE, r"array: cannot tell samples from channels in shape \(16, 16\)"),
        ([0.0, 0.1], SAMPLE_RATE, "array: expected a file path, numpy array or mx.array, got list"),
    ],
)
def test_bad_arrays(source, rate, message):
    with pytest.raises(AudioInputError, match=message):
        load_audio(source, rate)


def test_batch_errors_name_the_array():
    good = np.zeros(1000, np.float32)
    with pytest.raises(AudioInputError, match=r"array #2: 1 NaN/Inf sample"):
        load_audio_batch([good, good, with_value(3, np.nan)], sample_rate=SAMPLE_RATE)
    assert issubclass(AudioInputError, ValueError)


def cut_short(src: Path, dst: Path, keep_bytes: int) -> Path:
    """A copy of `src` whose bytes end after `keep_bytes`: the header still declares every frame."""
    dst.write_bytes(src.read_bytes()[:keep_bytes])
    return dst


def test_truncated_wav_loads_what_it_holds_and_warns(tmp_path):
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLE_RATE).astype(np.float32)  # 1 s
    full = tmp_path / "full.wav"
    sf.write(full, samples, SAMPLE_RATE, subtype="FLOAT")
    header = full.stat().st_size - 4 * len(samples)
    short = cut_short(full, tmp_path / "short.wav", header + 4 * 12000 + 3)  # and a partial frame
    declared = r"declares 48000 frames \(1\.00 s\), the file holds 12000 \(0\.25 s\)"
    with pytest.warns(TruncatedAudioWarning, match=rf"audio file '{short}': truncated: its header {declared}"):
        audio = load_audio(short)
    np.testing.assert_array_equal(audio, samples[:12000])


@pytest.mark.skipif(not REAL_CLIPS.is_dir(), reason=f"real clips not found at {REAL_CLIPS}")
def test_truncated_real_recording_is_mixed_and_resampled_as_far_as_it_goes(tmp_path):
    full = REAL_CLIPS / "Bird.wav"  # 24-bit stereo at 44.1 kHz
    info = sf.info(full)
    short = cut_short(full, tmp_path / "Bird.wav", full.stat().st_size * 3 // 5)
    held = sf.info(short).frames
    assert 0 < held < info.frames
    with pytest.warns(TruncatedAudioWarning, match=rf"declares {info.frames} frames .* holds {held} "):
        audio = load_audio(short)
    samples, rate = sf.read(full, dtype="float32", frames=held)
    np.testing.assert_array_equal(audio, load_audio(samples, rate))


def test_complete_and_streamed_wavs_do_not_warn(tmp_path):
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLE_RATE // 2).astype(np.float32)
    path = tmp_path / "complete.wav"
    sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    streamed = bytearray(path.read_bytes())
    # A writer that cannot seek back (e.g. to a pipe) leaves the data size at 0xFFFFFFFF.
    size_at = streamed.index(b"data") + 4
    streamed[size_at : size_at + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "streamed.wav").write_bytes(streamed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedAudioWarning)
        for name in ("complete.wav", "streamed.wav"):
            assert len(load_audio(tmp_path / name)) == len(samples), name
