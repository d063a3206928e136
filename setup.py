"""Builds the optional C kernels of clap_mlx.ops; everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# No -ffast-math: the kernels rely on IEEE inf/NaN (masked scores, NaN propagation).
# Contraction to FMA and no errno/trap semantics let GCC vectorise the loops.
FLAGS = [] if sys.platform == "win32" else ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast"]

setup(
    ext_modules=[
        # optional: without a working C compiler the install still succeeds and
        # clap_mlx.ops falls back to its NumPy kernels (several times slower).
        Extension("clap_mlx._kernels", ["clap_mlx/_kernels.c"], extra_compile_args=FLAGS, optional=True),
    ]
)
