"""Monitor config: YAML -> dataclasses, errors with file/line/field, example configs, check-config CLI."""

from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest
import soundfile as sf

from monitor.cli import main
from monitor.config import MonitorConfig
from monitor.config_loader import ConfigError, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(dedent(text).lstrip())
    return path


def error_of(tmp_path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path) and str(path) in str(info.value)
    return info.value


def test_full_config_builds_typed_values(tmp_path):
    cfg = load_config(write(tmp_path, """
        source: {type: stdin, sample_rate: 16000, channels: 2, format: f32le}
        buffer: {seconds: 20}
        windows: {length_s: 4, hop_s: 0.5, min_dbfs: -55}
        detector: {model: /models/clap, batch_size: 2, background: [silence], prompt_template: "a {} sound"}
        rules: {timezone: UTC}
        labels:
          - name: smoke_alarm
            threshold: 0.7
            end_threshold: 0.5
            k: 2
            n: 3
            schedule: {quiet_hours: "22:00-07:00", days: [sat, sun]}
          - name: baby
            prompts: [a baby crying, an infant wailing]
            unless: [smoke_alarm]
        mqtt: {host: broker, port: 8883, tls: {ca_certs: /ca.pem}, discovery: {enabled: true}}
        clips: {enabled: true, dir: /tmp/clips}
    """))
    assert isinstance(cfg, MonitorConfig)
    assert cfg.source.type == "stdin" and cfg.source.sample_rate == 16000 and cfg.source.format == "f32le"
    assert cfg.windows.hop_s == 0.5 and isinstance(cfg.windows.length_s, float)
    alarm, baby = cfg.labels
    assert (alarm.k, alarm.n, alarm.stop_threshold, alarm.schedule.days) == (2, 3, 0.5, ("sat", "sun"))
    assert baby.unless == ("smoke_alarm",) and baby.stop_threshold == baby.threshold == 0.5
    assert cfg.prompts(alarm) == ("a smoke alarm sound",) and cfg.prompts(baby) == baby.prompts
    assert cfg.mqtt.enabled and cfg.mqtt.port == 8883 and cfg.mqtt.tls.ca_certs == "/ca.pem"
    assert cfg.mqtt.discovery.enabled and cfg.mqtt.discovery.prefix == "homeassistant"
    assert cfg.clips.enabled and cfg.clips.pre_roll_s == 2.0


def test_defaults_and_mqtt_off_when_absent(tmp_path):
    cfg = load_config(write(tmp_path, "labels: [{name: dog}]\nsource: {device: 3}\n"))
    assert cfg.source.device == 3 and cfg.windows.length_s == 5.0 and cfg.windows.hop_s == 1.0
    assert not cfg.mqtt.enabled and cfg.prompts(cfg.labels[0]) == ("the sound of dog",)


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        ("labels:\n  - name: dog\n    treshold: 0.5\n", 3, "labels[0].treshold", ["did you mean 'threshold'"]),
        ("windows:\n  length_s: 5\n  hop_s: 6\nlabels: [{name: a}]\n", 3, "windows.hop_s", ["<= length_s"]),
        ("source:\n  type: micro\nlabels: [{name: a}]\n", 2, "source.type", ["mic, file, stdin"]),
        ("labels:\n  - name: a\n    k: 3\n    n: 2\n", 3, "labels[0].k", ["between 1 and n=2"]),
        ("labels:\n  - name: a\n    k: two\n", 3, "labels[0].k", ["an integer", "'two'"]),
        ("labels:\n  - name: a\n\n    unless: [b]\n", 4, "labels[0].unless", ["unknown label 'b'"]),
        ("labels:\n  - name: a\n    schedule:\n      quiet_hours: 22-7\n", 4, "labels[0].schedule.quiet_hours", ["HH:MM-HH:MM"]),
        ("labels:\n  - name: a\n    schedule: {quiet_hours: '22:00-07:00', days: [mon, funday]}\n", 3,
         "labels[0].schedule.days", ["funday", "mon, tue"]),
        ("labels:\n  - name: a\n  - name: a\n", 3, "labels[1].name", ["duplicate"]),
        ("source: {type: file}\nlabels: [{name: a}]\n", 1, "source.path", ["required when type is 'file'"]),
        ("mqtt:\n  port: 70000\nlabels: [{name: a}]\n", 2, "mqtt.port", ["65535"]),
        ("mqtt:\n  tls: {ca_cert: x}\nlabels: [{name: a}]\n", 2, "mqtt.tls.ca_cert", ["did you mean 'ca_certs'"]),
        ("labels:\n  - name: a\nlabels: []\n", 3, "labels", ["given twice"]),
        ("log: {console: maybe}\nlabels: [{name: a}]\n", 1, "log.console", ["true/false"]),
        ("labels:\n  - prompts: [x]\n", 2, "labels[0].name", ["required"]),
        ("source: [mic]\nlabels: [{name: a}]\n", 1, "source", ["mapping"]),
        # rules that sinks and sources used to check again at run time, without a line
        ("source:\n  type: stdin\nlabels: [{name: a}]\n", 2, "source.sample_rate", ["required when type is 'stdin'"]),
        ("source:\n  type: ffmpeg\n  args: [-re]\nlabels: [{name: a}]\n", 2, "source.url", ["required when type is 'ffmpeg'"]),
        ("mqtt:\n  base_topic: home/#\nlabels: [{name: a}]\n", 2, "mqtt.base_topic", ["'home/#'", "wildcards"]),
        ("mqtt:\n  base_topic: ''\nlabels: [{name: a}]\n", 2, "mqtt.base_topic", ["non-empty"]),
        ("mqtt:\n  discovery:\n    prefix: ha/+\nlabels: [{name: a}]\n", 3, "mqtt.discovery.prefix",
         ["'ha/+'", "wildcards"]),
        ("mqtt:\n  host: x\n  node_id: a/b\nlabels: [{name: a}]\n", 3, "mqtt.node_id", ["'a/b'", "letters, digits"]),
        ("mqtt:\n  node_id: a+\nlabels: [{name: a}]\n", 2, "mqtt.node_id", ["'a+'"]),
        ("mqtt:\n  qos: 3\nlabels: [{name: a}]\n", 2, "mqtt.qos", ["0, 1 or 2"]),
        ("mqtt:\n  queue_limit: 0\nlabels: [{name: a}]\n", 2, "mqtt.queue_limit", [">= 1"]),
        ("mqtt:\n  keepalive: -1\nlabels: [{name: a}]\n", 2, "mqtt.keepalive", ["between 0 and 65535"]),
        ("mqtt:\n  level_interval_s: -1\nlabels: [{name: a}]\n", 2, "mqtt.level_interval_s", [">= 0"]),
        ("mqtt:\n  password_env: PW\n  password_file: /pw\nlabels: [{name: a}]\n", 3, "mqtt.password_file",
         ["not both"]),
        ("mqtt:\n  tls:\n    keyfile: /k.pem\nlabels: [{name: a}]\n", 3, "mqtt.tls.keyfile", ["needs certfile"]),
        ("mqtt: {host: x}\nlabels:\n  - name: Dog-bark\n  - name: dog_bark\n", 4, "labels[1].name",
         ["'Dog-bark' and 'dog_bark'", "same MQTT topic and entity 'dog_bark'"]),
        ("mqtt: {host: x}\nlabels:\n  - name: a\n  - name: __\n", 4, "labels[1].name", ["'__'", "no letters or digits"]),
        # clips: 5 s window + (8 pending + 4 batch + n=1) * 1 s hops + 2 s pre-roll + 1 s = 21 s
        ("buffer:\n  seconds: 20\nclips: {enabled: true}\nlabels: [{name: a}]\n", 2, "buffer.seconds",
         [">= 21", "detection lag"]),
    ],
)
def test_errors_name_line_field_and_what_is_allowed(tmp_path, text, line, field, words):
    error = error_of(tmp_path, text)
    assert (error.line, error.path) == (line, field)
    for word in words:
        assert word in error.message


