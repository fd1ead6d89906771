"""Incidents and their threads in the state file.

The cycle opens and closes incidents in its own commit (``CycleWrite.open_incidents``
and ``close_incidents``); the deliverer records where an incident's first message went
(``Outbox.mark_delivered(..., thread=...)``) in the same transaction that marks it
delivered, so a restart, ``kill -9`` included, never loses a parent that Slack has.
Thread rows outlive their incident: a reply queued before the close still finds it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime

from notifier.core.incidents import Incident, IncidentKey
from notifier.core.models import ThreadRef
from notifier.statefile import StateFile, from_ms, to_ms


class Threads:
    """The incident and thread tables of one state file."""

    def __init__(self, file: StateFile) -> None:
        self._file = file

    def open_incidents(self) -> dict[IncidentKey, Incident]:
        def read(conn: sqlite3.Connection) -> dict[IncidentKey, Incident]:
            rows = conn.execute("SELECT channel, route, job, id, opened_at FROM incident")
            return {(c, r, j): Incident(id=i, channel=c, route=r, job=j, opened_at=from_ms(at))
                    for c, r, j, i, at in rows}
        return self._file.read("read incidents", read)

    def ref(self, thread_id: str) -> ThreadRef | None:
        """Where the thread's parent is, or None (not delivered yet, deleted, or from another state file)."""
        def read(conn: sqlite3.Connection) -> ThreadRef | None:
            row = conn.execute("SELECT place, ts FROM thread WHERE id = ?", (thread_id,)).fetchone()
            return None if row is None else ThreadRef(place=row[0], ts=row[1])
        return self._file.read("read a thread", read)

    def purge(self, before: datetime) -> int:
        """Housekeeping: forget threads recorded before ``before`` whose incident is closed."""
        return self._file.write("purge threads", lambda conn: conn.execute(
            "DELETE FROM thread WHERE at < ? AND id NOT IN (SELECT id FROM incident)", (to_ms(before),)).rowcount)


def record_thread(conn: sqlite3.Connection, thread_id: str, ref: ThreadRef, at: datetime) -> None:
    """Inside the caller's transaction: the thread's parent is now ``ref`` (a fallback post replaces a lost one)."""
    conn.execute("INSERT INTO thread (id, place, ts, at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
                 "SET place = excluded.place, ts = excluded.ts, at = excluded.at", (thread_id, ref.place, ref.ts,
                                                                                    to_ms(at)))


def write_incidents(conn: sqlite3.Connection, opened: Iterable[Incident], closed: Iterable[Incident]) -> None:
    """Inside the cycle's transaction."""
    conn.executemany("DELETE FROM incident WHERE id = ?", ((i.id,) for i in closed))
    conn.executemany("INSERT INTO incident (channel, route, job, id, opened_at) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT (channel, route, job) DO UPDATE SET id = excluded.id, opened_at = excluded.opened_at",
                     ((i.channel, i.route, i.job, i.id, to_ms(i.opened_at)) for i in opened))
