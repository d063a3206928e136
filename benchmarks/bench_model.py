"""clap_mlx vs transformers + torch (2 threads) vs onnxruntime (2 threads) on the same full-size
random weights, plus the audio forward's achieved GFLOPS against the machine's sgemm peak and its
GEMM floor (its linear layers timed alone on each side; benchmarks/yardsticks.py).

    python benchmarks/bench_model.py [--runs 7] [--min-seconds 3] [--until-decided MAX_ROUNDS] [--no-onnx]
                                     [--checkpoint FOLDER]
    BENCH_ISA=avx2 python benchmarks/bench_model.py ...   # an AVX-512 CPU held to AVX2 on every side

Each side runs in its own worker process (so neither side's spinning BLAS/OpenMP threads
steal cores from the other), driven by this process in interleaved rounds (mlx, torch,
onnxruntime, mlx, ...) so load on a shared machine hits every side alike; a fast workload gets
more rounds (up to 5x --runs) until each side has run --min-seconds. Each worker times
its own call and reports its own peak RSS. The onnxruntime side (`pip install
'clap-mlx[bench]'`) runs the towers exported with torch.onnx (benchmarks/onnx_side.py); it
has no feature-extraction rows.

FLOPs are counted by torch's FlopCounterMode on the torch forward (the sum over its matmul,
convolution and attention shapes: the same arithmetic every side does); the peak is the best
of OpenBLAS sgemm through mlx on 2048² and 4096² float32 matrices, measured in the mlx worker
before the first workload and after each.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import BENCH_ISA, full_checkpoint, print_table, summary, write_results
from paired import interval, paired_ratio, target_for, until_decided
from workers import Worker, interleaved_rounds, more_rounds, serve_workloads
from workloads import EMBED_SECONDS, LABELS, clips, embed_run, tower_inputs
from yardsticks import flop_count, gemm_floor, gemm_time, linear_shapes, sgemm_gflops

import mlx.core as mx
import numpy as np

from clap_mlx import host_ops
from clap_mlx.audio_io import SAMPLE_RATE
from clap_mlx.loading import load
from clap_mlx.tokenizer import ClapTokenizer

SIDES = ("mlx", "torch", "onnxruntime")
# A workload runs at most this many times --runs rounds to reach --min-seconds per side.
MAX_RUNS_FACTOR = 5


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

    return workloads(audio, text, features, lambda: embed_run(model, extract))


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

    def embed() -> Callable[[], np.ndarray]:
        waveforms = clips(EMBED_SECONDS, 1)

        def run():
            features, _ = extract(waveforms)
            # transformers flags a random clip of an all-short batch as longer; like clap_mlx, not here
            is_longer = torch.zeros((len(waveforms), 1), dtype=torch.bool)
            with torch.inference_mode():
                return model.get_audio_features(input_features=torch.from_numpy(features),
                                                is_longer=is_longer).pooler_output.numpy()

        return run

    return workloads(audio, text, features, embed)


WORKLOAD_NAMES = (
    "audio b1 (10 s, is_longer=False)", "audio b1 (25 s, is_longer=True)",
    "audio b8 (10 s, is_longer=False)", "audio b8 (25 s, is_longer=True)",
    "text 1 label", "text 32 labels", "features 10-s clip", "features 25-s clip",
    "embed 5-s clip (features + audio b1)",
)


def workloads(audio, text, features, embed) -> dict[str, Callable[[], np.ndarray]]:
    """The workloads of a side: the towers alone on the same inputs, the feature extraction alone,
    and one clip's features then its forward (what CLAP.embed and each monitor window run)."""
    runs = (audio(1, False), audio(1, True), audio(8, False), audio(8, True), text(1), text(32),
            features(10.0), features(25.0), embed())
    return dict(zip(WORKLOAD_NAMES, runs))


