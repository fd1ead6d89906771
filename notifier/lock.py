"""One notifier process per state file.

Two processes delivering from one outbox could send a notification twice (``notifier
once`` started by hand while the service runs, say). An advisory ``flock`` on
``<state>.lock`` prevents that; the kernel releases it when the process dies, so a
kill -9 never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from notifier.errors import StateError


def usable_hint(directory: Path, exc: OSError) -> str:
    """Why a state directory cannot be used, and what to do: the words an operator acts on."""
    where = f"{exc.filename}" if exc.filename else str(directory)
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        return f"{where}: a part of the path is a file, not a directory; fix [state] path"
    if isinstance(exc, PermissionError):
        return (f"{where}: permission denied for user {os.getuid()}; make the directory writable by the service "
                "user (the unit's StateDirectory= does it) or fix [state] path")
    if exc.errno == 30:  # EROFS
        return f"{where}: the file system is read-only; fix [state] path"
    return f"{where}: {exc.strerror or exc}"


def _describe_holder(raw: bytes) -> str:
    """"notifier process pid 1234", and when no such pid runs here, that it may be another host."""
    text = raw.decode(errors="replace").strip()
    if not text.isdigit():
        return "another notifier process"
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return (f"pid {text}, which is not running on this host: another machine sharing this file system? "
                "Two hosts must never share one state file")
    except PermissionError:
        pass  # it runs, as another user
    return f"another notifier process (pid {text})"


def lock_holder(state_path: Path) -> str | None:
    """Who holds the state file's lock (without taking it for longer than a test), or None when it is free."""
    path = Path(f"{state_path}.lock")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or no such directory): nobody holds it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"held by {_describe_holder(os.read(fd, 32))}"
    finally:
        os.close(fd)
    return None


def creation_problem(state_path: Path) -> str | None:
    """Why a state file that does not exist yet could not be created there, without creating anything."""
    ancestor = state_path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable by user {os.getuid()} (the state file cannot be created)"
    return None


class ProcessLock:
    """Hold an exclusive lock on ``<state path>.lock`` for the life of the process' work."""

    def __init__(self, state_path: Path) -> None:
        self.path = Path(f"{state_path}.lock")
        self._fd: int | None = None

    def acquire(self) -> ProcessLock:
        state = str(self.path)[:-5]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot use the state file {state}: {usable_hint(self.path.parent, exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(os.read(fd, 32))
            os.close(fd)
            raise StateError(f"the state file {state} is in use by {holder}; stop it first "
                             "(`notifier state check` shows who holds it)") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> ProcessLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
