"""`notifier silence` and `notifier ack` as an operator types them, against a running `notifier run`."""

from __future__ import annotations

import os
import pwd
import re
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.simulator import Simulator, load_scenario
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_cli import config_for, notifier, spawn, wait_until


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed")) as s:
        yield s


def hook_config(write_config, sim: Simulator, hook: WebhookReceiver) -> Path:  # type: ignore[no-untyped-def]
    return config_for(write_config, sim.url, f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n',
                      interval="1s")


def alert_phase(config: Path) -> str | None:
    db = config.parent / "state.db"
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT phase FROM alert WHERE rule = 'node-exception'").fetchone()
        except sqlite3.OperationalError:
            return None
    return None if row is None else str(row[0])


def cycles_seen(sim: Simulator) -> int:
    return sum(1 for r in sim.requests.snapshot() if r.path.endswith("/status"))


def add(config: Path, *args: str) -> str:
    result = notifier("silence", "add", *args, "-c", str(config))
    assert result.returncode == 0, result.stderr
    (silence_id,) = result.stdout.split()
    assert re.fullmatch(r"[0-9a-f]{16}", silence_id)
    return silence_id


def test_silence_add_list_expire_while_the_service_runs(write_config, sim) -> None:  # type: ignore[no-untyped-def]
    """Silenced before the alert fires: nothing sent while `run` holds the lock; expire -> sent once, then quiet."""
    with WebhookReceiver() as hook:
        config = hook_config(write_config, sim, hook)
        silence_id = add(config, "--rule", "node-exception", "--job", "job_sms", "--for", "2h",
                         "--comment", "deploy", "--author", "alice")
        proc = spawn("run", "-c", str(config))
        try:
            wait_until(lambda: alert_phase(config) == "firing", what="the alert firing (muted)")
            seen = cycles_seen(sim)
            wait_until(lambda: cycles_seen(sim) >= seen + 2, what="two more cycles")
            assert hook.requests == []

            listed = notifier("silence", "list", "-c", str(config))
            assert listed.returncode == 0, listed.stderr
            (row,) = [line for line in listed.stdout.splitlines() if silence_id in line]
            assert "rule=node-exception job=job_sms" in row and "alice: deploy" in row
            assert row.split()[-3] == "1"  # MUTES: the one firing alert

            alerts = notifier("alerts", "-c", str(config))
            assert f"[muted: silence {silence_id} (alice: deploy)]" in alerts.stdout

            expired = notifier("silence", "expire", silence_id[:6], "-c", str(config))
            assert expired.returncode == 0, expired.stderr
            hook.wait_for(1)
            seen = cycles_seen(sim)
            wait_until(lambda: cycles_seen(sim) >= seen + 3, what="three more cycles")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        (request,) = hook.requests
        assert [(a["status"], a["node"]) for a in request.json["alerts"]] == [("firing", "DLI_SMS_GES")]
        assert silence_id not in notifier("silence", "list", "-c", str(config)).stdout


def test_silence_added_while_running_mutes_the_resolve(write_config, sim) -> None:  # type: ignore[no-untyped-def]
    """Fired and sent, then silenced from the CLI during `run`: its recovery inside the silence is not sent."""
    with WebhookReceiver() as hook:
        config = hook_config(write_config, sim, hook)
        proc = spawn("run", "-c", str(config))
        try:
            hook.wait_for(1)
            add(config, "--node", "DLI_SMS_GES", "--for", "1h", "--comment", "fixing it")
            seen = cycles_seen(sim)
            wait_until(lambda: cycles_seen(sim) >= seen + 2, what="the service to read the silence")
            sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
            wait_until(lambda: alert_phase(config) is None, what="the alert resolving")
            seen = cycles_seen(sim)
            wait_until(lambda: cycles_seen(sim) >= seen + 2, what="two more cycles")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        assert [a["status"] for r in hook.requests for a in r.json["alerts"]] == ["firing"]


@pytest.mark.parametrize(("args", "message"), [
    (("--for", "2h", "--comment", "x"), "at least one of --rule, --source, --job, --node"),
    (("--rule", "r", "--for", "soon", "--comment", "x"), "--for 'soon'"),
    (("--rule", "r", "--until", "2001-01-01T00:00Z", "--comment", "x"), "in the past"),
    (("--rule", "r", "--until", "tomorrow", "--comment", "x"), "ISO 8601"),
    (("--rule", "r", "--for", "2h", "--comment", " "), "--comment must say why"),
    (("--rule", "r", "--for", "400d", "--comment", "x"), "edit the rules instead"),
    (("--job", "", "--for", "2h", "--comment", "x"), "--job is empty"),
    (("--rule", "r", "--for", "99999999999d", "--comment", "x"), "too long"),
], ids=["no-matcher", "bad-duration", "past", "bad-time", "empty-comment", "too-long", "empty-glob", "overflow"])
def test_silence_add_refuses_bad_arguments(write_config, sim, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    """Bad arguments exit 2 with the reason, and write nothing."""
    config = config_for(write_config, sim.url, '[channels.stdout]\ntype = "console"\n')
    result = notifier("silence", "add", *args, "-c", str(config))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "SILENCES (0)" in notifier("silence", "list", "-c", str(config)).stdout


def test_silence_expire_of_an_unknown_id_says_so(write_config, sim) -> None:  # type: ignore[no-untyped-def]
    """`silence expire nosuch` exits 2 and points at `silence list`."""
    config = config_for(write_config, sim.url, '[channels.stdout]\ntype = "console"\n')
    result = notifier("silence", "expire", "nosuch", "-c", str(config))
    assert result.returncode == 2 and "notifier silence list" in result.stderr


def test_ack_by_fingerprint_and_by_matchers(write_config, sim) -> None:  # type: ignore[no-untyped-def]
    """`ack FINGERPRINT` and `ack --job` mark the firing alert; `alerts` shows who acknowledged it."""
    config = config_for(write_config, sim.url, '[channels.stdout]\ntype = "console"\n')
    assert notifier("once", "-c", str(config)).returncode == 0
    fp = re.search(r"\b([0-9a-f]{16})\b", notifier("alerts", "-c", str(config)).stdout)
    assert fp is not None
    by_fp = notifier("ack", fp.group(1)[:8], "--comment", "on it", "--author", "bob", "-c", str(config))
    assert by_fp.returncode == 0 and f"acknowledged {fp.group(1)}" in by_fp.stdout, by_fp.stderr
    assert '[acknowledged by bob "on it": no repeats]' in notifier("alerts", "-c", str(config)).stdout
    by_job = notifier("ack", "--job", "job_sms", "--author", "carol", "-c", str(config))
    assert by_job.returncode == 0, by_job.stderr
    assert "[acknowledged by carol: no repeats]" in notifier("alerts", "-c", str(config)).stdout
    none = notifier("ack", "--job", "other", "-c", str(config))
    assert none.returncode == 2 and "no firing alert matches job=other" in none.stderr
    both = notifier("ack", fp.group(1), "--job", "job_sms", "-c", str(config))
    assert both.returncode == 2


def test_the_default_author_is_the_login_name_without_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd units, cron and some containers run without $USER: the silence still says who added it."""
    from notifier.cli import _default_author

    for name in ("SUDO_USER", "USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    assert _default_author() == pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("SUDO_USER", "alice")  # sudo notifier silence add ...: the person, not root
    assert _default_author() == "alice"
