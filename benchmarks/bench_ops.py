"""Per-op timings on tower-shaped tensors: MLX native vs clap_mlx.ops on each path (the
compiled kernels in every SIMD variant this CPU runs, NumPy, auto) vs torch.

    python benchmarks/bench_ops.py [--runs 7]
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from contextlib import contextmanager

from _common import interleaved, print_table, summary, write_results

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import torch
import torch.nn.functional as F

from clap_mlx import host_ops, op_paths, ops

# (op, where in the towers, shape at batch 1 / 32 labels of 12 tokens, batch-8 variant)
CASES = [
    ("gelu", "audio stage 1 MLP", (1, 4096, 384)),
    ("gelu", "audio stage 1 MLP, batch 8", (8, 4096, 384)),
    ("gelu", "audio stage 3 MLP", (1, 256, 1536)),
    ("gelu", "text MLP, 32 labels", (32, 12, 3072)),
    ("softmax", "audio stage 1 window attention", (64, 4, 64, 64)),
    ("softmax", "audio stage 1 attention, batch 8", (512, 4, 64, 64)),
    ("softmax", "text attention, 32 labels", (32, 12, 12, 12)),
    ("layer_norm", "audio stage 1", (1, 4096, 96)),
    ("layer_norm", "audio stage 1, batch 8", (8, 4096, 96)),
    ("layer_norm", "text, 32 labels", (32, 12, 768)),
    ("sigmoid", "audio fusion (AFF) gate", (1, 96, 64, 64)),
    ("tanh", "text pooler, 32 labels", (32, 768)),
]


def mlx_native(op: str, x: mx.array, w: mx.array, b: mx.array) -> Callable[[], object]:
    fns = {
        "gelu": lambda: nn.gelu(x),
        "softmax": lambda: mx.softmax(x, axis=-1, precise=True),
        "layer_norm": lambda: mx.fast.layer_norm(x, w, b, 1e-5),
        "sigmoid": lambda: mx.sigmoid(x),
        "tanh": lambda: mx.tanh(x),
    }
    return lambda: mx.eval(fns[op]())


def mlx_ops(op: str, x: mx.array, w: mx.array, b: mx.array) -> Callable[[], object]:
    fns = {
        "gelu": lambda: ops.gelu(x),
        "softmax": lambda: ops.softmax(x),
        "layer_norm": lambda: ops.layer_norm(x, w, b, 1e-5),
        "sigmoid": lambda: ops.sigmoid(x),
        "tanh": lambda: ops.tanh(x),
    }
    return lambda: mx.eval(fns[op]())


@contextmanager
def ops_configured(path: str, simd: str | None = None, threads: bool = True):
    """clap_mlx.ops on `path` (CLAP_MLX_OPS), kernel variant `simd`, one thread unless `threads`."""
    saved = os.environ.get("CLAP_MLX_OPS"), op_paths.simd(), host_ops._pool
    os.environ["CLAP_MLX_OPS"] = path
    if simd:
        ops._kernels.set_simd(simd)
    if not threads:
        host_ops._pool = None
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop("CLAP_MLX_OPS", None)
        else:
            os.environ["CLAP_MLX_OPS"] = saved[0]
        if saved[1]:
            ops._kernels.set_simd(saved[1])
        host_ops._pool = saved[2]


def configured(fn: Callable[[], object], path: str, simd: str | None = None, threads: bool = True):
    """fn run with ops_configured(...) around each call."""

    def run():
        with ops_configured(path, simd, threads):
            return fn()

    return run


def ops_candidates(fn: Callable[[], object]) -> dict[str, Callable[[], object]]:
    """fn on each clap_mlx.ops path: kernels per SIMD variant (and the best on one thread),
    NumPy, and auto (what a default install runs)."""
    variants = ops._kernels.simd_variants()
    return {
        **{f"kernels {v}": configured(fn, "kernels", v) for v in variants},
        f"kernels {variants[0]} 1 thread": configured(fn, "kernels", variants[0], threads=False),
        "numpy": configured(fn, "numpy"),
        "auto": configured(fn, "auto"),
    }


def torch_op(op: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> Callable[[], object]:
    fns = {
        "gelu": lambda: F.gelu(x),
        "softmax": lambda: torch.softmax(x, dim=-1),
        "layer_norm": lambda: F.layer_norm(x, x.shape[-1:], w, b, 1e-5),
        "sigmoid": lambda: torch.sigmoid(x),
        "tanh": lambda: torch.tanh(x),
    }
    return fns[op]


def attention_candidates(batch: int) -> dict[str, Callable[[], object]]:
    """Stage-1 window attention of the real architecture (64 windows of 64 tokens, 4 heads of
    24) with position bias + shift mask, from the packed q/k/v projection to the merged heads."""
    windows, heads, tokens, head_dim = 64, 4, 64, 24
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((batch * windows, tokens, 3 * heads * head_dim), np.float32)
    bias = (rng.standard_normal((windows, heads, tokens, tokens), np.float32)
            - 1e9 * (rng.random((windows, 1, tokens, tokens)) < 0.2)).astype(np.float32)
    mqkv, mbias = mx.array(qkv), mx.array(bias)
    q, k, v = (torch.from_numpy(np.ascontiguousarray(a))
               for a in qkv.reshape(batch * windows, tokens, 3, heads, head_dim).transpose(2, 0, 3, 1, 4))
    tbias = torch.from_numpy(bias)
    scale = 1 / math.sqrt(head_dim)

    def mlx_sdpa():
        mq, mk, mv = mx.contiguous(mqkv.reshape(-1, tokens, 3, heads, head_dim).transpose(2, 0, 3, 1, 4))
        mask = mx.broadcast_to(mbias[None], (batch, *bias.shape)).reshape(batch * windows, heads, tokens, tokens)
        mx.eval(mx.fast.scaled_dot_product_attention(mq, mk, mv, scale=scale, mask=mask))

    def torch_sdpa():
        mask = tbias.expand(batch, *bias.shape).reshape(batch * windows, heads, tokens, tokens)
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).transpose(1, 2).reshape(
            batch * windows, tokens, heads * head_dim)

    attend = lambda: mx.eval(ops.attention(mqkv, heads, scale, mbias))  # noqa: E731
    return {
        "mlx matmuls + softmax": configured(attend, "mlx"),
        **ops_candidates(attend),
        "mlx fast.sdpa": mlx_sdpa,
        "torch sdpa": torch_sdpa,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    rows, records = [], []
    with torch.inference_mode():
        for op, where, shape in CASES:
            x = (rng.standard_normal(shape) * 3).astype(np.float32)
            w = rng.standard_normal(shape[-1]).astype(np.float32)
            b = rng.standard_normal(shape[-1]).astype(np.float32)
            mxs = [mx.array(a) for a in (x, w, b)]
            mx.eval(*mxs)
            tts = [torch.from_numpy(a) for a in (x, w, b)]
            candidates = {"mlx native": mlx_native(op, *mxs), **ops_candidates(mlx_ops(op, *mxs)),
                          "torch": torch_op(op, *tts)}
            times = {name: summary(t) for name, t in interleaved(candidates, args.runs).items()}
            med = {name: t["median_ms"] for name, t in times.items()}
            rows.append([op, where, str(shape), *med.values(), med["mlx native"] / med["auto"],
                         med["torch"] / med["auto"]])
            records.append({"op": op, "where": where, "shape": shape, "times": times})
        print_table(["op", "where", "shape", *(f"{name} ms" for name in candidates), "native/auto", "torch/auto"],
                    rows)
        print("\nstage-1 window attention (64 windows x 4 heads of 24 x 64 tokens, bias + mask), packed q/k/v in")
        attention_rows = []
        for batch in (1, 8):
            times = {name: summary(t) for name, t in interleaved(attention_candidates(batch), args.runs).items()}
            attention_rows.append([f"batch {batch}", *(t["median_ms"] for t in times.values())])
            records.append({"op": "window_attention", "batch": batch, "times": times})
        print_table(["", *attention_candidates(1)], attention_rows)
    write_results("bench_ops", {"runs": args.runs, "statistic": "median ms, candidates interleaved",
                                "simd_variants": list(ops._kernels.simd_variants()), "cases": records})


if __name__ == "__main__":
    main()