def serve(side: str, folder: Path) -> None:
    """Worker process of one side; besides serve_workloads' commands, `peak` (mlx: sgemm GFLOPS),
    `flops I` and `linears I` (torch: the FLOPs and linear-layer shapes of workload I), and
    `gemms I SHAPES` (the time of those GEMMs alone on this side)."""
    ready: dict = {}
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the protocol: torch.onnx prints progress
        if side == "mlx":
            fns = mlx_side(folder)
        elif side == "torch":
            import torch

            fns = torch_side(folder)
            ready["cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # BENCH_ISA's proof
        else:
            from onnx_side import onnx_side

            fns, ready["exports"] = onnx_side(folder, ClapTokenizer.from_folder(folder), WORKLOAD_NAMES, LABELS)
    serve_workloads(fns, WORKLOAD_NAMES, ready, {
        "peak": lambda fn, words: {"sgemm_gflops": sgemm_gflops()},
        "flops": lambda fn, words: {"flops": flop_count(fn)},
        "linears": lambda fn, words: {"shapes": linear_shapes(fn)},
        "gemms": lambda fn, words: gemm_time(json.loads(words[0]), side),
    })


def start_worker(side: str, folder: Path) -> Worker:
    # OpenBLAS preloaded into the torch process oversubscribes the 2 cores next to torch's own
    # threads (its b1 audio forward measured 430 ms instead of 200 ms), so the torch and
    # onnxruntime workers skip it (onnxruntime has its own GEMMs; torch only exports there).
    env = None if side == "mlx" else {**os.environ, "CLAP_MLX_NO_OPENBLAS": "1"}
    return Worker([sys.executable, __file__, "--worker", side, "--checkpoint", str(folder)], env)


def output_of(worker: Worker, side: str, index: int, folder: Path) -> np.ndarray:
    path = folder / f"{side}-{index}.npy"
    worker.ask("save", str(index), str(path))
    return np.load(path)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))


