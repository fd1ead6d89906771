"""Drains the outbox: at-least-once delivery, in order per channel, retried with backoff.

    for each channel with due rows (concurrently, so one outage delays no one else):
        for each pending row in id order:
            too old           -> expired (logged at error), next row
            send ok           -> mark_delivered at once (the dedup point), next row
            permanent error   -> failed (logged at error with the channel's fix), next row
            transient error   -> retry later with backoff; STOP: later rows wait, order is kept

A delivered row is never sent again, also when the state file refuses to record it (the
deliverer remembers it and records it later). The only duplicate possible is the row in
flight when the process dies between the send and ``mark_delivered``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING

from notifier.clock import utcnow
from notifier.config import DeliveryConfig
from notifier.core.durations import format_duration
from notifier.core.models import Clock, Notification, ThreadRef
from notifier.errors import ChannelError, StateError
from notifier.logs import event
from notifier.outbox import Outbox

if TYPE_CHECKING:  # the channels package imports every channel type; delivery only needs the protocol
    from notifier.channels.base import Channel
    from notifier.threads import Threads

log = logging.getLogger(__name__)

BATCH = 100
"""Rows read per query while draining one channel."""

_MAX_EXPONENT = 32  # 2**32 s of backoff is already beyond any sane cap; avoids float overflow


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one ``deliver_due`` did, by outcome."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    expired: int = 0

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(self.delivered + other.delivered, self.retried + other.retried,
                              self.failed + other.failed, self.expired + other.expired)


class _Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retried"
    FAILED = "failed"
    EXPIRED = "expired"


def backoff_delay(attempts: int, policy: DeliveryConfig, rng: random.Random,
                  retry_after: float | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt.

    Exponential from ``policy.backoff``, capped at ``policy.backoff_max``, with "equal
    jitter" (half fixed, half random) so channels recovering together do not stampede;
    never shorter than the channel's own ``retry_after``.
    """
    exponent = min(max(attempts, 1) - 1, _MAX_EXPONENT)
    base = min(policy.backoff_max, policy.backoff * 2.0**exponent)
    delay = base / 2 + rng.uniform(0, base / 2)
    return max(delay, retry_after or 0.0)


