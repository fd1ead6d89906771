"""`notifier run` under a systemd-like supervisor: READY, STATUS, WATCHDOG, RELOADING, STOPPING on $NOTIFY_SOCKET."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.sdnotify import Notifier
from notifier.simulator import Simulator, load_scenario
from tests.pipeline_support import NODE_EXCEPTION
from tests.test_cli import ROOT, config_for, wait_until


class Supervisor:
    """A bound datagram socket standing in for systemd's: records every message with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def times(self, key: str) -> list[float]:
        return [t for t, fields in self.messages if key in fields]

    def values(self, key: str) -> list[str]:
        return [fields[key] for _, fields in self.messages if key in fields]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    s = Supervisor(tmp_path / "notify.sock")
    yield s
    s.close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed")) as s:
        yield s


def start(config: Path, supervisor: Supervisor, watchdog_usec: int = 400_000) -> subprocess.Popen[str]:
    env = {**os.environ, "NOTIFY_SOCKET": str(supervisor.path), "WATCHDOG_USEC": str(watchdog_usec)}
    return subprocess.Popen([sys.executable, "-m", "notifier", "run", "-c", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ready_status_watchdog_reload_and_stopping(write_config, sim: Simulator,  # type: ignore[no-untyped-def]
                                                   supervisor: Supervisor) -> None:
    """READY after start-up, STATUS after cycles, WATCHDOG at half of WATCHDOG_USEC, RELOADING/READY, STOPPING."""
    config = config_for(write_config, sim.url, '[channels.stdout]\ntype = "console"\n', interval="1s")
    proc = start(config, supervisor)
    try:
        wait_until(lambda: supervisor.values("READY"), what="READY=1")
        wait_until(lambda: any("alerts firing" in s for s in supervisor.values("STATUS")), what="a STATUS")
        first = len(supervisor.times("WATCHDOG"))
        wait_until(lambda: len(supervisor.times("WATCHDOG")) >= first + 5, what="five more WATCHDOG=1")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: supervisor.values("RELOADING"), what="RELOADING=1")
        wait_until(lambda: len(supervisor.values("READY")) >= 2, what="READY=1 after the reload")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert supervisor.values("STOPPING") == ["1"]
    assert "SIGTERM received" in stderr
    status = next(s for s in supervisor.values("STATUS") if "alerts firing" in s)
    assert status.startswith("1 jobs polled, 1 alerts firing, last cycle ")
    pings = supervisor.times("WATCHDOG")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 1.0  # 0.2 s apart; never near the 0.4 s timeout x 2.5


def test_a_hung_cycle_stops_the_watchdog_pings_until_it_ends(write_config, sim: Simulator,  # type: ignore[no-untyped-def]
                                                              supervisor: Supervisor) -> None:
    """A cycle without progress past [schedule] stall_timeout stops WATCHDOG=1 (systemd would restart); it resumes."""
    source_extra = '\n[schedule]\ninterval = "1s"\nstall_timeout = "1s"\n'
    config = write_config(
        source=(f'[source]\nendpoint = "{sim.url}"\nproject_id = "b384b9e9ab9b4ee8994c8633aabc9505"\n'
                f'auth = "none"\ntimeout = "10s"\nretries = 0\n{source_extra}'),
        rules=NODE_EXCEPTION, channels='[channels.stdout]\ntype = "console"\n')
    proc = start(config, supervisor)
    try:
        wait_until(lambda: len(supervisor.times("WATCHDOG")) >= 3, what="the first pings")
        hang_from = time.monotonic()
        sim.set_fault(kind="latency", delay=4.0, count=1)  # the next status request takes 4 s
        wait_until(lambda: supervisor.times("WATCHDOG")[-1] > hang_from + 4.5, timeout=30, what="pings resuming")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    pings = [t for t in supervisor.times("WATCHDOG") if t > hang_from - 1]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) > 2.0  # ~3 s of silence: the 4 s cycle minus its 1 s bound
    assert "past its bound of 1s: not pinging the watchdog" in stderr


@pytest.mark.parametrize(("env", "address", "interval"), [
    ({}, "", None),
    ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "/run/systemd/notify", None),
    ({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify/1"}, "\0/org/freedesktop/systemd1/notify/1", None),
    ({"NOTIFY_SOCKET": "/s", "WATCHDOG_USEC": "30000000"}, "/s", 15.0),
    ({"NOTIFY_SOCKET": "/s", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, "/s", None),
], ids=["not-under-systemd", "path", "abstract", "watchdog", "watchdog-for-another-pid"])
def test_the_environment_systemd_sets_is_read_as_documented(env: dict[str, str], address: str,
                                                            interval: float | None) -> None:
    """NOTIFY_SOCKET (an @ name is abstract), WATCHDOG_USEC halved, WATCHDOG_PID for another process ignored."""
    n = Notifier(env)
    assert (n._address, n.watchdog_interval, n.enabled) == (address, interval, bool(address))
    assert Notifier({}).send(ready="1") is False  # a no-op outside systemd


def test_sigterm_during_a_long_fetch_does_not_wait_for_it(write_config, sim: Simulator,  # type: ignore[no-untyped-def]
                                                          supervisor: Supervisor) -> None:
    """A fetch hanging 20 s is abandoned on SIGTERM (nothing of it was committed): exit 0 within seconds."""
    config = write_config(
        source=(f'[source]\nendpoint = "{sim.url}"\nproject_id = "b384b9e9ab9b4ee8994c8633aabc9505"\n'
                'auth = "none"\ntimeout = "30s"\nretries = 0\n\n[schedule]\ninterval = "1s"\n'),
        rules=NODE_EXCEPTION, channels='[channels.stdout]\ntype = "console"\n')
    proc = start(config, supervisor)
    try:
        wait_until(lambda: any("alerts firing" in s for s in supervisor.values("STATUS")), what="a first cycle")
        sim.set_fault(kind="latency", delay=20.0)
        seen = len(sim.requests.snapshot())
        wait_until(lambda: len(sim.requests.snapshot()) > seen, what="the hanging request")
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert time.monotonic() - stopped_at < 10
    assert "the running fetch was abandoned" in stderr
