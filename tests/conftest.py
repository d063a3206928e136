"""Shared pytest set-up; each area keeps its fixtures in its own plugin module.
Plain helper functions shared by several test modules are in tests/helpers.py."""

import os
import shutil
import tempfile

import pytest

# The tests' autotune choices and converted weights go to a cache of their own (subprocesses
# inherit it): choices timed under a test run's load would otherwise stay in the developer's
# ~/.cache/clap_mlx and steer their later runs and benchmarks.
_CACHE = tempfile.mkdtemp(prefix="clap-mlx-test-cache-")
os.environ["CLAP_MLX_CACHE"] = _CACHE

pytest_plugins = [
    "tests.fixtures_model",
    "tests.fixtures_broker",
    "tests.fixtures_pulse",
    "tests.fixtures_web",
]


@pytest.fixture(scope="session")
def clap(tiny_checkpoint):
    """The process-wide `clap_mlx.api.CLAP` of the tiny random-weight checkpoint (`get_model`'s)."""
    from clap_mlx import api

    return api.get_model(str(tiny_checkpoint))


@pytest.fixture(scope="session", autouse=True)
def _own_cache():
    yield
    shutil.rmtree(_CACHE, ignore_errors=True)
