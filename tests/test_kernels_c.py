"""The kernels' C-level test driver (tests/c/test_kernels.c): built and run natively, and
cross-compiled for aarch64 (Debian's gcc-aarch64-linux-gnu) and run under qemu-user, so the
portable (NEON) variant is tested on every CI run of an x86 machine."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "clap_mlx"
SOURCES = [KERNELS / f"_kernels_{name}.c" for name in ("avx512", "avx2", "baseline", "dispatch", "team")]
DRIVER = ROOT / "tests" / "c" / "test_kernels.c"
# The kernels get setup.py's flags. The driver's double references need no optimisation, and
# Debian's GCC 12 for aarch64 crashes (internal compiler error) vectorising them at -O3.
KERNEL_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast", "-Wall", "-Werror"]
DRIVER_FLAGS = ["-O1", "-Wall"]
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")


# The kernels once more with the AVX-512 variant's 16 lanes for the default target: its code
# runs (split into the target's registers) on CPUs without AVX-512. Its inline helpers pass
# vectors wider than the target's: GCC's ABI note about that (-Wpsabi) concerns no call here.
LANES16 = ["-x", "c", "-DSIMD_LANES=16", "-DKERNEL_TABLE=kernels_lanes16", '-DKERNEL_NAME="lanes16"', "-Wno-psabi"]


def build(compiler: str, folder: Path) -> Path:
    units = [([], source, source.stem) for source in SOURCES] + [(LANES16, KERNELS / "_kernels_impl.h", "lanes16")]
    objects = []
    for extra, source, stem in units:
        obj = folder / f"{stem}.o"
        command = [compiler, *KERNEL_FLAGS, *extra, "-I", str(KERNELS), "-c", str(source), "-o", str(obj)]
        subprocess.run(command, check=True)
        objects.append(str(obj))
    program = folder / "test_kernels"
    subprocess.run(
        [compiler, *DRIVER_FLAGS, "-I", str(KERNELS), str(DRIVER), *objects, "-lm", "-pthread", "-o", str(program)], check=True
    )
    return program


def run_checks(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all kernel checks passed" in done.stdout
    return done.stdout


def test_kernels_natively(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc/gcc) on PATH")
    out = run_checks([str(build(compiler, tmp_path))])
    assert "baseline" in out.splitlines()[0]  # every CPU runs the portable variant
    assert "lanes16  attention, 64 tokens, heads of 24, bias" in out
    assert "team     every item once, in jobs from 2 callers" in out  # the helper team's checks ran
    assert "lanes16  mel image without taps" in out


def test_kernels_on_aarch64_under_qemu(tmp_path):
    compiler, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if compiler is None or qemu is None or not AARCH64_SYSROOT.is_dir():
        pytest.skip("needs apt packages gcc-aarch64-linux-gnu and qemu-user (scripts/setup.sh --test installs them)")
    out = run_checks([qemu, "-L", str(AARCH64_SYSROOT), str(build(compiler, tmp_path))])
    assert out.splitlines()[0] == "variants this CPU runs: baseline (4 lanes)"  # 128-bit NEON
