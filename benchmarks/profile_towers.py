"""Where the time goes in audio forwards (batch 1, 10 s and 25 s with fusion) and one text forward (32 labels),
per op group, with clap_mlx.ops on its default path (auto: per op and shape the fastest of the
compiled kernels, NumPy and MLX on this machine) and on its "mlx" path (MLX's own ops).

    python benchmarks/profile_towers.py [--runs 3]

MLX is lazy, so each instrumented call first evaluates its inputs (that work is charged to
the caller) and then evaluates its own output. Times are exclusive: an attention block's
time excludes the Linear and softmax calls inside it. In the audio tower, "attention core"
is ops.attention (scores, bias, softmax and p@v in one kernel), its q/k/v GEMM is "linear". When a
stage runs fused (swin_fused.py, auto's usual choice on the CPU), its GEMM passes, with the layer norms,
GELU and residual adds inside them, are "fused Swin GEMMs"; MLX's path has no such group (its ops
are in the others; its column there shows their linear, layer_norm and gelu groups' sum, the
same work). The audio front (batch norm, mel image, patch embedding and the fusion of a 25-s
clip) is one group on both paths, its inner ops included. "other" is what no group claims:
residual adds, embeddings, pooling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack, contextmanager

from _common import full_checkpoint, print_table, write_results

import mlx.core as mx
import mlx.nn as nn
import numpy as np

import clap_mlx.loading
from clap_mlx import audio_encoder, front_fused, linear_ops, ops, swin_fused, text_encoder
from clap_mlx.audio_io import SAMPLE_RATE



# The op groups clap_mlx.ops instruments (same names as its functions).
OPS = ("gelu", "softmax", "layer_norm", "add_layer_norm", "tanh", "sigmoid", "aff_blend")
FUSED = "fused Swin GEMMs (+ layer norm, GELU, residual)"
# MLX's path has no fused group: its column shows these groups' sum there.
FUSED_ON_MLX = ("linear (matmul)", "layer_norm", "gelu")
# (owner, attribute, group)
INSTRUMENTED = [
    (nn.Linear, "__call__", "linear (matmul)"),
    (linear_ops, "linear_gelu", "linear (matmul)"),  # its GELU pass is charged to "gelu"
    (linear_ops, "linears", "linear (matmul)"),  # linear_ops.Linear and .linear call it
    (linear_ops, "affine", "linear (matmul)"),  # the audio tower's bias GEMMs (Dense, q/k/v)
    (nn.Conv2d, "__call__", "conv2d"),
    (audio_encoder.FrozenBatchNorm, "__call__", "batch norm"),
    # The audio block's own work is its fused q/k/v GEMM; ops.attention does the rest.
    (audio_encoder.WindowSelfAttention, "__call__", "linear (matmul)"),
    (ops, "attention", "attention core (q@k, bias, p@v, heads)"),
    (text_encoder.SelfAttention, "__call__", "attention core (q@k, bias, p@v, heads)"),
    (audio_encoder.PatchMerging, "__call__", "patch merging (reshape/transpose)"),
    # A fused Swin stage (swin_fused.py): its GEMM kernels carry the layer norms, GELU and
    # residual adds; its attention is the same kernel as ops.attention's.
    *((swin_fused._kernels, name, FUSED) for name in ("norm_dense", "swin_mlp") if swin_fused._kernels is not None),
    (ops, "attention_host", "attention core (q@k, bias, p@v, heads)"),
    (swin_fused, "_run_merge", "patch merging (reshape/transpose)"),
    *((ops, name, "layer_norm" if name == "add_layer_norm" else name) for name in OPS),
]
FRONT = "audio front (batch norm, mel image, patches, fusion)"
# Groups that claim their calls' whole time, the instrumented ops inside them included.
WHOLE = [(front_fused, "run_host", FRONT), (audio_encoder.HTSATAudioEncoder, "front_per_op", FRONT)]


class Profiler:
    def __init__(self):
        self.exclusive: dict[str, float] = defaultdict(float)
        self._children: list[float] = []
        self._inside_whole = 0

    def wrap(self, group: str, fn: Callable, whole: bool = False) -> Callable:
        def timed(*args, **kwargs):
            if self._inside_whole:  # a WHOLE group's call claims this time
                return fn(*args, **kwargs)
            mx.eval([a for a in args if isinstance(a, mx.array)])  # pending work is the caller's
            start = time.perf_counter()
            self._children.append(0.0)
            self._inside_whole += whole
            try:
                out = fn(*args, **kwargs)
                mx.eval(out)
            finally:
                self._inside_whole -= whole
                children = self._children.pop()
            elapsed = time.perf_counter() - start
            self.exclusive[group] += elapsed - children
            if self._children:
                self._children[-1] += elapsed
            return out

        return timed


@contextmanager
def patched(owner, name: str, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextmanager
def ops_path(path: str):
    """clap_mlx.ops on `path` (CLAP_MLX_OPS): "mlx" is MLX's own ops, "auto" the default."""
    saved = os.environ.get("CLAP_MLX_OPS")
    os.environ["CLAP_MLX_OPS"] = path
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CLAP_MLX_OPS")
        else:
            os.environ["CLAP_MLX_OPS"] = saved


