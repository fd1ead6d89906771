"""A state file in trouble: a clear error naming it and a documented way out, never a silent reset.

Corrupt, truncated, too new, locked (here or, apparently, by another host), unusable paths, and
a full disk during a commit; ``notifier state check`` and ``notifier state reset --keep-silences``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from notifier.core.mutes import Matchers, Silence
from notifier.errors import StateError
from notifier.lock import ProcessLock
from notifier.simulator import ManualClock, Simulator, load_scenario
from notifier.state import StateStore
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml, webhook_toml
from tests.support.fakes import START
from tests.support.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed"), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def config(write_config, sim: Simulator) -> Path:  # type: ignore[no-untyped-def]
    return write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels='[channels.c]\ntype = "console"\n')


def notifier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notifier", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def state_of(config: Path) -> Path:
    return config.parent / "state.db"


def a_used_state_file(config: Path) -> Path:
    result = notifier("once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    return state_of(config)


def corrupt(path: Path) -> None:
    with open(path, "r+b") as f:  # the page after the header: a b-tree page becomes garbage
        f.seek(4096)
        f.write(b"\xff" * 4096)


def test_check_reports_a_sound_file_and_what_it_holds(config: Path) -> None:
    assert "absent" in notifier("state", "check", "-c", str(config)).stdout
    path = a_used_state_file(config)
    result = notifier("state", "check", "-c", str(config))
    assert result.returncode == 0, result.stdout
    assert f"state file {path}: ok" in result.stdout and "integrity: ok" in result.stdout
    assert "alerts firing 1" in result.stdout and "lock: free" in result.stdout


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "garbage", "newer"])
def test_a_damaged_state_file_stops_the_service_with_the_way_out(config: Path, damage: str) -> None:
    path = a_used_state_file(config)
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    if damage == "corrupt":
        corrupt(path)
    elif damage == "truncated":
        os.truncate(path, path.stat().st_size // 3)
    elif damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()  # checkpointed into the file, the WAL gone
    before = path.read_bytes()
    once = notifier("once", "-c", str(config))
    assert once.returncode == 1 and "Traceback" not in once.stderr
    assert str(path) in once.stderr
    assert ("notifier state reset" in once.stderr) or ("upgrade notifier" in once.stderr), once.stderr
    assert path.read_bytes() == before  # left untouched: nothing re-fires, nothing is forgotten silently
    checked = notifier("state", "check", "-c", str(config))
    assert checked.returncode == 1 and "NOT USABLE" in checked.stdout and "problem:" in checked.stdout
    assert notifier("check", "-c", str(config)).returncode == 2


def test_reset_keeps_silences_moves_the_old_file_aside_and_is_refused_while_in_use(config: Path) -> None:
    path = a_used_state_file(config)
    with StateStore.open(path) as store:
        far = START + timedelta(days=3650)
        store.silences.add(Silence(id="keep", matchers=Matchers(job="job_sms"), starts_at=START, ends_at=far,
                                   created_at=START, comment="deploy", author="ops"))
        store.silences.add(Silence(id="ended", matchers=Matchers(job="x"), starts_at=START,
                                   ends_at=START + timedelta(hours=1), created_at=START, comment="old"))
    with ProcessLock(path):
        busy = notifier("state", "reset", "--keep-silences", "-c", str(config))
    assert busy.returncode == 1 and "in use by another notifier process" in busy.stderr

    done = notifier("state", "reset", "--keep-silences", "-c", str(config))
    assert done.returncode == 0, done.stderr
    (aside,) = path.parent.glob("state.db.broken-*[0-9]Z")
    assert "moved" in done.stdout and str(aside) in done.stdout and "silences kept: 1" in done.stdout
    with StateStore.open(aside) as old:
        assert len(old.load_alerts()) == 1  # the old file is intact beside the new one
    with StateStore.open(path) as new:
        assert [s.id for s in new.silences.current(START)] == ["keep"] and new.load_alerts() == {}


def test_a_lock_held_by_a_pid_not_running_here_names_the_other_host_risk(config: Path, tmp_path: Path) -> None:
    path = state_of(config)
    helper = subprocess.Popen([sys.executable, "-c", "import sys, fcntl, os\n"
                               f"fd = os.open({str(path) + '.lock'!r}, os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, b'999999999')\n"
                               "print('locked', flush=True)\nsys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert helper.stdout is not None and helper.stdout.readline().strip() == "locked"
        once = notifier("once", "-c", str(config))
        assert once.returncode == 1 and "not running on this host" in once.stderr
        assert "another machine" in notifier("state", "check", "-c", str(config)).stdout
    finally:
        helper.communicate("", timeout=10)


@pytest.mark.parametrize("command", ["once", "run"])
def test_a_state_path_that_cannot_be_created_is_an_error_not_a_traceback(write_config, sim, command) -> None:
    config = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION,
                          channels='[channels.c]\ntype = "console"\n')
    (config.parent / "blocker").write_text("a file where a directory should be")
    text = config.read_text().replace('path = "state.db"', 'path = "blocker/sub/state.db"')
    config.write_text(text)
    result = notifier(command, "-c", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "blocker/sub/state.db" in result.stderr and "not a directory" in result.stderr
    checked = notifier("check", "-c", str(config))
    assert checked.returncode == 2 and "state: path:" in checked.stderr
    assert "is a file, not a directory" in checked.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real file system that fills up (needs root, as CI has; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill the file system to the last block; return the filler (delete it to give the space back)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_during_a_commit_keeps_the_old_state_and_recovers(
        write_config, sim: Simulator, webhook_receiver: WebhookReceiver, small_disk: Path) -> None:
    """The disk fills mid-run: the commit fails whole, the process goes on, and it recovers when space returns."""
    config = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION,
                          channels=webhook_toml(webhook_receiver.url))
    config.write_text(config.read_text().replace('path = "state.db"', f'path = "{small_disk}/state.db"'))
    clock = LinkedClock(sim)
    p = Pipeline(config, clock)
    try:
        p.cycle()  # the first alert is committed and sent
        filler = fill(small_disk)
        sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
        clock.advance(60)
        with pytest.raises(StateError, match="full"):
            p.cycle()
        assert len(p.store.load_alerts()) == 1 and len(p.app.poller.alerts) == 1  # memory == disk, no half cycle
        filler.unlink()  # space is back
        clock.advance(60)
        p.cycle()
        nodes = [a["node"] for r in webhook_receiver.requests for a in r.json["alerts"]
                 if a["rule"] == "node-exception"]
        assert nodes == ["DLI_SMS_GES", "DIS_INPUT"]
        with sqlite3.connect(small_disk / "state.db") as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        p.close()


def test_another_programs_database_is_refused_untouched_and_found_by_check(config: Path) -> None:
    path = state_of(config)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    path.chmod(0o644)
    before = path.read_bytes()
    once = notifier("once", "-c", str(config))
    assert once.returncode == 1 and "of something else" in once.stderr
    assert path.read_bytes() == before and path.stat().st_mode & 0o777 == 0o644
    assert notifier("state", "check", "-c", str(config)).returncode == 1
    assert notifier("check", "-c", str(config)).returncode == 2


def test_state_check_on_a_path_through_a_file_says_so(config: Path) -> None:
    (config.parent / "afile").write_text("x")
    config.write_text(config.read_text().replace('path = "state.db"', 'path = "afile/state.db"'))
    checked = notifier("state", "check", "-c", str(config))
    assert checked.returncode == 1 and "is a file, not a directory" in checked.stdout and not checked.stderr
