"""The state file: one SQLite database that survives restarts and ``kill -9``.

It holds what notifier must not forget between polls: the last state of every job and
node (with the time each entered it), the alert lifecycle by fingerprint, a few
key/value facts, and the durable **outbox**. A cycle's state changes and the
notifications they caused are written by ``commit_cycle`` in ONE transaction, so a
crash either keeps both or neither: a notification is never lost and never invented.

Durability choice: WAL with ``synchronous=FULL``. WAL+NORMAL already survives a
process crash (``kill -9``) because a committed transaction is in the WAL file, i.e.
in the OS page cache; FULL adds an fsync per commit, which also survives power loss
and kernel crashes. We commit once per poll cycle plus once per delivered message, so
the fsync costs milliseconds per cycle and buys "a committed notification is never
lost, even by the machine". Nothing here ever deletes or rewrites a file it did not
create: a file that is not a notifier database raises ``StateError`` naming its path.

Datetimes are stored as integer epoch milliseconds (UTC); sub-millisecond precision is
dropped. Payloads are stored as compact JSON text and never logged.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from notifier.errors import StateError
from notifier.models import (
    COUNTER_NAMES,
    NO_COUNTERS,
    AlertState,
    Counters,
    EntityKey,
    EntityState,
    Notification,
    Payload,
    compact_counters,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

OutboxStatus = Literal["pending", "delivered", "failed", "expired"]
OUTBOX_STATUSES: tuple[OutboxStatus, ...] = ("pending", "delivered", "failed", "expired")

BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another process's lock (e.g. ``notifier silence`` vs the service)."""

MAX_ERROR_CHARS = 2000
"""Channel errors are kept for ``notifier alerts``; a runaway message must not bloat the file."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_FAR_FUTURE_MS = 2**62

# --- schema ---------------------------------------------------------------------------

_V1: tuple[str, ...] = (
    """CREATE TABLE entity (
        job TEXT NOT NULL,
        node TEXT NOT NULL,              -- '' for the job itself
        status TEXT NOT NULL,
        since INTEGER NOT NULL,
        previous_status TEXT,
        node_type TEXT NOT NULL DEFAULT '',
        log_path TEXT,
        started_at INTEGER,
        -- the API's four counters (COUNTER_NAMES order), each with when it last changed:
        -- plain columns because reading 100,000 entities at startup must be fast
        get_bytes INTEGER, get_bytes_at INTEGER,
        get_records INTEGER, get_records_at INTEGER,
        put_bytes INTEGER, put_bytes_at INTEGER,
        put_records INTEGER, put_records_at INTEGER,
        counters_extra TEXT,             -- any other counter: JSON {name: [value, changed_at_ms]}, else NULL
        PRIMARY KEY (job, node)
    ) WITHOUT ROWID""",
    """CREATE TABLE alert (
        fingerprint TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        job TEXT NOT NULL,
        node TEXT NOT NULL,
        phase TEXT NOT NULL,
        active_since INTEGER NOT NULL,
        fired_at INTEGER,
        last_notified_at INTEGER,
        state TEXT NOT NULL DEFAULT '',
        node_type TEXT NOT NULL DEFAULT '',
        log_path TEXT
    ) WITHOUT ROWID""",
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: ids are never reused after a purge
        channel TEXT NOT NULL,
        grp TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'failed', 'expired')),
        last_error TEXT,
        delivered_at INTEGER,
        finished_at INTEGER               -- when it left 'pending' (any outcome): for purging
    )""",
    "CREATE INDEX outbox_status_channel_id ON outbox (status, channel, id)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
"""Forward migrations: ``MIGRATIONS[i]`` takes ``user_version`` i to i + 1. Append only."""

SCHEMA_VERSION = len(MIGRATIONS)


# --- data -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NewNotification:
    """A rendered message to queue for one channel in the same transaction as its cause."""

    channel: str
    group: str
    payload: Payload


@dataclass(frozen=True, slots=True)
class CycleWrite:
    """Everything one poll cycle changed; only these rows are touched.

    ``meta`` upserts small key/value facts; a value of None deletes the key.
    """

    at: datetime
    upsert_entities: tuple[EntityState, ...] = ()
    delete_entities: tuple[EntityKey, ...] = ()
    upsert_alerts: tuple[AlertState, ...] = ()
    delete_alerts: tuple[str, ...] = ()
    notifications: tuple[NewNotification, ...] = ()
    meta: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.upsert_entities or self.delete_entities or self.upsert_alerts
                    or self.delete_alerts or self.notifications or self.meta)


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


