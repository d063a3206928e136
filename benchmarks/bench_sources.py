"""Several live sources: N sources in one process (one shared model, windows batched across
sources, monitor/multi.py) against N single-source processes (a model each), both with the
full-size model: how many real-time streams each sustains and the total peak RSS. 5-s
windows, 1-s hop, 20 labels, every window scored (no gate), no sinks but the pipeline's own.

Each side runs in fresh worker processes (this script with --worker), which load the model,
say ready, and start their streams together on "go"; a worker reports its streams' scored and
lost windows, how long after the audio ended the last window was scored, and its peak RSS.

    python benchmarks/bench_sources.py [--seconds 30] [--max-streams 6] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import full_checkpoint, peak_rss_mb, print_table, write_results
from bench_stream import HOP_S, LENGTH_S, OTHER_LABELS, noise, write_wav

from monitor.config import (BufferConfig, DetectorConfig, LabelConfig, LogConfig, MonitorConfig, SourceConfig,
                            WindowsConfig)

SIDES = {"one": "N sources in one process", "many": "N single-source processes"}


def monitor_config(folder: Path, sources: list[SourceConfig]) -> MonitorConfig:
    """20 labels that never fire: the scoring work of a realistic label set, nothing else."""
    labels = tuple(LabelConfig(name=label, threshold=1.0) for label in ["onset", *OTHER_LABELS])
    one = {"source": sources[0]} if len(sources) == 1 else {"sources": tuple(sources)}
    return MonitorConfig(labels=labels, buffer=BufferConfig(seconds=30),
                         windows=WindowsConfig(length_s=LENGTH_S, hop_s=HOP_S),
                         detector=DetectorConfig(model=str(folder)), log=LogConfig(path=None), **one)


def worker(args) -> None:
    """One process of a trial: `--streams` sources in one MultiPipeline (side "one", or a
    single Pipeline when it is one source), each a real-time file of its own."""
    from clap_mlx.api import CLAP
    from monitor.multi import MultiPipeline
    from monitor.pipeline import Pipeline
    from monitor.sources import FileSource

    sources = [SourceConfig(type="file", name=f"s{args.first + k}", realtime=True,
                            path=str(write_wav(args.workdir / f"s{args.first + k}.wav",
                                               noise(args.seconds, seed=args.first + k))))
               for k in range(args.streams)]
    cfg = monitor_config(args.checkpoint, sources)
    clap = CLAP(str(args.checkpoint), batch_size=cfg.detector.batch_size)
    clap.embed_audio([noise(LENGTH_S)])  # warm: the first call's set-up is not a stream's loss
    if cfg.sources:
        monitor = MultiPipeline(cfg, clap)
    else:
        monitor = Pipeline(cfg, FileSource(sources[0].path, realtime=True, name=sources[0].name), clap)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # "go"
    started = time.monotonic()
    monitor.run()
    ended = time.monotonic()
    pipelines = list(monitor.pipelines.values()) if cfg.sources else [monitor]
    print(json.dumps({
        "scored": [p.detector.windows_scored for p in pipelines],
        "lost": [p.queue.dropped + p.windower.skipped for p in pipelines],
        "drain_s": ended - started - args.seconds,
        "peak_rss_mb": peak_rss_mb(),
    }), flush=True)


def trial(side: str, count: int, seconds: float, folder: Path, workdir: Path) -> dict:
    """`count` live streams: one worker with all of them, or `count` workers with one each."""
    shares = [(0, count)] if side == "one" else [(k, 1) for k in range(count)]
    workers = [subprocess.Popen([sys.executable, __file__, "--worker", "--first", str(first), "--streams", str(n),
                                 "--seconds", str(seconds), "--checkpoint", str(folder), "--workdir", str(workdir)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for first, n in shares]
    for process in workers:  # every model loaded before any stream starts
        if not json.loads(process.stdout.readline()).get("ready"):
            raise RuntimeError("a worker did not start")
    for process in workers:
        process.stdin.write("go\n")
        process.stdin.flush()
    reports = [json.loads(process.stdout.readline()) for process in workers]
    for process in workers:
        process.wait(60)
    expected = int((seconds - LENGTH_S) / HOP_S) + 1
    scored = [n for report in reports for n in report["scored"]]
    lost = [n for report in reports for n in report["lost"]]
    drain = max(report["drain_s"] for report in reports)
    # keeping up: nothing lost, and once the audio ends at most one hop of windows (+1 s) is left to score
    return {"side": side, "streams": count, "seconds": seconds, "windows_expected_each": expected,
            "windows_scored": scored, "windows_lost": lost, "drain_s": drain,
            "keeps_up": not any(lost) and all(n == expected for n in scored) and drain <= HOP_S + 1.0,
            "peak_rss_mb_each": [report["peak_rss_mb"] for report in reports],
            "total_peak_rss_mb": sum(report["peak_rss_mb"] for report in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each trial's streams")
    parser.add_argument("--max-streams", type=int, default=6, help="most streams tried per side")
    parser.add_argument("--checkpoint", type=Path, help="another hub-layout folder (default: the full-size random one)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    folder = args.checkpoint or full_checkpoint()
    trials = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in SIDES:  # step up from one stream while every stream keeps up
            for count in range(1, args.max_streams + 1):
                result = trial(side, count, args.seconds, folder, Path(tmp))
                trials.append(result)
                print(f"{SIDES[side]}, N={count}: lost {result['windows_lost']}, drained in {result['drain_s']:.1f} s, "
                      f"total peak RSS {result['total_peak_rss_mb']:.0f} MB, keeps up: {result['keeps_up']}")
                if not result["keeps_up"]:
                    break
    sustained = {side: max((t["streams"] for t in trials if t["side"] == side and t["keeps_up"]), default=0)
                 for side in SIDES}
    by_count = {(t["side"], t["streams"]): t for t in trials}

    def cell(side: str, count: int) -> str:
        t = by_count.get((side, count))
        return "-" if t is None else f"{'yes' if t['keeps_up'] else 'NO'}, {t['total_peak_rss_mb']:.0f} MB"

    print()
    print_table(["N live streams", f"{SIDES['one']}: keeps up, total peak RSS", f"{SIDES['many']}: the same"],
                [[count, cell("one", count), cell("many", count)]
                 for count in sorted({t["streams"] for t in trials})])
    print(f"sustained: {sustained['one']} in one process, {sustained['many']} as single-source processes")
    write_results("bench_sources", {
        "checkpoint": "full-size random weights" if args.checkpoint is None else str(args.checkpoint),
        "windows": {"length_s": LENGTH_S, "hop_s": HOP_S}, "labels": 1 + len(OTHER_LABELS),
        "seconds": args.seconds, "trials": trials, "streams_sustained": sustained,
    })


if __name__ == "__main__":
    main()
