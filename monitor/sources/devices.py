"""PortAudio input devices: listing, selection, re-scans, and streams that never block a close.

sounddevice is imported lazily so file and stdin sources work on machines without PortAudio.
"""

from __future__ import annotations

import atexit
import logging
import threading

from .base import SourceError

log = logging.getLogger(__name__)

CLOSE_GRACE_S = 0.5  # for the callback thread to see the stop (blocks arrive every ~20-100 ms)
CLOSE_TIMEOUT_S = 5.0  # a stalled device's callback thread notices a stop within ~2 s (PortAudio's poll)


def load_sounddevice():
    try:
        import sounddevice
    except OSError as error:  # libportaudio2 missing
        raise SourceError(f"PortAudio is not available ({error}); install libportaudio2") from error
    return sounddevice


_closing: set[threading.Thread] = set()  # stream closes still running (see `InputStream`)


def refresh_devices() -> bool:
    """Re-scan audio devices: PortAudio enumerates them only when it is initialised.

    Terminating PortAudio aborts every open stream, so call it only with none
    running. Skipped (False) while an abandoned stream is still closing: its
    abort would hang just as its close did.
    """
    if _closing:
        log.warning("audio devices not re-scanned: an abandoned stream is still closing",
                    extra={"kind": "rescan_skipped"})
        return False
    sd = load_sounddevice()
    sd._terminate()
    sd._initialize()
    return True


class InputStream:
    """A PortAudio input stream and the two flags its shutdown needs.

    Closing an active stream aborts it, and PortAudio's ALSA host API aborts by
    pthread_cancel-ing its callback thread: the close then joins a thread that
    may be stuck for good. With the ALSA `pulse` plugin, a sound server that
    dies mid-read can deadlock that thread inside libpulse (seen: the mainloop
    thread, holding its lock, waits in pa_memimport_free for a memory block to
    be released while the callback thread waits in snd_pcm_status for the
    lock), and a frozen server stalls it for as long as it is frozen. So
    the callback thread ends on its own (the callback sees `retired` and raises
    CallbackAbort; a dead device ends it too), or `stop()` asks it to end at its
    next loop and joins it: never a cancel. The join runs on a daemon thread:
    if it does not return, the stream is abandoned rather than the caller blocked.
    """

    def __init__(self, name: str, callback, on_finished, **options):
        sd = load_sounddevice()
        self.name = name
        self.retired = threading.Event()  # the callback must end the thread at its next block
        self.finished = threading.Event()  # the callback thread has ended
        self.stream = sd.InputStream(callback=lambda *args: callback(self, *args),
                                     finished_callback=lambda: on_finished(self), **options)

    def close(self) -> None:
        """Stop and close; never blocks for longer than CLOSE_TIMEOUT_S."""
        self.retired.set()
        closer = threading.Thread(target=self._shut, name=f"{self.name} close", daemon=True)
        _closing.add(closer)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            log.warning("closing %s did not finish in %.1f s; stream abandoned", self.name, CLOSE_TIMEOUT_S,
                        extra={"kind": "stream_abandoned", "source": self.name})
            # registered (again) after sounddevice's exit handler, so it runs before it
            atexit.unregister(_leave_abandoned_streams_to_the_os)
            atexit.register(_leave_abandoned_streams_to_the_os)

    def _shut(self) -> None:
        try:
            if self.stream.active:
                self.finished.wait(CLOSE_GRACE_S)
            self.stream.stop(ignore_errors=True)  # Pa_StopStream: ends the thread cooperatively
            self.stream.close(ignore_errors=True)  # a stopped stream closes without an abort
        finally:
            _closing.discard(threading.current_thread())


def _leave_abandoned_streams_to_the_os() -> None:
    """PortAudio's terminate at exit would join an abandoned stream's stuck thread forever."""
    if _closing:
        load_sounddevice()._initialized = 0


def list_devices() -> list[dict]:
    """Input-capable devices as dicts: index, name, hostapi, input_channels, default_samplerate, default."""
    sd = load_sounddevice()
    hostapis = sd.query_hostapis()
    default_input = sd.default.device[0]
    return [
        {
            "index": info["index"],
            "name": info["name"],
            "hostapi": hostapis[info["hostapi"]]["name"],
            "input_channels": info["max_input_channels"],
            "default_samplerate": info["default_samplerate"],
            "default": info["index"] == default_input,
        }
        for info in sd.query_devices()
        if info["max_input_channels"] > 0
    ]


def format_devices(devices: list[dict] | None = None) -> str:
    """The table `sound-monitor devices` prints."""
    devices = list_devices() if devices is None else devices
    if not devices:
        return "No audio input devices found (is PulseAudio/PipeWire or an ALSA capture device available?)"
    rows = [("", "index", "name", "host API", "channels", "default rate")]
    rows += [
        ("*" if d["default"] else "", str(d["index"]), d["name"], d["hostapi"],
         str(d["input_channels"]), f"{d['default_samplerate']:g}")
        for d in devices
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + ["(* = default input; select with source.device: <index or name substring>)"])


def find_input_device(device: str | int | None) -> dict:
    """The input device `device` names: an index, an exact name, or a unique name substring."""
    devices = list_devices()
    if device is None:
        matches = [d for d in devices if d["default"]]
    elif isinstance(device, int):
        matches = [d for d in devices if d["index"] == device]
    else:
        wanted = device.lower()
        matches = [d for d in devices if d["name"].lower() == wanted]
        matches = matches or [d for d in devices if wanted in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]
    what = "default input device" if device is None else f"input device {device!r}"
    problem = "is ambiguous" if matches else "not found"
    raise SourceError(f"{what} {problem}; available inputs:\n{format_devices(devices)}")