# --- conversions ----------------------------------------------------------------------

def to_ms(value: datetime) -> int:
    """An aware datetime as integer epoch milliseconds; naive datetimes are a bug, so refused."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} (notifier stores aware UTC datetimes only)")
    return (value - _EPOCH) // _MS


def from_ms(value: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=value)


def _opt_ms(value: datetime | None) -> int | None:
    return None if value is None else to_ms(value)


def _opt_dt(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(milliseconds=value)


def _encode_counters(entity: EntityState) -> tuple[Any, ...]:
    """The four known counters as (value, changed_at) column pairs, anything else as JSON."""
    counters, since = entity.counters, entity.counters_since
    cols: list[Any] = []
    for name in COUNTER_NAMES:
        changed = since.get(name)
        cols += (counters.get(name), None if changed is None else to_ms(changed))
    extra = (counters.keys() | since.keys()) - _KNOWN_COUNTERS
    cols.append(json.dumps(
        {n: [counters.get(n), to_ms(since[n]) if n in since else None] for n in sorted(extra)},
        separators=(",", ":")) if extra else None)
    return tuple(cols)


def _decode_counters(cols: tuple[Any, ...],
                     dt: Callable[[int], datetime]) -> tuple[Mapping[str, int], Mapping[str, datetime]]:
    """Compact Counters from the four column pairs; plain dicts only when the JSON column holds other names."""
    values = (cols[0], cols[2], cols[4], cols[6])
    changes = tuple(None if ms is None else dt(ms) for ms in (cols[1], cols[3], cols[5], cols[7]))
    if not cols[-1]:
        return Counters.of(*values), Counters.of(*changes)
    counters = {n: v for n, v in zip(COUNTER_NAMES, values, strict=True) if v is not None}
    since = {n: c for n, c in zip(COUNTER_NAMES, changes, strict=True) if c is not None}
    for name, (value, changed) in json.loads(cols[-1]).items():
        if value is not None:
            counters[name] = value
        if changed is not None:
            since[name] = dt(changed)
    return compact_counters(counters), compact_counters(since)


def _entity_row(e: EntityState) -> tuple[Any, ...]:
    return (e.job, e.node, e.status, to_ms(e.since), e.previous_status, e.node_type, e.log_path,
            _opt_ms(e.started_at), *_encode_counters(e))


def _datetime_cache() -> Callable[[int], datetime]:
    """from_ms memoised for one load: entities share poll timestamps, so this saves most conversions."""
    cache: dict[int, datetime] = {}

    def dt(ms: int) -> datetime:
        value = cache.get(ms)
        if value is None:
            value = cache[ms] = _EPOCH + timedelta(milliseconds=ms)
        return value
    return dt


def _entity(row: tuple[Any, ...], dt: Callable[[int], datetime]) -> EntityState:
    job, node, status, since, previous, node_type, log_path, started_at = row[:8]
    counters, counters_since = (_decode_counters(row[8:], dt) if row[8:] != _NO_COUNTERS
                                else (NO_COUNTERS, NO_COUNTERS))
    return EntityState(job=job, node=node, status=status, since=dt(since), previous_status=previous,
                       node_type=node_type, log_path=log_path,
                       started_at=None if started_at is None else dt(started_at),
                       counters=counters, counters_since=counters_since)


def _alert_row(a: AlertState) -> tuple[Any, ...]:
    return (a.fingerprint, a.rule, a.job, a.node, a.phase, to_ms(a.active_since), _opt_ms(a.fired_at),
            _opt_ms(a.last_notified_at), a.state, a.node_type, a.log_path)


def _alert(row: tuple[Any, ...]) -> AlertState:
    fp, rule, job, node, phase, active_since, fired_at, notified, state, node_type, log_path = row
    return AlertState(fingerprint=fp, rule=rule, job=job, node=node, phase=phase,
                      active_since=from_ms(active_since), fired_at=_opt_dt(fired_at),
                      last_notified_at=_opt_dt(notified), state=state, node_type=node_type, log_path=log_path)


def _payload_json(payload: Payload) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _clip(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"


_ENTITY_COLUMNS = ("job, node, status, since, previous_status, node_type, log_path, started_at, "
                   "get_bytes, get_bytes_at, get_records, get_records_at, put_bytes, put_bytes_at, "
                   "put_records, put_records_at, counters_extra")
_KNOWN_COUNTERS = frozenset(COUNTER_NAMES)
_NO_COUNTERS = (None,) * (2 * len(COUNTER_NAMES) + 1)
_ALERT_COLUMNS = ("fingerprint, rule, job, node, phase, active_since, fired_at, last_notified_at, "
                  "state, node_type, log_path")
_UPSERT_ENTITY = (
    f"INSERT INTO entity ({_ENTITY_COLUMNS}) VALUES ({', '.join('?' * 17)}) "
    "ON CONFLICT (job, node) DO UPDATE SET status = excluded.status, since = excluded.since, "
    "previous_status = excluded.previous_status, node_type = excluded.node_type, "
    "log_path = excluded.log_path, started_at = excluded.started_at, "
    "get_bytes = excluded.get_bytes, get_bytes_at = excluded.get_bytes_at, "
    "get_records = excluded.get_records, get_records_at = excluded.get_records_at, "
    "put_bytes = excluded.put_bytes, put_bytes_at = excluded.put_bytes_at, "
    "put_records = excluded.put_records, put_records_at = excluded.put_records_at, "
    "counters_extra = excluded.counters_extra"
)
_UPSERT_ALERT = (
    f"INSERT INTO alert ({_ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (fingerprint) DO UPDATE SET rule = excluded.rule, job = excluded.job, "
    "node = excluded.node, phase = excluded.phase, active_since = excluded.active_since, "
    "fired_at = excluded.fired_at, last_notified_at = excluded.last_notified_at, "
    "state = excluded.state, node_type = excluded.node_type, log_path = excluded.log_path"
)
_NOTIFICATION_COLUMNS = "id, channel, grp, payload, created_at, attempts, next_attempt_at, last_error"
_OUTBOX_ROW_COLUMNS = ("id, channel, grp, status, created_at, attempts, next_attempt_at, last_error, "
                       "delivered_at")


# --- the store ------------------------------------------------------------------------

class StateStore:
    """The one SQLite connection to the state file, shared by threads under a lock.

    The scheduler thread commits cycles while delivery worker threads read and mark
    outbox rows; a single connection behind a ``threading.Lock`` keeps that simple
    and correct (every operation is short; SQLite serialises writers anyway).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Use ``StateStore.open``; this only wraps an already prepared connection."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._lock = threading.Lock()

    # --- opening ------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> StateStore:
        """Open (creating if needed) and migrate the state file; StateError names the path."""
        path = Path(path)
        _prepare_file(path)
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state file {path}: {exc}") from exc
        try:
            _check_readable(conn, path)
            _tighten_mode(path)
            _configure(conn, path)
            _migrate(conn, path)
        except BaseException:
            conn.close()
            raise
        log.debug("state file open path=%s schema_version=%d", path, SCHEMA_VERSION)
        return cls(conn, path)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def total_changes(self) -> int:
        """Rows inserted, updated or deleted through this connection since it opened (tests, metrics)."""
        with self._locked() as conn:
            return conn.total_changes

    def close(self) -> None:
        """Close the connection; idempotent. The WAL is checkpointed by SQLite on the last close."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StateError(f"state file {self._path} is closed")
            yield self._conn

    def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read under the lock; SQLite errors (e.g. a corrupt page) become StateError."""
        with self._locked() as conn:
            try:
                return fn(conn)
            except (sqlite3.Error, ValueError) as exc:
                raise StateError(f"state file {self._path}: cannot {what}: {exc}") from exc

    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction; any failure rolls everything back."""
        with self._locked() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateError(f"state file {self._path}: cannot {what}: {exc}") from exc
            try:
                result = fn(conn)
                conn.execute("COMMIT")
                return result
            except Exception as exc:
                _rollback(conn)
                raise StateError(f"state file {self._path}: cannot {what}: {exc}") from exc
            except BaseException:
                _rollback(conn)
                raise

    # --- entities, alerts, meta ---------------------------------------------------

    def load_entities(self) -> dict[EntityKey, EntityState]:
        """Every remembered job and node, keyed by (job, node)."""
        def read(conn: sqlite3.Connection) -> dict[EntityKey, EntityState]:
            rows = conn.execute(f"SELECT {_ENTITY_COLUMNS} FROM entity")
            dt = _datetime_cache()
            return {(row[0], row[1]): _entity(row, dt) for row in rows}
        return self._read("load entities", read)

    def load_alerts(self) -> dict[str, AlertState]:
        """Every pending or firing alert, keyed by fingerprint."""
        def read(conn: sqlite3.Connection) -> dict[str, AlertState]:
            return {row[0]: _alert(row) for row in conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alert")}
        return self._read("load alerts", read)

    def get_meta(self, key: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else cast(str, row[0])
        return self._read("read meta", read)

    def commit_cycle(self, write: CycleWrite) -> tuple[int, ...]:
        """Write one cycle's changes and queue its notifications atomically; return the new outbox ids.

        Only the rows given are touched (O(changed rows)); an empty write does not even
        open a transaction. Any failure rolls back everything and raises StateError.
        """
        if write.is_empty:
            return ()
        return self._write("commit cycle", lambda conn: _apply(conn, write))

    # --- outbox -------------------------------------------------------------------

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
                                        next_attempt_at=_opt_dt(next_at), last_error=last_error))
            return tuple(out)
        return self._read("read the outbox", read)

    def pending_channels(self) -> tuple[str, ...]:
        """Channels with at least one pending notification, due or not, sorted by name."""
        def read(conn: sqlite3.Connection) -> tuple[str, ...]:
            rows = conn.execute("SELECT DISTINCT channel FROM outbox WHERE status = 'pending' ORDER BY channel")
            return tuple(row[0] for row in rows)
        return self._read("read the outbox", read)

    def next_attempt_at(self) -> datetime | None:
        """The earliest time some channel's next pending row becomes due (None: the outbox is drained).

        Only each channel's first pending row counts: the rows behind it wait for it.
        """
        def read(conn: sqlite3.Connection) -> datetime | None:
            row = conn.execute(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE id IN "
                "(SELECT MIN(id) FROM outbox WHERE status = 'pending' GROUP BY channel)").fetchone()
            return _opt_dt(row[0])
        return self._read("read the outbox", read)

    def mark_delivered(self, id: int, at: datetime) -> None:
        """Record a successful send, committed at once: the dedup point of at-least-once delivery."""
        at_ms = to_ms(at)
        self._write("mark delivered", lambda conn: conn.execute(
            "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = ?, "
            "finished_at = ?, next_attempt_at = NULL, last_error = NULL WHERE id = ? AND status = 'pending'",
            (at_ms, at_ms, id)))

    def mark_retry(self, id: int, error: str, next_attempt_at: datetime) -> None:
        """Count a failed attempt and hold the row (and its channel's later rows) until ``next_attempt_at``."""
        next_ms = to_ms(next_attempt_at)
        self._write("mark retry", lambda conn: conn.execute(
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
        self._write("mark failed", lambda conn: conn.execute(
            "UPDATE outbox SET status = ?, attempts = attempts + ?, last_error = ?, finished_at = ?, "
            "next_attempt_at = NULL WHERE id = ? AND status = 'pending'",
            (status, 1 if attempted else 0, _clip(error), at_ms, id)))

    def outbox(self, statuses: Collection[str] = ("pending", "failed"), limit: int = 1000) -> tuple[OutboxRow, ...]:
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
                          attempts=attempts, next_attempt_at=_opt_dt(next_at), last_error=last_error,
                          delivered_at=_opt_dt(delivered))
                for id_, chan, grp, status, created, attempts, next_at, last_error, delivered in reversed(rows))
        return self._read("read the outbox", read)

    def purge_delivered(self, older_than: datetime) -> int:
        """Delete rows that left 'pending' (delivered, failed, expired) before ``older_than``; return how many.

        Housekeeping so the file does not grow forever; pending rows are never purged.
        """
        cutoff = to_ms(older_than)
        return self._write("purge the outbox", lambda conn: conn.execute(
            "DELETE FROM outbox WHERE status != 'pending' AND finished_at < ?", (cutoff,)).rowcount)


# --- helpers --------------------------------------------------------------------------

def _apply(conn: sqlite3.Connection, write: CycleWrite) -> tuple[int, ...]:
    """The body of commit_cycle, inside its transaction."""
    if write.delete_entities:
        conn.executemany("DELETE FROM entity WHERE job = ? AND node = ?", write.delete_entities)
    if write.upsert_entities:
        conn.executemany(_UPSERT_ENTITY, map(_entity_row, write.upsert_entities))
    if write.delete_alerts:
        conn.executemany("DELETE FROM alert WHERE fingerprint = ?", ((fp,) for fp in write.delete_alerts))
    if write.upsert_alerts:
        conn.executemany(_UPSERT_ALERT, map(_alert_row, write.upsert_alerts))
    if write.meta:
        _write_meta(conn, write.meta)
    return _queue(conn, write.notifications, to_ms(write.at)) if write.notifications else ()


def _write_meta(conn: sqlite3.Connection, meta: Mapping[str, str | None]) -> None:
    deletes = [(k,) for k, v in meta.items() if v is None]
    upserts = [(k, v) for k, v in meta.items() if v is not None]
    if deletes:
        conn.executemany("DELETE FROM meta WHERE key = ?", deletes)
    if upserts:
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                         "SET value = excluded.value WHERE value IS NOT excluded.value", upserts)


