"""Zero-shot evaluation on a labelled dataset folder: top-1/top-5, per-class accuracy, confusion.

The labels CSV's columns tell its layout, as the datasets ship:

* ESC-50: `filename,fold,target,category`, audio in `DIR/audio/<filename>`;
* UrbanSound8K: `slice_file_name,fold,classID,class`, audio in `DIR/audio/fold<fold>/<slice_file_name>`;
* plain: `file,label`, paths relative to DIR (or absolute).

Class names are the CSV's (`chirping_birds`); the text encoded is the name with '_' as spaces
("chirping birds"), put into the prompt template when one is given. Every class in the CSV is a
candidate, also when `fold` selects only some rows (LAION scores ESC-50 fold 1 against all 50).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .api import AUDIO_BATCH_SIZE, CLAP, _apply_prompt
from .audio_io import AudioInputError, load_audio

TOP_K = 5


class DatasetError(ValueError):
    """A labels CSV that cannot be used; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Layout:
    name: str
    file_column: str
    label_column: str
    class_id_column: str | None  # integer class ids that order the classes (None: sorted names)
    folds: range | None  # allowed fold numbers (None: no fold column)

    @property
    def columns(self) -> tuple[str, ...]:
        extra = ("fold", self.class_id_column) if self.folds else ()
        return (self.file_column, *extra, self.label_column)

    def audio_path(self, root: Path, row: dict[str, str]) -> Path:
        name = row[self.file_column]
        if self.name == "ESC-50":
            return root / "audio" / name
        if self.name == "UrbanSound8K":
            return root / "audio" / f"fold{row['fold']}" / name
        return root / name


LAYOUTS = (
    Layout("ESC-50", "filename", "category", "target", range(1, 6)),
    Layout("UrbanSound8K", "slice_file_name", "class", "classID", range(1, 11)),
    Layout("plain", "file", "label", None, None),
)


@dataclass(frozen=True)
class Item:
    path: Path
    label: int  # index into Dataset.classes
    line: int  # line of the CSV row, for error messages


@dataclass(frozen=True)
class Dataset:
    root: Path
    csv_path: Path
    layout: str
    classes: list[str]
    items: list[Item]
    fold: int | None


@dataclass
class EvalResult:
    """Zero-shot accuracy of one model on one dataset (or fold)."""

    dataset: Dataset
    prompt: str | None
    confusion: np.ndarray  # [C, C] counts: row = true class, column = predicted class
    top_k_hits: np.ndarray  # [N] bool: the true class is among the TOP_K most similar
    predictions: np.ndarray  # [N] predicted class index per item

    @property
    def top1(self) -> float:
        return float(np.trace(self.confusion) / max(len(self.predictions), 1))

    @property
    def top5(self) -> float:
        return float(self.top_k_hits.mean()) if len(self.top_k_hits) else 0.0

    def per_class(self) -> dict[str, dict[str, Any]]:
        """{class: {"n": clips of it, "accuracy": correct / n (None when n is 0)}}."""
        support = self.confusion.sum(axis=1)
        return {
            name: {"n": int(n), "accuracy": float(self.confusion[i, i] / n) if n else None}
            for i, (name, n) in enumerate(zip(self.dataset.classes, support))
        }

    @property
    def mean_class_accuracy(self) -> float:
        accuracies = [c["accuracy"] for c in self.per_class().values() if c["accuracy"] is not None]
        return float(np.mean(accuracies)) if accuracies else 0.0

    def to_dict(self) -> dict[str, Any]:
        classes = self.dataset.classes
        return {
            "dataset": str(self.dataset.root),
            "labels_csv": str(self.dataset.csv_path),
            "layout": self.dataset.layout,
            "fold": self.dataset.fold,
            "prompt": self.prompt,
            "clips": len(self.predictions),
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_accuracy": self.mean_class_accuracy,
            "classes": classes,
            "per_class": self.per_class(),
            "confusion": self.confusion.tolist(),
            "predictions": [
                {"file": str(item.path), "label": classes[item.label], "predicted": classes[p], "top5": bool(hit)}
                for item, p, hit in zip(self.dataset.items, self.predictions, self.top_k_hits)
            ],
        }


