"""What every campaign shares: figures, and the state file read from outside through read-only connections."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: Any
    target: str | None = None  # None: informative
    ok: bool = True

    def line(self) -> dict[str, Any]:
        out: dict[str, Any] = {"figure": self.name, "value": self.value}
        if self.target is not None:
            out.update(target=self.target, ok=self.ok)
        return out


@contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection (it never writes, so it cannot repair what it inspects)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        yield conn
    finally:
        conn.close()


def integrity(db: Path) -> tuple[str, bool]:
    """(``ok`` or the problems ``PRAGMA integrity_check`` reports, whether a copy had to be checked).

    A read-only connection cannot roll back a hot journal (``state.db-journal``, left by a kill
    while the first start switched the file to WAL): then a copy of the file and its journal is
    checked, as the next start would see it, and the original is still left untouched.
    """
    if not db.exists():
        return "ok", False  # killed before the file was created: nothing to check
    try:
        with read_only(db) as conn:
            return _verdict(conn), False
    except sqlite3.OperationalError as exc:
        if "readonly" not in str(exc) or not Path(f"{db}-journal").exists():
            return f"cannot check: {exc}", False
    except sqlite3.Error as exc:
        return f"cannot check: {exc}", False
    with tempfile.TemporaryDirectory(prefix="notifier-crash-copy-") as tmp:
        copy = Path(tmp) / db.name
        for suffix in ("", "-journal", "-wal"):
            if Path(f"{db}{suffix}").exists():
                shutil.copyfile(f"{db}{suffix}", f"{copy}{suffix}")
        try:
            conn = sqlite3.connect(copy)
            try:
                return _verdict(conn), True
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return f"cannot check the copy: {exc}", True


def _verdict(conn: sqlite3.Connection) -> str:
    rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    return "ok" if rows == ["ok"] else "; ".join(rows)


def query(db: Path, sql: str) -> list[tuple[Any, ...]] | None:
    """Rows, or None while the file or the table does not exist yet (or is locked for a moment)."""
    if not db.exists():
        return None
    try:
        with read_only(db) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return None


def outbox_ids(db: Path, status: str) -> set[int]:
    rows = query(db, f"SELECT id FROM outbox WHERE status = '{status}'")
    return {int(r[0]) for r in rows or ()}


def schema_version(db: Path) -> int | None:
    rows = query(db, "PRAGMA user_version")
    return int(rows[0][0]) if rows else None


def instance_id(db: Path) -> str | None:
    rows = query(db, "SELECT value FROM meta WHERE key = 'instance_id'")
    return str(rows[0][0]) if rows else None


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (for a server that must come back on the same port)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
