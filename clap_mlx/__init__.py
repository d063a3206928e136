"""MLX port of LAION CLAP (HTSAT-fused audio encoder + RoBERTa text encoder)."""

from ._blas import preload_openblas

preload_openblas()  # must run before anything imports mlx.core
from .loading import load
