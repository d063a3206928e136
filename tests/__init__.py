"""Test package. Importing clap_mlx here, before any test module runs, is what loads OpenBLAS ahead
of mlx.core for every test (see clap_mlx/_blas.py)."""

import clap_mlx  # noqa: F401
