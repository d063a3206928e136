"""What the benchmarks record of the machine beside their numbers."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _common import cpu_topology  # noqa: E402


def fake_cpu(root: Path, siblings: str, caches: list[tuple[str, str, str]]) -> Path:
    cpu = root / "cpu0"
    (cpu / "topology").mkdir(parents=True)
    (cpu / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    for i, (level, kind, size) in enumerate(caches):
        index = cpu / "cache" / f"index{i}"
        index.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (index / name).write_text(value + "\n")
    return cpu


@pytest.mark.parametrize("siblings, threads", [("0", 1), ("0-1", 2), ("0,4", 2), ("0-1,8-9", 4)])
def test_topology_counts_a_cores_hardware_threads(tmp_path, siblings, threads):
    cpu = fake_cpu(tmp_path, siblings, [("1", "Data", "32K"), ("1", "Instruction", "32K"),
                                        ("2", "Unified", "512K"), ("3", "Unified", "16384K")])
    assert cpu_topology(cpu) == {"threads_per_core": threads,
                                 "caches": {"L1d": "32K", "L1i": "32K", "L2": "512K", "L3": "16384K"}}


def test_topology_is_none_where_sys_does_not_say(tmp_path):
    assert cpu_topology(tmp_path / "cpu0") is None


def test_report_says_when_the_cpus_are_one_cores_hardware_threads():
    from report import machine_line

    machine = {"cpu": "AMD EPYC", "cores": 2, "simd_flags": ["avx2"], "mlx": "0.32", "torch": "2.13",
               "transformers": "5.24", "topology": {"threads_per_core": 2, "caches": {"L2": "512K", "L3": "32768K"}}}
    assert "2 CPUs, 2 hardware threads per core (L2 512K, L3 32768K)" in machine_line(machine)
    machine["topology"]["threads_per_core"] = 1
    assert "2 cores (L2 512K, L3 32768K)" in machine_line(machine)
    del machine["topology"]  # older results
    assert "AMD EPYC (AVX2), 2 cores, no GPU" in machine_line(machine)
