"""Render the README performance section from benchmarks/results/<cpu class>/*.json: one block
per CPU class measured, each with its own machine line, so no class's figures read as general.

    python benchmarks/report.py            # print the section
    python benchmarks/report.py --write    # replace it between the README's perf markers
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from paired import AUDIO_TARGET, LEVEL, TEXT_TARGET, interval, judge, paired_ratio

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- perf:start -->", "<!-- perf:end -->"
# Known classes first, in this order; any other class (aarch64, a forced kernel variant) after them.
TITLES = {"avx512": "x86 with AVX-512", "avx2": "x86 with AVX2, no AVX-512",
          "avx512-as-avx2": "x86 with AVX-512 held to AVX2 code on every side (BENCH_ISA=avx2): "
                            "a stand-in for an AVX2-only CPU, not one",
          "avx512-simd-avx2": "x86 with AVX-512, running the AVX2 kernels (CLAP_MLX_SIMD=avx2)"}
# Issue 13's other targets (the ratios' are paired.py's): live streams, share of the sgemm peak (a stretch goal).
STREAMS_TARGET, PEAK_SHARE_TARGET = 6, 0.40


def load(cpu_class: str, name: str) -> dict | None:
    path = RESULTS / cpu_class / f"{name}.json"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cpu_classes() -> list[str]:
    found = [d.name for d in RESULTS.iterdir() if d.is_dir() and (d / "bench_model.json").is_file()]
    return sorted(found, key=lambda c: (list(TITLES).index(c) if c in TITLES else len(TITLES), c))


def machine_line(machine: dict) -> str:
    blas = "OpenBLAS " + (machine.get("openblas_coretype") or "") if machine.get("openblas_loaded") else "stock BLAS"
    flags = set(machine.get("simd_flags", []))
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    if "ops_mode" not in machine:  # recorded since #13's per-target kernels and op paths
        kernels = ", kernels before #13's per-target variants"
    else:
        kernels = f", ops {machine['ops_mode']}, kernel variant {machine['kernel_simd'] or 'none (not built)'}"
    ort = f", onnxruntime {machine['onnxruntime']}" if machine.get("onnxruntime") else ""
    held = machine.get("isa_switches")
    held = (f"; every side held to AVX2 code ({', '.join(f'{k}={v}' for k, v in held.items())}; "
            "onnxruntime has no such switch and is left out)") if held else ""
    topology = machine.get("topology")  # recorded since #13's fourteenth round
    cores = f"{machine['cores']} cores"
    if topology:
        caches = ", ".join(f"{level} {topology['caches'][level]}" for level in ("L2", "L3") if level in topology["caches"])
        smt = topology["threads_per_core"]
        # SMT siblings share a core's FMA units: say so, a forward's second thread adds far less there
        cores = (f"{machine['cores']} cores ({caches})" if smt == 1 else
                 f"{machine['cores']} CPUs, {smt} hardware threads per core ({caches})")
    return (
        f"{machine['cpu']} ({simd}), {cores}, no GPU, Linux VM; mlx {machine['mlx']} ({blas}{kernels}), "
        f"torch {machine['torch']}, transformers {machine['transformers']}{ort}{held}"
    )


def code_note(machine: dict) -> str:
    commit = machine.get("git_commit")  # recorded since #13's twelfth round
    return f" at {commit}" if commit else ""


def load_note(result: dict) -> str:
    start, end = result["machine"]["load_average_at_start"][0], result["machine"]["load_average_at_end"][0]
    shares = result["machine"].get("cpu_time_during_run")  # recorded since #13's thirteenth round
    stolen = f", {shares['steal_percent']:.1f} % of the CPU time stolen by the hypervisor" if shares else ""
    return f"load average {start:.1f} at start, {end:.1f} at end{stolen}"


def per_round(workload: dict, side: str) -> dict:
    """The per-round ratio and its interval, from the recorded runs (so older results get them too)."""
    return paired_ratio(workload["times"][side]["runs_ms"], workload["times"]["mlx"]["runs_ms"])


def ratio_cell(workload: dict, side: str) -> str:
    fastest = workload.get(f"{side}_over_mlx_min")
    return (f"**{workload[f'{side}_over_mlx']:.2f}x**" + (f" ({fastest:.2f}x)" if fastest else "")
            + f"; {interval(per_round(workload, side))}")


def model_table(model: dict) -> list[str]:
    onnx = any("onnxruntime" in w["times"] for w in model["workloads"])
    peak = model.get("sgemm_peak_gflops")
    header = ["workload", "clap_mlx", "transformers + torch", "torch / clap_mlx (fastest runs); per round [95 %]"]
    if onnx:
        header[3:3] = ["onnxruntime"]
        header.append("onnxruntime / clap_mlx (fastest runs); per round [95 %]")
    if peak:
        header.append(f"clap_mlx GFLOPS (of {peak:.0f} peak)")
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for w in model["workloads"]:
        times = w["times"]
        cells = [w["workload"], f"{times['mlx']['median_ms']:.0f} ms", f"{times['torch']['median_ms']:.0f} ms",
                 ratio_cell(w, "torch")]
        if onnx:
            ort = times.get("onnxruntime")
            cells[3:3] = [f"{ort['median_ms']:.0f} ms" if ort else "-"]
            cells.append(ratio_cell(w, "onnxruntime") if ort else "-")
        if peak:
            gflops = w.get("gflops", {}).get("mlx")
            cells.append(f"{gflops:.0f} ({100 * gflops / peak:.0f} %)" if gflops and w["workload"].startswith("audio") else "")
        rows.append("| " + " | ".join(cells) + " |")
    rss = model["peak_rss"]
    cells = ["peak RSS (load + all workloads)", f"{rss['mlx']['peak_rss_mb']:.0f} MB", f"{rss['torch']['peak_rss_mb']:.0f} MB", ""]
    if onnx:  # a run that exported the graphs had torch and its model in the onnxruntime worker too
        exported = any(e.get("exported_now") for e in (model.get("onnx_exports") or {}).values())
        cells[3:3] = ["(exported in this run)" if exported else f"{rss['onnxruntime']['peak_rss_mb']:.0f} MB"]
        cells.append("")
    if peak:
        cells.append("")
    rows.append("| " + " | ".join(cells) + " |")
    return rows


def stream_line(stream: dict) -> str:
    full, lat, sustained = stream["full_speed"], stream["alert_latency"], stream["streams_sustained"]
    backlog = [t["streams"] for t in stream.get("live_trials", [])
               if not t["keeps_up"] and not any(t["windows_lost"]) and t["streams"] > sustained]
    line = (
        f"- Monitor ({stream['date_utc'][:10]}, {load_note(stream)}), full-size model, {stream['labels']} labels, "
        f"{stream['windows']['length_s']:g}-s windows every {stream['windows']['hop_s']:g} s: file replay at "
        f"**{full['realtime_factor']:.1f}x real time**; **{sustained}** live streams in one process keep up"
        + (f" ({min(backlog)} lose no window but build a backlog)" if backlog else "")
        + f"; sound onset -> MQTT alert p50 **{lat['p50_s']:.2f} s**, p95 {lat['p95_s']:.2f} s "
        f"(of which {lat['windowing_delay_s']:g} s is waiting for the window); RSS {stream['peak_rss_mb']:.0f} MB."
    )
    if "dashboard" in stream:
        board = stream["dashboard"]
        ratios = [on / off for on, off in zip(board["windows_per_s"]["on"], board["windows_per_s"]["off"])]
        line += (f" Web dashboard on with {board['clients']} live clients: {board['windows_per_s_on']:.2f} windows/s "
                 f"vs {board['windows_per_s_off']:.2f} off ({100 * board['overhead']:.1f} % fewer; medians of "
                 f"{board['rounds']} interleaved off/on rounds, first to last window, on/off per round "
                 f"{min(ratios):.2f}-{max(ratios):.2f}"
                 + (f", measured on its own{' on ' + board['date_utc'][:16].replace('T', ' ') + ' UTC' if 'date_utc' in board else ''}"
                    f" at load average {board['machine']['load_average_at_start'][0]:.1f}" if "machine" in board else "")
                 + ").")
    return line


def _verdict(ok: bool | str) -> str:
    word = ok if isinstance(ok, str) else ("met" if ok else "missed")
    return word if word == "met" else f"**{word}**"


def ratio_verdict(workloads: list[dict], target: float) -> str:
    """The workloads' torch/clap_mlx against `target`, with the figures it rests on. A workload
    meets it when both the medians' and the fastest runs' ratio reach it (a load spike on one
    side moves one of them) and so does its per-round interval (paired.judge), at the level the
    run's added rounds were judged at (bench_model.py --until-decided) or 95 %; the set is as
    good as its worst workload."""
    ratios, words, open_ones = [], set(), []
    for w in workloads:
        level = w.get("until_decided", {}).get("interval_level", LEVEL)
        word, rounds = judge(w["times"]["torch"]["runs_ms"], w["times"]["mlx"]["runs_ms"], target, level)
        ratios.append(min(w["torch_over_mlx"], w["torch_over_mlx_min"]))
        words.add(word)
        if word != "met":
            open_ones.append(f"{w['workload']} {interval(rounds)}")
    worst = next(word for word in ("missed", "undecided", "met") if word in words)
    span = f"{min(ratios):.2f}-{max(ratios):.2f}x" if len(ratios) > 1 else f"{ratios[0]:.2f}x"
    return f"{_verdict(worst)} ({span}" + (f"; per round: {', '.join(open_ones)}" if open_ones else "") + ")"


def targets_line(model: dict, stream: dict | None) -> str:
    """Issue 13's targets on this class, each with the figures it is judged by."""
    audio = [w for w in model["workloads"] if w["workload"].startswith("audio")]
    text = [w for w in model["workloads"] if w["workload"] == "text 1 label"]
    parts = [f"audio tower >= {AUDIO_TARGET}x torch: {ratio_verdict(audio, AUDIO_TARGET)}",
             f"text 1 label >= {TEXT_TARGET}x: {ratio_verdict(text, TEXT_TARGET)}"]
    if stream:
        sustained = stream["streams_sustained"]
        parts.append(f">= {STREAMS_TARGET} live streams: {_verdict(sustained >= STREAMS_TARGET)} ({sustained})")
    peak = model.get("sgemm_peak_gflops")
    shares = [w["gflops"]["mlx"] / peak for w in model["workloads"] if peak and w["workload"].startswith("audio")]
    if shares:
        parts.append(f"audio forward >= {PEAK_SHARE_TARGET:.0%} of the sgemm peak (stretch): "
                     f"{_verdict(min(shares) >= PEAK_SHARE_TARGET)} ({min(shares):.0%}-{max(shares):.0%})")
    where = ("as this stand-in reads them (they are judged on an AVX2-only CPU)" if model["machine"].get("isa_switches")
             else "here")
    return (f"Issue 13's targets {where} (ratios: the lower of medians and fastest runs; met only when the per-round "
            "95 % interval clears the target too, undecided when it spans it): " + "; ".join(parts) + ".")