def read_dataset(root: str | Path, labels_csv: str | Path, fold: int | None = None) -> Dataset:
    """Parse and check a labels CSV: every selected row's audio file must exist.

    `labels_csv` is taken as given; a relative path that does not exist is looked up in `root`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder '{root}': not a folder")
    csv_path = Path(labels_csv)
    if not csv_path.is_file() and not csv_path.is_absolute() and (root / csv_path).is_file():
        csv_path = root / csv_path
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DatasetError(f"labels CSV '{csv_path}': cannot read it: {e.strerror or e}") from None
    reader = csv.DictReader(text.splitlines())
    layout = _detect_layout(csv_path, reader.fieldnames or [])
    rows = []
    for row in reader:
        where = f"{csv_path}:{reader.line_num}"
        empty = [c for c in layout.columns if not (row.get(c) or "").strip()]
        if empty:
            raise DatasetError(f"{where}: empty {', '.join(empty)} (row {row})")
        rows.append((reader.line_num, row, _fold(layout, row, where)))
    if not rows:
        raise DatasetError(f"labels CSV '{csv_path}': no rows under the header")
    classes, class_of = _classes(layout, rows, csv_path)
    if fold is not None:
        _check_fold_selection(layout, fold, rows, csv_path)
        rows = [r for r in rows if r[2] == fold]
    items = [Item(layout.audio_path(root, row), class_of[row[layout.label_column]], line) for line, row, _ in rows]
    missing = [item for item in items if not item.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more rows whose file is missing)" if len(missing) > 1 else ""
        raise DatasetError(f"{csv_path}:{missing[0].line}: audio file '{missing[0].path}' not found{more}")
    return Dataset(root, csv_path, layout.name, classes, items, fold)


def evaluate(
    dataset: Dataset,
    clap: CLAP,
    prompt: str | None = None,
    batch_size: int = AUDIO_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Embed every clip (`batch_size` files decoded at a time, so memory stays bounded) and score
    it against all class texts. `progress(n)` is called after each batch with its clip count."""
    texts = _apply_prompt(prompt, [name.replace("_", " ") for name in dataset.classes])
    class_embeddings = clap.embed_text(texts)
    audio = []
    for i in range(0, len(dataset.items), batch_size):
        batch = dataset.items[i : i + batch_size]
        audio.append(clap.embed_audio([_load(item, dataset.csv_path) for item in batch]))
        if progress:
            progress(len(batch))
    similarity = np.concatenate(audio) @ class_embeddings.T
    return score(dataset, prompt, similarity)


def score(dataset: Dataset, prompt: str | None, similarity: np.ndarray) -> EvalResult:
    """The metrics from an [N, C] clip-to-class similarity matrix (any monotone score works)."""
    truth = np.array([item.label for item in dataset.items], dtype=np.int64)
    ranked = np.argsort(-similarity, axis=1, kind="stable")
    predictions = ranked[:, 0]
    confusion = np.zeros((len(dataset.classes),) * 2, dtype=np.int64)
    np.add.at(confusion, (truth, predictions), 1)
    top_k_hits = (ranked[:, :TOP_K] == truth[:, None]).any(axis=1)
    return EvalResult(dataset, prompt, confusion, top_k_hits, predictions)


