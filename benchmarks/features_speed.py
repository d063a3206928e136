"""Speed of clap_mlx's feature extractor against transformers' ClapFeatureExtractor (same config).

Run: PYTHONPATH=. python benchmarks/features_speed.py [--repeats 20]
Prints best-of-N wall time and best-of-N CPU time of the calling thread per clip. BLAS runs on one
thread (both extractors make one small matmul per clip) so that CPU time counts all the work and
a busy machine, which makes threaded BLAS spin, cannot skew the comparison.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads its BLAS

import argparse
import time

import numpy as np

import clap_mlx  # noqa: F401  (preloads OpenBLAS before anything imports mlx)
from clap_mlx.features import ClapFeatureExtractor, FeatureConfig

HUB_CONFIG = dict(frequency_min=50, frequency_max=14000, truncation="fusion", padding="repeatpad")


def best_times(fn, repeats: int) -> tuple[float, float]:
    """(wall, thread CPU) seconds, each the best of `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.thread_time() - start_cpu)
    return min(wall), min(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    from transformers import ClapFeatureExtractor as ReferenceExtractor
    from transformers.utils import logging

    logging.set_verbosity_error()
    reference = ReferenceExtractor(**HUB_CONFIG)
    ours = ClapFeatureExtractor(FeatureConfig(**HUB_CONFIG))
    rng = np.random.default_rng(0)
    for seconds in (3, 10, 25):
        clip = (0.1 * rng.standard_normal(seconds * 48000)).astype(np.float32)
        ours_wall, ours_cpu = best_times(lambda: ours([clip]), args.repeats)
        ref_wall, ref_cpu = best_times(
            lambda: reference([clip], sampling_rate=48000, return_tensors="np"), args.repeats
        )
        print(
            f"{seconds:>3} s clip  wall: clap_mlx {ours_wall * 1e3:6.1f} ms, transformers {ref_wall * 1e3:6.1f} ms"
            f" ({ref_wall / ours_wall:3.1f}x)  cpu: clap_mlx {ours_cpu * 1e3:6.1f} ms,"
            f" transformers {ref_cpu * 1e3:6.1f} ms ({ref_cpu / ours_cpu:3.1f}x)"
        )


if __name__ == "__main__":
    main()