def test_labels_may_share_a_slug_without_mqtt(tmp_path):
    """Slugs name MQTT topics and entities only: without MQTT, 'Dog' and 'dog' are two labels."""
    cfg = load_config(write(tmp_path, "labels: [{name: Dog}, {name: dog}, {name: _}]\n"))
    assert [label.name for label in cfg.labels] == ["Dog", "dog", "_"]


def test_yaml_syntax_error_and_empty_file(tmp_path):
    assert error_of(tmp_path, "labels: [\n").message.startswith("invalid YAML")
    assert "empty" in error_of(tmp_path, "").message
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.labels


def test_example_configs_exist():
    assert {p.name for p in CONFIGS} >= {"quickstart.yaml", "home.yaml", "baby-monitor.yaml", "smoke-alarm.yaml"}


def test_check_config_cli_exit_codes(tmp_path, capsys):
    assert main(["check-config", str(CONFIGS[0])]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK {CONFIGS[0]}") and "labels:" in out
    bad = write(tmp_path, "labels:\n  - name: a\n    threshold: 2\n")
    assert main(["check-config", str(bad)]) == 2
    assert f"{bad}:3: labels[0].threshold" in capsys.readouterr().err


def test_check_config_takes_the_path_as_run_spells_it(capsys):
    assert main(["check-config", "--config", str(CONFIGS[0])]) == 0
    assert capsys.readouterr().out.startswith(f"OK {CONFIGS[0]}")
    for argv in (["check-config"], ["check-config", str(CONFIGS[0]), "--config", str(CONFIGS[0])]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and "check-config" in capsys.readouterr().err


@pytest.mark.parametrize(
    "data, line, words",
    [
        (b"labels:\n  - name: caf\xe9\n", 2, ["not a YAML text file", "0xe9", "not UTF-8"]),  # Latin-1 text
        (b"labels: [{name: a}]\n\x00\x00\x00\x00", 2, ["not a YAML text file", "U+0000"]),  # UTF-8 but binary
    ],
)
def test_bytes_that_are_not_yaml_text_name_file_and_line(tmp_path, data, line, words):
    path = tmp_path / "monitor.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.line) == (str(path), line)
    for word in words:
        assert word in info.value.message


def test_check_config_on_a_binary_file_is_a_clear_error(tmp_path, capsys):
    wav = tmp_path / "clap.wav"  # a likely mistake: an audio file instead of the config
    sf.write(wav, np.random.default_rng(0).uniform(-1, 1, 4800).astype(np.float32), 48000)
    assert main(["check-config", str(wav)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {wav}:") and "not a YAML text file" in err and "Traceback" not in err
