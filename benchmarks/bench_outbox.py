"""The MQTT outbox's cost per event message (monitor/sinks/outbox.py): one durable SQLite write
(WAL, synchronous=FULL) on the detector thread before the message is queued, one delete on the
network thread when the broker acknowledges it, and the restore of a backlog at start-up.

    python benchmarks/bench_outbox.py [--messages 300] [--dir DIR]

`--dir` picks the disk (default: benchmarks/.cache, i.e. the checkout's disk; a tmpfs would
measure no disk at all).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import CACHE, print_table, summary, write_results

from monitor.sinks.outbox import Outbox

PAYLOAD = json.dumps({"id": "dog_bark-1700000001500", "label": "dog bark", "phase": "start", "score": 0.91,
                      "peak_score": 0.93, "mean_score": 0.77, "started_at": "2023-11-14T22:13:21.500000+00:00",
                      "started_ts": 1700000001.5, "ended_at": None, "ended_ts": None, "duration_s": 0.5,
                      "level_dbfs": -18.2, "source": "mic:pulse", "clip": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=CACHE)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "outbox.sqlite"
        outbox = Outbox(path)
        outbox.open()
        adds, keys = [], []
        for _ in range(args.messages):
            start = time.perf_counter()
            keys.append(outbox.add("sound_monitor/node/event", PAYLOAD, False))
            adds.append(time.perf_counter() - start)
        outbox.close()
        start = time.perf_counter()
        restored = Outbox(path)
        backlog = restored.open()
        restore_s = time.perf_counter() - start
        assert len(backlog) == args.messages
        removes = []
        for key in keys:
            start = time.perf_counter()
            restored.remove([key])
            removes.append(time.perf_counter() - start)
        restored.close()
    results = {"messages": args.messages, "dir": str(args.dir), "payload_bytes": len(PAYLOAD),
               "add": summary(adds), "remove": summary(removes), "restore_ms": 1e3 * restore_s}
    print_table(["step", "median ms", "min ms", "max ms"], [
        ["add (write before publish)", results["add"]["median_ms"], results["add"]["min_ms"], 1e3 * max(adds)],
        ["remove (on PUBACK)", results["remove"]["median_ms"], results["remove"]["min_ms"], 1e3 * max(removes)],
        [f"restore {args.messages} at start", results["restore_ms"], results["restore_ms"], results["restore_ms"]],
    ])
    write_results("bench_outbox", results)


if __name__ == "__main__":
    main()