def gemm_floor_line(workloads: list[dict]) -> str:
    def cell(w: dict) -> str:
        floor = w["gemm_floor"]
        both = (f"OpenBLAS through mlx {floor['mlx_matmul_ms']:.0f}, dense kernels {floor['mlx_dense_ms']:.0f} ms"
                if "mlx_dense_ms" in floor else f"{floor['mlx_ms']:.0f} ms")
        return (f"{w['workload']}: {both} ({100 * floor['mlx_share_of_forward']:.0f} % of the forward; torch's own "
                f"GEMMs {floor['torch_ms']:.0f} ms), ceiling **{floor['torch_forward_over_mlx_gemms']:.2f}x**")

    return ("GEMM floor: the audio forward's linear layers timed alone (same shapes; clap_mlx's: the faster of "
            "OpenBLAS through mlx and its own dense kernels, which the fused Swin stages run); torch's forward time "
            "over it is the highest torch/clap_mlx ratio reachable with every other op free. "
            + "; ".join(cell(w) for w in workloads) + ".")


def runs_line(model: dict) -> str:
    if not model.get("min_seconds"):
        return f"{model['runs']} interleaved runs"
    counts = [len(t["runs_ms"]) for w in model["workloads"] for t in w["times"].values()]
    return (f"{min(counts)}-{max(counts)} interleaved runs (at least {model['runs']}, more for the fast workloads until "
            f"each side ran {model['min_seconds']:g} s)")


