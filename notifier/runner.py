"""The long-running service: APScheduler polls, a delivery task drains the outbox.

Everything runs on one asyncio loop. APScheduler's AsyncIOScheduler calls
``Service.cycle`` at the configured interval, one at a time (``max_instances=1``),
coalescing missed runs. The synchronous half of a cycle (plan, render, SQLite commit)
and outbox delivery run in worker threads so that neither blocks the other.

SIGTERM/SIGINT: the running cycle finishes, the outbox gets one last chance to drain
(bounded), then the process exits. SIGHUP: reload config, rules, templates and
channels; if anything is invalid, keep running with the old ones.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from notifier.delivery import Deliverer
from notifier.errors import NotifierError
from notifier.lock import ProcessLock
from notifier.models import Clock, utcnow
from notifier.service import (
    CycleReport,
    Runtime,
    Service,
    close_channels,
    create_channels,
    load_runtime,
)
from notifier.source.client import DgcClient
from notifier.state import StateStore

log = logging.getLogger(__name__)

DRAIN_ON_EXIT_SECONDS = 10.0
PURGE_AFTER = timedelta(days=7)  # finished outbox rows are kept this long for `notifier alerts`


class Runner:
    """Owns the loop-side wiring of one service process."""

    def __init__(self, config_path: Path, runtime: Runtime, *, clock: Clock = utcnow,
                 on_cycle: Callable[[CycleReport], None] | None = None) -> None:
        self.config_path = config_path
        self.runtime = runtime
        self.clock = clock
        self.on_cycle = on_cycle
        self.lock = ProcessLock(runtime.config.state_path).acquire()
        self.store = StateStore.open(runtime.config.state_path)
        self.channels = create_channels(runtime.config)
        self.client = DgcClient(runtime.config.source, clock=clock)
        self.service = Service(runtime=runtime, store=self.store, client=self.client, clock=clock)
        self.deliverer = Deliverer(self.store, self.channels, runtime.config.delivery, clock=clock)
        self._cycle_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[bool]] = set()

    async def run_cycle(self) -> CycleReport | None:
        """One cycle; errors are logged, never fatal: the next cycle tries again."""
        async with self._cycle_lock:
            if self._stop.is_set():
                return None
            try:
                fetched = await self.service.fetch()
                report = await asyncio.to_thread(self.service.apply, fetched)
            except NotifierError as exc:
                log.error("cycle failed: %s", exc)
                return None
            except Exception:
                log.exception("cycle failed unexpectedly")
                return None
        self._wake.set()
        await asyncio.to_thread(self.store.purge_delivered, report.at - PURGE_AFTER)
        if self.on_cycle is not None:
            self.on_cycle(report)
        return report

    async def deliver_forever(self) -> None:
        """Drain the outbox after every cycle and whenever a retry falls due."""
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.deliverer.deliver_due)
            except Exception:
                log.exception("delivery round failed")
            due = self.deliverer.next_due()
            timeout = None if due is None else max(0.05, (due - self.clock()).total_seconds())
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                pass

    async def reload(self) -> bool:
        """SIGHUP: swap in new config/rules/templates/channels only if all of them are valid."""
        try:
            runtime = await asyncio.to_thread(load_runtime, self.config_path)
            channels = create_channels(runtime.config)
            client = DgcClient(runtime.config.source, clock=self.clock)
        except NotifierError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return False
        if runtime.config.state_path != self.runtime.config.state_path:
            log.warning("state path changed; it takes effect after a restart")
        async with self._cycle_lock:  # never swap under a running cycle
            old_client = self.client
            self.runtime = runtime
            self.client = self.service.client = client
            self.service.runtime = runtime
            self.channels = channels
        old_channels = await asyncio.to_thread(self.deliverer.swap_channels, channels)
        close_channels(old_channels)
        await old_client.aclose()
        self._wake.set()
        log.info("configuration reloaded rules=%d channels=%d", len(runtime.rules), len(channels))
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def serve(self, *, max_cycles: int | None = None, duration: float | None = None) -> None:
        """Run until SIGTERM/SIGINT (or ``duration`` seconds / ``max_cycles`` cycles, for the demo)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._tasks.add(loop.create_task(self.reload())))
        cycles = 0

        idle = asyncio.Event()
        idle.set()

        async def tick() -> None:
            nonlocal cycles
            idle.clear()
            try:
                await self.run_cycle()
                cycles += 1
                if max_cycles is not None and cycles >= max_cycles:
                    self.stop()
            finally:
                idle.set()  # nothing awaits after this: shutdown never cancels a cycle

        interval = self.runtime.config.interval
        scheduler = AsyncIOScheduler(event_loop=loop, timezone="UTC")
        scheduler.add_job(tick, IntervalTrigger(seconds=interval, timezone="UTC"), id="cycle",
                          next_run_time=self.clock(), max_instances=1, coalesce=True,
                          misfire_grace_time=max(1, int(interval)))
        scheduler.start()
        delivery = loop.create_task(self.deliver_forever())
        log.info("notifier running interval=%ss jobs=%s rules=%d channels=%d", interval,
                 "discover" if self.runtime.config.jobs.discover else len(self.runtime.config.jobs.names),
                 len(self.runtime.rules), len(self.channels))
        try:
            if duration is None:
                await self._stop.wait()
            else:
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=duration)
                except TimeoutError:
                    self.stop()
        finally:
            scheduler.pause()  # no new cycles; a running one finishes (shutdown would cancel it)
            await idle.wait()
            scheduler.shutdown(wait=False)
            delivery.cancel()
            try:
                await delivery
            except asyncio.CancelledError:
                pass
            await self._drain(DRAIN_ON_EXIT_SECONDS)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _drain(self, budget: float) -> None:
        """Give due notifications one last chance; what is left stays queued for the next start."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self.deliverer.deliver_due), timeout=budget)
        except TimeoutError:
            log.warning("outbox not drained within %ss; the rest is delivered after restart", budget)
        except Exception:
            log.exception("final delivery round failed")

    async def aclose(self) -> None:
        await self.client.aclose()
        close_channels(self.channels)
        self.store.close()
        self.lock.release()


