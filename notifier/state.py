"""What notifier must not forget between polls: entities, alerts and a few facts.

The last state of every job and node (with the time each entered it), the alert
lifecycle by fingerprint, and small key/value facts, in the state file
(``statefile.StateFile``). ``commit_cycle`` writes one cycle's changes and queues its
notifications in the outbox (``outbox.enqueue``) in ONE transaction, so a crash either
keeps both or neither: a notification is never lost and never invented.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from notifier.core.counters import COUNTER_NAMES, NO_COUNTERS, Counters, compact_counters
from notifier.core.flap import FlapState
from notifier.core.incidents import Incident
from notifier.core.models import DEFAULT_SOURCE, AlertState, EntityKey, EntityState
from notifier.outbox import NewNotification, Outbox, enqueue
from notifier.silences import Silences, forget_acks
from notifier.statefile import StateFile, from_ms, opt_dt, opt_ms, to_ms
from notifier.threads import Threads, write_incidents

SOURCE_FAILURES_KEY = "source_consecutive_failures"
"""Meta key: how many cycles in a row the source failed (0 when the last one worked)."""
SOURCE_FAILING_SINCE_KEY = "source_failing_since"
"""Meta key: epoch ms of the first cycle of the current source failure (absent when the source works)."""
JOBS_MISSING_KEY = "jobs_missing"
"""Meta key: JSON {job: [cycles in a row the API said "no such job", epoch ms of the first]}."""
FETCH_SWEEP_KEY = "fetch_sweep"
"""Meta key: the sweep figures (``fetching.sweep_json``) for ``notifier alerts``; rewritten when they change."""


def meta_key(key: str, source: str) -> str:
    """A source's own meta key: ``fetch_sweep:prod``; the default source keeps the bare key (older files)."""
    return key if source == DEFAULT_SOURCE else f"{key}:{source}"

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
    upsert_flaps: tuple[FlapState, ...] = ()
    delete_flaps: tuple[str, ...] = ()
    open_incidents: tuple[Incident, ...] = ()
    close_incidents: tuple[Incident, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.upsert_entities or self.delete_entities or self.upsert_alerts
                    or self.delete_alerts or self.notifications or self.meta or self.upsert_flaps
                    or self.delete_flaps or self.open_incidents or self.close_incidents)


# --- rows ----------------------------------------------------------------------------

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
            opt_ms(e.started_at), *_encode_counters(e))


def _string_cache() -> Callable[[str], str]:
    """One object per distinct string for one load: SQLite returns a new ``str`` per row and column,
    and 110,000 rows repeat a few statuses, node types and node names and each job's name 11 times
    (some 25 MB of copies at 10,000 jobs x 10 nodes)."""
    cache: dict[str, str] = {}
    return lambda value: cache.setdefault(value, value)


def _datetime_cache() -> Callable[[int], datetime]:
    """from_ms memoised for one load: entities share poll timestamps, so this saves most conversions."""
    cache: dict[int, datetime] = {}

    def dt(ms: int) -> datetime:
        value = cache.get(ms)
        if value is None:
            value = cache[ms] = from_ms(ms)
        return value
    return dt


def _entity(row: tuple[Any, ...], dt: Callable[[int], datetime], one: Callable[[str], str]) -> EntityState:
    job, node, status, since, previous, node_type, log_path, started_at = row[:8]
    counters, counters_since = (_decode_counters(row[8:], dt) if row[8:] != _NO_COUNTERS
                                else (NO_COUNTERS, NO_COUNTERS))
    return EntityState(job=one(job), node=one(node), status=one(status), since=dt(since),
                       previous_status=previous if previous is None else one(previous),
                       node_type=one(node_type), log_path=log_path,
                       started_at=None if started_at is None else dt(started_at),
                       counters=counters, counters_since=counters_since)


def _alert_row(a: AlertState) -> tuple[Any, ...]:
    return (a.fingerprint, a.rule, a.job, a.node, a.phase, to_ms(a.active_since), opt_ms(a.fired_at),
            opt_ms(a.last_notified_at), a.state, a.node_type, a.log_path, a.notified)


def _alert(row: tuple[Any, ...]) -> AlertState:
    fp, rule, job, node, phase, active_since, fired_at, last_notified, state, node_type, log_path, notified = row
    return AlertState(fingerprint=fp, rule=rule, job=job, node=node, phase=phase,
                      active_since=from_ms(active_since), fired_at=opt_dt(fired_at),
                      last_notified_at=opt_dt(last_notified), state=state, node_type=node_type, log_path=log_path,
                      notified=notified)



_ENTITY_COLUMNS = ("job, node, status, since, previous_status, node_type, log_path, started_at, "
                   "get_bytes, get_bytes_at, get_records, get_records_at, put_bytes, put_bytes_at, "
                   "put_records, put_records_at, counters_extra")
