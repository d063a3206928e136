"""Session fixtures: random-weight CLAP checkpoints in the hub layout (see clap_mlx/testing.py),
the transformers reference models loaded from them and the MLX bundles loaded by `clap_mlx.load`.

Each checkpoint is generated once per test session; tests that use a `full_*` fixture
should be marked `@pytest.mark.full`.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_converted_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep converted weights written by `clap_mlx.load` out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLAP_MLX_CACHE", str(tmp_path_factory.mktemp("clap_mlx_cache")))
        yield


def _generate(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs) -> Path:
    from clap_mlx.testing import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("checkpoints") / name, **kwargs)


def _reference(folder: Path):
    from transformers import ClapModel

    return ClapModel.from_pretrained(folder).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory, "clap-htsat-fused", size="tiny", fused=True)


@pytest.fixture(scope="session")
def tiny_unfused_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory, "clap-htsat-unfused", size="tiny", fused=False)


@pytest.fixture(scope="session")
def full_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory, "clap-htsat-fused", size="full", fused=True)


@pytest.fixture(scope="session")
def tiny_reference(tiny_checkpoint: Path):
    """transformers `ClapModel` of `tiny_checkpoint`."""
    return _reference(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_unfused_reference(tiny_unfused_checkpoint: Path):
    return _reference(tiny_unfused_checkpoint)


@pytest.fixture(scope="session")
def full_reference(full_checkpoint: Path):
    return _reference(full_checkpoint)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path):
    """`clap_mlx.load(tiny_checkpoint)`."""
    import clap_mlx

    return clap_mlx.load(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_unfused_bundle(tiny_unfused_checkpoint: Path):
    import clap_mlx

    return clap_mlx.load(tiny_unfused_checkpoint)


@pytest.fixture(scope="session")
def full_bundle(full_checkpoint: Path):
    import clap_mlx

    return clap_mlx.load(full_checkpoint)
