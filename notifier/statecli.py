"""``notifier state check`` and ``notifier state reset``: what to do when the state file is in trouble.

The service never resets a state file by itself: that would re-announce every firing alert
or forget them. A corrupt, truncated or too-new file stops it with an error naming the file
and these commands; the operator decides.

``check``  reads the file without changing it: schema version, ``PRAGMA integrity_check``,
           what it holds, who holds its lock. Exit 0 usable (or absent: it will be created),
           1 not usable.
``reset``  refuses while a notifier process holds the lock; moves the file (and its WAL and
           shared-memory files) aside as ``<name>.broken-<UTC time>``, never deletes it; creates
           an empty one; with ``--keep-silences`` copies the silences that have not ended from the
           old file (when it can still read them). Alerts still firing are announced once more
           by the next cycle: the new file does not know them.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from datetime import datetime
from pathlib import Path

from notifier.clock import utcnow
from notifier.config import load_config
from notifier.errors import StateError
from notifier.lock import ProcessLock, creation_problem, lock_holder
from notifier.silences import Silences, silence_rows
from notifier.statefile import SCHEMA_VERSION, StateFile, inspect, to_ms

EXIT_OK, EXIT_PROBLEM = 0, 1
SIDE_FILES = ("-wal", "-shm")


def run(args: argparse.Namespace, config_path: Path) -> int:
    path = load_config(config_path).state_path
    return check(path) if args.state_command == "check" else reset(path, keep_silences=args.keep_silences)


def check(path: Path) -> int:
    if not path.exists() and (problem := creation_problem(path)):
        print(f"state file {path}: NOT USABLE\n  problem: {problem}: fix [state] path")
        return EXIT_PROBLEM
    if not path.exists():
        print(f"state file {path}: absent; `notifier run` or `once` creates it")
        print(f"  lock: {lock_holder(path) or 'free'}")
        return EXIT_OK
    report = inspect(path)
    print(f"state file {path}: {'ok' if report.problem is None else 'NOT USABLE'}")
    if report.counts or report.sound:
        print(f"  schema version {report.schema_version} (this notifier: {SCHEMA_VERSION}"
              f"{'; migrated at the next start' if report.schema_version < SCHEMA_VERSION else ''})")
    print(f"  integrity: {'; '.join(report.integrity)}")
    if report.counts:
        print("  holds: " + ", ".join(f"{name} {n}" for name, n in report.counts.items()))
    holder = lock_holder(path)
    print(f"  lock: {holder or 'free'}")
    if report.problem:
        print(f"  problem: {report.problem}")
        return EXIT_PROBLEM
    return EXIT_OK


def reset(path: Path, *, keep_silences: bool) -> int:
    now = utcnow()
    with ProcessLock(path):  # StateError when the service (or another command) holds it: stop it first
        kept: list[tuple[object, ...]] = []
        if keep_silences and path.exists():
            kept = _read_silences(path, now)
        aside = _move_aside(path, now)
        state = StateFile.open(path)
        try:
            if kept:
                Silences(state).restore(kept)
        finally:
            state.close()
    if aside is not None:
        print(f"moved {path} aside to {aside} (nothing was deleted)")
    print(f"new empty state file {path}" + (f"; silences kept: {len(kept)}" if keep_silences else ""))
    print("alerts still firing will be announced once more at the next cycle")
    return EXIT_OK


def _read_silences(path: Path, now: datetime) -> list[tuple[object, ...]]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return silence_rows(conn, to_ms(now))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StateError(f"cannot read the silences of {path} ({exc}); run `notifier state reset` without "
                         "--keep-silences, and add them again with `notifier silence add`") from exc


def _move_aside(path: Path, now: datetime) -> Path | None:
    if not path.exists():
        return None
    aside = path.with_name(f"{path.name}.broken-{now:%Y%m%dT%H%M%SZ}")
    for suffix in ("", *SIDE_FILES):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{aside}{suffix}"))
    return aside
