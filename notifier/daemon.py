"""The long-running service: APScheduler polls, a delivery task drains the outbox.

Everything runs on one asyncio loop around one ``App``. APScheduler's
AsyncIOScheduler calls ``Daemon.run_cycle`` at the configured interval, one at a time
(``max_instances=1``), coalescing missed runs. The synchronous half of a cycle (plan,
render, SQLite commit) and outbox delivery run in worker threads so that neither
blocks the other.

SIGTERM/SIGINT: the running cycle finishes, the outbox gets one last chance to drain
(bounded), then the process exits. SIGHUP: reload config, rules, templates and
channels; if anything is invalid, keep running with the old ones.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from notifier.app import App, CycleReport
from notifier.errors import NotifierError

log = logging.getLogger(__name__)

DRAIN_ON_EXIT_SECONDS = 10.0
PURGE_AFTER = timedelta(days=7)  # finished outbox rows and ended silences are kept this long for `alerts`
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Daemon:
    """Runs one ``App`` until told to stop: cycles on a schedule, delivery whenever something is due."""

    def __init__(self, app: App, *, on_cycle: Callable[[CycleReport], None] | None = None) -> None:
        self.app = app
        self.on_cycle = on_cycle
        self._cycle_lock = asyncio.Lock()  # a cycle and a reload's swap never overlap
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()  # set while no scheduled cycle runs
        self._idle.set()
        self._cycles = 0
        self._tasks: set[asyncio.Task[bool]] = set()

    # --- the work ---------------------------------------------------------------------

    async def run_cycle(self) -> CycleReport | None:
        """One cycle; errors are logged, never fatal: the next cycle tries again."""
        async with self._cycle_lock:
            if self._stop.is_set():
                return None
            try:
                report = await self.app.cycle(in_thread=True)
            except NotifierError as exc:
                log.error("cycle failed: %s", exc)
                return None
            except Exception:
                log.exception("cycle failed unexpectedly")
                return None
        self._wake.set()
        await asyncio.to_thread(self._housekeeping, report.at - PURGE_AFTER)
        if self.on_cycle is not None:
            self.on_cycle(report)
        return report

    def _housekeeping(self, before: datetime) -> None:
        """Forget delivered notifications and ended silences older than ``before``, and orphaned acks."""
        try:
            self.app.store.outbox.purge_delivered(before)
            self.app.store.silences.purge(before)
        except NotifierError as exc:  # the next cycle tries again
            log.warning("housekeeping failed: %s", exc)

    async def deliver_forever(self) -> None:
        """Drain the outbox after every cycle and whenever a retry falls due."""
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.app.deliver)
            except Exception:
                log.exception("delivery round failed")
            due = self.app.deliverer.next_due()
            timeout = None if due is None else max(0.05, (due - self.app.clock()).total_seconds())
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                pass

    async def reload(self) -> bool:
        """SIGHUP: swap in new config/rules/templates/channels only if all of them are valid."""
        try:
            wiring = await asyncio.to_thread(self.app.load)
        except NotifierError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return False
        async with self._cycle_lock:  # never swap under a running cycle
            old = self.app.adopt(wiring)
        self._wake.set()
        await self.app.retire(old)
        log.info("configuration reloaded rules=%d channels=%d", len(wiring.runtime.rules), len(wiring.channels))
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # --- running ----------------------------------------------------------------------

    async def serve(self, *, max_cycles: int | None = None, duration: float | None = None) -> None:
        """Run until SIGTERM/SIGINT (or ``duration`` seconds / ``max_cycles`` cycles, for the demo)."""
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        scheduler = self._start_scheduler(loop, max_cycles)
        delivery = loop.create_task(self.deliver_forever())
        config = self.app.runtime.config
        log.info("notifier running interval=%ss jobs=%s rules=%d channels=%d", config.interval,
                 "discover" if config.jobs.discover else len(config.jobs.names),
                 len(self.app.runtime.rules), len(self.app.wiring.channels))
        try:
            await self._until_stopped(duration)
        finally:
            await self._shutdown(scheduler, delivery)
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_on, sig)
        loop.add_signal_handler(signal.SIGHUP, self._start_reload)

    def _stop_on(self, sig: signal.Signals) -> None:
        log.info("%s received: finishing the running cycle, then a last delivery round", sig.name)
        self.stop()

    def _start_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_scheduler(self, loop: asyncio.AbstractEventLoop, max_cycles: int | None) -> AsyncIOScheduler:
        async def tick() -> None:
            self._idle.clear()
            try:
                await self.run_cycle()
                self._cycles += 1
                if max_cycles is not None and self._cycles >= max_cycles:
                    self.stop()
            finally:
                self._idle.set()  # nothing awaits after this: shutdown never cancels a cycle

        interval = self.app.runtime.config.interval
        scheduler = AsyncIOScheduler(event_loop=loop, timezone="UTC")
        scheduler.add_job(tick, IntervalTrigger(seconds=interval, timezone="UTC"), id="cycle",
                          next_run_time=self.app.clock(), max_instances=1, coalesce=True,
                          misfire_grace_time=max(1, int(interval)))
        scheduler.start()
        return scheduler

    async def _until_stopped(self, duration: float | None) -> None:
        if duration is None:
            await self._stop.wait()
            return
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=duration)
        except TimeoutError:
            self.stop()

    async def _shutdown(self, scheduler: AsyncIOScheduler, delivery: asyncio.Task[None]) -> None:
        """Let a running cycle finish, stop delivery, then give the outbox one bounded last round."""
        scheduler.pause()  # no new cycles; a running one finishes (shutdown would cancel it)
        await self._idle.wait()
        scheduler.shutdown(wait=False)
        for task in (delivery, *self._tasks):  # a reload still running is dropped; the process is exiting
            task.cancel()
        for task in (delivery, *self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._drain(DRAIN_ON_EXIT_SECONDS)

    async def _drain(self, budget: float) -> None:
        """Give due notifications one last chance; what is left stays queued for the next start."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self.app.deliver), timeout=budget)
        except TimeoutError:
            log.warning("outbox not drained within %ss; the rest is delivered after restart", budget)
        except Exception:
            log.exception("final delivery round failed")