class Deliverer:
    """Sends due outbox rows through the configured channels; overlapping ``deliver_due`` calls are serialised."""

    def __init__(self, outbox: Outbox, channels: Mapping[str, Channel], policy: DeliveryConfig,
                 clock: Clock = utcnow, rng: random.Random | None = None, threads: Threads | None = None) -> None:
        self._outbox = outbox
        self._threads = threads
        self._channels = dict(channels)
        self._policy = policy
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._running = threading.Lock()  # two overlapping drains could send one row twice
        # sent, but the state file refused "delivered": never send again (with the thread it opened, if any)
        self._unmarked: dict[int, tuple[str, ThreadRef] | None] = {}

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self._channels

    def use_channels(self, channels: Mapping[str, Channel]) -> None:
        """Reload: the next round uses ``channels``; a running round finishes with the ones it started with."""
        self._channels = dict(channels)

    def wait_idle(self) -> None:
        """Return once no round is running (then channels replaced by ``use_channels`` can be closed)."""
        with self._running:
            pass

    def next_due(self) -> datetime | None:
        """When the next pending row becomes due (None: nothing pending); the service sleeps until then."""
        return self._outbox.next_attempt_at()

    def deliver_due(self) -> DeliveryReport:
        """Send every due row, channels concurrently; return when all channels are done.

        A StateError from the store is raised after every channel has finished.
        """
        with self._running:
            channels = self._channels  # one consistent set for the whole round, even across a reload
            now = self._clock()
            report = DeliveryReport()
            work: dict[str, tuple[Channel, tuple[Notification, ...]]] = {}
            for name in self._outbox.pending_channels():
                if name not in channels:
                    if name not in self._channels:  # else a reload added it during this round: next round
                        report += self._fail_unconfigured(name)
                    continue
                batch = self._outbox.pending(name, now, BATCH)
                if batch:
                    work[name] = (channels[name], batch)
            return report + self._drain_all(work)

    # --- internals ----------------------------------------------------------------

    def _drain_all(self, work: Mapping[str, tuple[Channel, tuple[Notification, ...]]]) -> DeliveryReport:
        if not work:
            return DeliveryReport()
        if len(work) == 1:
            ((name, (channel, batch)),) = work.items()
            return self._drain(name, channel, batch)
        report = DeliveryReport()
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="notifier-deliver") as pool:
            futures = [pool.submit(self._drain, name, channel, batch) for name, (channel, batch) in work.items()]
            for future in futures:
                try:
                    report += future.result()
                except Exception as exc:  # store failures: raise once every channel is done
                    errors.append(exc)
        if errors:
            raise errors[0]
        return report

    def _drain(self, name: str, channel: Channel, batch: tuple[Notification, ...]) -> DeliveryReport:
        """Send one channel's due rows in id order, stopping at the first transient failure."""
        counts = dict.fromkeys(_Outcome, 0)
        while batch:
            for notification in batch:
                outcome = self._deliver_one(channel, notification)
                counts[outcome] += 1
                if outcome is _Outcome.RETRY:
                    return _report(counts)
            if len(batch) < BATCH:
                break
            batch = self._outbox.pending(name, self._clock(), BATCH)
        return _report(counts)

    def _deliver_one(self, channel: Channel, n: Notification) -> _Outcome:
        now = self._clock()
        if n.id in self._unmarked:  # sent in an earlier round; only the mark is missing
            self._outbox.mark_delivered(n.id, now, self._unmarked[n.id])  # StateError again while unwritable
            del self._unmarked[n.id]
            return _Outcome.DELIVERED
        age = now - n.created_at
        if age.total_seconds() > self._policy.expire:
            return self._expire(n, age, now)
        thread = n.thread
        if thread is not None and self._threads is not None:  # a reply: where is its parent?
            n = replace(n, parent=self._threads.ref(thread))
        try:
            opened = channel.send(n)
        except ChannelError as exc:
            if exc.retryable:
                return self._retry(n, str(exc), exc.retry_after)
            error = str(exc)
            event(log, logging.ERROR, "notification failed permanently, not retrying", channel=n.channel, id=n.id,
                  group=n.group, error=error)
            self._outbox.mark_failed(n.id, error, self._clock(), "failed", attempted=True)
            return _Outcome.FAILED
        except Exception as exc:  # a bug or an unwrapped library error: keep the row, retry, show the traceback
            event(log, logging.ERROR, "unexpected error while sending, will retry", channel=n.channel, id=n.id,
                  group=n.group, exc_info=True)
            return self._retry(n, f"{type(exc).__name__}: {exc}", None)
        parent = (thread, opened) if thread is not None and opened is not None else None
        try:
            self._outbox.mark_delivered(n.id, self._clock(), parent)
        except StateError:
            self._unmarked[n.id] = parent  # it went out: a later round records it, never sends it again
            raise
        event(log, logging.INFO, "notification delivered", channel=n.channel, id=n.id, group=n.group,
              attempts=n.attempts + 1)
        return _Outcome.DELIVERED

    def _retry(self, n: Notification, error: str, retry_after: float | None) -> _Outcome:
        attempts = n.attempts + 1
        now = self._clock()
        due = now + timedelta(seconds=backoff_delay(attempts, self._policy, self._rng, retry_after))
        event(log, logging.WARNING, "notification not delivered, will retry", channel=n.channel, id=n.id,
              group=n.group, attempt=attempts, next_attempt_at=due.isoformat(), error=error)
        self._outbox.mark_retry(n.id, error, due)
        return _Outcome.RETRY

    def _expire(self, n: Notification, age: timedelta, now: datetime) -> _Outcome:
        error = (f"expired undelivered after {format_duration(age)} ({n.attempts} attempts; "
                 f"last error: {n.last_error or 'none'})")
        event(log, logging.ERROR, "notification expired, giving up", channel=n.channel, id=n.id, group=n.group,
              attempts=n.attempts, last_error=n.last_error)
        self._outbox.mark_failed(n.id, error, now, "expired")
        return _Outcome.EXPIRED

    def _fail_unconfigured(self, name: str) -> DeliveryReport:
        """Rows queued for a channel that was removed from the config can never be sent: fail them all."""
        now = self._clock()
        error = f"channel {name} is no longer configured"
        failed = 0
        seen: set[int] = set()
        while (batch := self._outbox.pending_all(name, BATCH)) and batch[0].id not in seen:
            for n in batch:
                self._outbox.mark_failed(n.id, error, now, "failed")
                seen.add(n.id)
                failed += 1
        log.error("notifications for a channel that is no longer configured marked failed channel=%s count=%d",
                  name, failed)
        return DeliveryReport(failed=failed)


def _report(counts: Mapping[_Outcome, int]) -> DeliveryReport:
    return DeliveryReport(delivered=counts[_Outcome.DELIVERED], retried=counts[_Outcome.RETRY],
                          failed=counts[_Outcome.FAILED], expired=counts[_Outcome.EXPIRED])
