"""Every ```python block and every `clap-mlx ...` shell line of README.md and docs/API.md runs.

The blocks of one document run in order in one namespace, like a notebook, inside a temp dir
holding the example sounds below, with CLAP_MLX_MODEL_DIR pointing at the tiny random-weight
checkpoint as `clap-htsat-fused/`. Example sounds the docs may use: EXAMPLE_SOUNDS.
"""

import re
import shlex
from pathlib import Path

import pytest

from clap_mlx import api
from clap_mlx.cli import main
from tests.test_api import write_sound

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/API.md"]
EXAMPLE_SOUNDS = {  # name: (seconds, tone frequency)
    "dog_bark.wav": (2.0, 600.0),
    "cat_meow.wav": (1.5, 900.0),
    "siren.flac": (3.0, 1200.0),
    "rain.ogg": (2.5, 200.0),
    "doorbell.mp3": (1.0, 1500.0),
    "street_recording.wav": (14.0, 300.0),  # longer than 10 s: the fused long-audio path
}
SHELL_LANGUAGES = ("console", "bash", "sh", "shell")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(text: str, language: str) -> list[tuple[int, str]]:
    """(line number, source) of each fenced block in `language`."""
    return [(text[: m.start()].count("\n") + 2, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == language]


def cli_commands(text: str) -> list[tuple[int, list[str]]]:
    """`clap-mlx ...` lines (with or without a `$ ` prompt) of console/shell blocks, as argv."""
    commands = []
    for language in SHELL_LANGUAGES:
        for line_no, block in blocks(text, language):
            lines = block.replace("\\\n", " ").splitlines()
            for i, line in enumerate(lines):
                command = line.removeprefix("$ ")
                if command.startswith("clap-mlx "):
                    commands.append((line_no + i, shlex.split(command, comments=True)[1:]))
    return sorted(commands)


@pytest.fixture
def docs_env(tiny_checkpoint, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    (models / "clap-htsat-fused").symlink_to(tiny_checkpoint, target_is_directory=True)
    work = tmp_path / "work"
    work.mkdir()
    for name, (seconds, freq) in EXAMPLE_SOUNDS.items():
        write_sound(work / name, seconds, freq)
    monkeypatch.setenv("CLAP_MLX_MODEL_DIR", str(models))
    monkeypatch.setenv("CLAP_MLX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(work)
    api.clear_model_cache()  # "clap-htsat-fused" must resolve through this CLAP_MLX_MODEL_DIR
    yield work
    api.clear_model_cache()


@pytest.mark.parametrize("document", DOCUMENTS)
def test_documented_examples_run(docs_env, document, capsys):
    path = REPO / document
    if not path.is_file():
        pytest.skip(f"{document} does not exist yet")
    text = path.read_text(encoding="utf-8")
    python_blocks = blocks(text, "python")
    assert python_blocks or document == "README.md", f"{document} has no python examples"
    namespace: dict = {"__name__": "__docs__"}
    for line_no, source in python_blocks:
        try:
            exec(compile(source, f"{document}:{line_no}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"{document} line {line_no}: example raised {type(e).__name__}: {e}")
    for line_no, argv in cli_commands(text):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"{document} line {line_no}: clap-mlx {' '.join(argv)} exited {code}: {err}"
