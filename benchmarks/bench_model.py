"""clap_mlx vs transformers + torch (2 threads) on the same full-size random weights.

    python benchmarks/bench_model.py [--runs 5]

Each side runs in its own worker process (so neither side's spinning BLAS/OpenMP threads
steal cores from the other), driven by this process in interleaved rounds (mlx, torch,
mlx, torch, ...) so load on a shared machine hits both sides alike. Each worker times its
own call and reports its own peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import full_checkpoint, peak_rss_mb, print_table, summary, time_once, write_results

import mlx.core as mx
import numpy as np

from clap_mlx import host_ops
from clap_mlx.audio_io import SAMPLE_RATE
from clap_mlx.config import CLAPConfig
from clap_mlx.loading import feature_extractor_for, load
from clap_mlx.tokenizer import ClapTokenizer

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


WORKLOAD_NAMES = (
    "audio b1 (10 s, is_longer=False)", "audio b1 (25 s, is_longer=True)",
    "audio b8 (10 s, is_longer=False)", "audio b8 (25 s, is_longer=True)",
    "text 1 label", "text 32 labels", "features 10-s clip", "features 25-s clip",
)


def workloads(audio, text, features) -> dict[str, Callable[[], np.ndarray]]:
    runs = (audio(1, False), audio(1, True), audio(8, False), audio(8, True), text(1), text(32),
            features(10.0), features(25.0))
    return dict(zip(WORKLOAD_NAMES, runs))


def serve(side: str) -> None:
    """Worker process: load one side, then answer `run I` (seconds), `save I PATH` and `rss` on stdin,
    I indexing WORKLOAD_NAMES."""
    fns = (mlx_side if side == "mlx" else torch_side)(full_checkpoint())
    print(json.dumps({"ready": True, "peak_rss_after_load_mb": peak_rss_mb()}), flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "run":
            reply = {"seconds": time_once(fns[WORKLOAD_NAMES[int(args[0])]])}
        elif command == "save":
            np.save(args[1], fns[WORKLOAD_NAMES[int(args[0])]]())
            reply = {}
        else:
            reply = {"peak_rss_mb": peak_rss_mb()}
        print(json.dumps(reply), flush=True)


class Worker:
    def __init__(self, side: str):
        # OpenBLAS preloaded into the torch process oversubscribes the 2 cores next to torch's own
        # threads (its b1 audio forward measured 430 ms instead of 200 ms), so that worker skips it.
        env = {**os.environ, "CLAP_MLX_NO_OPENBLAS": "1"} if side == "torch" else None
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", side], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)
        self.loaded = self._reply()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with {self.process.wait()}")
        return json.loads(line)

    def ask(self, *words: str) -> dict:
        self.process.stdin.write(" ".join(words) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def interleaved_rounds(workers: dict[str, Worker], index: int, runs: int) -> dict[str, list[float]]:
    for worker in workers.values():
        worker.ask("run", str(index))  # warm-up
    times: dict[str, list[float]] = {side: [] for side in workers}
    for _ in range(runs):
        for side, worker in workers.items():
            times[side].append(worker.ask("run", str(index))["seconds"])
    return times


def output_of(worker: Worker, side: str, index: int, folder: Path) -> np.ndarray:
    path = folder / f"{side}-{index}.npy"
    worker.ask("save", str(index), str(path))
    return np.load(path)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side after one warm-up (default 5)")
    parser.add_argument("--worker", choices=["mlx", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args.worker)
        return
    full_checkpoint()  # generate once before the workers start
    workers = {side: Worker(side) for side in ("mlx", "torch")}
    scratch = Path(tempfile.mkdtemp())
    rows, records = [], []
    for index, name in enumerate(WORKLOAD_NAMES):
        times = {side: summary(t) for side, t in interleaved_rounds(workers, index, args.runs).items()}
        ratio = times["torch"]["median_ms"] / times["mlx"]["median_ms"]
        best_ratio = times["torch"]["min_ms"] / times["mlx"]["min_ms"]
        record = {"workload": name, "times": times, "torch_over_mlx": ratio, "torch_over_mlx_min": best_ratio}
        if not name.startswith("features"):
            record["min_cosine_mlx_vs_torch"] = cosine(*(output_of(w, side, index, scratch) for side, w in workers.items()))
        records.append(record)
        rows.append([name, times["mlx"]["median_ms"], times["torch"]["median_ms"], ratio, best_ratio,
                     record.get("min_cosine_mlx_vs_torch", "")])
        print(f"  {name}: mlx {times['mlx']['median_ms']:.1f} ms, torch {times['torch']['median_ms']:.1f} ms")
    rss = {side: {**w.ask("rss"), "peak_rss_after_load_mb": w.loaded["peak_rss_after_load_mb"]}
           for side, w in workers.items()}
    for w in workers.values():
        w.close()
    shutil.rmtree(scratch)
    print()
    print_table(["workload", "mlx ms", "torch ms", "torch/mlx", "torch/mlx of mins", "min cos"], rows)
    print("\npeak RSS (own worker process, load + every workload):")
    for side, r in rss.items():
        print(f"  {side:5s}: {r['peak_rss_mb']:.0f} MB (after load {r['peak_rss_after_load_mb']:.0f} MB)")
    write_results("bench_model", {
        "runs": args.runs,
        "statistic": "median ms after 1 warm-up, each side in its own worker process, rounds interleaved; torch_over_mlx > 1 means mlx is faster "
                     "(torch_over_mlx_min: the same from each side's fastest run)",
        "ops_workers": host_ops._WORKERS,
        "workloads": records,
        "peak_rss": rss,
    })


if __name__ == "__main__":
    main()
