"""Session fixtures: random-weight CLAP checkpoints in the hub layout (see tests/checkpoints.py).

Each checkpoint is generated once per test session; tests that use `full_checkpoint`
should be marked `@pytest.mark.full`.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _generate(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs) -> Path:
    from tests.checkpoints import make_checkpoint  # imports torch/transformers only when needed

    return make_checkpoint(tmp_path_factory.mktemp("checkpoints") / name, **kwargs)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory, "clap-htsat-fused", size="tiny", fused=True)


@pytest.fixture(scope="session")
def tiny_unfused_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory, "clap-htsat-unfused", size="tiny", fused=False)


@pytest.fixture(scope="session")
def full_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory, "clap-htsat-fused", size="full", fused=True)
