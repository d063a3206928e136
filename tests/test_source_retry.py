"""Several sources: a file source whose reads start failing mid-run (a real EIO: its ext2
filesystem's loop device shrinks under it) is not taken for an end of file. It is logged,
opened again with capped back-off (its reopening fails while the disk is gone) and joins again
once the device is back, while the other source goes on scoring all along."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import soundfile

from monitor.config import DetectorConfig, LabelConfig, LogConfig, MonitorConfig, SourceConfig, WindowsConfig
from monitor.multi import MultiPipeline
from tests.helpers import Events, tone, wait_until


@contextlib.contextmanager
def ext2_on_loop(folder: Path, size: str = "8M"):
    """An ext2 filesystem in `folder/disk.img`, mounted at `folder/mnt` through a loop device;
    yields (mount point, loop device, image)."""
    if not (shutil.which("mkfs.ext2") and shutil.which("losetup")):
        pytest.skip("needs mkfs.ext2 and losetup (e2fsprogs, util-linux)")
    image, mount = folder / "disk.img", folder / "mnt"
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext2", "-q", "-F", str(image)], check=True)
    mount.mkdir()
    setup = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if setup.returncode != 0:
        pytest.skip(f"cannot set up a loop device (needs root): {setup.stderr.strip()}")
    loop = setup.stdout.strip()
    try:
        mounted = subprocess.run(["mount", loop, str(mount)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a loop device (needs root): {mounted.stderr.strip()}")
        try:
            yield mount, loop, image
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_a_file_that_fails_mid_read_is_opened_again(tmp_path, clap):
    with ext2_on_loop(tmp_path) as (mount, loop, image):
        soundfile.write(str(mount / "flaky.wav"), tone(1000.0, 60.0, 16000), 16000, subtype="PCM_16")
        soundfile.write(str(tmp_path / "steady.wav"), tone(1000.0, 60.0, 16000), 16000)
        subprocess.run(["sync"], check=True)
        shutil.copy(image, tmp_path / "disk.bak")
        cfg = MonitorConfig(
            labels=(LabelConfig(name="beep", threshold=0.001),),  # every window a hit: one event per run of a source
            sources=(SourceConfig(type="file", name="steady", path=str(tmp_path / "steady.wav")),
                     SourceConfig(type="file", name="flaky", path=str(mount / "flaky.wav"))),
            windows=WindowsConfig(length_s=0.5, hop_s=0.25),
            detector=DetectorConfig(background=("silence",)),
            log=LogConfig(path=str(tmp_path / "monitor.jsonl")),
        )
        events = Events()
        multi = MultiPipeline(cfg, clap, sinks=[events], retry_min_s=0.3, retry_max_s=1.0)
        runner = threading.Thread(target=multi.run)
        runner.start()

        def log() -> list[dict]:
            return [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]

        def starts(source: str) -> int:
            return sum(e.source == source and e.phase == "start" for e in events.events)

        def scored(source: str) -> int:
            return multi.status()["sources"][source]["windows"]["scored"]

        try:
            assert wait_until(lambda: starts("flaky") == 1 and starts("steady") == 1, 30)
            # the disk goes: the file's cached pages dropped, the device cut to 1 MB (reads past it: EIO)
            fd = os.open(mount / "flaky.wav", os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            os.truncate(image, 1 << 20)
            subprocess.run(["losetup", "-c", loop], check=True)
            assert wait_until(lambda: any(line.get("kind") == "source_failed" for line in log()), 10)
            steady_before = scored("steady")
            assert wait_until(lambda: sum(line.get("kind") == "source_failed" for line in log()) >= 3, 10)
            assert scored("steady") > steady_before  # the other source went on meanwhile
            shutil.copy(tmp_path / "disk.bak", image)  # the disk comes back
            subprocess.run(["losetup", "-c", loop], check=True)
            assert wait_until(lambda: starts("flaky") == 2, 30), "the file did not join again"
        finally:
            multi.stop()
            runner.join(60)
        assert not runner.is_alive()
    failed = [line for line in log() if line.get("kind") == "source_failed"]
    assert all(line["source"] == "flaky" for line in failed)
    assert "failed (opened again in 0.3 s)" in failed[0]["message"] and "System error" in failed[0]["error"]
    assert any("cannot be opened" in line["message"] for line in failed[1:])  # reopening while the disk was gone
    flaky = [e.phase for e in events.events if e.source == "flaky" and e.phase != "update"]
    assert flaky == ["start", "end", "start", "end"]  # the failed run's event ended; the next run's at shutdown
    assert [e.phase for e in events.events if e.source == "steady" and e.phase != "update"] == ["start", "end"]
