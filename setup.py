"""Builds the optional C kernels of clap_mlx.ops; everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# No -ffast-math: the kernels rely on IEEE inf/NaN (masked scores, NaN propagation).
# Contraction to FMA and no errno/trap semantics let the compiler vectorise the loops.
FLAGS = [] if sys.platform == "win32" else ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast"]
# One compilation unit per SIMD target (each enables its own instructions and vector width),
# the run-time dispatch, and the Python bindings (the module's, the model kernels').
KERNEL_SOURCES = [
    f"clap_mlx/_kernels_{name}.c" for name in ("avx512", "avx2", "baseline", "dispatch")
] + ["clap_mlx/_kernels_team.c", "clap_mlx/_kernels.c", "clap_mlx/_kernels_model.c"]

setup(
    ext_modules=[
        # optional: without a working C compiler the install still succeeds and
        # clap_mlx.ops falls back to its NumPy and MLX paths (several times slower).
        Extension(
            "clap_mlx._kernels",
            KERNEL_SOURCES,
            depends=[
                f"clap_mlx/_kernels_{part}.h" for part in ("impl", "simd", "vec", "rows", "attention", "gemm", "dense", "image", "team", "py")
            ],
            extra_compile_args=FLAGS,
            optional=True,
        ),
    ]
)
