"""`clap-mlx` run for real on the tiny checkpoint: outputs agree with the Python API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clap_mlx as cm
from clap_mlx.cli import main
from tests.test_api import write_sound

REPO = Path(__file__).resolve().parents[1]
LABELS = ["a dog barking", "a siren wailing", "rain"]


@pytest.fixture(scope="module")
def model_path(tiny_checkpoint) -> str:
    return str(tiny_checkpoint)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("cli_sounds")
    return [
        str(write_sound(folder / "dog.wav", 1.0, 440.0)),
        str(write_sound(folder / "siren.flac", 1.5, 900.0)),
        str(write_sound(folder / "rain.ogg", 12.0, 150.0)),
    ]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_classify_json_matches_api(capsys, model_path, files):
    code, out, err = run(capsys, "classify", *files, "--labels", *LABELS, "--top-k", "2", "--model", model_path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model"] == Path(model_path).name
    assert [r["file"] for r in doc["results"]] == files
    for r, expected in zip(doc["results"], cm.classify(files, LABELS, model=model_path)):
        assert r["predicted_class"] == expected.predicted_class
        assert r["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
        assert list(r["probabilities"]) == LABELS
        assert list(r["probabilities"].values()) == pytest.approx(np.asarray(expected.probabilities).tolist(), abs=1e-6)
        assert [t["label"] for t in r["top_k"]] == expected.top_k_classes[:2]


def test_classify_table(capsys, model_path, files):
    code, out, _ = run(capsys, "classify", files[0], "--labels", *LABELS, "--model", model_path)
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["file", "prediction", "confidence", "top-k"]
    expected = cm.classify(files[0], LABELS, model=model_path)
    assert row.startswith(files[0]) and expected.predicted_class in row and f"{expected.confidence:.3f}" in row


def test_tag_json_and_table(capsys, model_path, files):
    code, out, _ = run(capsys, "tag", *files[:2], "--tags", *LABELS, "--threshold", "0.3", "--model", model_path, "--json")
    assert code == 0
    results = json.loads(out)["results"]
    for r, expected in zip(results, cm.tag(files[:2], LABELS, threshold=0.3, model=model_path)):
        assert r["threshold"] == 0.3 and r["active_tags"] == expected.active_tags
        assert list(r["probabilities"].values()) == pytest.approx(expected.probabilities, abs=1e-6)
    code, out, _ = run(capsys, "tag", files[0], "--tags", *LABELS, "--threshold", "0", "--model", model_path)
    assert code == 0
    header, row = out.strip().splitlines()
    assert "p >= 0" in header and all(label in row for label in LABELS)  # threshold 0: every tag active


def test_embed_outputs(capsys, model_path, files, tmp_path):
    expected = cm.embed(audio=files, text=LABELS[:2], return_similarity=True, model=model_path).numpy()
    npy, npz, js = tmp_path / "e.npy", tmp_path / "e.npz", tmp_path / "e.json"
    for out_file in (npy, npz, js):
        code, _, err = run(capsys, "embed", *files, "--text", *LABELS[:2], "--model", model_path, "--out", str(out_file))
        assert code == 0 and f"wrote {out_file}" in err
    np.testing.assert_allclose(np.load(npy), expected["audio_embedding"], atol=1e-6)
    with np.load(npz) as z:
        assert z["files"].tolist() == files and z["texts"].tolist() == LABELS[:2]
        for key in ("audio_embedding", "text_embedding", "similarity"):
            np.testing.assert_allclose(z[key], expected[key], atol=1e-6)
    doc = json.loads(js.read_text())
    np.testing.assert_allclose(doc["similarity"], expected["similarity"], atol=1e-6)
    code, _, _ = run(capsys, "embed", "--text", *LABELS, "--model", model_path, "--out", str(npy))
    np.testing.assert_allclose(np.load(npy), cm.embed(text=LABELS, model=model_path).numpy()["text_embedding"], atol=1e-6)


def test_embed_table_shows_similarities(capsys, model_path, files):
    code, out, _ = run(capsys, "embed", files[0], "--text", *LABELS[:2], "--model", model_path)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["input", "embedding", "first", "values"]
    assert lines[1].startswith(files[0]) and lines[2].startswith(LABELS[0])
    similarity = np.asarray(cm.embed(audio=files[0], text=LABELS[:2], return_similarity=True, model=model_path).similarity)
    assert lines[-1].split()[-2:] == [f"{s:.3f}" for s in similarity[0]]


def test_progress_bar_on_request(capsys, model_path, files):
    code, _, err = run(capsys, "classify", *files, "--labels", *LABELS, "--batch-size", "1", "--progress", "--model", model_path)
    assert code == 0
    assert err.count("\r[") == 3 and "3/3 files" in err and err.endswith("\n")
    code, _, err = run(capsys, "classify", *files, "--labels", *LABELS, "--batch-size", "1", "--model", model_path)
    assert err == ""  # stderr is not a terminal here


@pytest.mark.parametrize(
    "argv, message",
    [
        (["classify", "missing.wav", "--labels", "a", "b"], "missing.wav"),
        (["classify", "{wav}", "--labels", "a", "a"], "duplicates: 'a'"),
        (["tag", "{wav}", "--tags", "a", "--threshold", "2"], r"threshold must be in [0, 1]"),
        (["embed"], "needs audio FILES, --text"),
        (["embed", "{wav}", "--out", "x.txt"], "--out x.txt"),
        (["classify", "{wav}", "--labels", "a", "--prompt", "no slot"], "placeholder"),
        (["classify", "{wav}", "--labels", "a", "--model", "no-such-model"], "no-such-model"),
    ],
)
def test_bad_input_exits_non_zero_with_one_error_line(capsys, model_path, files, argv, message):
    argv = [a.replace("{wav}", files[0]) for a in argv]
    if "--model" not in argv:
        argv += ["--model", model_path]
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    first = err.splitlines()[0]
    assert first.startswith(f"clap-mlx {argv[0]}: error: ") and message in err


def test_convert_writes_a_loadable_mlx_checkpoint(capsys, model_path, files, tmp_path):
    dst = tmp_path / "converted"
    code, out, _ = run(capsys, "convert", model_path, str(dst))
    assert code == 0 and str(dst) in out
    assert (dst / "mlx_model.safetensors").is_file()
    original = cm.classify(files[0], LABELS, model=model_path)
    converted = cm.classify(files[0], LABELS, model=str(dst))
    np.testing.assert_allclose(np.asarray(converted.probabilities), np.asarray(original.probabilities), atol=1e-6)


def test_module_entry_point_runs_as_a_process(model_path, files):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run(
        [sys.executable, "-m", "clap_mlx.cli", "tag", files[0], "--tags", *LABELS, "--model", model_path, "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["results"][0]["file"] == files[0]
    bad = subprocess.run(
        [sys.executable, "-m", "clap_mlx.cli", "tag", files[0], "--model", model_path],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert bad.returncode == 2 and "--tags" in bad.stderr  # argparse usage error
