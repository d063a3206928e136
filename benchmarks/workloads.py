"""The model benchmarks' inputs: labels, clips and audio-tower inputs, identical on every side.

Imports only what every clap_mlx revision since the C kernels has (audio_io, config,
loading.feature_extractor_for), so bench_ab.py's workers can time an older checkout with it.
"""

from __future__ import annotations

import numpy as np

import clap_mlx  # noqa: F401  (preloads OpenBLAS before anything imports mlx.core)
from clap_mlx.audio_io import SAMPLE_RATE
from clap_mlx.config import CLAPConfig
from clap_mlx.loading import feature_extractor_for

LABELS = [f"the sound of {thing}" for thing in (
    "a dog barking", "a cat meowing", "glass breaking", "a baby crying", "a smoke alarm", "rain on a roof",
    "a door knocking", "footsteps", "a car horn", "a siren", "speech", "music", "a doorbell", "a phone ringing",
    "water running", "a vacuum cleaner", "a microwave beeping", "birds singing", "thunder", "wind",
    "a kettle whistling", "keys jingling", "a door slamming", "applause", "laughter", "coughing", "snoring",
    "a clock ticking", "an engine idling", "a helicopter", "a train passing", "a chainsaw",
)]


# Features then the audio forward of one clip, as CLAP.embed and the monitor's windows run them
# (the monitor's window length).
EMBED_SECONDS = 5.0


def clips(seconds: float, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32) for _ in range(count)]


def tower_inputs(folder, batch: int, longer: bool) -> tuple[np.ndarray, np.ndarray]:
    """The same audio tower input for every side: clap_mlx's deterministic extractor (transformers'
    flags a random clip of an all-short batch as longer, which would run fusion on one side only)."""
    extract = feature_extractor_for(folder, CLAPConfig.from_json(folder / "config.json"))
    return extract(clips(25.0 if longer else 10.0, batch))


def embed_run(model, extract):
    """clap_mlx's side of the embed workload: one EMBED_SECONDS clip's features, then the forward
    right after them."""
    import mlx.core as mx

    waveforms = clips(EMBED_SECONDS, 1)

    def run() -> np.ndarray:
        features, is_longer = extract(waveforms)
        return np.array(model.get_audio_features(mx.array(features), mx.array(is_longer)))

    return run
