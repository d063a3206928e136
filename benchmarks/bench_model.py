"""clap_mlx vs transformers + torch (2 threads) on the same full-size random weights.

    python benchmarks/bench_model.py [--runs 5]

Times are interleaved in one process (mlx, torch, mlx, torch, ...) so load on a shared
machine hits both sides alike; peak RSS is measured per side in its own subprocess.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable

from _common import full_checkpoint, interleaved, peak_rss_mb, print_table, summary, write_results

import mlx.core as mx
import numpy as np

from clap_mlx import ops
from clap_mlx.config import CLAPConfig
from clap_mlx.loading import feature_extractor_for, load
from clap_mlx.tokenizer import ClapTokenizer

SAMPLE_RATE = 48_000
LABELS = [f"the sound of {thing}" for thing in (
    "a dog barking", "a cat meowing", "glass breaking", "a baby crying", "a smoke alarm", "rain on a roof",
    "a door knocking", "footsteps", "a car horn", "a siren", "speech", "music", "a doorbell", "a phone ringing",
    "water running", "a vacuum cleaner", "a microwave beeping", "birds singing", "thunder", "wind",
    "a kettle whistling", "keys jingling", "a door slamming", "applause", "laughter", "coughing", "snoring",
    "a clock ticking", "an engine idling", "a helicopter", "a train passing", "a chainsaw",
)]


def clips(seconds: float, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32) for _ in range(count)]


def tower_inputs(folder, batch: int, longer: bool) -> tuple[np.ndarray, np.ndarray]:
    """The same audio tower input for both sides: clap_mlx's deterministic extractor (transformers'
    flags a random clip of an all-short batch as longer, which would run fusion on one side only)."""
    extract = feature_extractor_for(folder, CLAPConfig.from_json(folder / "config.json"))
    return extract(clips(25.0 if longer else 10.0, batch))


def mlx_side(folder) -> dict[str, Callable[[], np.ndarray]]:
    bundle = load(folder)
    model, extract, tokenize = bundle.model, bundle.feature_extractor, bundle.tokenizer

    def audio(batch: int, longer: bool) -> Callable[[], np.ndarray]:
        features, is_longer = (mx.array(a) for a in tower_inputs(folder, batch, longer))
        return lambda: np.array(model.get_audio_features(features, is_longer))

    def text(count: int) -> Callable[[], np.ndarray]:
        ids, mask = (mx.array(a) for a in tokenize(LABELS[:count]))
        return lambda: np.array(model.get_text_features(ids, mask))

    def features(seconds: float) -> Callable[[], np.ndarray]:
        waveforms = clips(seconds, 1)
        return lambda: extract(waveforms)[0]

    return workloads(audio, text, features)


def torch_side(folder) -> dict[str, Callable[[], np.ndarray]]:
    import torch
    from transformers import ClapFeatureExtractor, ClapModel

    torch.set_num_threads(2)
    model = ClapModel.from_pretrained(folder).eval()
    extractor = ClapFeatureExtractor.from_pretrained(folder)
    tokenize = ClapTokenizer.from_folder(folder)

    def extract(waveforms: list[np.ndarray]):
        out = extractor(waveforms, sampling_rate=SAMPLE_RATE, return_tensors="np")
        return out["input_features"], out["is_longer"]

    def audio(batch: int, longer: bool) -> Callable[[], np.ndarray]:
        features, is_longer = tower_inputs(folder, batch, longer)
        features, is_longer = torch.from_numpy(features), torch.from_numpy(is_longer).reshape(-1, 1)

        def run():
            with torch.inference_mode():
                return model.get_audio_features(input_features=features, is_longer=is_longer).pooler_output.numpy()

        return run

    def text(count: int) -> Callable[[], np.ndarray]:
        ids, mask = (torch.from_numpy(a.astype(np.int64)) for a in tokenize(LABELS[:count]))

        def run():
            with torch.inference_mode():
                return model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output.numpy()

        return run

    def features(seconds: float) -> Callable[[], np.ndarray]:
        waveforms = clips(seconds, 1)
        return lambda: extract(waveforms)[0]

    return workloads(audio, text, features)


def workloads(audio, text, features) -> dict[str, Callable[[], np.ndarray]]:
    return {
        "audio b1 (10 s, is_longer=False)": audio(1, False),
        "audio b1 (25 s, is_longer=True)": audio(1, True),
        "audio b8 (10 s, is_longer=False)": audio(8, False),
        "audio b8 (25 s, is_longer=True)": audio(8, True),
        "text 1 label": text(1),
        "text 32 labels": text(32),
        "features 10-s clip": features(10.0),
        "features 25-s clip": features(25.0),
    }


def measure_rss(side: str) -> None:
    """Child process: load one side, run every workload twice, print its peak RSS."""
    folder = full_checkpoint()
    fns = (mlx_side if side == "mlx" else torch_side)(folder)
    loaded = peak_rss_mb()
    for fn in fns.values():
        fn()
        fn()
    print(json.dumps({"peak_rss_after_load_mb": loaded, "peak_rss_mb": peak_rss_mb()}))


def rss_of(side: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--rss-side", side], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side after one warm-up (default 5)")
    parser.add_argument("--rss-side", choices=["mlx", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_side:
        measure_rss(args.rss_side)
        return
    folder = full_checkpoint()
    sides = {"mlx": mlx_side(folder), "torch": torch_side(folder)}
    rows, records = [], []
    for name in sides["mlx"]:
        pair = {side: fns[name] for side, fns in sides.items()}
        times = {side: summary(t) for side, t in interleaved(pair, args.runs).items()}
        ratio = times["torch"]["median_ms"] / times["mlx"]["median_ms"]
        best_ratio = times["torch"]["min_ms"] / times["mlx"]["min_ms"]
        record = {"workload": name, "times": times, "torch_over_mlx": ratio, "torch_over_mlx_min": best_ratio}
        if not name.startswith("features"):
            record["min_cosine_mlx_vs_torch"] = cosine(pair["mlx"](), pair["torch"]())
        records.append(record)
        rows.append([name, times["mlx"]["median_ms"], times["torch"]["median_ms"], ratio, best_ratio,
                     record.get("min_cosine_mlx_vs_torch", "")])
        print(f"  {name}: mlx {times['mlx']['median_ms']:.1f} ms, torch {times['torch']['median_ms']:.1f} ms")
    rss = {side: rss_of(side) for side in sides}
    print()
    print_table(["workload", "mlx ms", "torch ms", "torch/mlx", "torch/mlx of mins", "min cos"], rows)
    print("\npeak RSS (own process, load + every workload twice):")
    for side, r in rss.items():
        print(f"  {side:5s}: {r['peak_rss_mb']:.0f} MB (after load {r['peak_rss_after_load_mb']:.0f} MB)")
    write_results("bench_model", {
        "runs": args.runs,
        "statistic": "median ms after 1 warm-up, mlx and torch interleaved; torch_over_mlx > 1 means mlx is faster "
                     "(torch_over_mlx_min: the same from each side's fastest run)",
        "ops_workers": ops._WORKERS,
        "workloads": records,
        "peak_rss": rss,
    })


if __name__ == "__main__":
    main()
