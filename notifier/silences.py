"""Silences and acknowledgements in the state file, written by CLI commands while the service runs.

``notifier silence add|expire`` and ``notifier ack`` do not take the process lock (the
service holds it): they write through their own SQLite connection, which waits for
the service's transaction under the busy timeout. The service reads both tables at
the start of every cycle, so a change takes effect within one cycle.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notifier.core.mutes import Matchers, Silence
from notifier.statefile import StateFile, from_ms, to_ms

_SILENCE_COLUMNS = "id, rule, job, node, starts_at, ends_at, created_at, author, comment"


@dataclass(frozen=True, slots=True)
class Ack:
    """A person acknowledged a firing alert: no more repeats until it resolves."""

    fingerprint: str
    at: datetime
    author: str = ""
    comment: str = ""


def new_silence_id() -> str:
    """A random ID, unique across state files (a receiver may log it next to another instance's)."""
    return secrets.token_hex(8)


class Silences:
    """The silence and ack tables of one state file."""

    def __init__(self, file: StateFile) -> None:
        self._file = file

    def add(self, silence: Silence) -> None:
        m = silence.matchers
        self._file.write("add a silence", lambda conn: conn.execute(
            f"INSERT INTO silence ({_SILENCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (silence.id, m.rule, m.stored_job, m.node, to_ms(silence.starts_at), to_ms(silence.ends_at),
             to_ms(silence.created_at), silence.author, silence.comment)))

    def restore(self, rows: Iterable[tuple[object, ...]]) -> int:
        """Insert silence rows read from another state file (``silence_rows``); ``state reset --keep-silences``."""
        rows = list(rows)
        self._file.write("restore silences", lambda conn: conn.executemany(
            f"INSERT OR IGNORE INTO silence ({_SILENCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows))
        return len(rows)

    def current(self, now: datetime) -> tuple[Silence, ...]:
        """Silences that are active now or will be, by start time."""
        def read(conn: sqlite3.Connection) -> tuple[Silence, ...]:
            rows = conn.execute(f"SELECT {_SILENCE_COLUMNS} FROM silence WHERE ends_at > ? ORDER BY starts_at, id",
                                (to_ms(now),))
            return tuple(_silence(row) for row in rows)
        return self._file.read("read silences", read)

    def find(self, prefix: str, now: datetime) -> tuple[Silence, ...]:
        """Current silences whose ID starts with ``prefix`` (the CLI accepts a unique prefix)."""
        return tuple(s for s in self.current(now) if s.id.startswith(prefix))

    def expire(self, silence_id: str, now: datetime) -> bool:
        """End a silence now; False when it had already ended."""
        now_ms = to_ms(now)
        return bool(self._file.write("expire a silence", lambda conn: conn.execute(
            "UPDATE silence SET ends_at = ? WHERE id = ? AND ends_at > ?", (now_ms, silence_id, now_ms)).rowcount))

    def purge(self, ended_before: datetime) -> int:
        """Housekeeping: forget silences that ended before ``ended_before``.

        Acks need none: one is written only for an alert firing at that moment, and the
        cycle that deletes the alert deletes its ack in the same transaction.
        """
        return self._file.write("purge silences", lambda conn: conn.execute(
            "DELETE FROM silence WHERE ends_at < ?", (to_ms(ended_before),)).rowcount)

    # --- acknowledgements ---------------------------------------------------------------

    def ack(self, acks: Iterable[Ack]) -> int:
        """Acknowledge alerts that are firing at this moment, in one transaction; return how many.

        The check and the write are one statement, so an alert the service resolved in
        between is not acked (its ack would otherwise carry over to the next incident).
        """
        rows = [(to_ms(a.at), a.author, a.comment, a.fingerprint) for a in acks]

        def write(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(
                "INSERT INTO ack (fingerprint, at, author, comment) SELECT fingerprint, ?, ?, ? FROM alert "
                "WHERE fingerprint = ? AND phase = 'firing' ON CONFLICT (fingerprint) DO UPDATE SET "
                "at = excluded.at, author = excluded.author, comment = excluded.comment", row).rowcount
                for row in rows)
        return self._file.write("acknowledge", write)

    def acks(self) -> dict[str, Ack]:
        def read(conn: sqlite3.Connection) -> dict[str, Ack]:
            rows = conn.execute("SELECT fingerprint, at, author, comment FROM ack")
            return {fp: Ack(fp, from_ms(at), author, comment) for fp, at, author, comment in rows}
        return self._file.read("read acknowledgements", read)


def forget_acks(conn: sqlite3.Connection, fingerprints: Collection[str]) -> None:
    """Inside a cycle's transaction: an alert that resolved (or vanished) loses its ack."""
    if fingerprints:
        conn.executemany("DELETE FROM ack WHERE fingerprint = ?", ((fp,) for fp in fingerprints))


def silence_rows(conn: sqlite3.Connection, now_ms: int) -> list[tuple[object, ...]]:
    """The raw rows of the silences that have not ended, from any state file's connection."""
    return [tuple(row) for row in conn.execute(f"SELECT {_SILENCE_COLUMNS} FROM silence WHERE ends_at > ?",
                                               (now_ms,))]


def _silence(row: tuple[Any, ...]) -> Silence:
    id_, rule, job, node, starts, ends, created, author, comment = row
    return Silence(id=id_, matchers=Matchers.stored(rule, job, node), starts_at=from_ms(starts), ends_at=from_ms(ends),
                   created_at=from_ms(created), author=author, comment=comment)
