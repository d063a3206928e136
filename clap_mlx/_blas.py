"""Load an optimized BLAS into the process before MLX is imported.

Stock `mlx[cpu]` wheels on Linux link a reference BLAS (~5 GFLOPS here). MLX resolves
`sgemm_`/`cblas_sgemm` dynamically, so a BLAS loaded first with RTLD_GLOBAL wins
(~300 GFLOPS on a 2-core AVX-512 Xeon). Never on macOS, where MLX uses Accelerate.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings

# Debian/Ubuntu `libopenblas0-pthread` first; the generic soname last.
OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "libopenblas.so.0",
)

loaded_blas: str | None = None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def openblas_coretype(flags: set[str]) -> str | None:
    """OpenBLAS kernel family for these CPU flags (its runtime detection misses some VMs)."""
    if "avx512f" in flags:
        return "SkylakeX"
    if "avx2" in flags:
        return "Haswell"
    return None


def preload_openblas() -> str | None:
    """Load OpenBLAS globally if present; return its path, or None when stock BLAS stays."""
    global loaded_blas
    if loaded_blas or not sys.platform.startswith("linux"):
        return loaded_blas
    if os.environ.get("CLAP_MLX_NO_OPENBLAS"):
        return None
    if "mlx.core" in sys.modules:
        # MLX bound its bundled reference BLAS when it was loaded; loading OpenBLAS now changes nothing.
        warnings.warn(
            "mlx.core was imported before clap_mlx, so MLX keeps its reference BLAS and matmuls run "
            "~30x slower; import clap_mlx (or monitor) before mlx.core",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    coretype = openblas_coretype(_cpu_flags())
    if coretype:
        os.environ.setdefault("OPENBLAS_CORETYPE", coretype)
    for path in OPENBLAS_CANDIDATES:
        if path.startswith("/") and not os.path.exists(path):
            continue
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        loaded_blas = path
        return path
    return None
