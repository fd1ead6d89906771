"""[paths] watch: edits to rule files apply at the next cycle without a signal; a broken edit is reported once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.core.models import Rule
from notifier.simulator import Simulator, load_scenario
from notifier.watch import describe_change, settled, signature, watched_files
from tests.pipeline_support import NODE_EXCEPTION
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_cli import config_for, spawn, wait_until

JOB_RULE = '\n[[rule]]\nname = "job-normal"\nscope = "job"\nstatus = ["NORMAL"]\nseverity = "info"\n'


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed")) as s:
        yield s


def save(path: Path, text: str) -> None:
    """Write like an editor (temp file + rename), dated 2 s ago so the change counts as settled."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)
    past = time.time() - 2
    os.utime(path, (past, past))


def test_an_edited_rule_file_applies_at_the_next_cycle_and_a_broken_one_is_reported_once(
        write_config, sim: Simulator) -> None:  # type: ignore[no-untyped-def]
    """Adding a rule fires it without SIGHUP; a syntax error is logged once over many cycles, old rules kept."""
    with WebhookReceiver() as hook:
        config = config_for(write_config, sim.url, f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n',
                            interval="1s")
        rule_file = config.parent / "rules" / "rules.toml"
        proc = spawn("run", "-c", str(config))
        try:
            hook.wait_for(1)  # node-exception, from the start
            save(rule_file, NODE_EXCEPTION + JOB_RULE)
            wait_until(lambda: any(a["rule"] == "job-normal" for r in hook.requests for a in r.json["alerts"]),
                       what="the added rule firing")
            save(rule_file, NODE_EXCEPTION + JOB_RULE + "\n[[rule]\nname = ")
            seen = len(sim.requests.snapshot())
            wait_until(lambda: len(sim.requests.snapshot()) >= seen + 4, what="four more cycles")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "configuration reloaded reason=files changed rules=2 channels=1 change=rules added: job-normal" in stderr
    assert stderr.count("reload failed, keeping the running configuration reason=files changed") == 1
    assert "invalid TOML" in stderr


def test_editor_temp_files_and_hidden_files_are_not_watched(write_config, sim: Simulator) -> None:  # type: ignore[no-untyped-def]
    """Only the config, rules/*.toml and templates/*.j2 count; .swp, ~ and hidden files do not."""
    from notifier.config import load_config

    config_path = config_for(write_config, sim.url, '[channels.stdout]\ntype = "console"\n')
    config = load_config(config_path)
    rules = config.rules_dir
    for name in (".rules.toml.swp", "rules.toml~", ".hidden.toml", "#rules.toml#"):
        (rules / name).write_text("junk")
    assert [p.name for p in watched_files(config)] == ["notifier.toml", "rules.toml"]


def test_a_change_younger_than_a_second_waits_for_the_next_cycle(tmp_path: Path) -> None:
    """A save in progress (mtime just now) is not settled; one from 2 s ago is."""
    path = tmp_path / "r.toml"
    path.write_text("x")
    assert not settled(signature([path]))
    past = time.time() - 2
    os.utime(path, (past, past))
    assert settled(signature([path]))


def test_the_log_line_says_which_rules_changed() -> None:
    """Added, removed and changed rules are named; a template-only change says the rules are unchanged."""
    a = Rule(name="a", scope="job", channels=("c",), status=("EXCEPTION",))
    b = Rule(name="b", scope="job", channels=("c",), status=("EXCEPTION",))
    assert describe_change([a, b], [Rule(name="a", scope="job", channels=("c",), status=("STOPPED",)),
                                    Rule(name="c", scope="job", channels=("c",), status=("EXCEPTION",))]) == \
        "rules added: c; removed: b; changed: a"
    assert describe_change([a], [a]) == "rules unchanged"
