"""`clap-mlx`: embed, classify and tag audio files from the command line; evaluate on a labelled
dataset; convert checkpoints."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import api, evaluate, loading
from .audio_io import AudioInputError

EMBEDDING_SUFFIXES = (".npy", ".npz", ".json")


class ProgressBar:
    """A one-line `[#####.....] 5/10 files` bar on stderr, redrawn in place."""

    def __init__(self, total: int, stream: TextIO, width: int = 30):
        self.total, self.stream, self.width, self.done = total, stream, width, 0

    def advance(self, n: int) -> None:
        self.done += n
        filled = self.width * self.done // max(self.total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} files")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def run_in_batches(files: list[str], batch_size: int, show_progress: bool, fn: Callable[[list[str]], list]) -> list:
    """fn over consecutive chunks of files, concatenating its per-file results."""
    bar = ProgressBar(len(files), sys.stderr) if show_progress else None
    out: list = []
    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        out.extend(fn(chunk))
        if bar:
            bar.advance(len(chunk))
    return out


def cmd_embed(args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    if not args.files and not args.text:
        raise ValueError("embed needs audio FILES, --text, or both")
    if args.out and Path(args.out).suffix not in EMBEDDING_SUFFIXES:
        raise ValueError(f"--out {args.out}: the file must end in one of {', '.join(EMBEDDING_SUFFIXES)}")
    arrays: dict[str, np.ndarray] = {}
    if args.files:
        rows = run_in_batches(
            args.files, args.batch_size, progress,
            lambda chunk: list(api.embed(audio=chunk, model=args.model).numpy()["audio_embedding"]),
        )
        arrays["audio_embedding"] = np.stack(rows)
    if args.text:
        arrays["text_embedding"] = api.embed(text=args.text, model=args.model, prompt=args.prompt).numpy()["text_embedding"]
    if args.files and args.text:
        arrays["similarity"] = arrays["audio_embedding"] @ arrays["text_embedding"].T
    return {"model": api.get_model(args.model).name, "files": args.files, "texts": args.text or [], **arrays}


def cmd_classify(args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    results = run_in_batches(
        args.files, args.batch_size, progress,
        lambda chunk: api.classify(chunk, args.labels, top_k=args.top_k, model=args.model, prompt=args.prompt),
    )
    return {"model": api.get_model(args.model).name, "results": [{"file": f, **r.to_dict()} for f, r in zip(args.files, results)]}


def cmd_tag(args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    results = run_in_batches(
        args.files, args.batch_size, progress,
        lambda chunk: api.tag(
            chunk, args.tags, threshold=args.threshold, model=args.model, prompt=args.prompt, background=args.background
        ),
    )
    return {"model": api.get_model(args.model).name, "results": [{"file": f, **r.to_dict()} for f, r in zip(args.files, results)]}


def cmd_eval(args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    dataset = evaluate.read_dataset(args.dir, args.labels_csv, args.fold)
    bar = ProgressBar(len(dataset.items), sys.stderr) if progress else None
    clap = api.get_model(args.model)
    result = evaluate.evaluate(dataset, clap, args.prompt, args.batch_size, bar.advance if bar else None)
    return {"model": clap.name, **result.to_dict()}


def format_embed(out: dict[str, Any]) -> str:
    rows = [
        [label, f"{row.shape[0]}-d", "[" + ", ".join(f"{v:+.4f}" for v in row[:4]) + ", ...]"]
        for names, key in (("files", "audio_embedding"), ("texts", "text_embedding"))
        for label, row in zip(out[names], out.get(key, []))
    ]
    text = _table(["input", "embedding", "first values"], rows)
    if "similarity" in out:
        similarity = [[f, *(f"{s:.3f}" for s in row)] for f, row in zip(out["files"], out["similarity"])]
        text += "\n\ncosine similarity\n" + _table(["file", *out["texts"]], similarity)
    return text


def format_classify(out: dict[str, Any]) -> str:
    rows = [
        [r["file"], r["predicted_class"], f"{r['confidence']:.3f}",
         ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top_k"])]
        for r in out["results"]
    ]
    return _table(["file", "prediction", "confidence", "top-k"], rows)


def format_tag(out: dict[str, Any]) -> str:
    rows = [
        [r["file"], ", ".join(f"{t} {r['probabilities'][t]:.3f}" for t in r["active_tags"]) or "-"]
        for r in out["results"]
    ]
    return _table(["file", f"active tags (p >= {out['results'][0]['threshold']:g})"], rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def _jsonable(out: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in out.items()}


def write_embeddings(path: Path, out: dict[str, Any]) -> None:
    arrays = {k: v for k, v in out.items() if isinstance(v, np.ndarray)}
    if path.suffix == ".npy":  # one array: the audio embeddings, or the text ones for text-only runs
        np.save(path, arrays.get("audio_embedding", arrays.get("text_embedding")))
    elif path.suffix == ".npz":
        np.savez(path, files=np.array(out["files"], dtype=str), texts=np.array(out["texts"], dtype=str), **arrays)
    else:
        path.write_text(json.dumps(_jsonable(out)) + "\n", encoding="utf-8")


COMMANDS = {
    "embed": (cmd_embed, format_embed),
    "classify": (cmd_classify, format_classify),
    "tag": (cmd_tag, format_tag),
    "eval": (cmd_eval, evaluate.format_report),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clap-mlx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=api.DEFAULT_MODEL, help="registry name or local checkpoint folder")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    common.add_argument("--prompt", help='text template with one "{}", e.g. "This is a sound of {}."')
    common.add_argument("--batch-size", type=_positive_int, default=api.AUDIO_BATCH_SIZE, help="files per encoder call")
    common.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")

    p = sub.add_parser("embed", parents=[common], help="embed audio files and/or texts")
    p.add_argument("files", nargs="*", help="audio files (wav, flac, ogg, mp3)")
    p.add_argument("--text", nargs="+", help="texts to embed (and compare with the files)")
    p.add_argument("--out", help="write embeddings to .npy (audio, or text if no files), .npz or .json")

    p = sub.add_parser("classify", parents=[common], help="zero-shot classification (softmax over labels)")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--labels", nargs="+", required=True, help="candidate labels")
    p.add_argument("--top-k", type=_positive_int, default=3, help="how many labels to list per file (default 3)")

    p = sub.add_parser("tag", parents=[common], help="multi-label tagging (independent probability per tag)")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--tags", nargs="+", required=True, help="tags to score")
    p.add_argument("--threshold", type=float, default=0.5, help="probability at which a tag is active (0..1)")
    p.add_argument("--background", nargs="+", help="background prompts each tag is contrasted with")

    p = sub.add_parser("eval", parents=[common], help="zero-shot accuracy on a labelled dataset folder")
    p.add_argument("dir", help="dataset folder (ESC-50, UrbanSound8K or any folder the CSV's paths are relative to)")
    p.add_argument("--labels-csv", required=True,
                   help="meta/esc50.csv, metadata/UrbanSound8K.csv or a file,label CSV (relative paths may be inside DIR)")
    p.add_argument("--fold", type=_positive_int, help="evaluate only this fold (ESC-50: 1-5, UrbanSound8K: 1-10)")

    p = sub.add_parser("convert", help="convert a hub-layout PyTorch checkpoint folder to MLX weights")
    p.add_argument("src", help="checkpoint folder (config.json + model.safetensors or pytorch_model.bin)")
    p.add_argument("dst", help="output folder")
    return parser


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            loading.convert(args.src, args.dst)
            print(f"converted {args.src} -> {args.dst}")
            return 0
        run, fmt = COMMANDS[args.command]
        many = len(args.files) > args.batch_size if hasattr(args, "files") else True  # eval: a dataset
        progress = args.progress or (sys.stderr.isatty() and many)
        out = run(args, progress)
        if args.command == "embed" and args.out:
            write_embeddings(Path(args.out), out)
            print(f"wrote {args.out}", file=sys.stderr)
    except (AudioInputError, ValueError, OSError) as e:
        print(f"clap-mlx {args.command}: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(_jsonable(out)) if args.json else fmt(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