def _queue(conn: sqlite3.Connection, notifications: Iterable[NewNotification], at_ms: int) -> tuple[int, ...]:
    """Insert notifications one by one to learn their ids (a cycle queues a handful)."""
    ids: list[int] = []
    for n in notifications:
        cur = conn.execute(
            "INSERT INTO outbox (channel, grp, payload, created_at, attempts, next_attempt_at, status) "
            "VALUES (?, ?, ?, ?, 0, ?, 'pending')",
            (n.channel, n.group, _payload_json(n.payload), at_ms, at_ms))
        ids.append(cast(int, cur.lastrowid))
    return tuple(ids)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:  # already rolled back by SQLite itself (e.g. SQLITE_FULL)
        pass


def _prepare_file(path: Path) -> None:
    """Create the directory (0700) and the file (0600) if missing, so no other user ever sees it."""
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True)
            os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
        if path.is_dir():
            raise StateError(f"state file {path} is a directory")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        os.close(fd)
        os.chmod(path, 0o600)
    except OSError as exc:
        raise StateError(f"cannot create state file {path}: {exc}") from exc


def _check_readable(conn: sqlite3.Connection, path: Path) -> None:
    """Prove the file is a sound SQLite database BEFORE anything (chmod, pragmas) touches it."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header: fails on non-databases
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]  # ~15 ms for 100,000 entities
    except sqlite3.DatabaseError as exc:
        raise StateError(f"state file {path} is not a usable SQLite database ({exc}); "
                         "it was left untouched: move it aside to start with empty state") from exc
    if problems != ["ok"]:
        raise StateError(f"state file {path} is corrupted ({'; '.join(problems)}); it was left untouched: "
                         "move it aside to start with empty state")


def _tighten_mode(path: Path) -> None:
    """The file holds job names, log paths and messages: it must not be readable by others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("state file was readable by others; restricting it path=%s mode=%o new_mode=600", path, mode)
            os.chmod(path, 0o600)
    except OSError as exc:
        raise StateError(f"cannot restrict the permissions of state file {path}: {exc}") from exc


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    """WAL + synchronous=FULL (see the module docstring) and a bounded WAL file."""
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA journal_size_limit = 67108864")
    except sqlite3.DatabaseError as exc:
        raise StateError(f"state file {path}: cannot configure SQLite: {exc}") from exc
    if str(mode).lower() != "wal":
        log.warning("state file cannot use WAL; falling back path=%s journal_mode=%s", path, mode)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema forward to SCHEMA_VERSION; refuse newer versions and foreign databases."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(f"state file {path} has schema version {version}, newer than this notifier "
                             f"knows ({SCHEMA_VERSION}); upgrade notifier or use another state file")
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchone()[0]
            if tables:
                raise StateError(f"state file {path} is an SQLite database of something else "
                                 "(it has tables but no notifier schema version); it was left untouched")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            log.info("state file schema migrated path=%s version=%d", path, target)
    except sqlite3.Error as exc:
        raise StateError(f"state file {path}: cannot migrate the schema: {exc}") from exc
