"""OpenBLAS preloading (clap_mlx._blas): which kernels, when it happens, and the import-order trap."""

import subprocess
import sys
import textwrap

import pytest

from clap_mlx import _blas


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env or None
    )


def test_coretype_follows_the_cpu_flags():
    assert _blas.openblas_coretype({"avx512f", "avx2", "fma"}) == "SkylakeX"
    assert _blas.openblas_coretype({"avx2", "fma"}) == "Haswell"
    assert _blas.openblas_coretype({"sse4_2"}) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux-only")
def test_openblas_is_mapped_into_the_process_before_mlx():
    result = run_python(
        """
        import clap_mlx
        from clap_mlx import _blas
        import mlx.core as mx
        mx.eval(mx.ones((64, 64)) @ mx.ones((64, 64)))
        maps = open("/proc/self/maps").read()
        print(_blas.loaded_blas)
        print("libopenblas" in maps)
        """
    )
    assert result.returncode == 0, result.stderr
    loaded, mapped = result.stdout.split()
    # .ci/run installs Debian's libopenblas0-pthread, so on CI the fast path must be taken.
    assert loaded.endswith("libopenblas.so.0") and mapped == "True", result.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux-only")
def test_importing_mlx_first_warns_instead_of_silently_running_slow():
    result = run_python("import mlx.core\nimport clap_mlx\nfrom clap_mlx import _blas\nprint(_blas.loaded_blas)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
    assert "RuntimeWarning: mlx.core was imported before clap_mlx" in result.stderr
