"""The state file itself: one SQLite database that survives restarts and ``kill -9``.

This module owns the file and the connection: creating it (0600, in a 0700
directory), proving it is a notifier database before touching it, WAL, versioned
schema migrations, and the two ways in: ``read`` and ``write`` (one IMMEDIATE
transaction). ``state.StateStore`` (entities, alerts, meta) and ``outbox.Outbox``
(the durable queue of notifications) are views over one ``StateFile``, so a cycle's
state changes and the notifications they cause commit in ONE transaction.

Durability choice: WAL with ``synchronous=FULL``. WAL+NORMAL already survives a
process crash (``kill -9``) because a committed transaction is in the WAL file, i.e.
in the OS page cache; FULL adds an fsync per commit, which also survives power loss
and kernel crashes. We commit once per poll cycle plus once per delivered message, so
the fsync costs milliseconds per cycle and buys "a committed notification is never
lost, even by the machine". Nothing here ever deletes or rewrites a file it did not
create: a file that is not a notifier database raises ``StateError`` naming its path.

Datetimes are stored as integer epoch milliseconds (UTC); sub-millisecond precision is
dropped.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

from notifier.errors import StateError
from notifier.lock import usable_hint

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another process's lock (e.g. a CLI command vs the service)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)

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

_V2: tuple[str, ...] = (
    # silences and acknowledgements are written by CLI commands while the service runs
    """CREATE TABLE silence (
        id TEXT PRIMARY KEY,             -- random, unique across state files
        rule TEXT NOT NULL,              -- globs; '*' matches everything
        job TEXT NOT NULL,
        node TEXT NOT NULL,
        starts_at INTEGER NOT NULL,
        ends_at INTEGER NOT NULL,        -- `silence expire` moves it to now
        created_at INTEGER NOT NULL,
        author TEXT NOT NULL DEFAULT '',
        comment TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE ack (
        fingerprint TEXT PRIMARY KEY,    -- deleted by the service when the alert resolves
        at INTEGER NOT NULL,
        author TEXT NOT NULL DEFAULT '',
        comment TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID""",
    "ALTER TABLE alert ADD COLUMN notified INTEGER NOT NULL DEFAULT 0",  # times sent while firing
    "UPDATE alert SET notified = 1 WHERE last_notified_at IS NOT NULL",  # announced before v2: at least once
    """CREATE TABLE flap (
        fingerprint TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        job TEXT NOT NULL,
        node TEXT NOT NULL,
        changes TEXT NOT NULL,           -- JSON list of epoch ms: firing <-> clear changes inside the window
        flapping_since INTEGER           -- NULL: not flapping
    ) WITHOUT ROWID""",
)

_V3: tuple[str, ...] = (
    # Slack threads: the cycle opens and closes incidents; delivery records where each one's parent went
    """CREATE TABLE incident (
        channel TEXT NOT NULL,
        route TEXT NOT NULL,             -- a rule's slack_channel, '' for the channel's own
        job TEXT NOT NULL,
        id TEXT NOT NULL UNIQUE,         -- random, unique across state files: names the thread
        opened_at INTEGER NOT NULL,
        PRIMARY KEY (channel, route, job)
    ) WITHOUT ROWID""",
    """CREATE TABLE thread (
        id TEXT PRIMARY KEY,             -- the incident id (kept after it closes, for replies still queued)
        place TEXT NOT NULL,             -- where the parent is: Slack's channel id
        ts TEXT NOT NULL,                -- the parent message's ts
        at INTEGER NOT NULL              -- when it was recorded, for purging
    ) WITHOUT ROWID""",
)

_V4: tuple[str, ...] = (
    # names this state file in every notification key ("<instance>-<outbox id>"): a second or a reset state
    # file numbers its outbox from 1 again, and a receiver deduplicating on the key must not drop its alerts
    "INSERT INTO meta (key, value) VALUES ('instance_id', lower(hex(randomblob(8))))",
)

_V5: tuple[str, ...] = (
    # Alertmanager channels: a newer state sync supersedes the rows still queued for the channel (status
    # 'superseded'), and keeps in `waiting_since` when the oldest of them was queued, so a channel that stays
    # down is still seen as stuck. SQLite cannot widen a CHECK: the table is rebuilt, ids and the
    # AUTOINCREMENT counter kept (a notification key must never be handed out twice).
    """CREATE TABLE outbox_v5 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        grp TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'failed', 'expired', 'superseded')),
        last_error TEXT,
        delivered_at INTEGER,
        finished_at INTEGER,              -- when it left 'pending' (any outcome): for purging
        waiting_since INTEGER             -- a superseding row: when the oldest row it replaced was queued
    )""",
    "INSERT INTO outbox_v5 (id, channel, grp, payload, created_at, attempts, next_attempt_at, status, last_error, "
    "delivered_at, finished_at) SELECT id, channel, grp, payload, created_at, attempts, next_attempt_at, status, "
    "last_error, delivered_at, finished_at FROM outbox",
    "DELETE FROM sqlite_sequence WHERE name = 'outbox_v5'",
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_v5', seq FROM sqlite_sequence WHERE name = 'outbox'",
    "DROP TABLE outbox",
    "ALTER TABLE outbox_v5 RENAME TO outbox",
    "CREATE INDEX outbox_status_channel_id ON outbox (status, channel, id)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5)
"""Forward migrations: ``MIGRATIONS[i]`` takes ``user_version`` i to i + 1. Append only."""

SCHEMA_VERSION = len(MIGRATIONS)


# --- conversions ----------------------------------------------------------------------

def to_ms(value: datetime) -> int:
    """An aware datetime as integer epoch milliseconds; naive datetimes are a bug, so refused."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} (notifier stores aware UTC datetimes only)")
    return (value - _EPOCH) // _MS


