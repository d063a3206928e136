"""Render the README performance table from benchmarks/results/*.json.

    python benchmarks/report.py            # print the table
    python benchmarks/report.py --write    # replace the table between the README's perf markers
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- perf:start -->", "<!-- perf:end -->"


def load(name: str) -> dict:
    with open(RESULTS / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def machine_line(machine: dict) -> str:
    blas = "OpenBLAS " + machine.get("openblas_coretype", "") if machine.get("openblas_loaded") else "stock BLAS"
    flags = set(machine.get("simd_flags", []))
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (
        f"{machine['cpu']} ({simd}), {machine['cores']} cores, no GPU, Linux VM; mlx {machine['mlx']} ({blas}), "
        f"torch {machine['torch']}, transformers {machine['transformers']}"
    )


def model_rows(model: dict) -> list[str]:
    rows = []
    for w in model["workloads"]:
        mlx_ms, torch_ms = w["times"]["mlx"]["median_ms"], w["times"]["torch"]["median_ms"]
        rows.append(f"| {w['workload']} | {mlx_ms:.0f} ms | {torch_ms:.0f} ms | **{w['torch_over_mlx']:.2f}x** |")
    rss = model["peak_rss"]
    rows.append(f"| peak RSS (load + all workloads) | {rss['mlx']['peak_rss_mb']:.0f} MB | "
                f"{rss['torch']['peak_rss_mb']:.0f} MB | |")
    return rows


def stream_lines(stream: dict) -> list[str]:
    full, lat = stream["full_speed"], stream["alert_latency"]
    return [
        f"- Monitor, full-size model, {stream['labels']} labels, {stream['windows']['length_s']:g}-s windows every "
        f"{stream['windows']['hop_s']:g} s: file replay at **{full['realtime_factor']:.1f}x real time**; "
        f"**{stream['streams_sustained']}** live streams in one process with no window lost; "
        f"sound onset -> MQTT alert p50 **{lat['p50_s']:.2f} s**, p95 {lat['p95_s']:.2f} s "
        f"(of which {lat['windowing_delay_s']:g} s is waiting for the window); RSS {stream['peak_rss_mb']:.0f} MB.",
    ]


def render() -> str:
    model, stream = load("bench_model"), load("bench_stream")
    lines = [
        f"Measured {model['date_utc'][:10]} on {machine_line(model['machine'])}; load average at start "
        f"{model['machine']['load_average_at_start'][0]:.1f}. Medians of {model['runs']} interleaved runs on the "
        "same full-size random weights; ratio = torch time / clap_mlx time (above 1: clap_mlx is faster).",
        "",
        "| workload | clap_mlx | transformers + torch (2 threads) | ratio |",
        "|---|---|---|---|",
        *model_rows(model),
        "",
        *stream_lines(stream),
    ]
    return "\n".join(lines)


def write_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: markers {START} ... {END} not found")
    readme.write_text(pattern.sub(lambda _: f"{START}\n{table}\n{END}", text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args()
    table = render()
    print(table)
    if args.write:
        write_readme(table)


if __name__ == "__main__":
    main()
