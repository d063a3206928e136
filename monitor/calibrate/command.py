"""The `sound-monitor calibrate` subcommand: arguments, output, files written last."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config_loader import load_config

EXIT_INPUT = 2
DEFAULT_FALSE_ALARMS_PER_HOUR = 0.5


def add_parser(commands) -> None:
    p = commands.add_parser("calibrate", help="thresholds from your own background recordings and positive clips")
    p.add_argument("--config", required=True, help="YAML config file (never modified)")
    p.add_argument("--background", nargs="+", required=True, metavar="PATH",
                   help="recordings of normal sound where the microphone is (files or folders)")
    p.add_argument("--positives", nargs="+", default=[], metavar="LABEL=PATH",
                   help="clips that should produce an event for LABEL (files or folders)")
    p.add_argument("--false-alarms-per-hour", type=float, default=DEFAULT_FALSE_ALARMS_PER_HOUR, metavar="X",
                   help=f"false-alarm budget per hour of background (default {DEFAULT_FALSE_ALARMS_PER_HOUR})")
    p.add_argument("--write", metavar="OUT.yaml", help="write a copy of the config with the suggested thresholds")
    p.add_argument("--plots", metavar="DIR", help="write one PNG per label: score histograms and thresholds")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    p.add_argument("--model", help="model name or local folder (overrides detector.model)")
    p.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    # here, not at the top: the other subcommands need neither the model nor the pipeline
    from .plots import PlotsUnavailable, check_available, write_plot
    from .replay import CalibrationInputError
    from .report import calibrate, format_report, parse_positives
    from .write import write_thresholds

    cfg = load_config(args.config)
    import clap_mlx  # here: check-config and devices need no model
    from clap_mlx.api import CLAP

    try:
        if cfg.sources:
            raise CalibrationInputError(f"{args.config} has several sources: calibrate a one-source config "
                                        "(a copy with that source's labels and windows)")
        if args.plots:
            check_available()
        if args.write and Path(args.write).resolve() == Path(args.config).resolve():
            raise CalibrationInputError(f"--write {args.write}: that is the input config; write the copy to another file")
        positives = parse_positives(args.positives, cfg)
        clap = CLAP(args.model or cfg.detector.model, batch_size=cfg.detector.batch_size)
        report, scores = calibrate(cfg, clap, args.background, positives, args.false_alarms_per_hour, args.progress)
        clap_mlx.release_thread()  # this thread embedded the label prompts
    except (CalibrationInputError, PlotsUnavailable, clap_mlx.AudioInputError) as error:  # the last: example audio
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT
    try:
        print(json.dumps(report.to_dict()) if args.json else format_report(report))
        if args.write:
            write_thresholds(args.config, args.write, report.thresholds())
            print(f"wrote {args.write}", file=sys.stderr)
        if args.plots:
            for label in report.labels:
                path = Path(args.plots) / f"{label.label}.png"
                write_plot(path, label.label, scores.background_scores(label.label), scores.positive_scores(label.label),
                           label.current_threshold, label.suggested_threshold)
            print(f"wrote {len(report.labels)} plot(s) to {args.plots}", file=sys.stderr)
    finally:
        scores.close()
    return 0