def format_report(report: dict[str, Any]) -> str:
    """`EvalResult.to_dict()` as text: summary, per-class accuracy, confusion matrix (columns numbered)."""
    classes, confusion = report["classes"], np.asarray(report["confusion"])
    fold = f", fold {report['fold']}" if report["fold"] is not None else ""
    lines = [
        f"{report['layout']} layout, {report['clips']} clips{fold}, {len(classes)} classes"
        + (f", prompt {report['prompt']!r}" if report["prompt"] else ""),
        f"top-1 accuracy {report['top1']:.4f}   top-{TOP_K} accuracy {report['top5']:.4f}   "
        f"mean per-class accuracy {report['mean_class_accuracy']:.4f}",
        "",
        f"{'#':>3}  {'class':<{max(map(len, classes))}}  {'clips':>5}  accuracy",
    ]
    for i, (name, stats) in enumerate(report["per_class"].items()):
        accuracy = "-" if stats["accuracy"] is None else f"{stats['accuracy']:.3f}"
        lines.append(f"{i:>3}  {name:<{max(map(len, classes))}}  {stats['n']:>5}  {accuracy}")
    cell = max(3, len(str(confusion.max())) + 1)
    lines += ["", "confusion matrix (row: true class #, column: predicted class #)",
              "   " + "".join(f"{j:>{cell}}" for j in range(len(classes)))]
    lines += [f"{i:>3}" + "".join(f"{v:>{cell}}" for v in row) for i, row in enumerate(confusion)]
    return "\n".join(lines)


def _detect_layout(csv_path: Path, columns: list[str]) -> Layout:
    present = set(columns)
    for layout in LAYOUTS:
        if layout.file_column in present:
            missing = [c for c in layout.columns if c not in present]
            if missing:
                raise DatasetError(
                    f"{csv_path}:1: a {layout.name} CSV (it has a '{layout.file_column}' column) needs the columns "
                    f"{', '.join(layout.columns)}; missing: {', '.join(missing)} (header: {', '.join(columns)})"
                )
            return layout
    expected = "; ".join(f"{', '.join(layout.columns)} ({layout.name})" for layout in LAYOUTS)
    raise DatasetError(f"{csv_path}:1: cannot tell the layout from the header ({', '.join(columns)}); expected {expected}")


def _fold(layout: Layout, row: dict[str, str], where: str) -> int | None:
    if layout.folds is None:
        return None
    try:
        fold = int(row["fold"])
    except ValueError:
        raise DatasetError(f"{where}: fold {row['fold']!r} is not a number") from None
    if fold not in layout.folds:
        raise DatasetError(
            f"{where}: unknown fold {fold}: {layout.name} has folds {layout.folds.start}-{layout.folds.stop - 1}"
        )
    return fold


def _classes(layout: Layout, rows: list, csv_path: Path) -> tuple[list[str], dict[str, int]]:
    """Class names in class-id order (sorted names for plain CSVs), checking ids and names agree."""
    if layout.class_id_column is None:
        classes = sorted({row[layout.label_column] for _, row, _ in rows})
        return classes, {name: i for i, name in enumerate(classes)}
    by_id: dict[int, tuple[str, int]] = {}
    for line, row, _ in rows:
        name, raw_id = row[layout.label_column], row[layout.class_id_column]
        try:
            class_id = int(raw_id)
        except ValueError:
            raise DatasetError(f"{csv_path}:{line}: {layout.class_id_column} {raw_id!r} is not a number") from None
        known = by_id.setdefault(class_id, (name, line))
        if known[0] != name:
            raise DatasetError(
                f"{csv_path}:{line}: {layout.class_id_column} {class_id} is {name!r} here but {known[0]!r} on line {known[1]}"
            )
    classes = [by_id[i][0] for i in sorted(by_id)]
    if len(set(classes)) != len(classes):
        raise DatasetError(f"{csv_path}: one {layout.label_column} name has several {layout.class_id_column} values")
    return classes, {name: i for i, name in enumerate(classes)}


def _check_fold_selection(layout: Layout, fold: int, rows: list, csv_path: Path) -> None:
    if layout.folds is None:
        raise DatasetError(f"--fold {fold}: {csv_path} is a plain file,label CSV without folds")
    present = sorted({f for _, _, f in rows})
    if fold not in present:
        raise DatasetError(f"unknown fold {fold}: {csv_path} has rows of fold {', '.join(map(str, present))} only")


def _load(item: Item, csv_path: Path) -> np.ndarray:
    try:
        return load_audio(item.path)
    except AudioInputError as e:
        raise AudioInputError(f"{csv_path}:{item.line}: {e}") from None
