"""`clap-mlx eval` on real labelled clips (../shared/audio/urbansound8k-subset) with the tiny
random-weight checkpoint: random weights classify at chance, so the tests check the mechanics
(CSV layouts, metrics equal to an independent computation from the same model, errors)."""

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

import clap_mlx as cm
from clap_mlx.cli import main
from clap_mlx.evaluate import DatasetError, read_dataset

US8K = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "urbansound8k-subset"
PROMPT = "This is a sound of {}."
ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]

pytestmark = pytest.mark.skipif(not US8K.is_dir(), reason=f"test audio {US8K} is absent (see ../shared/audio/README.md)")


@pytest.fixture(scope="module")
def model_path(tiny_checkpoint) -> str:
    return str(tiny_checkpoint)


@pytest.fixture(scope="module")
def us8k_rows() -> list[dict]:
    with open(US8K / "metadata" / "UrbanSound8K.csv", newline="") as f:
        return list(csv.DictReader(f))


def run_json(capsys, *argv: str) -> dict:
    code = main(["eval", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def run_error(capsys, *argv: str) -> str:
    code = main(["eval", *argv])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.startswith("clap-mlx eval: error: ")
    return captured.err


def expected_metrics(files: list[str], truth: list[str], classes: list[str], model_path: str, prompt: str | None):
    """top-1, top-5, per-class accuracy and confusion counted by hand from `cm.classify` (the softmax
    over the same class texts ranks classes as the cosine similarities do)."""
    texts = [c.replace("_", " ") for c in classes]
    results = cm.classify(files, texts, model=model_path, prompt=prompt)
    predicted = [classes[texts.index(r.predicted_class)] for r in results]
    top5 = [truth[i] in [classes[texts.index(t)] for t in r.top_k_classes[:5]] for i, r in enumerate(results)]
    confusion = [[0] * len(classes) for _ in classes]
    for t, p in zip(truth, predicted):
        confusion[classes.index(t)][classes.index(p)] += 1
    support = Counter(truth)
    per_class = {
        c: {"n": support[c], "accuracy": confusion[i][i] / support[c] if support[c] else None}
        for i, c in enumerate(classes)
    }
    return {
        "top1": sum(p == t for p, t in zip(predicted, truth)) / len(truth),
        "top5": sum(top5) / len(truth),
        "per_class": per_class,
        "confusion": confusion,
        "predicted": predicted,
    }


def assert_report_matches(report: dict, expected: dict, files: list[str], truth: list[str]) -> None:
    assert report["clips"] == len(files)
    assert report["confusion"] == expected["confusion"]
    assert report["per_class"] == expected["per_class"]
    assert report["top1"] == pytest.approx(expected["top1"])
    assert report["top5"] == pytest.approx(expected["top5"])
    assert [p["file"] for p in report["predictions"]] == files
    assert [p["label"] for p in report["predictions"]] == truth
    assert [p["predicted"] for p in report["predictions"]] == expected["predicted"]


def test_urbansound8k_layout_matches_independent_computation(capsys, model_path, us8k_rows):
    report = run_json(capsys, str(US8K), "--labels-csv", "metadata/UrbanSound8K.csv", "--prompt", PROMPT,
                      "--model", model_path, "--fold", "10")
    classes = [name for _, name in sorted({(int(r["classID"]), r["class"]) for r in us8k_rows})]
    files = [str(US8K / "audio" / f"fold{r['fold']}" / r["slice_file_name"]) for r in us8k_rows]
    truth = [r["class"] for r in us8k_rows]
    assert report["layout"] == "UrbanSound8K" and report["fold"] == 10 and report["prompt"] == PROMPT
    assert report["classes"] == classes and len(classes) == 10
    expected = expected_metrics(files, truth, classes, model_path, PROMPT)
    assert_report_matches(report, expected, files, truth)
    assert sum(map(sum, report["confusion"])) == 100
    assert report["mean_class_accuracy"] == pytest.approx(sum(c["accuracy"] for c in expected["per_class"].values()) / 10)


def test_plain_layout(capsys, model_path, tmp_path):
    """file,label with paths relative to DIR (DIR is not where the CSV is); classes in sorted order."""
    rows = list(csv.DictReader(open(US8K / "labels.csv", newline="")))[::9]  # 12 clips, several classes
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clips").symlink_to(US8K / "audio" / "fold10", target_is_directory=True)
    labels = tmp_path / "my_labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        writer.writerows([f"clips/{Path(r['file']).name}", r["label"]] for r in rows)
    report = run_json(capsys, str(tmp_path / "data"), "--labels-csv", str(labels), "--model", model_path)
    files = [str(tmp_path / "data" / "clips" / Path(r["file"]).name) for r in rows]
    truth = [r["label"] for r in rows]
    classes = sorted(set(truth))
    assert report["layout"] == "plain" and report["classes"] == classes
    assert_report_matches(report, expected_metrics(files, truth, classes, model_path, None), files, truth)


def write_esc50(root: Path, rows: list[tuple[str, int, int, str]], header=ESC50_HEADER) -> Path:
    """An ESC-50-style folder: meta/esc50.csv (the dataset's own columns) and audio/."""
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for filename, fold, target, category in rows:
            full = {"filename": filename, "fold": fold, "target": target, "category": category,
                    "esc10": "False", "src_file": "1", "take": "A"}
            writer.writerow([full[c] for c in header])
    return root / "meta" / "esc50.csv"


def esc50_rows(us8k_rows: list[dict], per_class: int = 3) -> list[tuple[str, int, int, str]]:
    """Real clips of three classes as an ESC-50 table spread over folds 1-3."""
    picked = [r for r in us8k_rows if r["class"] in ("dog_bark", "siren", "jackhammer")]
    rows, seen = [], Counter()
    for r in picked:
        if seen[r["class"]] < per_class:
            target = ("dog_bark", "siren", "jackhammer").index(r["class"])
            rows.append((f"1-{r['slice_file_name']}", seen[r["class"]] + 1, target, r["class"]))
            seen[r["class"]] += 1
    return rows


def test_esc50_layout_and_fold_selection(capsys, model_path, tmp_path, us8k_rows):
    rows = esc50_rows(us8k_rows)
    write_esc50(tmp_path / "ESC-50-master", rows)
    for filename, *_ in rows:
        shutil.copy(US8K / "audio" / "fold10" / filename.removeprefix("1-"), tmp_path / "ESC-50-master" / "audio" / filename)
    report = run_json(capsys, str(tmp_path / "ESC-50-master"), "--labels-csv", "meta/esc50.csv", "--fold", "2",
                      "--prompt", PROMPT, "--model", model_path)
    selected = [r for r in rows if r[1] == 2]
    files = [str(tmp_path / "ESC-50-master" / "audio" / r[0]) for r in selected]
    truth = [r[3] for r in selected]
    classes = ["dog_bark", "siren", "jackhammer"]  # ordered by target, all of them candidates
    assert report["layout"] == "ESC-50" and report["fold"] == 2 and report["classes"] == classes
    assert_report_matches(report, expected_metrics(files, truth, classes, model_path, PROMPT), files, truth)
    assert report["top5"] == 1.0  # three classes: the true one is always among the top 5


def test_table_output(capsys, model_path):
    code = main(["eval", str(US8K), "--labels-csv", "labels.csv", "--model", model_path])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "plain layout, 100 clips, 10 classes"
    assert lines[1].startswith("top-1 accuracy ") and "top-5 accuracy" in lines[1]
    matrix = lines[lines.index("confusion matrix (row: true class #, column: predicted class #)") + 2:]
    assert len(matrix) == 10 and sum(int(v) for row in matrix for v in row.split()[1:]) == 100


def test_missing_column_names_the_header(capsys, tmp_path, us8k_rows):
    header = [c for c in ESC50_HEADER if c != "target"]
    csv_path = write_esc50(tmp_path / "esc", esc50_rows(us8k_rows), header=header)
    err = run_error(capsys, str(tmp_path / "esc"), "--labels-csv", str(csv_path))
    assert f"{csv_path}:1:" in err and "ESC-50" in err and "missing: target" in err
    (tmp_path / "odd.csv").write_text("path,kind\na.wav,dog\n")
    err = run_error(capsys, str(tmp_path), "--labels-csv", "odd.csv")
    assert "odd.csv:1: cannot tell the layout" in err and "file, label (plain)" in err


def test_missing_file_names_the_row(capsys, tmp_path, us8k_rows):
    rows = esc50_rows(us8k_rows)
    csv_path = write_esc50(tmp_path / "esc", rows)
    for filename, *_ in rows[:4]:  # rows 5.. (CSV lines 6..) have no audio
        shutil.copy(US8K / "audio" / "fold10" / filename.removeprefix("1-"), tmp_path / "esc" / "audio" / filename)
    err = run_error(capsys, str(tmp_path / "esc"), "--labels-csv", str(csv_path))
    assert f"{csv_path}:6: audio file '{tmp_path / 'esc' / 'audio' / rows[4][0]}' not found" in err
    assert f"and {len(rows) - 5} more rows" in err


def test_unknown_fold_names_the_row(capsys, tmp_path, us8k_rows):
    rows = esc50_rows(us8k_rows)
    rows[2] = (rows[2][0], 7, *rows[2][2:])
    csv_path = write_esc50(tmp_path / "esc", rows)
    err = run_error(capsys, str(tmp_path / "esc"), "--labels-csv", str(csv_path))
    assert f"{csv_path}:4: unknown fold 7: ESC-50 has folds 1-5" in err
    with pytest.raises(DatasetError, match=r"UrbanSound8K.csv has rows of fold 10 only"):
        read_dataset(US8K, "metadata/UrbanSound8K.csv", fold=4)
    with pytest.raises(DatasetError, match=r"labels.csv is a plain file,label CSV without folds"):
        read_dataset(US8K, "labels.csv", fold=1)


def test_inconsistent_or_empty_rows(tmp_path, us8k_rows):
    rows = esc50_rows(us8k_rows)
    rows[3] = (rows[3][0], rows[3][1], 0, "siren")  # target 0 is dog_bark on line 2
    csv_path = write_esc50(tmp_path / "a", rows)
    with pytest.raises(DatasetError, match=r"esc50.csv:5: target 0 is 'siren' here but 'dog_bark' on line 2"):
        read_dataset(tmp_path / "a", csv_path)
    (tmp_path / "b.csv").write_text("file,label\nx.wav,dog\ny.wav,\n")
    with pytest.raises(DatasetError, match=r"b.csv:3: empty label"):
        read_dataset(tmp_path, tmp_path / "b.csv")
    with pytest.raises(DatasetError, match=r"cannot read it"):
        read_dataset(tmp_path, "nope.csv")
