"""``notifier test-rules``: rule unit-test files run through the real parser and plan_cycle."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.rulefile import load_rules
from notifier.ruletest import EXIT_BAD_FILE, EXIT_FAILED, EXIT_OK, load, run_files

ROOT = Path(__file__).resolve().parent.parent
RULE_TESTS = sorted((ROOT / "tests" / "rules").glob("*.toml"))
DEFAULT_RULES = (ROOT / "rules" / "default.toml").as_posix()
HEADER = f'rule_files = ["{DEFAULT_RULES}"]\ninterval = "1m"\n'

FIRING_NODE = """
[[input]]
at = "0m"
job = "job_sms"
status = "NORMAL"
nodes = [{ name = "DLI_SMS_GES", type = "DLI SQL", status = "EXCEPTION" }]
"""


def notifier_test_rules(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notifier", "test-rules", *map(str, files)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def run_here(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_files([path], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "t.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_rule_tests_pass() -> None:
    """Every tests/rules/*.toml passes through `notifier test-rules` (exit 0, no FAIL line)."""
    assert RULE_TESTS, "no rule tests shipped"
    proc = notifier_test_rules(*(p.relative_to(ROOT) for p in RULE_TESTS))
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout and proc.stderr == ""
    for path in RULE_TESTS:
        assert f"PASS tests/rules/{path.name}: " in proc.stdout
    assert f"{len(RULE_TESTS)} files: " in proc.stdout and " 0 failed" in proc.stdout


def test_every_default_rule_is_tested_firing_and_resolved() -> None:
    """Each rule of rules/default.toml is expected firing, and resolved if it resolves, by some shipped test."""
    firing: set[str] = set()
    resolved: set[str] = set()
    for path in RULE_TESTS:
        for expectation in load(path).expectations:
            for n in expectation.notifications:
                (firing if n.status == "firing" else resolved).add(n.rule)
    rules = load_rules(ROOT / "rules", channels=())
    assert {r.name for r in rules} - firing == set()
    assert {r.name for r in rules if r.resolved} - resolved == set()


def test_wrong_node_fails_showing_expected_and_actual(tmp_path: Path) -> None:
    """A copy of a shipped test expecting the wrong node exits 1 and prints both notifications."""
    text = (ROOT / "tests" / "rules" / "node-exception.toml").read_text()
    text = text.replace('"../../rules/default.toml"', f'"{DEFAULT_RULES}"')
    text = text.replace('node = "SQL_AGG"', 'node = "SQL_AGX"')  # the expectations; the input says name = ...
    proc = notifier_test_rules(write(tmp_path, text))
    assert proc.returncode == EXIT_FAILED, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("FAIL") and ": at 0m: " in x)
    assert "expected firing node-exception job_orders/SQL_AGX" in line
    assert 'got: firing node-exception job_orders/SQL_AGG [critical] "SQL_AGG in EXCEPTION"' in line
    assert "PASS" in proc.stdout and "2 failed" in proc.stdout and "Traceback" not in proc.stderr


def test_several_notifications_differ_one_per_line(tmp_path: Path) -> None:
    """When several notifications are involved, each expected, got, missing and unexpected one has its own line."""
    path = write(tmp_path, HEADER + FIRING_NODE.replace(
        '}]', '}, { name = "DIS_INPUT", type = "ExecuteDISStream", status = "EXCEPTION" }]') + """
[[expect]]
at = "0m"
notifications = [
    { status = "firing", rule = "node-exception", job = "job_sms", node = "DLI_SMS_GES" },
    { status = "firing", rule = "node-exception", job = "job_sms", node = "DIS_OUTPUT" },
]
""")
    code, out, _ = run_here(path)
    assert code == EXIT_FAILED
    lines = [x.strip() for x in out.splitlines()]
    assert lines[0] == f"FAIL {path}: at 0m: notifications differ (expected 2, got 2)"
    assert "missing: firing node-exception job_sms/DIS_OUTPUT" in lines
    assert 'unexpected: firing node-exception job_sms/DIS_INPUT [critical] "DIS_INPUT in EXCEPTION"' in lines
    assert sum(x.startswith("got: ") for x in lines) == 2


def test_fetch_error_keeps_a_firing_alert_firing(tmp_path: Path) -> None:
    """While the fetch fails nothing is sent (no resolve); the next good answer resolves the still-firing alert."""
    body = HEADER + FIRING_NODE + """
[[input]]
at = "1m"
job = "job_sms"
error = "timeout"

[[input]]
at = "4m"
job = "job_sms"
status = "NORMAL"
nodes = [{ name = "DLI_SMS_GES", type = "DLI SQL", status = "NORMAL" }]

[[expect]]
at = "0m"
notifications = [{ status = "firing", rule = "node-exception", job = "job_sms", node = "DLI_SMS_GES" }]

[[expect]]
at = "1m"
nothing = true

[[expect]]
at = "3m"
nothing = true

[[expect]]
at = "4m"
notifications = [{ status = "resolved", rule = "node-exception", job = "job_sms", node = "DLI_SMS_GES" }]
"""
    code, out, err = run_here(write(tmp_path, body))
    assert (code, err) == (EXIT_OK, ""), out + err
    assert out.splitlines()[-1] == "1 file: 4 passed, 0 failed"

    expecting_resolve = body.replace('at = "1m"\nnothing = true', 'at = "1m"\nnotifications = [{ status = '
                                     '"resolved", rule = "node-exception", job = "job_sms", node = "DLI_SMS_GES" }]')
    code, out, _ = run_here(write(tmp_path, expecting_resolve, "resolve.toml"))
    assert code == EXIT_FAILED
    assert ": at 1m: expected resolved node-exception job_sms/DLI_SMS_GES; got: nothing" in out


def test_strict_fails_a_notification_at_an_unexpected_cycle(tmp_path: Path) -> None:
    """With strict = true a notification at a cycle without [[expect]] fails; without it that cycle is unchecked."""
    body = HEADER + FIRING_NODE + """
[[expect]]
at = "2m"
nothing = true
"""
    assert run_here(write(tmp_path, body))[0] == EXIT_OK
    code, out, _ = run_here(write(tmp_path, "strict = true\n" + body, "strict.toml"))
    assert code == EXIT_FAILED
    assert "at 0s: expected nothing (strict = true: no [[expect]] at this cycle); got: firing node-exception" in out


@pytest.mark.parametrize(("body", "key", "message"), [
    pytest.param(HEADER + "[[inputs]]\nat = \"0m\"\n", "inputs", "unknown key (did you mean 'input'?)",
                 id="unknown-key"),
    pytest.param(HEADER + FIRING_NODE + '[[expect]]\nat = "90s"\nnothing = true\n', "expect[0]: at",
                 "'90s' is not on a cycle: cycles run every 1m from 0s; use 1m or 2m", id="at-off-cycle"),
    pytest.param('rule_files = ["no-such-rules.toml"]\n', "rule_files", "no-such-rules.toml: file not found",
                 id="missing-rule-file"),
    pytest.param(HEADER + '[[input]]\nat = "0m"\njob = "job_sms"\nfile = "broken.json"\n', "input[0]: file",
                 "job status response is not JSON", id="bad-json-body"),
])
def test_bad_test_file_exits_2_naming_file_and_key(tmp_path: Path, body: str, key: str, message: str) -> None:
    """A bad test file exits 2 with one error line naming the file and the key, never a traceback."""
    (tmp_path / "broken.json").write_text('{"status": "NORMAL", "nodes": [')
    path = write(tmp_path, body)
    proc = notifier_test_rules(path)
    assert proc.returncode == EXIT_BAD_FILE, proc.stdout + proc.stderr
    error = proc.stderr.strip()
    assert error.startswith(f"error: {path}: {key}: ") and message in error, error
    assert "Traceback" not in proc.stderr and "\n" not in error
    assert proc.stdout.strip() == "1 file: 0 passed, 0 failed, 1 bad file (not run)"


def test_a_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    """Every file is run; a bad one among good ones still makes the exit code 2."""
    good = write(tmp_path, HEADER + FIRING_NODE + '[[expect]]\nat = "1m"\nnothing = true\n', "good.toml")
    bad = write(tmp_path, HEADER + 'strict = "yes"\n', "bad.toml")
    out, err = io.StringIO(), io.StringIO()
    assert run_files([bad, good], out=out, err=err) == EXIT_BAD_FILE
    assert f"PASS {good}: at 1m: nothing" in out.getvalue()
    assert f"{bad}: strict: expected true or false" in err.getvalue()


@pytest.mark.parametrize(("extra", "key", "message"), [
    pytest.param('[[expect]]\nat = "0m"\nnotifications = [{ status = "firing", rule = "node-exeption", '
                 'job = "job_sms", node = "DLI_SMS_GES" }]\n', "expect[0].notifications[0]: rule",
                 "did you mean 'node-exception'?", id="unknown-rule"),
    pytest.param('[[expect]]\nat = "0m"\nnotifications = [{ status = "firing", rule = "node-exception", '
                 'job = "job_sms" }]\n', "expect[0].notifications[0]: node", 'has scope = "node"', id="node-missing"),
    pytest.param('[[expect]]\nat = "0m"\nnotifications = [{ status = "resolved", rule = "job-stopped", '
                 'job = "job_sms" }]\n', "expect[0].notifications[0]: status", "never sends a resolved",
                 id="event-resolved"),
    pytest.param('[[expect]]\nat = "0m"\nnotifications = []\n', "expect[0]: notifications", "nothing = true",
                 id="empty-list"),
    pytest.param('[[expect]]\nat = "0m"\nnothing = true\n[[expect]]\nat = "0s"\nnothing = true\n', "expect[1]: at",
                 "another expectation is at 0s (expect[0])", id="same-cycle-twice"),
    pytest.param('[[silence]]\nstart = "5m"\nend = "6m"\n[[expect]]\nat = "0m"\nnothing = true\n',
                 "silence[0]: rule", "at least one matcher", id="silence-without-matcher"),
    pytest.param('[[input]]\nat = "0m"\njob = "job_x"\nerror = "timeot"\n', "input[1]: error",
                 "must be one of 'not_found'", id="unknown-error-kind"),
])
def test_mistakes_in_expectations_are_bad_file_errors(tmp_path: Path, extra: str, key: str, message: str) -> None:
    """Expectations that can never hold (unknown rule, missing node, resolved event, ...) are exit-2 errors."""
    path = write(tmp_path, HEADER + FIRING_NODE + extra)
    code, out, err = run_here(path)
    assert code == EXIT_BAD_FILE, out + err
    assert err.startswith(f"error: {path}: {key}: ") and message in err, err


def test_readme_example_is_the_shipped_file_and_its_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """README's test-rules example is tests/rules/readme-example.toml verbatim, and its shown output is real."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Rule unit tests: `notifier test-rules`"):]
    section = section[:section.index("\n## ")]
    blocks = section.split("```")[1::2]  # the fenced blocks' contents, in order
    example = next(b for b in blocks if b.startswith("toml\n"))
    assert example.removeprefix("toml\n") == (ROOT / "tests" / "rules" / "readme-example.toml").read_text()
    shown = next(b for b in blocks if b.startswith("\n$ notifier test-rules tests/rules/readme-example.toml\n"))
    monkeypatch.chdir(ROOT)
    code, out, _ = run_here(Path("tests/rules/readme-example.toml"))
    assert code == EXIT_OK
    assert shown.split("\n", 2)[2] == out
