"""The real pipeline, wired as ``notifier run`` wires it, driven one cycle at a time.

The simulator's scenario clock and notifier's clock move together, so a test says
"ten minutes pass" once and both sides agree on what time it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from notifier.app import App, CycleReport
from notifier.delivery import DeliveryReport
from notifier.runtime import Runtime
from notifier.simulator import ManualClock, Simulator
from notifier.state import StateStore
from tests.support.fakes import FakeClock

T = TypeVar("T")


class LinkedClock(FakeClock):
    """The one fake clock as notifier's clock, pinned to the simulator's epoch and moved together with it.

    Only a constructor: it starts at the epoch plus the simulator's scenario time, and every
    advance moves the simulator's ManualClock by the same seconds.
    """

    def __init__(self, sim: Simulator) -> None:
        if not isinstance(sim.clock, ManualClock):
            raise TypeError("LinkedClock needs a Simulator(..., clock=ManualClock())")
        epoch = datetime.fromtimestamp(sim.epoch_start_ms / 1000, timezone.utc)
        super().__init__(epoch + timedelta(seconds=sim.clock()), on_advance=sim.clock.advance)


class Pipeline:
    """The ``App`` that ``notifier run`` assembles, on one event loop; ``restart()`` is a process restart."""

    def __init__(self, config_path: Path, clock: FakeClock) -> None:
        self.config_path = config_path
        self.clock = clock
        self._loop = asyncio.Runner()
        self._closed = False
        self.app = self._loop.run(App.open(config_path, clock=clock))

    @property
    def store(self) -> StateStore:
        return self.app.store

    @property
    def runtime(self) -> Runtime:
        return self.app.runtime

    def cycle(self, *, deliver: bool = True) -> CycleReport:
        """One poll cycle over real sockets, then (by default) one delivery round."""
        report = self._loop.run(self.app.cycle())
        if deliver:
            self.deliver()
        return report

    def deliver(self) -> DeliveryReport:
        return self.app.deliver()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the pipeline's loop (the one its client's connections belong to)."""
        return self._loop.run(coro)

    def restart(self) -> None:
        self._loop.run(self.app.aclose())
        self.app = self._loop.run(App.open(self.config_path, clock=self.clock))

    def close(self) -> None:
        """Close the app and the event loop; idempotent, so a fixture may close what a test already closed."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self.app.aclose())
        finally:
            self._loop.close()


NODE_EXCEPTION = """
[[rule]]
name = "node-exception"
scope = "node"
status = ["EXCEPTION"]
severity = "critical"
"""


def source_toml(url: str, project_id: str = "b384b9e9ab9b4ee8994c8633aabc9505") -> str:
    """[source] for the simulator: no auth, no retries (a test wants to see each failure)."""
    return (f'[source]\nendpoint = "{url}"\nproject_id = "{project_id}"\nauth = "none"\n'
            f'timeout = "2s"\nretries = 0\n')


def webhook_toml(url: str, name: str = "hook") -> str:
    return f'[channels.{name}]\ntype = "webhook"\nurl = "{url}"\n'
