"""What bench_model.py measures a forward against, beside the other sides: the machine's sgemm
peak, the forward's FLOPs, and its GEMM floor (its linear layers timed alone on each side).

The worker-side functions run inside bench_model's side processes; `gemm_floor` asks those
workers from the driver.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from _common import time_once
from workers import Worker

import mlx.core as mx
import numpy as np

from clap_mlx import host_ops


def sgemm_gflops(sizes=(2048, 4096), repeats: int = 3) -> dict[str, float]:
    """OpenBLAS sgemm through mlx: best GFLOPS of `repeats` square products per size."""
    best = {}
    for n in sizes:
        a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
        mx.eval(a, b, a @ b)  # the first product warms the BLAS threads up
        seconds = min(time_once(lambda: mx.eval(a @ b)) for _ in range(repeats))
        best[str(n)] = 2 * n**3 / seconds / 1e9
    return best


def flop_count(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def linear_shapes(fn: Callable[[], object]) -> list[list[int]]:
    """[[M, K, N, count], ...] of every linear layer in the torch forward `fn` (inference mode
    keeps aten.linear whole, so the dispatch mode sees each layer with its real shapes)."""
    from collections import Counter

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.linear.default:
                x, weight = args[0], args[1]
                self.shapes[(x.numel() // x.shape[-1], x.shape[-1], weight.shape[0])] += 1
            return func(*args, **(kwargs or {}))

    with Record() as record:
        fn()
    return [[*shape, count] for shape, count in record.shapes.items()]


def dense_runner(x: mx.array, w: mx.array) -> Callable[[], None] | None:
    """x @ w.T on clap_mlx's dense kernels (the fused Swin stages' GEMMs), rows split across
    the cores; None for a clap_mlx without them."""
    try:
        from clap_mlx import _kernels, swin_fused
    except ImportError:
        return None
    if not hasattr(_kernels, "dense"):
        return None
    rows, panels = np.array(x), host_ops.rows_view(swin_fused.pack_panels(w))
    (m, k), n = rows.shape, w.shape[0]
    out = np.empty((m, n), np.float32)
    # split as the fused stages split their passes
    return lambda: _kernels.dense(rows, panels, None, out, m, k, n, 0, 0, m, swin_fused._unit(m, k))


def gemm_run(m: int, k: int, n: int, gemm: str) -> Callable[[], object] | None:
    """x @ w.T of one shape on `gemm`: "matmul" (mx.matmul on OpenBLAS), "dense" (clap_mlx's dense
    kernels; None without them) or "torch"."""
    if gemm == "torch":
        import torch

        x, w = torch.randn(m, k), torch.randn(n, k)
        return lambda: torch.nn.functional.linear(x, w)
    x, w = mx.random.normal((m, k)), mx.random.normal((n, k))
    mx.eval(x, w)
    return dense_runner(x, w) if gemm == "dense" else lambda: mx.eval(x @ w.T)


def gemm_time(shapes: list[list[int]], side: str, repeats: int = 5, warmup: int = 3) -> dict[str, float]:
    """Seconds the GEMMs of `shapes` take alone on `side` (mlx: OpenBLAS through mx.matmul, and
    clap_mlx's dense kernels; torch: its own sgemm), each shape's best of `repeats` after `warmup`
    runs (a core woken from idle runs its first few calls slower), times its count.
    Each GEMM runs over every shape in turn, after a pause: OpenBLAS's threads spin ~0.1 s after
    its last call, and took a core from dense kernels timed right after it (shape by shape, the
    AVX2 kernels' b1 floor read 65 ms, this way 60). One shape's buffers at a time: the worker's
    peak RSS stays the forwards'."""
    gemms = {"seconds": "matmul", "dense_seconds": "dense"} if side == "mlx" else {"seconds": "torch"}
    totals = {}
    for key, gemm in gemms.items():
        time.sleep(0.2)
        for m, k, n, count in shapes:
            run = gemm_run(m, k, n, gemm)
            if run is None:  # clap_mlx built without its kernels
                break
            for _ in range(warmup):
                run()
            totals[key] = totals.get(key, 0.0) + count * min(time_once(run) for _ in range(repeats))
    return totals


def gemm_floor(workers: dict[str, Worker], index: int, times: dict) -> dict:
    """The forward's linear layers timed alone (same shapes, no other op) on the mlx and torch
    sides: no forward of that side can be faster, so torch's forward time over mlx's GEMM time
    bounds the torch/mlx ratio any non-GEMM work could reach with this BLAS."""
    shapes = workers["torch"].ask("linears", str(index))["shapes"]
    words = json.dumps(shapes, separators=(",", ":"))
    answers = {side: workers[side].ask("gemms", str(index), words) for side in ("mlx", "torch")}
    ms = {side: 1e3 * a["seconds"] for side, a in answers.items()}
    floor = {"linear_shapes": shapes, "mlx_matmul_ms": ms["mlx"], "torch_ms": ms["torch"]}
    if "dense_seconds" in answers["mlx"]:
        floor["mlx_dense_ms"] = 1e3 * answers["mlx"]["dense_seconds"]
    # clap_mlx's GEMM floor: the faster of its two GEMMs (the per-op path's and the fused one's)
    floor["mlx_ms"] = min(ms["mlx"], floor.get("mlx_dense_ms", ms["mlx"]))
    floor["torch_forward_over_mlx_gemms"] = times["torch"]["median_ms"] / floor["mlx_ms"]
    floor["mlx_share_of_forward"] = floor["mlx_ms"] / times["mlx"]["median_ms"]
    return floor