def from_ms(value: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=value)


def opt_ms(value: datetime | None) -> int | None:
    return None if value is None else to_ms(value)


def opt_dt(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(milliseconds=value)


# --- the file -------------------------------------------------------------------------

class StateFile:
    """The one SQLite connection to the state file, shared by threads under a lock.

    The scheduler thread commits cycles while delivery worker threads read and mark
    outbox rows; a single connection behind a ``threading.Lock`` keeps that simple
    and correct (every operation is short; SQLite serialises writers anyway).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Use ``StateFile.open``; this only wraps an already prepared connection."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> StateFile:
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

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StateError(f"state file {self._path} is closed")
            yield self._conn

    def read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read under the lock; SQLite errors (e.g. a corrupt page) become StateError."""
        with self._locked() as conn:
            try:
                return fn(conn)
            except (sqlite3.Error, ValueError) as exc:
                raise StateError(f"state file {self._path}: cannot {what}: {exc}") from exc

    def write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
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


# --- opening --------------------------------------------------------------------------

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
        raise StateError(f"cannot create state file {path}: {usable_hint(parent, exc)}") from exc


def _check_readable(conn: sqlite3.Connection, path: Path) -> None:
    """Prove the file is a sound SQLite database BEFORE anything (chmod, pragmas) touches it."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header: fails on non-databases
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]  # ~15 ms for 100,000 entities
    except sqlite3.DatabaseError as exc:
        raise StateError(f"state file {path} is not a usable SQLite database ({exc}); it was left untouched. "
                         f"`notifier state check` says more; {RECOVERY}") from exc
    if problems != ["ok"]:
        raise StateError(f"state file {path} is corrupted ({'; '.join(problems)}); it was left untouched. "
                         f"`notifier state check` says more; {RECOVERY}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise StateError(f"state file {path} is an SQLite database of something else (it has tables but no "
                         "notifier schema version); it was left untouched: fix [state] path")
    if version > SCHEMA_VERSION:  # before any pragma writes to it: a newer notifier's file stays as it was
        raise StateError(f"state file {path} has schema version {version}, newer than this notifier "
                         f"knows ({SCHEMA_VERSION}); upgrade notifier (it was left untouched), or {RECOVERY}")


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
                             f"knows ({SCHEMA_VERSION}); upgrade notifier (it was left untouched), or {RECOVERY}")
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchone()[0]
            if tables:
                raise StateError(f"state file {path} is an SQLite database of something else "
                                 "(it has tables but no notifier schema version); it was left untouched")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] >= target:  # another process was first
                    conn.execute("COMMIT")
                    continue
                for statement in MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            if version:  # a new file is created at the current version, not "migrated" through each one
                log.info("state file schema migrated path=%s version=%d", path, target)
        if version == 0:
            log.info("state file created path=%s schema_version=%d", path, SCHEMA_VERSION)
    except sqlite3.Error as exc:
        raise StateError(f"state file {path}: cannot migrate the schema: {exc}") from exc


# --- inspection (``notifier state check``, ``notifier check``) -------------------------

@dataclass(frozen=True, slots=True)
class Inspection:
    """What a state file holds and whether this notifier can use it; nothing is changed to find out."""

    path: Path
    schema_version: int
    integrity: tuple[str, ...]  # PRAGMA integrity_check: ("ok",) when sound
    counts: dict[str, int]
    problem: str | None  # why it cannot be used as it is, with the way out; None: usable

    @property
    def sound(self) -> bool:
        return self.integrity == ("ok",)


COUNTED = {
    "jobs": "SELECT COUNT(*) FROM entity WHERE node = ''",
    "nodes": "SELECT COUNT(*) FROM entity WHERE node != ''",
    "alerts firing": "SELECT COUNT(*) FROM alert WHERE phase = 'firing'",
    "alerts pending": "SELECT COUNT(*) FROM alert WHERE phase = 'pending'",
    "silences": "SELECT COUNT(*) FROM silence",
    "acks": "SELECT COUNT(*) FROM ack",
    "outbox pending": "SELECT COUNT(*) FROM outbox WHERE status = 'pending'",
    "outbox failed": "SELECT COUNT(*) FROM outbox WHERE status = 'failed'",
    "open incidents": "SELECT COUNT(*) FROM incident",
}

RECOVERY = ("`notifier state reset --keep-silences` moves it aside (never deletes it) and starts an empty one "
            "keeping the silences; alerts still firing are then announced once more")


def inspect(path: Path) -> Inspection:
    """Open ``path`` read-only and judge it: a database? sound? a schema this notifier knows?"""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open state file {path}: {exc}") from exc
    try:
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            integrity = tuple(row[0] for row in conn.execute("PRAGMA integrity_check(20)"))
        except sqlite3.DatabaseError as exc:
            return Inspection(path, 0, (str(exc),), {}, f"not a usable SQLite database ({exc}): {RECOVERY}")
        counts: dict[str, int] = {}
        for name, query in COUNTED.items():
            try:
                counts[name] = conn.execute(query).fetchone()[0]
            except sqlite3.Error:
                pass  # an older schema has no such table yet
        problem = None
        if version == 0 and counts.get("jobs") is None and conn.execute(
                "SELECT count(*) FROM sqlite_master").fetchone()[0]:
            problem = "an SQLite database of something else (tables, but no notifier schema): fix [state] path"
        elif integrity != ("ok",):
            problem = f"corrupted ({'; '.join(integrity[:3])}): {RECOVERY}"
        elif version > SCHEMA_VERSION:
            problem = (f"schema version {version} is newer than this notifier knows ({SCHEMA_VERSION}): "
                       "upgrade notifier (a downgrade cannot read it)")
        elif not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            problem = (f"not writable by user {os.getuid()}: give the service user write access to it and "
                       f"to {path.parent} (SQLite writes a journal next to it)")
        return Inspection(path, version, integrity, counts, problem)
    finally:
        conn.close()