_KNOWN_COUNTERS = frozenset(COUNTER_NAMES)
_NO_COUNTERS = (None,) * (2 * len(COUNTER_NAMES) + 1)
_ALERT_COLUMNS = ("fingerprint, rule, job, node, phase, active_since, fired_at, last_notified_at, "
                  "state, node_type, log_path, notified")
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
    f"INSERT INTO alert ({_ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (fingerprint) DO UPDATE SET rule = excluded.rule, job = excluded.job, "
    "node = excluded.node, phase = excluded.phase, active_since = excluded.active_since, "
    "fired_at = excluded.fired_at, last_notified_at = excluded.last_notified_at, "
    "state = excluded.state, node_type = excluded.node_type, log_path = excluded.log_path, "
    "notified = excluded.notified"
)


# --- the store ------------------------------------------------------------------------

class StateStore:
    """Entities, alerts and meta over one state file; ``outbox`` shares its connection."""

    def __init__(self, file: StateFile) -> None:
        """Use ``StateStore.open``; this wraps an already open state file."""
        self._file = file
        self.outbox = Outbox(file)
        self.silences = Silences(file)
        self.threads = Threads(file)

    @classmethod
    def open(cls, path: Path) -> StateStore:
        """Open (creating if needed) and migrate the state file; StateError names the path."""
        return cls(StateFile.open(path))

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def total_changes(self) -> int:
        """Rows inserted, updated or deleted through this connection since it opened (tests, metrics)."""
        return self._file.total_changes

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._file.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load_entities(self) -> dict[EntityKey, EntityState]:
        """Every remembered job and node, keyed by (job, node)."""
        def read(conn: sqlite3.Connection) -> dict[EntityKey, EntityState]:
            rows = conn.execute(f"SELECT {_ENTITY_COLUMNS} FROM entity")
            dt, one = _datetime_cache(), _string_cache()
            out: dict[EntityKey, EntityState] = {}
            for row in rows:
                entity = _entity(row, dt, one)
                out[(entity.job, entity.node)] = entity
            return out
        return self._file.read("load entities", read)

    def load_alerts(self) -> dict[str, AlertState]:
        """Every pending or firing alert, keyed by fingerprint."""
        def read(conn: sqlite3.Connection) -> dict[str, AlertState]:
            return {row[0]: _alert(row) for row in conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alert")}
        return self._file.read("load alerts", read)

    def load_flaps(self) -> dict[str, FlapState]:
        """Recent firing/clear changes per fingerprint (flap damping), keyed by fingerprint."""
        def read(conn: sqlite3.Connection) -> dict[str, FlapState]:
            rows = conn.execute("SELECT fingerprint, rule, job, node, changes, flapping_since FROM flap")
            return {fp: FlapState(fp, rule, job, node, tuple(from_ms(ms) for ms in json.loads(changes)),
                                  opt_dt(since))
                    for fp, rule, job, node, changes, since in rows}
        return self._file.read("load flap states", read)

    def get_meta(self, key: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else cast(str, row[0])
        return self._file.read("read meta", read)

    def commit_cycle(self, write: CycleWrite) -> tuple[int, ...]:
        """Write one cycle's changes and queue its notifications atomically; return the new outbox ids.

        Only the rows given are touched (O(changed rows)); an empty write does not even
        open a transaction. Any failure rolls back everything and raises StateError.
        """
        if write.is_empty:
            return ()
        return self._file.write("commit cycle", lambda conn: _apply(conn, write))


def _apply(conn: sqlite3.Connection, write: CycleWrite) -> tuple[int, ...]:
    """The body of commit_cycle, inside its transaction."""
    if write.delete_entities:
        conn.executemany("DELETE FROM entity WHERE job = ? AND node = ?", write.delete_entities)
    if write.upsert_entities:
        conn.executemany(_UPSERT_ENTITY, map(_entity_row, write.upsert_entities))
    if write.delete_alerts:
        conn.executemany("DELETE FROM alert WHERE fingerprint = ?", ((fp,) for fp in write.delete_alerts))
        forget_acks(conn, write.delete_alerts)
    if write.upsert_alerts:
        conn.executemany(_UPSERT_ALERT, map(_alert_row, write.upsert_alerts))
    if write.meta:
        _write_meta(conn, write.meta)
    if write.delete_flaps:
        conn.executemany("DELETE FROM flap WHERE fingerprint = ?", ((fp,) for fp in write.delete_flaps))
    if write.upsert_flaps:
        conn.executemany(
            "INSERT INTO flap (fingerprint, rule, job, node, changes, flapping_since) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO UPDATE SET changes = excluded.changes, "
            "flapping_since = excluded.flapping_since",
            ((f.fingerprint, f.rule, f.job, f.node, json.dumps([to_ms(c) for c in f.changes]),
              opt_ms(f.flapping_since)) for f in write.upsert_flaps))
    if write.open_incidents or write.close_incidents:
        write_incidents(conn, write.open_incidents, write.close_incidents)
    return enqueue(conn, write.notifications, write.at) if write.notifications else ()


def _write_meta(conn: sqlite3.Connection, meta: Mapping[str, str | None]) -> None:
    deletes = [(k,) for k, v in meta.items() if v is None]
    upserts = [(k, v) for k, v in meta.items() if v is not None]
    if deletes:
        conn.executemany("DELETE FROM meta WHERE key = ?", deletes)
    if upserts:
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                         "SET value = excluded.value WHERE value IS NOT excluded.value", upserts)

