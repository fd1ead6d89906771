"""The command line as an operator uses it: real processes, real sockets, exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.simulator import Simulator, load_scenario
from tests.pipeline_support import NODE_EXCEPTION, source_toml
from tests.support.slack_server import SlackServer
from tests.support.smtp_server import Certs, SmtpServer, free_port
from tests.support.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent



def notifier(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notifier", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "notifier", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll an outside process' observable effect; this waits for an event, not for time to pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed")) as s:
        yield s


def config_for(write_config, sim_url: str, channels: str, *, rules: str = NODE_EXCEPTION,  # type: ignore[no-untyped-def]
               interval: str = "1h") -> Path:
    source = f'{source_toml(sim_url)}\n[schedule]\ninterval = "{interval}"\n'
    return write_config(source=source, rules=rules, channels=channels)


def outbox_rows(config: Path) -> list[tuple[int, str]]:
    db = config.parent / "state.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return conn.execute("SELECT id, status FROM outbox ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []


def test_check_names_file_rule_and_key_of_a_typo(write_config, sim) -> None:
    """`notifier check` on a rule with a typo'd key exits 2 and names the file, the rule and the key."""
    rules = NODE_EXCEPTION.replace('severity = "critical"', 'severty = "critical"')
    config = config_for(write_config, sim.url, '[channels.stdout]\ntype = "console"\n', rules=rules)
    result = notifier("check", "-c", str(config))
    assert result.returncode == 2
    assert str(config.parent / "rules" / "rules.toml") in result.stderr
    assert "node-exception" in result.stderr and "severty" in result.stderr
    assert "did you mean 'severity'" in result.stderr


