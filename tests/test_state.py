"""The SQLite state file: schema, durability, atomic cycles, outbox bookkeeping."""

from __future__ import annotations

import logging
import math
import sqlite3
import stat
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from notifier import statefile
from notifier.core.models import AlertState, EntityState, fingerprint
from notifier.errors import StateError
from notifier.outbox import NewNotification
from notifier.state import CycleWrite, StateStore
from notifier.statefile import SCHEMA_VERSION, from_ms, to_ms

T0 = datetime(2024, 3, 1, 3, 4, 25, 123000, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(name: str = "job_sms", status: str = "NORMAL") -> EntityState:
    return EntityState(job=name, node="", status=status, since=T0, previous_status="STARTTING", started_at=at(-60))


def node(name: str = "DLI_SMS_GES", job_name: str = "job_sms", status: str = "EXCEPTION") -> EntityState:
    return EntityState(
        job=job_name, node=name, status=status, since=at(5), previous_status="NORMAL", node_type="DLI SQL",
        log_path="obs://dlf-log/DLI_SMS_GES.job",
        counters={"totalGetBytes": 10, "totalGetRecords": 2, "totalPutBytes": 30, "totalPutRecords": 4,
                  "customCounter": 7},
        counters_since={"totalGetBytes": at(1), "totalPutRecords": at(2), "customCounter": at(3)},
    )


def alert(node_name: str = "DLI_SMS_GES", phase: str = "firing") -> AlertState:
    return AlertState(fingerprint=fingerprint("node-exception", "job_sms", node_name), rule="node-exception",
                      job="job_sms", node=node_name, phase=phase, active_since=at(5), fired_at=at(5),  # type: ignore[arg-type]
                      last_notified_at=at(6), state="EXCEPTION", node_type="DLI SQL", log_path=None)


def note(channel: str = "team-slack", group: str = "job_sms", text: str = "boom") -> NewNotification:
    return NewNotification(channel=channel, group=group, payload={"text": text, "blocks": [{"n": 1}], "ok": True})


def snapshot(store: StateStore) -> tuple[object, ...]:
    return (store.load_entities(), store.load_alerts(), store.get_meta("failures"),
            store.outbox.rows(("pending", "delivered", "failed", "expired")))


@pytest.fixture
def path(state_path: Path) -> Path:
    """The state file, in a directory opening creates; the ``store`` fixture (tests/support/stores.py) uses it."""
    return state_path


# --- opening ---------------------------------------------------------------------------

def test_open_creates_private_directory_file_and_schema(path: Path) -> None:
    """A new state file gets a 0700 directory, mode 0600, WAL and the current schema version."""
    StateStore.open(path).close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"entity", "alert", "meta", "outbox"} <= tables
    assert "outbox_status_channel_id" in indexes


