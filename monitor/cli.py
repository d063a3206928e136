"""`sound-monitor run|check-config|devices` (also `python -m monitor`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .calibrate import command as calibrate_command
from .config import MonitorConfig, SourceConfig
from .config_loader import ConfigError, load_config
from .health import DetectorStalled
from .reload import Reloader
from .sinks.base import SinkError
from .sinks.console import console_format
from .sources import SourceError

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_STALLED = 3  # the detector stalled past detector.stall_s: a service manager restarts the monitor


def describe(src: SourceConfig) -> str:
    where = {"mic": f"device {src.device if src.device is not None else 'default'}", "file": src.path,
             "stdin": f"{src.format} @ {src.sample_rate} Hz", "ffmpeg": src.url}[src.type]
    return f"{src.type} ({where})" + (f", labels {', '.join(src.labels)}" if src.labels else "")


def summary(cfg: MonitorConfig) -> str:
    sources = [f"source {src.name}: {describe(src)}" for src in cfg.sources] or [f"source: {describe(cfg.source)}"]
    lines = [
        *sources,
        f"windows: {cfg.windows.length_s:g} s every {cfg.windows.hop_s:g} s"
        + (f", gate {cfg.windows.min_dbfs:g} dBFS" if cfg.windows.min_dbfs is not None else ""),
        f"model: {cfg.detector.model} (batch {cfg.detector.batch_size})",
        f"labels: {len(cfg.labels)}",
    ]
    for label in cfg.labels:
        rule = f"{label.k}/{label.n} >= {label.threshold:g}, end after {label.max_not_heard} < {label.stop_threshold:g}"
        extras = [f"require {','.join(label.require)}"] if label.require else []
        extras += [f"unless {','.join(label.unless)}"] if label.unless else []
        extras += [f"quiet {label.schedule.quiet_hours}"] if label.schedule else []
        lines.append(f"  - {label.name}: {rule}" + (f" ({'; '.join(extras)})" if extras else ""))
    lines.append(f"log: {cfg.log.path or '-'}" + (" + console" if cfg.log.console else ""))
    lines.append(f"mqtt: {f'{cfg.mqtt.host}:{cfg.mqtt.port}' if cfg.mqtt.enabled else 'off'}")
    http = cfg.http
    host = f"[{http.host}]" if ":" in http.host else http.host
    token = f" (token in ${http.token_env})" if http.token_env else ""
    lines.append(f"dashboard: {f'http://{host}:{http.port}/{token}' if http.enabled else 'off'}")
    clips = cfg.clips
    kept = [f"skip if {', '.join(clips.skip_if)}"] if clips.skip_if else []
    kept += [f"{getattr(clips, key):g} {unit}" for key, unit in (("max_age_days", "days"), ("max_total_mb", "MB"),
             ("max_per_label", "per label")) if getattr(clips, key) is not None]
    note = f" ({'; '.join(kept)})" if kept and clips.enabled else ""
    lines.append(f"clips: {clips.dir if clips.enabled else 'off'}{note}")
    return "\n".join(lines)


def check_config(args) -> int:
    path = args.config or args.file
    print(f"OK {path}\n{summary(load_config(path))}")
    return 0


def devices(args) -> int:
    from .sources import format_devices

    print(format_devices())
    return 0


def run(args) -> int:
    cfg = load_config(args.config)
    import clap_mlx  # here, not at the top: check-config and devices need no model
    from clap_mlx.api import CLAP

    from .multi import MultiPipeline
    from .pipeline import Pipeline
    from .sources import open_source

    source = None if cfg.sources else open_source(cfg.source)  # a missing device fails before the model loads
    model = CLAP(args.model or cfg.detector.model, batch_size=cfg.detector.batch_size)
    try:
        pipeline = MultiPipeline(cfg, model) if source is None else Pipeline(cfg, source, model)
    except clap_mlx.AudioInputError as error:  # a label's example audio that cannot be decoded
        print(f"error: {args.config}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: pipeline.stop())
    reloader = Reloader(args.config, lambda: pipeline.cfg, pipeline.reload)  # systemctl reload
    signal.signal(signal.SIGHUP, lambda *_: reloader.request())
    if cfg.log.console and console_format(cfg.log) == "text":  # the start-up summary
        print(f"sound-monitor run {args.config}\n{summary(cfg)}", file=sys.stderr, flush=True)
    try:
        pipeline.run()
    except DetectorStalled as stall:
        print(f"error: {stall}", file=sys.stderr)
        return EXIT_STALLED
    clap_mlx.release_thread()  # this thread embedded the label prompts
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sound-monitor", description="Real-time sound event monitor (CLAP).")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("run", help="monitor a source and report events")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--model", help="model name or local folder (overrides detector.model)")
    p.set_defaults(func=run)
    p = commands.add_parser("check-config", help="validate a config file and print a summary")
    # `--config` as `run` and `calibrate` spell it, or the bare path
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("file", nargs="?", help="YAML config file")
    given.add_argument("--config", help="the same, spelled as for run")
    p.set_defaults(func=check_config)
    p = commands.add_parser("devices", help="list audio input devices")
    p.set_defaults(func=devices)
    calibrate_command.add_parser(commands)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, SinkError) as error:  # a bad setting, or a runtime fact a setting names
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except (SourceError, FileNotFoundError) as error:  # no device/file, or no model (ModelNotFoundError)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RUNTIME


def entry() -> None:
    """`sound-monitor` and `python -m monitor`: main(), then leave. After a stall the model's
    thread is stuck in native code and cannot be joined; the interpreter's teardown would then
    abort on its MLX state (exit 134 instead of 3), so the process leaves at once."""
    code = main()
    if code == EXIT_STALLED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
