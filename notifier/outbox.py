"""The durable outbox: every notification is a row before it is a message.

A cycle renders its notifications and ``enqueue``s them inside the same transaction as
the state changes that caused them (``StateStore.commit_cycle``), so a crash keeps both
or neither. ``delivery.Deliverer`` then drains the rows per channel, in id order, and
marks each one at once: delivered (the dedup point), retry later, failed or expired.
Payloads are stored as compact JSON text, exactly as they will be sent, and never
logged.

A notification that states a whole picture (an Alertmanager channel's sync) may
*supersede* the rows still pending for its channel: they turn ``superseded`` and the new
row takes their place, its payload merged with theirs by the channel's own function (so
what only they said, a resolve, is carried forward). A channel that was down then gets
one row, the latest state, not a replay; ``waiting_since`` keeps when the oldest replaced
row was queued, so the channel still counts as stuck (``failing_channels``) while it
stays down, and ``created_at`` is the new row's own, so the latest state never expires
while cycles keep producing it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from notifier.core.models import Notification, Payload, ThreadRef
from notifier.statefile import StateFile, from_ms, opt_dt, to_ms
from notifier.threads import record_thread

OutboxStatus = Literal["pending", "delivered", "failed", "expired", "superseded"]
OUTBOX_STATUSES: tuple[OutboxStatus, ...] = ("pending", "delivered", "failed", "expired", "superseded")

Supersede = Callable[[Payload, Sequence[Payload]], Payload]
"""Merges a new payload with those of the rows it supersedes (oldest first) into the one to queue."""

MAX_ERROR_CHARS = 2000
"""Channel errors are kept for ``notifier alerts``; a runaway message must not bloat the file."""

_FAR_FUTURE_MS = 2**62
_NOTIFICATION_COLUMNS = "id, channel, grp, payload, created_at, attempts, next_attempt_at, last_error"
_OUTBOX_ROW_COLUMNS = ("id, channel, grp, status, created_at, attempts, next_attempt_at, last_error, "
                       "delivered_at")


@dataclass(frozen=True, slots=True)
class NewNotification:
    """A rendered message to queue for one channel in the same transaction as its cause."""

    channel: str
    group: str
    payload: Payload
    supersede: Supersede | None = None
    """Set: the channel's pending rows are superseded by this one, their payloads merged into it."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row without its payload, for ``notifier alerts`` and tests."""

    id: int
    channel: str
    group: str
    status: OutboxStatus
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None


def enqueue(conn: sqlite3.Connection, notifications: Iterable[NewNotification], at: datetime) -> tuple[int, ...]:
    """Insert rows inside the caller's transaction, one by one to learn their ids (a cycle queues a handful)."""
    at_ms = to_ms(at)
    ids: list[int] = []
    for n in notifications:
        if n.supersede is not None:
            ids.append(_supersede(conn, n, n.supersede, at_ms))
            continue
        cur = conn.execute(
            "INSERT INTO outbox (channel, grp, payload, created_at, attempts, next_attempt_at, status) "
            "VALUES (?, ?, ?, ?, 0, ?, 'pending')",
            (n.channel, n.group, _payload_json(n.payload), at_ms, at_ms))
        ids.append(cast(int, cur.lastrowid))
    return tuple(ids)