def render_class(cpu_class: str) -> list[str]:
    model, stream = load(cpu_class, "bench_model"), load(cpu_class, "bench_stream")
    onnx = any("onnxruntime" in w["times"] for w in model["workloads"])
    sides = "torch time / clap_mlx time" + (", onnxruntime time / clap_mlx time" if onnx else "")
    lines = [
        f"### {TITLES.get(cpu_class, cpu_class)}",
        "",
        f"Measured {model['date_utc'][:10]}{code_note(model['machine'])} on {machine_line(model['machine'])}; "
        f"{load_note(model)}. "
        f"Medians of {runs_line(model)}, each side in its own process, on the same full-size random "
        f"weights; ratios = {sides} (above 1: clap_mlx is faster).",
        "",
        *model_table(model),
        "",
    ]
    if model.get("sgemm_peak_gflops"):
        lines += ["GFLOPS: the forward's FLOPs (its matmul, convolution and attention shapes) per median second; "
                  "peak: the best OpenBLAS sgemm through mlx on 2048² and 4096² float32 in the same run.", ""]
    floors = [w for w in model["workloads"] if "gemm_floor" in w]
    if floors:
        lines += [gemm_floor_line(floors), ""]
    if stream:
        lines += [stream_line(stream), ""]
    lines.append(targets_line(model, stream))
    return lines


def render() -> str:
    blocks = [render_class(c) for c in cpu_classes()]
    intro = ("Each block is one CPU class, measured on the machine it names; figures from one class say nothing "
             "about another. On a GPU (Apple silicon, MLX's CUDA build) nothing has been measured.")
    return "\n".join([intro, ""] + [line for block in blocks for line in block + [""]]).rstrip()


def write_readme(section: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: markers {START} ... {END} not found")
    readme.write_text(pattern.sub(lambda _: f"{START}\n{section}\n{END}", text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args()
    section = render()
    print(section)
    if args.write:
        write_readme(section)


if __name__ == "__main__":
    main()
