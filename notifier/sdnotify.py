"""systemd's notification protocol: one datagram to ``$NOTIFY_SOCKET``, nothing to build.

``Type=notify`` services tell systemd READY=1 (up and checked), WATCHDOG=1 (alive; at half
of ``$WATCHDOG_USEC``), STATUS=... (one line for ``systemctl status``), RELOADING=1 and
STOPPING=1. The protocol is a plain AF_UNIX datagram of ``KEY=value`` lines; an address
starting with ``@`` is in the abstract namespace. Outside systemd (no ``$NOTIFY_SOCKET``)
every call is a no-op, so the service runs the same by hand.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd when it asked for them; silent otherwise."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self.watchdog_interval = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines (``ready="1"`` -> ``READY=1``); False when not under systemd or it failed."""
        if not self._address:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message, self._address)
        except OSError as exc:  # systemd gone or the socket unusable: never a reason to stop working
            log.warning("cannot notify systemd at %s: %s", self._address.replace("\0", "@"), exc)
            return False
        return True

    def status(self, text: str) -> bool:
        return self.send(status=text.replace("\n", " ")[:200])

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` when the watchdog is meant for this process, else None."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