def test_open_tightens_a_world_readable_file(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An existing state file readable by others is chmod-ed to 0600 with a warning."""
    StateStore.open(path).close()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="notifier.state"):
        StateStore.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert any("readable by others" in r.message for r in caplog.records)


def test_an_empty_existing_file_is_initialised(path: Path) -> None:
    """A zero-byte file (e.g. pre-created by an installer) is migrated from version 0."""
    path.parent.mkdir()
    path.touch(mode=0o600)
    with StateStore.open(path) as s:
        assert s.load_entities() == {}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _corrupt_pages(path: Path) -> None:
    with StateStore.open(path) as s:
        s.commit_cycle(CycleWrite(at=T0, upsert_entities=tuple(node(f"n{i:04}") for i in range(2000))))
    data = bytearray(path.read_bytes())
    data[4096 * 2: 4096 * 6] = b"\xde\xad\xbe\xef" * 4096
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an SQLite database, it is somebody's notes\n" * 200)


@pytest.mark.parametrize("damage", [_garbage, _corrupt_pages], ids=["not-a-database", "corrupted-pages"])
def test_unusable_file_raises_naming_path_and_is_left_untouched(path: Path, damage: object) -> None:
    """A non-database or corrupted file raises StateError naming the path and is never modified."""
    damage(path)  # type: ignore[operator]
    path.chmod(0o644)
    before = path.read_bytes()
    with pytest.raises(StateError, match=str(path)):
        StateStore.open(path)
    assert path.read_bytes() == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_foreign_sqlite_database_is_refused(path: Path) -> None:
    """An SQLite database of another application (tables, no version) is not adopted."""
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StateError, match="something else"):
        StateStore.open(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]


def test_newer_schema_version_is_refused(path: Path) -> None:
    """A state file written by a newer notifier raises StateError instead of being misread."""
    StateStore.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StateError,
                       match=rf"schema version {SCHEMA_VERSION + 1}.*{path}|{path}.*version {SCHEMA_VERSION + 1}"):
        StateStore.open(path)


def test_closed_store_raises_state_error(store: StateStore) -> None:
    """Using a closed store is a clear StateError, not an sqlite3 error."""
    store.close()
    store.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        store.load_alerts()


# --- cycles ----------------------------------------------------------------------------

def test_commit_cycle_round_trips_everything(store: StateStore) -> None:
    """Entities (with counters and their change times), alerts, meta and notifications read back equal."""
    entities = (job(), node(), node("OTHER", status="NORMAL"))
    ids = store.commit_cycle(CycleWrite(at=T0, upsert_entities=entities, upsert_alerts=(alert(),),
                                        notifications=(note(), note("hook"), note()), meta={"failures": "2"}))
    assert len(ids) == 3 and list(ids) == sorted(ids)
    assert store.load_entities() == {e.key: e for e in entities}
    assert store.load_alerts() == {alert().fingerprint: alert()}
    assert store.get_meta("failures") == "2" and store.get_meta("missing") is None
    slack = store.outbox.pending("team-slack", T0)
    assert [n.id for n in slack] == [ids[0], ids[2]]
    assert slack[0].payload == note().payload
    assert (slack[0].group, slack[0].created_at, slack[0].attempts, slack[0].last_error) == ("job_sms", T0, 0, None)
    assert store.outbox.pending_channels() == ("hook", "team-slack")


def test_reopening_gives_the_same_data(path: Path) -> None:
    """After a restart the store holds exactly what was committed."""
    with StateStore.open(path) as s:
        s.commit_cycle(CycleWrite(at=T0, upsert_entities=(job(), node()), upsert_alerts=(alert(),),
                                  notifications=(note(),), meta={"failures": "1"}))
        before = snapshot(s)
    with StateStore.open(path) as s:
        assert snapshot(s) == before


def test_upserts_replace_and_deletes_remove(store: StateStore) -> None:
    """A later cycle updates changed rows, deletes removed ones and leaves the rest alone."""
    store.commit_cycle(CycleWrite(at=T0, upsert_entities=(job(), node(), node("GONE"), node("KEPT")),
                                  upsert_alerts=(alert(), alert("GONE")), meta={"failures": "3", "x": "y"}))
    recovered = replace(node(), status="NORMAL", previous_status="EXCEPTION", counters={}, counters_since={})
    store.commit_cycle(CycleWrite(at=at(60), upsert_entities=(recovered,), delete_entities=(("job_sms", "GONE"),),
                                  upsert_alerts=(replace(alert(), phase="pending"),),
                                  delete_alerts=(alert("GONE").fingerprint,), meta={"failures": None, "x": "z"}))
    assert store.load_entities() == {e.key: e for e in (job(), recovered, node("KEPT"))}
    assert store.load_alerts() == {alert().fingerprint: replace(alert(), phase="pending")}
    assert (store.get_meta("failures"), store.get_meta("x")) == (None, "z")


@pytest.mark.parametrize("bad", [
    CycleWrite(at=at(60), upsert_entities=(replace(job(), status="STOPPED"),), delete_alerts=(alert().fingerprint,),
               notifications=(note(), NewNotification("team-slack", "job_sms", {"obj": object()}))),
    CycleWrite(at=at(60), delete_entities=(node().key,), notifications=(note(),),
               upsert_alerts=(replace(alert(), fired_at=datetime(2024, 3, 1, 3, 5)),)),
    CycleWrite(at=at(60), upsert_entities=(replace(job(), status="STOPPED"),), meta={"failures": "9"},
               notifications=(note(), NewNotification("hook", "job_sms", {"n": math.nan}))),
], ids=["unserialisable-payload", "naive-datetime", "nan-in-payload"])
def test_failed_commit_rolls_back_everything(store: StateStore, bad: CycleWrite) -> None:
    """Any error in a cycle leaves no trace of it, and the store keeps working."""
    store.commit_cycle(CycleWrite(at=T0, upsert_entities=(job(), node()), upsert_alerts=(alert(),),
                                  notifications=(note(),), meta={"failures": "0"}))
    before = snapshot(store)
    with pytest.raises(StateError, match="commit cycle"):
        store.commit_cycle(bad)
    assert snapshot(store) == before
    assert store.commit_cycle(CycleWrite(at=at(61), notifications=(note(),))) == (2,)


def test_commit_writes_only_changed_rows(store: StateStore) -> None:
    """An empty cycle writes nothing; a cycle changing one of 1,000 entities writes one row."""
    entities = tuple(node(f"n{i}") for i in range(1000))
    store.commit_cycle(CycleWrite(at=T0, upsert_entities=entities))
    before = store.total_changes
    assert store.commit_cycle(CycleWrite(at=at(60))) == ()
    assert store.total_changes == before
    store.commit_cycle(CycleWrite(at=at(120), upsert_entities=(replace(entities[7], status="NORMAL"),)))
    assert store.total_changes == before + 1


def test_rewriting_an_unchanged_meta_value_writes_nothing(store: StateStore) -> None:
    """A service that records its failure counter every cycle only writes when the value changes."""
    store.commit_cycle(CycleWrite(at=T0, meta={"failures": "0"}))
    before = store.total_changes
    store.commit_cycle(CycleWrite(at=at(60), meta={"failures": "0"}))
    assert store.total_changes == before
    store.commit_cycle(CycleWrite(at=at(120), meta={"failures": "1"}))
    assert (store.total_changes, store.get_meta("failures")) == (before + 1, "1")


def test_datetimes_are_stored_as_epoch_milliseconds() -> None:
    """Conversion is exact to the millisecond and refuses naive datetimes."""
    assert to_ms(datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=timezone.utc)) == 1500
    assert from_ms(to_ms(T0)) == T0
    with pytest.raises(ValueError, match="naive"):
        to_ms(datetime(2024, 1, 1))


# --- outbox ----------------------------------------------------------------------------

def test_pending_stops_at_the_first_row_not_yet_due(store: StateStore) -> None:
    """A row waiting for its retry holds back its channel's later rows, not other channels."""
    a1, a2, b1 = store.commit_cycle(CycleWrite(at=T0, notifications=(note("a"), note("a"), note("b"))))
    store.outbox.mark_retry(a1, "503 Service Unavailable", at(30))
    assert store.outbox.pending("a", at(10)) == ()
    assert [n.id for n in store.outbox.pending("b", at(10))] == [b1]
    due = store.outbox.pending("a", at(30))
    assert [n.id for n in due] == [a1, a2]
    assert (due[0].attempts, due[0].last_error, due[0].next_attempt_at) == (1, "503 Service Unavailable", at(30))
    assert store.outbox.next_attempt_at() == T0
    assert [n.id for n in store.outbox.pending("a", at(30), limit=1)] == [a1]
    store.outbox.mark_delivered(b1, at(10))
    assert store.outbox.next_attempt_at() == at(30)  # a2 is due by itself but waits behind a1


def test_marks_move_rows_out_of_pending_once(store: StateStore) -> None:
    """Delivered, failed and expired rows leave the pending set and marking twice changes nothing."""
    ids = store.commit_cycle(CycleWrite(at=T0, notifications=(note(), note(), note(), note())))
    store.outbox.mark_delivered(ids[0], at(1))
    store.outbox.mark_delivered(ids[0], at(9))
    store.outbox.mark_failed(ids[1], "invalid_auth: fix the token", at(2), attempted=True)
    store.outbox.mark_failed(ids[2], "expired", at(3), status="expired")
    store.outbox.mark_retry(ids[0], "late retry of a delivered row", at(99))
    rows = {r.id: r for r in store.outbox.rows(("pending", "delivered", "failed", "expired"))}
    assert [rows[i].status for i in ids] == ["delivered", "failed", "expired", "pending"]
    assert (rows[ids[0]].attempts, rows[ids[0]].delivered_at, rows[ids[0]].last_error) == (1, at(1), None)
    assert (rows[ids[1]].attempts, rows[ids[1]].last_error) == (1, "invalid_auth: fix the token")
    assert rows[ids[2]].attempts == 0
    assert [n.id for n in store.outbox.pending("team-slack", at(10))] == [ids[3]]
    assert store.outbox.next_attempt_at() == T0
    assert [r.id for r in store.outbox.rows()] == [ids[1], ids[3]]
    with pytest.raises(ValueError, match="'failed' or 'expired'"):
        store.outbox.mark_failed(ids[3], "x", at(4), status="delivered")


def test_outbox_lists_the_most_recent_rows_in_id_order(store: StateStore) -> None:
    """``outbox(limit=n)`` shows the newest n rows, oldest first."""
    ids = store.commit_cycle(CycleWrite(at=T0, notifications=tuple(note(text=str(i)) for i in range(5))))
    assert [r.id for r in store.outbox.rows(("pending",), limit=2)] == list(ids[3:])
    with pytest.raises(ValueError, match="unknown outbox status"):
        store.outbox.rows(("sent",))


def test_purge_removes_old_finished_rows_and_ids_are_never_reused(store: StateStore) -> None:
    """Purging drops finished rows older than the cutoff, keeps pending ones, and ids keep growing."""
    ids = store.commit_cycle(CycleWrite(at=T0, notifications=(note(), note(), note(), note())))
    store.outbox.mark_delivered(ids[0], at(1))
    store.outbox.mark_failed(ids[1], "gone", at(2))
    store.outbox.mark_delivered(ids[2], at(100))
    assert store.outbox.purge_delivered(at(50)) == 2
    assert [r.id for r in store.outbox.rows(("pending", "delivered", "failed"))] == [ids[2], ids[3]]
    store.outbox.mark_delivered(ids[3], at(101))
    assert store.outbox.purge_delivered(at(1000)) == 2
    assert store.commit_cycle(CycleWrite(at=at(200), notifications=(note(),))) == (ids[3] + 1,)


def test_long_errors_are_clipped(store: StateStore) -> None:
    """A runaway error message does not bloat the state file."""
    (i,) = store.commit_cycle(CycleWrite(at=T0, notifications=(note(),)))
    store.outbox.mark_retry(i, "x" * 100_000, at(1))
    (row,) = store.outbox.rows()
    assert row.last_error is not None and len(row.last_error) <= 2000


def test_concurrent_cycles_and_marks_are_safe(store: StateStore) -> None:
    """Cycles committed on one thread while others mark rows never error or lose a row."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def marker() -> None:
        try:
            while not stop.is_set():
                for n in store.outbox.pending("team-slack", at(1000), limit=10):
                    store.outbox.mark_delivered(n.id, at(1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=marker) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(200):
            store.commit_cycle(CycleWrite(at=T0, upsert_entities=(replace(job(), status=f"S{i}"),),
                                          notifications=(note(),)))
    finally:
        stop.set()
        for t in threads:
            t.join()
    for n in store.outbox.pending("team-slack", at(1000), limit=1000):
        store.outbox.mark_delivered(n.id, at(1))
    assert errors == []
    delivered = store.outbox.rows(("delivered",))
    assert len(delivered) == 200 and all(r.attempts == 1 for r in delivered)


@pytest.mark.parametrize("version", range(statefile.SCHEMA_VERSION))
def test_every_earlier_schema_migrates_to_the_current_one_keeping_its_alerts(tmp_path: Path, version: int) -> None:
    """A state file of each earlier version opens, migrates in place and keeps the firing alert it held."""
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    for step in statefile.MIGRATIONS[:version]:
        for statement in step:
            conn.execute(statement)
    if version:
        conn.execute("INSERT INTO alert (fingerprint, rule, job, node, phase, active_since, fired_at, "
                     "last_notified_at) VALUES ('fp1', 'r', 'j', 'n', 'firing', 1, 2, 3)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    path.chmod(0o600)
    with StateStore.open(path) as store:
        assert list(store.load_alerts()) == (["fp1"] if version else [])
        assert store.threads.open_incidents() == {} and store.threads.ref("x") is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (statefile.SCHEMA_VERSION,)


def test_notification_keys_are_unique_across_state_files(tmp_path: Path) -> None:
    """Two state files (or one reset) both number their outbox from 1; their keys still differ."""
    keys = []
    for name in ("a.db", "b.db"):
        with StateStore.open(tmp_path / name) as store:
            store.commit_cycle(CycleWrite(at=T0, notifications=(NewNotification("hook", "job", {"text": "x"}),)))
            (row,) = store.outbox.pending_all("hook")
            assert row.id == 1 and row.key == f"{store.outbox.instance}-1" and len(store.outbox.instance) == 16
            keys.append(row.idempotency_key)
        with StateStore.open(tmp_path / name) as store:  # the same file keeps its id across restarts
            assert store.outbox.pending_all("hook")[0].key == keys[-1]
    assert keys[0] != keys[1]
