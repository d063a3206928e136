"""How text and example-audio anchors combine: nearest-anchor accuracy on labelled clips.

    python benchmarks/anchor_accuracy.py [--model NAME_OR_FOLDER] [--dataset DIR]

Each class of ../shared/audio/urbansound8k-subset (10 classes x 10 real clips) is taught by its
name in "This is a sound of {}.", by 5 of its clips, or by both with text_weight w; each of the
other 5 clips is assigned the label of largest margin (`clap_mlx.anchors.LabelScorer`). Two
folds (first / second half of each class as examples), so every clip is a query once. Chance
is 0.10. Without --model it runs the full-size random-weight checkpoint: then every figure is
chance-level by construction and only shows the mechanics; with the real weights it measures
the combination.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from _common import ROOT, full_checkpoint, print_table, write_results

import numpy as np

from clap_mlx import anchors, api
from clap_mlx.audio_io import load_audio

PROMPT = "This is a sound of {}."
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # 0: examples only, 1: text only
BACKGROUND = ("a sound.", "This is a sound.", "an audio recording.", "background noise.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="registry name or checkpoint folder (default: full-size random weights)")
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "audio" / "urbansound8k-subset"))
    args = parser.parse_args()
    model = args.model or str(full_checkpoint())
    clap = api.get_model(model)

    root = Path(args.dataset)
    by_class: dict[str, list[Path]] = defaultdict(list)
    with open(root / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_class[row["label"]].append(root / row["file"])
    classes = sorted(by_class)
    queries = {str(p): e for p, e in zip(
        [p for c in classes for p in by_class[c]],
        clap.embed_audio([load_audio(p) for c in classes for p in by_class[c]]),
    )}
    cache = anchors.ExampleCache(clap)
    correct: dict[float, int] = defaultdict(int)
    total = 0
    for fold in (0, 1):
        half = {c: (files[:5], files[5:]) if fold == 0 else (files[5:], files[:5]) for c, files in by_class.items()}
        for w in WEIGHTS:
            taught = {c: anchors.anchor(text=c.replace("_", " "), examples=half[c][0], text_weight=w) for c in classes}
            scorer = anchors.label_scorer(clap, taught, BACKGROUND, prompt=PROMPT, cache=cache)
            for c in classes:
                margins = scorer.margins(np.stack([queries[str(p)] for p in half[c][1]]))
                correct[w] += int((margins.argmax(axis=1) == classes.index(c)).sum())
        total += sum(len(half[c][1]) for c in classes)
    accuracy = {w: correct[w] / total for w in WEIGHTS}
    print(f"model {model}: nearest-anchor accuracy over {total} queries, {len(classes)} classes (chance {1 / len(classes):.2f})")
    names = {0.0: "examples only", 1.0: "text only"}
    print_table(["anchor", "text_weight", "accuracy"],
                [[names.get(w, "text + examples"), w, accuracy[w]] for w in WEIGHTS])
    write_results("anchor_accuracy", {
        "model": model, "dataset": str(root), "prompt": PROMPT, "queries": total, "classes": classes,
        "accuracy_by_text_weight": {str(w): accuracy[w] for w in WEIGHTS},
    })


if __name__ == "__main__":
    main()
