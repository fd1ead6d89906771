"""Notice edits to the config file, the rules directory and the templates directory, without a signal.

People configure notifier by editing rule files; ``[paths] watch = true`` (the default)
applies an edit at the next cycle exactly as SIGHUP would (validated, rejected whole if
anything is wrong). This is a cheap stat of a few files per cycle rather than inotify:
the cycle is the unit of change anyway. A half-written file must not cause an error
storm: a change younger than ``SETTLE_SECONDS`` waits for the next cycle (an editor
still saving), hidden files and ``#`` lock files are ignored (as the rule loader does;
``~``/``.swp`` backups never match ``*.toml``), and a rejected version is reported once,
until the files change again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from notifier.config import Config
from notifier.core.models import Rule
from notifier.rulefile import is_editor_file

SETTLE_SECONDS = 1.0

Signature = tuple[tuple[str, int, int], ...]
"""(path, mtime_ns, size) of every watched file, sorted: equal signatures mean nothing changed."""


def watched_files(config: Config) -> list[Path]:
    """The config file, rules/*.toml and templates/*.j2 (no hidden or editor temp files)."""
    files = [config.path]
    for directory, pattern in ((config.rules_dir, "*.toml"), (config.templates_dir, "*.j2")):
        if directory is not None and directory.is_dir():
            files.extend(p for p in sorted(directory.glob(pattern)) if not is_editor_file(p.name))
    return files


def signature(files: Iterable[Path]) -> Signature:
    out = []
    for path in files:
        try:
            st = path.stat()
        except OSError:  # vanished between listing and stat: its absence is the change
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


def settled(sig: Signature, now: Callable[[], float] = time.time) -> bool:
    """No watched file changed in the last SETTLE_SECONDS (a save in progress waits for the next cycle)."""
    newest = max((mtime for _, mtime, _ in sig), default=0)
    return now() - newest / 1e9 >= SETTLE_SECONDS


def describe_change(old: Iterable[Rule], new: Iterable[Rule]) -> str:
    """"rules added: a; removed: b; changed: c", or "rules unchanged" (then a template or the config changed)."""
    before, after = {r.name: r for r in old}, {r.name: r for r in new}
    parts = [f"{what}: {', '.join(sorted(names))}" for what, names in (
        ("added", after.keys() - before.keys()),
        ("removed", before.keys() - after.keys()),
        ("changed", {n for n in before.keys() & after.keys() if before[n] != after[n]}),
    ) if names]
    return "rules " + "; ".join(parts) if parts else "rules unchanged"
