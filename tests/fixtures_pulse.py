"""A private PulseAudio daemon with a null sink, so tests capture real audio.

`paplay --device=monitor_test x.wav` plays into the null sink; its monitor
source is the default source, which the ALSA `pulse` PCM (libasound2-plugins)
and so PortAudio device "pulse" record from. Nothing touches the host's sound
setup: the daemon's runtime, state and socket live in a temporary directory and
clients find it through PULSE_SERVER.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

SINK = "monitor_test"
CAPTURE_RATE = 48000


class PulseServer:
    """One `pulseaudio` process; `stop()`/`start()` simulate a device going away and back."""

    def __init__(self, root: Path):
        self.root = root
        self.socket = root / "native"
        self.log_path = root / "pulseaudio.log"
        self.process: subprocess.Popen | None = None
        self._keepalive: subprocess.Popen | None = None
        self._script = root / "test.pa"
        self._script.write_text(
            f"load-module module-null-sink sink_name={SINK} rate={CAPTURE_RATE} channels=2\n"
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"set-default-sink {SINK}\n"
            f"set-default-source {SINK}.monitor\n"
        )

    @property
    def client_env(self) -> dict[str, str]:
        return {"PULSE_SERVER": f"unix:{self.socket}"}

    def _daemon_env(self) -> dict[str, str]:
        # Root may run a per-user daemon (it only warns); every path it writes is ours.
        dirs = {name: self.root / name for name in ("runtime", "state", "home", "config")}
        for path in dirs.values():
            path.mkdir(mode=0o700, exist_ok=True)
        return {
            **os.environ,
            "HOME": str(dirs["home"]),
            "XDG_RUNTIME_DIR": str(dirs["runtime"]),
            "XDG_CONFIG_HOME": str(dirs["config"]),
            "PULSE_RUNTIME_PATH": str(dirs["runtime"]),
            "PULSE_STATE_PATH": str(dirs["state"]),
        }

    def start(self, timeout: float = 10.0) -> None:
        self.socket.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["pulseaudio", "-n", "-F", str(self._script), "--exit-idle-time=-1",
                 "--daemonize=no", "--use-pid-file=no", "--log-target=stderr"],
                env=self._daemon_env(), stdout=log, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.socket.exists() and self.pactl("info", check=False).returncode == 0:
                self._keep_sink_running()
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pulseaudio did not come up; its log:\n{self.log_path.read_text()[-4000:]}")

    def _keep_sink_running(self) -> None:
        """Play endless silence at low latency. An idle null sink renders in 2 s steps, so new
        record streams waited up to 2 s for data and paplay 2 s to drain; a sound card does not."""
        self._keepalive = subprocess.Popen(
            ["pacat", "--playback", "--raw", "--latency-msec=20", f"--device={SINK}", "/dev/zero"],
            env={**os.environ, **self.client_env},
        )

    def stop(self) -> None:
        for process in (self._keepalive, self.process):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)  # SIGKILL cannot be ignored; bounded all the same
        self._keepalive = self.process = None

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env={**os.environ, **self.client_env},
                              capture_output=True, text=True, check=check, timeout=10)

    def play(self, wav: Path) -> subprocess.Popen:
        """Start playing `wav` into the null sink; the caller waits on the process."""
        return subprocess.Popen(["paplay", f"--device={SINK}", str(wav)],
                                env={**os.environ, **self.client_env})


def refresh_portaudio() -> None:
    """PortAudio enumerates devices once at initialisation: re-scan after the env changes."""
    from monitor.sources.devices import refresh_devices

    refresh_devices()


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory):
    """A running private PulseAudio daemon; PortAudio's "pulse" device records its null sink."""
    missing = [tool for tool in ("pulseaudio", "paplay", "pacat", "pactl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt install pulseaudio pulseaudio-utils "
                    "libasound2-plugins libportaudio2)")
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    server.start()
    saved = {key: os.environ.get(key) for key in server.client_env}
    os.environ.update(server.client_env)
    refresh_portaudio()
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        refresh_portaudio()