def profile_once(run: Callable[[], mx.array], path: str) -> dict[str, float]:
    """Exclusive ms per group of one instrumented run on op path `path`, plus "total"."""
    profiler = Profiler()
    with ExitStack() as stack:
        stack.enter_context(ops_path(path))
        for owner, name, group in INSTRUMENTED:
            stack.enter_context(patched(owner, name, profiler.wrap(group, getattr(owner, name))))
        for owner, name, group in WHOLE:
            stack.enter_context(patched(owner, name, profiler.wrap(group, getattr(owner, name), whole=True)))
        start = time.perf_counter()
        mx.eval(run())
        total = time.perf_counter() - start
    groups = {g: 1e3 * t for g, t in profiler.exclusive.items()}
    groups["other"] = 1e3 * total - sum(groups.values())
    groups["total"] = 1e3 * total
    return groups


def profile(run: Callable[[], mx.array], paths: list[str], runs: int) -> dict[str, dict[str, float]]:
    """Per path, the median exclusive ms per group over `runs` instrumented runs, the paths
    alternating run by run (load changes on a shared machine hit them alike)."""
    for path in paths:  # warm-up, and auto measures its choices
        profile_once(run, path)
    per_run: dict[str, list[dict[str, float]]] = {path: [] for path in paths}
    for _ in range(runs):
        for path in paths:
            per_run[path].append(profile_once(run, path))
    medians = {}
    for path, groups_per_run in per_run.items():
        keys = {k for groups in groups_per_run for k in groups}
        medians[path] = {k: statistics.median(groups.get(k, 0.0) for groups in groups_per_run) for k in keys}
    return medians


def unprofiled_ms(run: Callable[[], mx.array], runs: int) -> float:
    mx.eval(run())
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        mx.eval(run())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bundle = clap_mlx.loading.load(full_checkpoint())
    model = bundle.model
    rng = np.random.default_rng(0)
    waveform = (0.1 * rng.standard_normal(10 * SAMPLE_RATE)).astype(np.float32)
    features, is_longer = (mx.array(a) for a in bundle.feature_extractor([waveform]))
    long_waveform = (0.1 * rng.standard_normal(25 * SAMPLE_RATE)).astype(np.float32)
    long_features, long_is_longer = (mx.array(a) for a in bundle.feature_extractor([long_waveform]))
    ids, mask = (mx.array(a) for a in bundle.tokenizer([f"the sound of thing number {i}" for i in range(32)]))
    forwards = {
        "audio b1": lambda: model.audio_model.audio_encoder(features, is_longer),
        "audio b1 fused (25 s)": lambda: model.audio_model.audio_encoder(long_features, long_is_longer),
        "text 32 labels": lambda: model.text_model(ids, mask),
    }
    results = {}
    for name, run in forwards.items():
        by_path = profile(run, ["auto", "mlx"], runs=args.runs)
        results[name] = {
            "ops.py": by_path["auto"],
            "mlx native": by_path["mlx"],
            "unprofiled_total_ms": unprofiled_ms(run, args.runs),
        }
        columns = results[name]
        if FUSED in columns["ops.py"] and FUSED not in columns["mlx native"]:
            # the same work on MLX's path: its linear layers, layer norms and GELUs
            columns["mlx native"][FUSED] = sum(columns["mlx native"].get(g, 0.0) for g in FUSED_ON_MLX)
        groups = sorted((g for g in columns["ops.py"] if g != "total"), key=lambda g: -columns["ops.py"][g])
        rows = [
            [g, columns["ops.py"][g], 100 * columns["ops.py"][g] / columns["ops.py"]["total"],
             columns["mlx native"].get(g, 0.0), columns["mlx native"].get(g, 0.0) / max(columns["ops.py"][g], 1e-9)]
            for g in [*groups, "total"]
        ]
        print(f"\n{name}: exclusive ms per op group (median of {args.runs}); "
              f"unprofiled total {columns['unprofiled_total_ms']:.1f} ms")
        print_table(["group", "ops.py (auto) ms", "%", "mlx path ms", "mlx / auto"], rows)
    write_results("profile_towers", {"runs": args.runs, "statistic": "median exclusive ms per group, the two paths' runs interleaved",
                                     "forwards": results})


if __name__ == "__main__":
    main()
