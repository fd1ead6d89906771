"""A real Prometheus Alertmanager for the tests: Debian's ``prometheus-alertmanager``, one process per fixture.

Each one listens on a free loopback port, keeps its data in tmp, joins no cluster
(``--cluster.listen-address=`` empty: no gossip) and routes everything, grouped by
``job`` with 1 s waits, to a webhook receiver on loopback in the test process, so a
test sees both what Alertmanager holds (``alerts()``) and what it notifies (``receiver``).

    with AlertmanagerProcess(binary, tmp_path, receiver.url) as am:
        ... post to am.url ...
        wait_until(lambda: am.alerts(), "the alert")

Without the binary the tests skip with one line saying how to install it; in CI (``CI``
set) they fail instead: .ci/run installs the package, so a missing binary there is a
broken CI, not a pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest

from tests.support.loopback import HOST
from tests.support.smtp_server import free_port
from tests.support.webhook_receiver import WebhookReceiver

T = TypeVar("T")

INSTALL_HINT = ("Alertmanager not installed: sudo apt-get install prometheus-alertmanager "
                "(the real-Alertmanager tests need /usr/bin/prometheus-alertmanager; .ci/run installs it)")
NAMES = ("prometheus-alertmanager", "alertmanager")
START_TIMEOUT = 20.0
WAIT_TIMEOUT = 15.0

CONFIG = """\
route:
  receiver: hook
  group_by: ['job']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


def alertmanager_binary() -> str:
    """The Alertmanager binary; without it the calling test module is skipped as a whole (one line), or in CI fails.

    Call it at module level (``BINARY = alertmanager_binary()``) so a missing binary is one skip, not one per test.
    """
    found = os.environ.get("NOTIFIER_TEST_ALERTMANAGER") or next(filter(None, map(shutil.which, NAMES)), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT, pytrace=False)
        pytest.skip(INSTALL_HINT, allow_module_level=True)
    return found


def wait_until(probe: Callable[[], T | None], what: str, timeout: float = WAIT_TIMEOUT) -> T:
    """Poll an external process until ``probe`` returns something truthy; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class AlertmanagerProcess:
    """One Alertmanager process on 127.0.0.1; ``stop()`` then ``start()`` again is an outage (same port, storage)."""

    def __init__(self, binary: str, workdir: Path, receiver_url: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(CONFIG.format(url=receiver_url))
        self.log = workdir / "alertmanager.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Start the process and wait until ``/-/ready`` answers; fail with its log if it exits or hangs."""
        if self._process is not None:
            return self
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, f"--config.file={self.config}", f"--storage.path={self.workdir / 'data'}",
                 f"--web.listen-address={HOST}:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"Alertmanager did not become ready on {self.url}:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL): later posts are refused, as in an outage."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- its API ----------------------------------------------------------------------

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read()
        return json.loads(text) if text else None

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the alerts it holds that have not ended (silenced and inhibited ones too)."""
        return list(self._request("GET", "/api/v2/alerts"))

    def alerts_received(self) -> dict[str, float]:
        """``alertmanager_alerts_received_total`` by status, from ``/metrics``: how many alerts it was posted."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("alertmanager_alerts_received_total{"):
                labels, value = line.rsplit(" ", 1)
                status = labels.split('status="', 1)[1].split('"', 1)[0]
                out[status] = out.get(status, 0.0) + float(value)
        return out

    def silence(self, matchers: dict[str, str], *, hours: float = 1, comment: str = "from the tests") -> str:
        """``POST /api/v2/silences`` with equality matchers; returns the silence id."""
        now = datetime.now(timezone.utc)
        body = {
            "matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=hours)).isoformat(),
            "createdBy": "notifier tests", "comment": comment,
        }
        return str(self._request("POST", "/api/v2/silences", body)["silenceID"])


def notifications(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """The webhook notifications Alertmanager sent the receiver, in arrival order."""
    return [r.json for r in receiver.requests if isinstance(r.json, dict)]


@pytest.fixture
def alertmanager_bin() -> str:
    """The binary (the test skips, or fails in CI, without it; a module calling ``alertmanager_binary`` at
    import skips once)."""
    return alertmanager_binary()


@pytest.fixture
def am_receiver() -> Iterator[WebhookReceiver]:
    """Where the fixture's Alertmanagers send their notifications."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def alertmanager(alertmanager_bin: str, tmp_path: Path, am_receiver: WebhookReceiver
                 ) -> Iterator[AlertmanagerProcess]:
    """A started Alertmanager notifying ``am_receiver``; stopped after the test."""
    with AlertmanagerProcess(alertmanager_bin, tmp_path / "am1", am_receiver.url) as am:
        yield am