def _supersede(conn: sqlite3.Connection, n: NewNotification, merge: Supersede, at_ms: int) -> int:
    """Queue ``n`` in place of its channel's pending rows: merged payload, their wait and attempts kept.

    The rows it replaces and the channel's last delivered one drop their payloads: the new row states
    everything they said (each sync clears the one before it, so this is two index lookups, not a scan).
    """
    old = conn.execute(
        "SELECT id, payload, COALESCE(waiting_since, created_at), attempts, last_error FROM outbox "
        "WHERE status = 'pending' AND channel = ? ORDER BY id", (n.channel,)).fetchall()
    payload = merge(n.payload, [json.loads(row[1]) for row in old]) if old else n.payload
    waiting = min((row[2] for row in old), default=None)
    attempts = max((row[3] for row in old), default=0)
    last_error = next((row[4] for row in reversed(old) if row[4]), None)
    cur = conn.execute(
        "INSERT INTO outbox (channel, grp, payload, created_at, attempts, next_attempt_at, status, last_error, "
        "waiting_since) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        (n.channel, n.group, _payload_json(payload), at_ms, attempts, at_ms, last_error, waiting))
    new_id = cast(int, cur.lastrowid)
    # the rows this one replaces and the last one sent need their payloads no more (the new row says
    # everything): kept as status lines, so a sync a minute of many alerts does not grow the file for 7 days
    conn.execute("UPDATE outbox SET payload = '{}' WHERE id = "
                 "(SELECT MAX(id) FROM outbox WHERE status = 'delivered' AND channel = ?)", (n.channel,))
    if old:
        conn.executemany(
            "UPDATE outbox SET status = 'superseded', finished_at = ?, next_attempt_at = NULL, payload = '{}', "
            "last_error = ? WHERE id = ? AND status = 'pending'",
            ((at_ms, f"superseded by #{new_id}", row[0]) for row in old))
    return new_id


class Outbox:
    """Queries and marks over the outbox table of one state file (the store's own connection)."""

    def __init__(self, file: StateFile) -> None:
        self._file = file
        self._instance: str | None = None

    @property
    def instance(self) -> str:
        """This state file's random id (schema v4), the first half of every notification key."""
        if self._instance is None:
            def read(conn: sqlite3.Connection) -> str:
                row = conn.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()
                return str(row[0]) if row else "0"
            self._instance = self._file.read("read the state file id", read)
        return self._instance

    def pending(self, channel: str, now: datetime, limit: int = 100) -> tuple[Notification, ...]:
        """The channel's pending notifications in id order, up to the first one not yet due.

        A row waiting for its retry time holds back every later row of its channel:
        that is what keeps a channel's messages in order.
        """
        return self._pending(channel, to_ms(now), limit)

    def pending_all(self, channel: str, limit: int = 100) -> tuple[Notification, ...]:
        """The channel's pending notifications in id order, due or not (e.g. to fail a removed channel)."""
        return self._pending(channel, _FAR_FUTURE_MS, limit)

    def _pending(self, channel: str, now_ms: int, limit: int) -> tuple[Notification, ...]:
        instance = self.instance

        def read(conn: sqlite3.Connection) -> tuple[Notification, ...]:
            rows = conn.execute(
                f"SELECT {_NOTIFICATION_COLUMNS} FROM outbox WHERE status = 'pending' AND channel = ? "
                "ORDER BY id LIMIT ?", (channel, limit))
            out: list[Notification] = []
            for id_, chan, grp, payload, created, attempts, next_at, last_error in rows:
                if next_at is not None and next_at > now_ms:
                    break
                out.append(Notification(id=id_, channel=chan, group=grp, payload=json.loads(payload),
                                        created_at=from_ms(created), attempts=attempts,
                                        next_attempt_at=opt_dt(next_at), last_error=last_error,
                                        key=f"{instance}-{id_}"))
            return tuple(out)
        return self._file.read("read the outbox", read)

    def pending_channels(self) -> tuple[str, ...]:
        """Channels with at least one pending notification, due or not, sorted by name."""
        def read(conn: sqlite3.Connection) -> tuple[str, ...]:
            rows = conn.execute("SELECT DISTINCT channel FROM outbox WHERE status = 'pending' ORDER BY channel")
            return tuple(row[0] for row in rows)
        return self._file.read("read the outbox", read)

    def next_attempt_at(self) -> datetime | None:
        """The earliest time some channel's next pending row becomes due (None: the outbox is drained).

        Only each channel's first pending row counts: the rows behind it wait for it.
        """
        def read(conn: sqlite3.Connection) -> datetime | None:
            row = conn.execute(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE id IN "
                "(SELECT MIN(id) FROM outbox WHERE status = 'pending' GROUP BY channel)").fetchone()
            return opt_dt(row[0])
        return self._file.read("read the outbox", read)

    def mark_delivered(self, id: int, at: datetime, thread: tuple[str, ThreadRef] | None = None) -> None:
        """Record a successful send, committed at once: the dedup point of at-least-once delivery.

        ``thread``: the message became the parent of this thread; recorded in the same transaction.
        """
        at_ms = to_ms(at)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = ?, "
                "finished_at = ?, next_attempt_at = NULL, last_error = NULL WHERE id = ? AND status = 'pending'",
                (at_ms, at_ms, id))
            if thread is not None:
                record_thread(conn, thread[0], thread[1], at)
        self._file.write("mark delivered", write)

    def mark_retry(self, id: int, error: str, next_attempt_at: datetime) -> None:
        """Count a failed attempt and hold the row (and its channel's later rows) until ``next_attempt_at``."""
        next_ms = to_ms(next_attempt_at)
        self._file.write("mark retry", lambda conn: conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
            "WHERE id = ? AND status = 'pending'", (_clip(error), next_ms, id)))

    def mark_failed(self, id: int, error: str, at: datetime, status: str = "failed", *,
                    attempted: bool = False) -> None:
        """Give up on a row for good: ``failed`` (permanent error) or ``expired`` (too old to send).

        ``attempted`` counts the send that failed permanently; an expired or orphaned
        row was not sent, so its attempt count stays as it was.
        """
        if status not in ("failed", "expired"):
            raise ValueError(f"mark_failed status must be 'failed' or 'expired', got {status!r}")
        at_ms = to_ms(at)
        self._file.write("mark failed", lambda conn: conn.execute(
            "UPDATE outbox SET status = ?, attempts = attempts + ?, last_error = ?, finished_at = ?, "
            "next_attempt_at = NULL WHERE id = ? AND status = 'pending'",
            (status, 1 if attempted else 0, _clip(error), at_ms, id)))

    def rows(self, statuses: Collection[str] = ("pending", "failed"), limit: int = 1000) -> tuple[OutboxRow, ...]:
        """The most recent ``limit`` rows with these statuses, in id order (payloads left out)."""
        wanted = tuple(statuses)
        unknown = set(wanted) - set(OUTBOX_STATUSES)
        if unknown:
            raise ValueError(f"unknown outbox status {sorted(unknown)}; known: {', '.join(OUTBOX_STATUSES)}")
        if not wanted:
            return ()
        marks = ", ".join("?" * len(wanted))

        def read(conn: sqlite3.Connection) -> tuple[OutboxRow, ...]:
            rows = conn.execute(
                f"SELECT {_OUTBOX_ROW_COLUMNS} FROM outbox WHERE status IN ({marks}) ORDER BY id DESC LIMIT ?",
                (*wanted, limit)).fetchall()
            return tuple(
                OutboxRow(id=id_, channel=chan, group=grp, status=status, created_at=from_ms(created),
                          attempts=attempts, next_attempt_at=opt_dt(next_at), last_error=last_error,
                          delivered_at=opt_dt(delivered))
                for id_, chan, grp, status, created, attempts, next_at, last_error, delivered in reversed(rows))
        return self._file.read("read the outbox", read)

    def failing_channels(self, now: datetime, stuck_after: float) -> dict[str, tuple[str, datetime]]:
        """Channels that look broken, with why and since when: the last row failed, or a row waits too long.

        A channel recovers as soon as its latest finished row is delivered and nothing has
        waited longer than ``stuck_after`` seconds. A superseding row has waited since the
        oldest row it replaced was queued; a superseded row is not an outcome of the channel's.
        """
        cutoff = to_ms(now) - int(stuck_after * 1000)

        def read(conn: sqlite3.Connection) -> dict[str, tuple[str, datetime]]:
            out: dict[str, tuple[str, datetime]] = {}
            for channel, created, attempts, error in conn.execute(
                    "SELECT channel, MIN(COALESCE(waiting_since, created_at)) AS waiting, attempts, last_error "
                    "FROM outbox WHERE status = 'pending' GROUP BY channel HAVING waiting < ?", (cutoff,)):
                waited = (to_ms(now) - created) // 1000
                out[channel] = (f"a notification has waited {waited // 60} min ({attempts} attempts; "
                                f"last error: {error or 'none'})", from_ms(created))
            for channel, status, error, finished in conn.execute(
                    "SELECT channel, status, last_error, finished_at FROM outbox o WHERE status NOT IN "
                    "('pending', 'superseded') AND id = (SELECT MAX(id) FROM outbox WHERE channel = o.channel "
                    "AND status NOT IN ('pending', 'superseded'))"):
                if status in ("failed", "expired") and channel not in out:
                    out[channel] = (f"the last notification {'failed permanently' if status == 'failed' else status}: "
                                    f"{error or 'no error recorded'}", from_ms(finished))
            return out
        return self._file.read("read the outbox", read)

    def purge_delivered(self, older_than: datetime) -> int:
        """Delete rows that left 'pending' (any outcome, superseded too) before ``older_than``; return how many.

        Housekeeping so the file does not grow forever; pending rows are never purged.
        """
        cutoff = to_ms(older_than)
        return self._file.write("purge the outbox", lambda conn: conn.execute(
            "DELETE FROM outbox WHERE status != 'pending' AND finished_at < ?", (cutoff,)).rowcount)

    def queued(self) -> dict[str, tuple[int, datetime]]:
        """Pending rows per channel, due or not: channel -> (how many, when the oldest was queued). For metrics."""
        def read(conn: sqlite3.Connection) -> dict[str, tuple[int, datetime]]:
            rows = conn.execute("SELECT channel, COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending' "
                                "GROUP BY channel ORDER BY channel")
            return {channel: (count, from_ms(created)) for channel, count, created in rows}
        return self._file.read("read the outbox", read)


def _payload_json(payload: Payload) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _clip(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"
