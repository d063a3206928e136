"""clap_mlx at one git revision against another, side by side: did a change make anything slower?

    python benchmarks/bench_ab.py --base c7a994f [--head HEAD] [--runs 7] [--keep]

Each revision is checked out with `git worktree add --detach` in /tmp/clap-mlx-ab/<commit>, its C
kernels built in place (`python3 setup.py build_ext --inplace`), and loaded in its own worker
process with that checkout first on PYTHONPATH and its own CLAP_MLX_CACHE (converted weights,
autotune choices). This process drives both in interleaved rounds (base, head, base, ...) on the
same full-size random weights and inputs (workloads.py). Ratio = base time / head time: above 1,
head is faster. The worktrees and their caches are removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

WORKTREES = Path("/tmp/clap-mlx-ab")
WORKLOAD_NAMES = ("audio b1 (10 s, is_longer=False)", "audio b1 (25 s, is_longer=True)",
                  "audio b8 (10 s, is_longer=False)", "text 1 label", "text 32 labels",
                  "embed 5-s clip (features + audio b1)")


def worker(checkout: Path, folder: Path) -> None:
    """Worker process: the clap_mlx of `checkout` (first on PYTHONPATH), answering workers.py's protocol."""
    import clap_mlx  # first: it preloads OpenBLAS before anything imports mlx.core
    import mlx.core as mx
    import numpy as np
    from clap_mlx.loading import load
    from workers import serve_workloads
    from workloads import LABELS, embed_run, tower_inputs

    if checkout not in Path(clap_mlx.__file__).resolve().parents:
        raise SystemExit(f"worker for {checkout} imported clap_mlx from {clap_mlx.__file__}")
    bundle = load(folder)
    model, tokenize = bundle.model, bundle.tokenizer

    def audio(batch: int, longer: bool):
        features, is_longer = (mx.array(a) for a in tower_inputs(folder, batch, longer))
        return lambda: np.array(model.get_audio_features(features, is_longer))

    def text(count: int):
        ids, mask = (mx.array(a) for a in tokenize(LABELS[:count]))
        return lambda: np.array(model.get_text_features(ids, mask))

    fns = dict(zip(WORKLOAD_NAMES, (audio(1, False), audio(1, True), audio(8, False), text(1), text(32),
                                    embed_run(model, bundle.feature_extractor))))
    serve_workloads(fns, WORKLOAD_NAMES, {"clap_mlx": clap_mlx.__file__})


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def checkout(root: Path, revision: str) -> tuple[str, Path]:
    """(commit, a built worktree of it), reused when one is already there."""
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}", cwd=root)
    path = WORKTREES / commit
    if not (path / ".git").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--detach", str(path), commit, cwd=root)
    if not list((path / "clap_mlx").glob("_kernels*.so")):
        print(f"building {revision} ({commit[:10]})'s kernels in {path} ...", flush=True)
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=path, check=True,
                       stdout=subprocess.DEVNULL)
    return commit, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the revision to compare against (e.g. c7a994f); required")
    parser.add_argument("--head", default="HEAD", help="the revision under test (default HEAD)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per side after one warm-up (default 7)")
    parser.add_argument("--keep", action="store_true", help="keep the worktrees in /tmp/clap-mlx-ab for another run")
    parser.add_argument("--checkpoint", type=Path, help="another hub-layout folder (default: the full-size random one)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.checkpoint)
        return
    if not args.base:
        parser.error("--base is required")

    from _common import ROOT, full_checkpoint, print_table, summary, write_results
    from paired import interval, paired_ratio
    from workers import Worker, interleaved_rounds

    folder = args.checkpoint or full_checkpoint()
    sides = {"base": checkout(ROOT, args.base), "head": checkout(ROOT, args.head)}
    workers = {}
    for side, (commit, path) in sides.items():
        env = {**os.environ, "PYTHONPATH": str(path),
               "CLAP_MLX_CACHE": str(WORKTREES / f"cache-{commit}")}
        workers[side] = Worker([sys.executable, __file__, "--worker", str(path), "--checkpoint", str(folder)], env)
    records, rows = [], []
    for index, name in enumerate(WORKLOAD_NAMES):
        rounds = interleaved_rounds(workers, index, args.runs)
        times = {side: summary(t) for side, t in rounds.items()}
        ratio = times["base"]["median_ms"] / times["head"]["median_ms"]
        ratio_min = times["base"]["min_ms"] / times["head"]["min_ms"]
        paired = paired_ratio(rounds["base"], rounds["head"])
        records.append({"workload": name, "times": times, "base_over_head": ratio, "base_over_head_min": ratio_min,
                        "base_over_head_paired": paired})
        rows.append([name, times["base"]["median_ms"], times["head"]["median_ms"], ratio, ratio_min, interval(paired)])
        print(f"  {name}: base {times['base']['median_ms']:.1f} ms, head {times['head']['median_ms']:.1f} ms", flush=True)
    for w in workers.values():
        w.close()
    if not args.keep:
        for commit, path in sides.values():
            git("worktree", "remove", "--force", str(path), cwd=ROOT)
            shutil.rmtree(WORKTREES / f"cache-{commit}", ignore_errors=True)
    print()
    print_table(["workload", f"base {args.base} ms", f"head {args.head} ms", "base/head", "base/head of mins",
                 "base/head per round [95 %]"], rows)
    write_results("bench_ab", {
        **{side: {"revision": getattr(args, side), "commit": sides[side][0], "clap_mlx": workers[side].loaded["clap_mlx"]}
           for side in sides},
        "runs": args.runs,
        "statistic": "median ms after 1 warm-up, each revision in its own worker process, rounds interleaved; "
                     "base_over_head > 1 means head is faster (base_over_head_paired: the median of the rounds' "
                     "ratios and its 95 % bootstrap interval)",
        "workloads": records,
    })


if __name__ == "__main__":
    main()
