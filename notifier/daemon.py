"""The long-running service: APScheduler polls, a delivery task drains the outbox.

Everything runs on one asyncio loop around one ``App``. APScheduler's
AsyncIOScheduler calls ``Daemon.run_cycle`` at the configured interval, one at a time
(``max_instances=1``), coalescing missed runs; a cycle ends at the interval with the
sources done so far, and a source still polling goes on alone (``App.cycle_until``), so a
slow source never delays the others. The synchronous half of a cycle (plan,
render, SQLite commit) and outbox delivery run in worker threads so that neither
blocks the other.

SIGTERM/SIGINT: the running cycle finishes, the outbox gets one last chance to drain
(bounded), then the process exits. SIGHUP: reload config, rules, templates and
channels; if anything is invalid, keep running with the old ones.

Under systemd (``Type=notify``) it says READY=1 once the App is open (config, rules,
templates and state file loaded and checked), STATUS= after every cycle, RELOADING=1 /
READY=1 around a reload, STOPPING=1 on shutdown, and WATCHDOG=1 at half of
``$WATCHDOG_USEC`` from a task of the event loop, but not once the running cycle has
made no progress (no API request ending) for longer than ``[schedule] stall_timeout``
(default max(3 intervals, 10 min)): a hung cycle or reload stops the pings, and systemd
restarts the process. SIGTERM abandons a running fetch (nothing of it is committed).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from notifier.app import App, CycleReport
from notifier.config import Config
from notifier.errors import NotifierError
from notifier.logs import event
from notifier.metrics import Metrics, MetricsServer, outbox_gauges, severities
from notifier.metrics import serve as serve_metrics
from notifier.sdnotify import Notifier
from notifier.slack_actions import listeners_for
from notifier.watch import Signature, describe_change, settled, signature, watched_files

log = logging.getLogger(__name__)

DRAIN_ON_EXIT_SECONDS = 10.0
PURGE_AFTER = timedelta(days=7)  # finished outbox rows and ended silences are kept this long for `alerts`
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Daemon:
    """Runs one ``App`` until told to stop: cycles on a schedule, delivery whenever something is due."""

    def __init__(self, app: App, *, on_cycle: Callable[[CycleReport], None] | None = None,
                 systemd: Notifier | None = None, monotonic: Callable[[], float] = time.monotonic,
                 metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics if metrics is not None else Metrics()
        self.on_cycle = on_cycle
        self.systemd = systemd if systemd is not None else Notifier()
        self._monotonic = monotonic
        self._busy_since: float | None = None  # monotonic start of the running tick (edits + cycle)
        self._reload_lock = asyncio.Lock()  # SIGHUP and edited files never reload at the same time
        self._applied: Signature = ()  # the watched files as last applied ...
        self._rejected: Signature = ()  # ... and as last rejected (reported once)
        self._cycle_lock = asyncio.Lock()  # a cycle and a reload's swap never overlap
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()  # set while no scheduled cycle runs
        self._idle.set()
        self._cycles = 0
        self._tasks: set[asyncio.Task[bool]] = set()
        self._retiring: set[asyncio.Task[None]] = set()  # replaced wirings closing once delivery lets go

    # --- the work ---------------------------------------------------------------------

    async def run_cycle(self) -> CycleReport | None:
        """One cycle; errors are logged, never fatal: the next cycle tries again.

        A stop request abandons the running round's fetch (nothing of it is written) so a
        long sweep does not hold up a shutdown; a round's commit always finishes. Delivery
        is woken after every round: the urgent round's alerts do not wait for the sweep.
        """
        async with self._cycle_lock:
            if self._stop.is_set():
                return None
            started = self._monotonic()
            enough = asyncio.Event()  # at the interval, a source still polling goes on alone
            deadline = asyncio.get_running_loop().call_later(self.app.runtime.config.interval, enough.set)
            try:
                report = await self.app.cycle_until(self._stop, in_thread=True, on_round=lambda _: self._wake.set(),
                                                    enough=enough)
                if report is None:
                    return None
            except NotifierError as exc:
                event(log, logging.ERROR, "cycle failed", error=str(exc))
                self._report_status(None, str(exc))
                self.metrics.cycle_failed(str(exc))
                return None
            except Exception as exc:
                log.exception("cycle failed unexpectedly")
                self._report_status(None, f"{type(exc).__name__}: {exc}")
                self.metrics.cycle_failed(f"{type(exc).__name__}: {exc}")
                return None
            finally:
                deadline.cancel()
            poller, runtime = self.app.poller, self.app.runtime
            await asyncio.to_thread(self.metrics.observe_cycle, report, self._monotonic() - started, poller.alerts,
                                    poller.entities, severities(runtime.all_rules), runtime.config.sources)
        self._report_status(report, None)
        self._wake.set()
        await asyncio.to_thread(self._housekeeping, report.at - PURGE_AFTER)
        if self.on_cycle is not None:
            self.on_cycle(report)
        return report

    def _report_status(self, report: CycleReport | None, error: str | None) -> None:
        """STATUS= for ``systemctl status``: the last cycle in one line, and the last error if any."""
        if report is not None:
            error = report.failure
        head = "last cycle failed" if report is None else (
            f"{report.jobs} jobs polled, {report.firing} alerts firing, last cycle "
            f"{report.at.strftime('%H:%M:%S UTC')}" + (" (source failing)" if report.source_failed else ""))
        self.systemd.status(head + (f"; last error: {error}" if error else ""))

    def stall_bound(self) -> float:
        """Seconds a tick may go without progress before the watchdog stops vouching for the process."""
        config = self.app.runtime.config
        return config.stall_timeout or max(3 * config.interval, 600.0)

    def stalled_for(self) -> float:
        """How long the running tick (edits, cycle), or a source's cycle, has made no progress; 0 when idle.

        Progress is an API request ending (answer, error or timeout): a sweep of 10,000 jobs
        at 20 requests/s runs 500 s and is never "stalled"; a fetch no request of which ever
        ends, or a reload stuck loading, is. A source's cycle that outlives its own (it goes
        on alone past the interval) is judged by its own requests only.
        """
        now = self._monotonic()
        stalled = [now - progress for progress in self.app.late_progress().values()]  # each source's own
        busy = self._busy_since
        if busy is not None:  # a tick (edits, a reload, a cycle): any source's answer is progress
            answered = max(c.stats.last_answer for c in self.app.wiring.clients.values())
            stalled.append(now - max(busy, answered))
        return max(stalled, default=0.0)

    async def watchdog(self, period: float) -> None:
        """WATCHDOG=1 every ``period`` while the loop runs and no tick is stalled past its bound."""
        warned = False
        while not self._stop.is_set():
            stalled = self.stalled_for()
            if stalled <= self.stall_bound():
                self.systemd.send(watchdog="1")
                warned = False
            elif not warned:
                log.error("the running cycle has made no progress for %.0fs, past its bound of %.0fs: not "
                          "pinging the watchdog, systemd will restart the service", stalled, self.stall_bound())
                warned = True
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=period)
            except TimeoutError:
                pass

    def _housekeeping(self, before: datetime) -> None:
        """Forget delivered notifications and ended silences older than ``before``."""
        try:
            self.app.store.outbox.purge_delivered(before)
            self.app.store.silences.purge(before)
            self.app.store.threads.purge(before)
        except NotifierError as exc:  # the next cycle tries again
            log.warning("housekeeping failed: %s", exc)

    async def deliver_forever(self) -> None:
        """Drain the outbox after every cycle and whenever a retry falls due."""
        while not self._stop.is_set():
            due = None
            try:
                await asyncio.to_thread(self._deliver_round)
                due = self.app.deliverer.next_due()
            except Exception:
                log.exception("delivery round failed")
                due = self.app.clock() + timedelta(seconds=5)  # the state file may be busy: try again soon
            timeout = None if due is None else max(0.05, (due - self.app.clock()).total_seconds())
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                pass

    def _deliver_round(self) -> None:
        """One delivery round and the outbox gauges after it (in a worker thread: both touch SQLite)."""
        self.metrics.observe_delivery(self.app.deliver())
        self.metrics.observe_outbox(*outbox_gauges(self.app.store.outbox, self.app.clock(), self.app.wiring.channels))

    async def reload(self, reason: str = "SIGHUP", *, before: Signature | None = None) -> bool:
        """Swap in new config/rules/templates/channels only if all of them are valid (SIGHUP, or edited files).

        ``before`` is the watched files' signature taken before loading (computed here when
        not given), so an edit saved while loading is seen at the next cycle.
        """
        async with self._reload_lock:
            return await self._reload(reason, before)

    async def _reload(self, reason: str, before: Signature | None) -> bool:
        self.systemd.send(reloading="1", monotonic_usec=str(time.monotonic_ns() // 1000))
        config = self.app.runtime.config
        if before is None:
            before = await asyncio.to_thread(_signature_of, config)
        try:
            wiring = await asyncio.to_thread(self.app.load)
        except Exception as exc:  # NotifierError, or a bug: either way the running version stays
            event(log, logging.ERROR, "reload failed, keeping the running configuration", reason=reason,
                  error=str(exc) if isinstance(exc, NotifierError) else f"{type(exc).__name__}: {exc}")
            self.systemd.send(ready="1")
            self._rejected = before
            return False
        async with self._cycle_lock:  # never swap under a running cycle
            old = self.app.adopt(wiring)
        self._wake.set()
        self.systemd.send(ready="1")
        same_paths = (wiring.config.rules_dir, wiring.config.templates_dir) == (config.rules_dir, config.templates_dir)
        self._applied = before if same_paths else await asyncio.to_thread(_signature_of, wiring.config)
        retire = asyncio.get_running_loop().create_task(self.app.retire(old))  # waits for a delivery round
        self._retiring.add(retire)
        retire.add_done_callback(self._retiring.discard)
        event(log, logging.INFO, "configuration reloaded", reason=reason, rules=len(wiring.runtime.rules),
              channels=len(wiring.channels), change=describe_change(old.runtime.rules, wiring.runtime.rules))
        return True

    async def apply_edits(self) -> bool | None:
        """``[paths] watch``: reload when the watched files changed and settled; None when there was nothing to do.

        A rejected version is reported once: the same files are not tried again until they change.
        """
        config = self.app.runtime.config
        if not config.watch:
            return None
        sig = await asyncio.to_thread(_signature_of, config)
        if sig in (self._applied, self._rejected) or not settled(sig):
            return None
        return await self.reload(reason="files changed", before=sig)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # --- running ----------------------------------------------------------------------

    async def serve(self, *, max_cycles: int | None = None, duration: float | None = None) -> None:
        """Run until SIGTERM/SIGINT (or ``duration`` seconds / ``max_cycles`` cycles, for the demo)."""
        loop = asyncio.get_running_loop()
        config = self.app.runtime.config
        self._applied = await asyncio.to_thread(_signature_of, config)
        endpoint = self._start_metrics()
        buttons = [b.start() for b in listeners_for(self.app.wiring.channels, self.app.store, self.app.clock,
                                                     lambda: self.app.wiring.channels)]
        self.app.poller.watch_buttons(buttons)
        self._install_signals(loop)
        scheduler = self._start_scheduler(loop, max_cycles)
        delivery = loop.create_task(self.deliver_forever())
        background = [delivery]
        if self.systemd.watchdog_interval is not None:
            background.append(loop.create_task(self.watchdog(self.systemd.watchdog_interval)))
        self.systemd.send(ready="1", status="started; first cycle running")
        jobs: dict[str, str | int] = {name: "discover" if s.jobs.discover else len(s.jobs.names)
                                      for name, s in config.sources.items()}
        event(log, logging.INFO, "notifier running", interval=f"{config.interval:g}s",
              jobs=next(iter(jobs.values())) if len(jobs) == 1 else None,
              sources=",".join(f"{name}:{n}" for name, n in jobs.items()) if len(jobs) > 1 else None,
              rules=len(self.app.runtime.rules), channels=len(self.app.wiring.channels))
        try:
            await self._until_stopped(duration)
        finally:
            self.systemd.send(stopping="1", status="stopping: finishing the running cycle")
            await self._shutdown(scheduler, background)
            self.systemd.close()
            if endpoint is not None:
                endpoint.close()
            for listener in buttons:
                await asyncio.to_thread(listener.close)
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)

    def _start_metrics(self) -> MetricsServer | None:
        """``[metrics] listen``: /metrics and /healthz; a port in use is a clear error, not a traceback."""
        config = self.app.runtime.config
        if not config.metrics.listen:
            return None
        try:
            return serve_metrics(config.metrics.listen, self.metrics, config.interval, self.app.clock)
        except OSError as exc:
            raise NotifierError(f"{config.path}: metrics: listen: cannot listen on {config.metrics.listen}: "
                                f"{exc.strerror or exc}") from exc

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_on, sig)
        loop.add_signal_handler(signal.SIGHUP, self._start_reload)

    def _stop_on(self, sig: signal.Signals) -> None:
        event(log, logging.INFO, f"{sig.name} received: finishing the running cycle, then a last delivery round",
              signal=sig.name)
        self.stop()

    def _start_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_scheduler(self, loop: asyncio.AbstractEventLoop, max_cycles: int | None) -> AsyncIOScheduler:
        scheduler_log = logging.getLogger("apscheduler.scheduler")
        if _SKIPPED_TICK not in scheduler_log.filters:
            scheduler_log.addFilter(_SKIPPED_TICK)
        async def tick() -> None:
            self._idle.clear()
            self._busy_since = self._monotonic()
            try:
                while True:
                    began = self._monotonic()
                    await self.apply_edits()
                    await self.run_cycle()
                    self._cycles += 1
                    if max_cycles is not None and self._cycles >= max_cycles:
                        self.stop()
                    took, interval = self._monotonic() - began, self.app.runtime.config.interval
                    if self._stop.is_set() or took < interval:
                        break
                    # the scheduler skipped the tick this cycle overran: start it now, not a whole interval late
                    if not self.app.late_progress():  # else it ended at the interval, a source going on alone
                        event(log, logging.INFO, "cycle overran its interval, the next starts at once",
                              took_s=round(took, 1), interval_s=interval)
            finally:
                self._busy_since = None
                self._idle.set()  # nothing awaits after this: shutdown never cancels a commit

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

    async def _shutdown(self, scheduler: AsyncIOScheduler, background: list[asyncio.Task[None]]) -> None:
        """Let a running cycle finish, stop delivery and the watchdog, then give the outbox one bounded last round."""
        scheduler.pause()  # no new cycles; a running one finishes (shutdown would cancel it)
        await self._idle.wait()
        await self.app.settle()  # and a source's cycle that outlived its own: its fetch is abandoned too
        scheduler.shutdown(wait=False)
        for task in (*background, *self._tasks):  # a reload still running is dropped; the process is exiting
            task.cancel()
        for task in (*background, *self._tasks, *self._retiring):
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


class _SkippedTickFilter(logging.Filter):
    """Drops APScheduler's warning that a tick was skipped while a cycle ran: ``tick`` runs that cycle itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in record.getMessage()


_SKIPPED_TICK = _SkippedTickFilter()


def _signature_of(config: Config) -> Signature:
    return signature(watched_files(config))
