"""Shared pytest set-up; each area keeps its fixtures in its own plugin module.
Plain helper functions shared by several test modules are in tests/helpers.py."""

import pytest

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
