"""systemd's service notification protocol (sd_notify(3)): datagrams to `$NOTIFY_SOCKET`, stdlib only.

Outside systemd (no `NOTIFY_SOCKET`) every call does nothing. `watchdog_s` is the watchdog
interval systemd asks for (`WatchdogSec=` -> `$WATCHDOG_USEC`, meant for this process when
`$WATCHDOG_PID` is unset or ours), None without one.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        # "@name" is a socket in the abstract namespace
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        pid = env.get("WATCHDOG_PID")
        usec = env.get("WATCHDOG_USEC")
        ours = pid is None or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if self.address and usec and usec.isdigit() and int(usec) and ours else None
        self._failed = False

    def send(self, *assignments: str) -> bool:
        """One datagram of `KEY=value` lines; False (logged once) when it cannot be sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode(), self.address)
            return True
        except OSError as err:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify the service manager at %s: %s", self.address.replace("\0", "@"), err,
                            extra={"kind": "notify_failed"})
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")