def measure(workers: dict[str, Worker], index: int, name: str, runs: int, min_seconds: float, scratch: Path,
            max_rounds: int | None) -> dict:
    sides = {side: w for side, w in workers.items() if name in w.loaded["workloads"]}
    rounds = interleaved_rounds(sides, index, runs, min_seconds, MAX_RUNS_FACTOR * runs)
    record = {"workload": name}
    if max_rounds and (target := target_for(name)):
        record["until_decided"] = until_decided(rounds["torch"], rounds["mlx"], target, runs, max_rounds,
                                                lambda count: more_rounds(sides, index, rounds, count))
    record["times"] = times = {side: summary(t) for side, t in rounds.items()}
    for side in sides.keys() - {"mlx"}:
        record[f"{side}_over_mlx"] = times[side]["median_ms"] / times["mlx"]["median_ms"]
        record[f"{side}_over_mlx_min"] = times[side]["min_ms"] / times["mlx"]["min_ms"]
        record[f"{side}_over_mlx_paired"] = paired_ratio(rounds[side], rounds["mlx"])
    if not name.startswith("features"):
        outputs = {side: output_of(w, side, index, scratch) for side, w in sides.items()}
        record["min_cosine_mlx_vs_torch"] = cosine(outputs["mlx"], outputs["torch"])
        if "onnxruntime" in outputs:
            record["max_abs_diff_onnxruntime_vs_torch"] = float(np.max(np.abs(outputs["onnxruntime"] - outputs["torch"])))
        record["flops"] = workers["torch"].ask("flops", str(index))["flops"]
        record["gflops"] = {side: record["flops"] / t["median_ms"] / 1e6 for side, t in times.items()}
    if name.startswith("audio"):
        record["gemm_floor"] = gemm_floor(workers, index, times)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per side after one warm-up (default 7)")
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help=f"more runs (up to {MAX_RUNS_FACTOR}x --runs) until each side has run this long (default 3)")
    parser.add_argument("--until-decided", type=int, metavar="MAX_ROUNDS",
                        help="rounds of --runs more while a targeted workload cannot tell which side of its target "
                             "it lies, up to MAX_ROUNDS in all (benchmarks/paired.py's until_decided)")
    parser.add_argument("--no-onnx", action="store_true", help="leave out the onnxruntime side")
    parser.add_argument("--checkpoint", type=Path, help="another hub-layout folder (default: the full-size random one)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.checkpoint or full_checkpoint()  # generated once before the workers start
    if args.worker:
        serve(args.worker, folder)
        return
    sides = ["mlx", "torch"]
    if BENCH_ISA and not args.no_onnx:
        # its MLAS kernels pick their ISA from cpuid alone: they would run AVX-512 beside AVX2 sides
        print(f"BENCH_ISA={BENCH_ISA}: onnxruntime has no switch to hold it to {BENCH_ISA} code, left out")
    elif not args.no_onnx:
        if importlib.util.find_spec("onnxruntime") is None:
            raise SystemExit("onnxruntime is not installed: pip install 'clap-mlx[bench]', or pass --no-onnx")
        sides.append("onnxruntime")
    workers = {side: start_worker(side, folder) for side in sides}
    # the sgemm peak before and after every workload: a load spike lowers one measurement, the best stands
    peaks = [workers["mlx"].ask("peak")["sgemm_gflops"]]
    scratch = Path(tempfile.mkdtemp())
    records = []
    for index, name in enumerate(WORKLOAD_NAMES):
        records.append(measure(workers, index, name, args.runs, args.min_seconds, scratch, args.until_decided))
        peaks.append(workers["mlx"].ask("peak")["sgemm_gflops"])
        print(f"  {name}: " + ", ".join(f"{s} {t['median_ms']:.1f} ms" for s, t in records[-1]["times"].items()))
    peak = max(g for p in peaks for g in p.values())
    rss = {side: {**w.ask("rss"), "peak_rss_after_load_mb": w.loaded["peak_rss_after_load_mb"]}
           for side, w in workers.items()}
    for w in workers.values():
        w.close()
    shutil.rmtree(scratch)

    rows = []
    for r in records:
        ratio = {s: (f"{r[f'{s}_over_mlx']:.2f} ({interval(r[f'{s}_over_mlx_paired'])})" if f"{s}_over_mlx" in r else "")
                 for s in sides[1:]}
        # audio only: the text FLOPs are torch's, padding included, which clap_mlx does not compute
        gflops = f"{r['gflops']['mlx']:.0f} ({100 * r['gflops']['mlx'] / peak:.0f} %)" if r["workload"].startswith("audio") else ""
        rows.append([r["workload"], *(f"{r['times'][s]['median_ms']:.1f}" if s in r["times"] else "" for s in sides),
                     *ratio.values(), gflops, f"{r['min_cosine_mlx_vs_torch']:.6f}" if "flops" in r else ""])
    print()
    print_table(["workload", *(f"{s} ms" for s in sides), *(f"{s}/mlx (per round)" for s in sides[1:]),
                 "mlx GFLOPS (% of peak)", "min cos"], rows)
    print("per round: the median of the rounds' ratios [its 95 % bootstrap interval] (benchmarks/paired.py)")
    for r in records:
        if d := r.get("until_decided"):
            print(f"  {r['workload']}: {d['verdict']} against {d['target']}x after {d['rounds']} rounds "
                  f"(each look at a {100 * d['interval_level']:.1f} % interval)")
    print("\nGEMM floor (audio): the forward's linear layers timed alone on each side (mlx: OpenBLAS through")
    print("mx.matmul and clap_mlx's dense kernels, the faster counts); torch's forward over mlx's GEMMs is the")
    print("highest torch/mlx ratio reachable with every other op free:")
    print_table(["workload", "mlx matmul ms", "dense kernels ms", "torch GEMMs ms", "mlx GEMMs / mlx forward",
                 "ceiling torch/mlx"],
                [[r["workload"], f"{f['mlx_matmul_ms']:.1f}", f"{f['mlx_dense_ms']:.1f}" if "mlx_dense_ms" in f else "",
                  f"{f['torch_ms']:.1f}", f"{100 * f['mlx_share_of_forward']:.0f} %",
                  f"{f['torch_forward_over_mlx_gemms']:.2f}"] for r in records if (f := r.get("gemm_floor"))])
    print(f"\nsgemm peak (OpenBLAS through mlx): {peak:.0f} GFLOPS (best of {len(peaks)} measurements, "
          f"lowest {min(max(p.values()) for p in peaks):.0f})")
    print("peak RSS (own worker process, load + every workload):")
    for side, r in rss.items():
        print(f"  {side:11s}: {r['peak_rss_mb']:.0f} MB (after load {r['peak_rss_after_load_mb']:.0f} MB)")
    write_results("bench_model", {
        "runs": args.runs,
        "min_seconds": args.min_seconds,
        "max_runs": MAX_RUNS_FACTOR * args.runs,
        "until_decided": args.until_decided,
        "checkpoint": "full-size random weights" if args.checkpoint is None else str(args.checkpoint),
        "statistic": "median ms after 1 warm-up, each side in its own worker process, rounds interleaved; "
                     "<side>_over_mlx > 1 means mlx is faster (<side>_over_mlx_min: the same from each side's fastest run; "
                     "<side>_over_mlx_paired: the median of the rounds' ratios and its 95 % bootstrap interval; until_decided: "
                     "a targeted workload's verdict, rounds and interval level after --until-decided's added rounds)",
        "ops_workers": host_ops._WORKERS,
        "torch_cpu_capability": workers["torch"].loaded["cpu_capability"],
        "sgemm_peak_gflops": peak,
        "sgemm_gflops_measurements": peaks,
        "flops": "torch.utils.flop_counter on the torch forward; gflops = flops / median time (text: torch's "
                 "padded tokens and every token in the last layer, more than clap_mlx computes)",
        "onnx_exports": workers["onnxruntime"].loaded["exports"] if "onnxruntime" in workers else None,
        "workloads": records,
        "peak_rss": rss,
    })


if __name__ == "__main__":
    main()
