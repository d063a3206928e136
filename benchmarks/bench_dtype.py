"""Is float16 / bfloat16 worth offering for the matmuls on CPU?

    python benchmarks/bench_dtype.py

1. Speed: MLX CPU matmul at tower shapes in float32 (OpenBLAS sgemm) vs float16/bfloat16.
2. Accuracy: embedding cosine vs float32 at full size when every Linear/Conv weight is
   rounded to the half type (what half-precision weight storage costs; a half-precision
   matmul also rounds activations, so its drift is at least this).
"""

from __future__ import annotations

import time

from _common import full_checkpoint, print_table, write_results

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

import clap_mlx.loading
from clap_mlx.audio_io import SAMPLE_RATE

# (M, K, N) of tower matmuls: audio stage-1 MLP at batch 1, text MLP for 32 x 12 tokens
SHAPES = [(4096, 96, 384), (4096, 384, 96), (384, 768, 3072)]
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def matmul_ms(m: int, k: int, n: int, dtype: mx.Dtype, runs: int = 3) -> float:
    a = mx.random.normal((m, k)).astype(dtype)
    b = mx.random.normal((k, n)).astype(dtype)
    mx.eval(a, b, a @ b)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def rounded_weights(model, dtype: mx.Dtype) -> list[tuple[str, mx.array]]:
    """Every matrix/conv weight rounded to `dtype` and back to float32."""
    return [(k, v.astype(dtype).astype(mx.float32) if v.ndim >= 2 else v) for k, v in tree_flatten(model.parameters())]


def embeddings(model, features, is_longer, ids, mask) -> tuple[np.ndarray, np.ndarray]:
    return np.array(model.get_audio_features(features, is_longer)), np.array(model.get_text_features(ids, mask))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=-1)))  # rows are L2-normalised


def main() -> None:
    speed_rows, speed = [], []
    for m, k, n in SHAPES:
        ms = {name: matmul_ms(m, k, n, dtype) for name, dtype in DTYPES.items()}
        speed.append({"shape": [m, k, n], "ms": ms})
        speed_rows.append([f"{m}x{k} @ {k}x{n}", *ms.values(), ms["float16"] / ms["float32"], ms["bfloat16"] / ms["float32"]])
    print_table(["matmul", *(f"{d} ms" for d in DTYPES), "f16/f32", "bf16/f32"], speed_rows)

    bundle = clap_mlx.loading.load(full_checkpoint())
    model = bundle.model
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(seconds * SAMPLE_RATE)).astype(np.float32) for seconds in (10, 25)]
    features, is_longer = (mx.array(a) for a in bundle.feature_extractor(clips))
    ids, mask = (mx.array(a) for a in bundle.tokenizer(["the sound of a dog barking", "glass breaking",
                                                         "a smoke alarm beeping", "rain"]))
    reference = embeddings(model, features, is_longer, ids, mask)
    original = tree_flatten(model.parameters())
    drift_rows, drift = [], {}
    for name in ("float16", "bfloat16"):
        model.update(tree_unflatten(rounded_weights(model, DTYPES[name])))
        audio, text = embeddings(model, features, is_longer, ids, mask)
        model.update(tree_unflatten(original))
        drift[name] = {"audio_min_cosine": min_cosine(audio, reference[0]), "text_min_cosine": min_cosine(text, reference[1])}
        drift_rows.append([name, *(f"{1 - drift[name][k]:.2e}" for k in ("audio_min_cosine", "text_min_cosine"))])
    print("\nembedding drift with half-precision weights (1 - min cosine vs float32)")
    print_table(["weights", "audio", "text"], drift_rows)
    write_results("bench_dtype", {"matmul_speed": speed, "weight_rounding_drift": drift})


if __name__ == "__main__":
    main()
