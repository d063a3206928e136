"""Shared pytest set-up; each area keeps its fixtures in its own plugin module."""

pytest_plugins = [
    "tests.fixtures_model",
    "tests.fixtures_broker",
    "tests.fixtures_pulse",
]