def test_check_catches_a_template_error_before_production(write_config, sim, tmp_path: Path) -> None:
    """An undefined variable in a user template fails `notifier check` with exit 2 and the template's name."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "default.console.j2").write_text("{{ alerts[0].no_such_field }}\n")
    config = config_for(write_config, sim.url, '[channels.stdout]\ntype = "console"\n')
    config.write_text(config.read_text().replace('rules = "rules"', 'rules = "rules"\ntemplates = "templates"'))
    result = notifier("check", "-c", str(config))
    assert result.returncode == 2, result.stderr
    assert "default.console.j2" in result.stderr and "no_such_field" in result.stderr


def test_check_accepts_the_example_config() -> None:
    """The shipped example config, rules and templates pass `notifier check`."""
    result = notifier("check", "-c", "examples/notifier.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


@pytest.mark.parametrize("command", [["demo"], ["simulate"], ["init", "x"], ["test-rules", "t.toml"]])
def test_a_command_that_reads_no_config_refuses_c_instead_of_ignoring_it(command: list[str], tmp_path: Path) -> None:
    """`notifier demo -c mine.toml` would run the demo's own config: say so (exit 2), write nothing, start nothing."""
    result = subprocess.run([sys.executable, "-m", "notifier", *command, "-c", "mine.toml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: notifier {command[0]} reads no config file (")
    assert result.stderr.rstrip().endswith("leave out -c mine.toml") and list(tmp_path.iterdir()) == []


def test_once_against_simulate_prints_the_alert_once(write_config, tmp_path: Path) -> None:
    """`notifier simulate` + `notifier once`, as the README shows: one alert, then nothing new, exit 0."""
    port = free_port()
    sim = spawn("simulate", "--scenario", "seed", "--port", str(port))
    try:
        wait_until(lambda: _listening(port), what="simulator")
        config = config_for(write_config, f"http://127.0.0.1:{port}", '[channels.stdout]\ntype = "console"\n')
        first = notifier("once", "-c", str(config))
        assert first.returncode == 0, first.stderr
        assert "[CRITICAL] job_sms: DLI_SMS_GES (DLI SQL)" in first.stdout
        second = notifier("once", "-c", str(config))
        assert second.returncode == 0 and second.stdout == ""
        alerts = notifier("alerts", "-c", str(config))
        assert "firing   node-exception" in alerts.stdout and "job_sms/DLI_SMS_GES" in alerts.stdout
        # `notifier alerts | head`: the reader is gone before anything is written; exit 0, no traceback
        piped = subprocess.Popen([sys.executable, "-m", "notifier", "alerts", "-c", str(config)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        assert piped.stdout is not None and piped.stderr is not None
        piped.stdout.close()
        assert piped.wait(timeout=60) == 0 and b"Traceback" not in piped.stderr.read()
    finally:
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(timeout=10) == 0


def test_once_exits_1_when_the_source_is_unreachable(write_config) -> None:
    """Nothing listening at the endpoint: `notifier once` exits 1 and says why."""
    config = config_for(write_config, f"http://127.0.0.1:{free_port()}", '[channels.stdout]\ntype = "console"\n')
    result = notifier("once", "-c", str(config))
    assert result.returncode == 1
    assert "source error: job_sms: cannot reach the API" in result.stderr


def test_once_exits_0_when_only_a_channel_is_down(write_config, sim) -> None:
    """A channel that is down is not a failure of `once`: exit 0, the notification stays queued."""
    config = config_for(write_config, sim.url, f'[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:{free_port()}/h"\n')
    result = notifier("once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert outbox_rows(config) == [(1, "pending")]


def test_sigkill_before_delivery_then_restart_delivers_once(write_config, sim) -> None:
    """Killed with SIGKILL after the outbox write and before delivery, the notification goes out after restart."""
    port = free_port()
    config = config_for(write_config, sim.url, f'[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:{port}/hook"\n')
    proc = spawn("run", "-c", str(config))
    try:
        wait_until(lambda: outbox_rows(config) == [(1, "pending")], what="the outbox write")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with WebhookReceiver(port=port) as hook:
        proc = spawn("run", "-c", str(config))
        try:
            hook.wait_for(1)
            wait_until(lambda: outbox_rows(config) == [(1, "delivered")], what="delivery")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        assert len(hook.requests) == 1
        assert hook.requests[0].json["alerts"][0]["node"] == "DLI_SMS_GES"


def test_sigterm_finishes_and_exits_cleanly(write_config, sim) -> None:
    """`notifier run` delivers the first cycle's alert, and on SIGTERM exits 0 with the state committed."""
    with WebhookReceiver() as hook:
        config = config_for(write_config, sim.url, f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n')
        proc = spawn("run", "-c", str(config))
        hook.wait_for(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert outbox_rows(config) == [(1, "delivered")]
        again = notifier("once", "-c", str(config))  # the lock was released and nothing is re-sent
        assert again.returncode == 0 and len(hook.requests) == 1


def test_sighup_reloads_rules_and_keeps_the_old_ones_when_new_are_bad(write_config, sim) -> None:
    """SIGHUP swaps in new rules; a broken rule file on SIGHUP is logged and the service keeps running."""
    quiet = '[[rule]]\nname = "job-stopped"\nscope = "job"\ntransition = { to = ["STOPPED"] }\n'
    with WebhookReceiver() as hook:
        config = config_for(write_config, sim.url, f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n',
                            rules=quiet, interval="1s")
        rules_file = config.parent / "rules" / "rules.toml"
        proc = spawn("run", "-c", str(config))
        try:
            wait_until(lambda: _count(config, "entity") > 0, what="the first cycle")
            rules_file.write_text(NODE_EXCEPTION)
            proc.send_signal(signal.SIGHUP)
            hook.wait_for(1)
            assert hook.requests[0].json["alerts"][0]["rule"] == "node-exception"

            rules_file.write_text(NODE_EXCEPTION.replace("scope", "scoop"))
            proc.send_signal(signal.SIGHUP)
            before = _count(config, "entity WHERE status = 'STOPPED'")
            sim.set_node_status("job_sms", "CREATE_GES_DIR", "STOPPED")  # a change the next cycle writes
            wait_until(lambda: _count(config, "entity WHERE status = 'STOPPED'") > before, what="a cycle after it")
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert "reload failed, keeping the running configuration" in err and "scoop" in err
        assert len(hook.requests) == 1


def test_second_process_on_the_same_state_file_is_refused(write_config, sim) -> None:
    """`notifier once` while `notifier run` holds the state file fails clearly instead of double-sending."""
    with WebhookReceiver() as hook:
        config = config_for(write_config, sim.url, f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n')
        proc = spawn("run", "-c", str(config))
        try:
            hook.wait_for(1)
            result = notifier("once", "-c", str(config))
            assert result.returncode == 1
            assert "another notifier process" in result.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def test_test_channel_reports_success_and_the_exact_error(write_config, sim) -> None:
    """`notifier test-channel` exits 0 on delivery and 1 with the channel's own error when it fails."""
    with WebhookReceiver() as hook:
        channels = (f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n\n'
                    f'[channels.down]\ntype = "webhook"\nurl = "http://127.0.0.1:{free_port()}/x"\n')
        config = config_for(write_config, sim.url, channels)
        ok = notifier("test-channel", "hook", "-c", str(config))
        assert ok.returncode == 0, ok.stderr
        assert "ok:" in ok.stdout and len(hook.requests) == 1
        test_alert = hook.requests[0].json["alerts"][0]
        assert "TEST" in test_alert["summary"] and test_alert["rule"] == "notifier-test"  # never a real rule's alert
        again = notifier("test-channel", "hook", "-c", str(config))
        assert again.returncode == 0 and len(hook.requests) == 2
        keys = [r.headers["idempotency-key"] for r in hook.requests]
        assert keys[0] != keys[1] and all(k.startswith("test-") for k in keys)  # a receiver must not drop the 2nd
        hook.respond_with(404, b"no such hook")
        bad = notifier("test-channel", "hook", "-c", str(config))
        assert bad.returncode == 1 and "404" in bad.stderr and "permanent" in bad.stderr
        down = notifier("test-channel", "down", "-c", str(config))
        assert down.returncode == 1 and "Connect" in down.stderr
        unknown = notifier("test-channel", "nope", "-c", str(config))
        assert unknown.returncode == 2 and "nope" in unknown.stderr


def test_test_channel_through_local_slack_and_smtp_servers(write_config, sim, slack_server: SlackServer,
                                                           starttls_server: SmtpServer, certs: Certs) -> None:
    """`notifier test-channel` delivers through the real slack_sdk and smtplib clients, and names their errors."""
    channels = f"""
[channels.team-slack]
type = "slack"
channel = "#data-alerts"
base_url = "{slack_server.base_url}"

[channels.oncall-mail]
type = "email"
host = "127.0.0.1"
port = {starttls_server.port}
security = "starttls"
ca_file = "{certs.ca_file}"
from = "notifier@example.com"
to = ["oncall@example.com"]
"""
    config = config_for(write_config, sim.url, channels)
    slack = notifier("test-channel", "team-slack", "-c", str(config), env={"SLACK_BOT_TOKEN": "xoxb-test"})
    assert slack.returncode == 0, slack.stderr
    assert "credentials: bot " in slack.stdout  # auth.test answered before the post
    (message,) = slack_server.messages
    assert message["channel"] == "#data-alerts" and "job_sms" in message["text"]

    mail = notifier("test-channel", "oncall-mail", "-c", str(config))
    assert mail.returncode == 0, mail.stderr
    (received,) = starttls_server.wait_for(1)
    assert received.tls and received.message["Subject"].startswith("[CRITICAL] job_sms:")

    wrong = notifier("test-channel", "team-slack", "-c", str(config), env={"SLACK_BOT_TOKEN": "xoxb-wrong-secret"})
    assert wrong.returncode == 1 and "invalid_auth" in wrong.stderr and "SLACK_BOT_TOKEN" in wrong.stderr
    assert "xoxb-wrong-secret" not in wrong.stderr + wrong.stdout

    missing = notifier("test-channel", "team-slack", "-c", str(config), env={"SLACK_BOT_TOKEN": ""})
    assert missing.returncode == 2 and "SLACK_BOT_TOKEN" in missing.stderr


def test_log_format_json_writes_one_object_per_line(write_config, sim) -> None:
    """--log-format json on any subcommand: every stderr line is a JSON object with level and msg."""
    import json

    config = config_for(write_config, sim.url, '[channels.stdout]\ntype = "console"\n')
    result = notifier("once", "-c", str(config), "--log-format", "json")
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "msg"} <= set(entry) for entry in lines)


def _count(config: Path, table: str) -> int:
    db = config.parent / "state.db"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("argv", [
    ["once", "-c", "a.toml", "--log-format", "json"],
    ["-c", "a.toml", "--log-format", "json", "once"],
    ["-c", "other.toml", "once", "-c", "a.toml", "--log-format", "json"],
], ids=["after", "before", "after-wins"])
def test_common_options_before_or_after_the_subcommand(argv: list[str]) -> None:
    """-c/--log-format work on either side of the subcommand; the one after it wins."""
    from notifier.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.command, args.config, args.log_format, args.log_level) == ("once", Path("a.toml"), "json", "info")


def test_check_refuses_an_empty_rules_directory(write_config, sim) -> None:
    """A rules path with no rules would silently alert on nothing: `notifier check` exits 2 and names it."""
    config = config_for(write_config, sim.url, '[channels.stdout]\ntype = "console"\n', rules="# nothing yet\n")
    result = notifier("check", "-c", str(config))
    assert result.returncode == 2
    assert f"{config.parent / 'rules'}: no rules" in result.stderr


def test_check_refuses_a_config_without_channels(write_config, sim) -> None:
    """No channel at all means every alert goes nowhere: `notifier check` exits 2 and says so."""
    config = config_for(write_config, sim.url, "")
    result = notifier("check", "-c", str(config))
    assert result.returncode == 2 and "no [channels.NAME] tables" in result.stderr


def test_every_command_says_what_it_does_and_its_exit_codes() -> None:
    """`notifier COMMAND --help` has a description with the exit codes; `run`'s names its signals."""
    import argparse

    from notifier.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers = dict(sub.choices)
    for group in ("silence", "state"):
        parsers.update({f"{group} {name}": p for name, p in next(
            a for a in parsers[group]._actions if isinstance(a, argparse._SubParsersAction)).choices.items()})
    missing = [name for name, p in parsers.items()
               if name not in ("silence", "state") and "Exit" not in (p.description or "")]
    assert missing == []
    assert all(word in parsers["run"].description for word in ("SIGTERM", "SIGHUP", "Exit 0"))


def test_json_logs_put_the_fields_in_keys_and_no_secret_anywhere(write_config, sim) -> None:  # type: ignore[no-untyped-def]
    """--log-format json: `event`, `job`, `channel`, `notification_id`, `duration_ms` are keys; at debug level,
    with every kind of secret set, no secret value appears in any line."""
    import json

    secrets = {"NOTIFIER_T_AK": "AK-SECRET-VALUE-0001", "NOTIFIER_T_SK": "SK-SECRET-VALUE-0002",
               "NOTIFIER_T_HOOK": "HOOK-SECRET-VALUE-0003", "SLACK_BOT_TOKEN": "xoxb-SECRET-VALUE-0004"}
    with WebhookReceiver() as hook:
        channels = (f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\nsecret_env = "NOTIFIER_T_HOOK"\n\n'
                    f'[channels.down]\ntype = "webhook"\nurl = "http://127.0.0.1:{free_port()}/x?token=HOOK-SECRET"\n')
        source = (f'[source]\nendpoint = "{sim.url}"\nproject_id = "b384b9e9ab9b4ee8994c8633aabc9505"\n'
                  'auth = "aksk"\nak_env = "NOTIFIER_T_AK"\nsk_env = "NOTIFIER_T_SK"\nretries = 0\n')
        config = write_config(source=source, rules=NODE_EXCEPTION, channels=channels)
        result = notifier("once", "-c", str(config), "--log-format", "json", "--log-level", "debug", env=secrets)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (cycle,) = [entry for entry in lines if entry.get("event") == "cycle_done"]
    assert cycle["jobs"] == 1 and cycle["notifications"] == 2 and isinstance(cycle["duration_ms"], int)
    (sent,) = [entry for entry in lines if entry.get("event") == "notification_delivered"]
    assert (sent["channel"], sent["job"], sent["notification_id"]) == ("hook", "job_sms", 2)  # "down" queued first
    (fired,) = [entry for entry in lines if entry.get("event") == "alert_firing"]
    assert (fired["rule"], fired["job"], fired["node"], len(fired["fingerprint"])) == (
        "node-exception", "job_sms", "DLI_SMS_GES", 16)
    (retry,) = [entry for entry in lines if entry.get("event") == "notification_not_delivered"]
    assert retry["channel"] == "down" and "error" in retry
    everything = result.stderr + result.stdout
    assert not [value for value in (*secrets.values(), "HOOK-SECRET") if value in everything]


def test_slack_thread_survives_kill_9_between_parent_reply_and_resolve(write_config, sim, slack_server) -> None:
    """`notifier run` killed with SIGKILL twice: the reply and the resolve still land in the first message's thread."""
    channels = f'[channels.team]\ntype = "slack"\nchannel = "#data-alerts"\nbase_url = "{slack_server.base_url}"\n'
    config = config_for(write_config, sim.url, channels, interval="1s")
    env = {"SLACK_BOT_TOKEN": "xoxb-test"}

    def run_until(posts: int, updates: int) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "notifier", "run", "-c", str(config)], cwd=ROOT,
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: len(slack_server.posts) >= posts and len(slack_server.updates) >= updates,
                       what=f"{posts} posts and {updates} edits")
            wait_until(lambda: outbox_rows(config)[-1][1] == "delivered", what="the delivery mark")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    run_until(posts=1, updates=0)
    parent = slack_server.posts[0]
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    run_until(posts=2, updates=1)
    sim.set_node_status("job_sms", "DIS_INPUT", "NORMAL")
    sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
    run_until(posts=3, updates=2)
    assert [p.body.get("thread_ts") for p in slack_server.posts] == [None, parent.ts, parent.ts]
    final = slack_server.message(parent.ts)
    assert final is not None and "RESOLVED" in final["text"] + json.dumps(final["blocks"])
    with sqlite3.connect(config.parent / "state.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT COUNT(*) FROM incident").fetchone() == (0,)
