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


# --- several sources: [[input]] source = "NAME" ---------------------------------------

OPS_RULE = """
[[rule]]
name = "ops-job-exception"
scope = "job"
status = ["EXCEPTION"]
sources = ["ops"]
severity = "warning"
"""


def sources_header(tmp_path: Path) -> str:
    """HEADER plus a rule file with a rule selecting the source ``ops``."""
    write(tmp_path, OPS_RULE, "ops-rules.toml")
    return f'rule_files = ["{DEFAULT_RULES}", "ops-rules.toml"]\ninterval = "1m"\n'


def job_input(job: str, status: str, *, source: str | None = None, at: str = "0m") -> str:
    line = f'source = "{source}"\n' if source is not None else ""
    return f'\n[[input]]\nat = "{at}"\n{line}job = "{job}"\nstatus = "{status}"\n'


def test_shipped_sources_example_is_a_test_file() -> None:
    """tests/rules/sources.toml (the README example of several sources) loads, with its sources."""
    test = load(ROOT / "tests" / "rules" / "sources.toml")
    assert {(i.source, i.job) for i in test.inputs} == {("default", "job_sms"), ("prod-eu", "job_sms"),
                                                        ("ops", "job_sms")}
    assert {i.key for i in test.inputs} == {"job_sms", "prod-eu/job_sms", "ops/job_sms"}


def test_a_rule_with_sources_fires_only_for_jobs_of_a_matching_source(tmp_path: Path) -> None:
    """sources = ["ops"]: fires for ops' job, not for default's job of the same status; alerts carry the source."""
    body = sources_header(tmp_path) + job_input("job_etl", "EXCEPTION", source="ops") + job_input(
        "job_sms", "EXCEPTION") + """
[[expect]]
at = "0m"
notifications = [
    { status = "firing", rule = "ops-job-exception", source = "ops", job = "job_etl", severity = "warning" },
    { status = "firing", rule = "job-exception", source = "ops", job = "job_etl" },
    { status = "firing", rule = "job-exception", source = "default", job = "job_sms" },
]
"""
    code, out, err = run_here(write(tmp_path, body))
    assert (code, err) == (EXIT_OK, ""), out + err
    assert ("at 0m: firing ops-job-exception ops/job_etl severity=warning, firing job-exception ops/job_etl, "
            "firing job-exception job_sms") in out

    # the same rule expected for the default source's job: not sent, so the check fails, showing the source
    wrong = body.replace('{ status = "firing", rule = "job-exception", source = "default", job = "job_sms" },',
                         '{ status = "firing", rule = "ops-job-exception", source = "default", job = "job_sms" },')
    code, out, _ = run_here(write(tmp_path, wrong, "wrong.toml"))
    assert code == EXIT_FAILED, out
    assert "missing: firing ops-job-exception job_sms" in out
    assert 'unexpected: firing job-exception job_sms [critical] "job_sms in EXCEPTION"' in out


def test_the_expected_source_is_compared_when_given(tmp_path: Path) -> None:
    """source = "default" does not match ops' alert; without source the job of any source matches."""
    base = HEADER + job_input("job_etl", "EXCEPTION", source="ops")
    expect = ('\n[[expect]]\nat = "0m"\n'
              'notifications = [{{ status = "firing", rule = "job-exception", {}job = "job_etl" }}]\n')
    for source, passes in (("", True), ('source = "ops", ', True), ('source = "default", ', False)):
        path = write(tmp_path, base + job_input("job_etl", "NORMAL") + expect.format(source), "t.toml")
        code, out, err = run_here(path)
        assert code == (EXIT_OK if passes else EXIT_FAILED), (source, out + err)
    assert "at 0m: expected firing job-exception job_etl; got: firing job-exception ops/job_etl [critical]" in out


def test_the_same_job_name_in_two_sources_is_two_jobs(tmp_path: Path) -> None:
    """job_sms of default and of ops: two alerts, resolved separately; a failed fetch of one leaves the other alone."""
    both = FIRING_NODE + FIRING_NODE.replace('job = "job_sms"', 'source = "ops"\njob = "job_sms"')
    body = HEADER + both + """
[[input]]
at = "2m"
job = "job_sms"
status = "NORMAL"
nodes = [{ name = "DLI_SMS_GES", type = "DLI SQL", status = "NORMAL" }]

[[input]]
at = "2m"
source = "ops"
job = "job_sms"
error = "timeout"

[[expect]]
at = "0m"
notifications = [
    { status = "firing", rule = "node-exception", job = "job_sms", node = "DLI_SMS_GES" },
    { status = "firing", rule = "node-exception", job = "job_sms", node = "DLI_SMS_GES" },
]

[[expect]]
at = "2m"
notifications = [
    { status = "resolved", rule = "node-exception", source = "default", job = "job_sms", node = "DLI_SMS_GES" },
]
"""
    code, out, err = run_here(write(tmp_path, "strict = true\n" + body))
    assert (code, err) == (EXIT_OK, ""), out + err
    assert out.splitlines()[-1] == "1 file: 2 passed, 0 failed"

    one = body.replace('    { status = "firing", rule = "node-exception", job = "job_sms", node = "DLI_SMS_GES" },\n'
                       ']', ']', 1)
    code, out, _ = run_here(write(tmp_path, one, "one.toml"))
    assert code == EXIT_FAILED
    assert "at 0m: notifications differ (expected 1, got 2)" in out
    assert 'unexpected: firing node-exception ops/job_sms/DLI_SMS_GES [critical]' in out


def test_a_silence_can_match_the_source(tmp_path: Path) -> None:
    """[[silence]] source = GLOB, as `notifier silence add --source`: mutes ops' job_sms, not default's."""
    both = FIRING_NODE + FIRING_NODE.replace('job = "job_sms"', 'source = "ops"\njob = "job_sms"')
    body = HEADER + """
[[silence]]
source = "o*"
job = "job_sms"
start = "0m"
end = "5m"
""" + both + """
[[expect]]
at = "0m"
notifications = [
    { status = "firing", rule = "node-exception", source = "default", job = "job_sms", node = "DLI_SMS_GES" },
]

[[expect]]
at = "5m"
notifications = [
    { status = "firing", rule = "node-exception", source = "ops", job = "job_sms", node = "DLI_SMS_GES" },
]
"""
    code, out, err = run_here(write(tmp_path, body))
    assert (code, err) == (EXIT_OK, ""), out + err
    assert load(write(tmp_path, body)).silences[0].matchers.source == "o*"


@pytest.mark.parametrize(("extra", "key", "message"), [
    pytest.param('[[input]]\nat = "0m"\nsource = "ops/eu"\njob = "job_x"\nstatus = "NORMAL"\n', "input[1]: source",
                 "'ops/eu': a source name is letters, digits, '_' and '-'", id="input-bad-source-name"),
    pytest.param('[[input]]\nat = "0m"\nsource = "prod-*"\njob = "job_x"\nstatus = "NORMAL"\n', "input[1]: source",
                 "a source name is letters, digits", id="input-source-glob"),
    pytest.param('[[input]]\nat = "0m"\nsource = ""\njob = "job_x"\nstatus = "NORMAL"\n', "input[1]: source",
                 "a source name is letters, digits", id="input-empty-source"),
    pytest.param('[[input]]\nat = "0m"\nsource = 3\njob = "job_x"\nstatus = "NORMAL"\n', "input[1]: source",
                 "expected a string", id="input-source-not-a-string"),
    pytest.param('[[input]]\nat = "0m"\njob = "ops/job_x"\nstatus = "NORMAL"\n', "input[1]: job",
                 "a job name has no '/'; to name a source say source = 'ops' and job = 'job_x'", id="input-job-slash"),
    pytest.param('[[input]]\nat = "0m"\nsource = "ops"\njob = "job_x"\nstatus = "NORMAL"\n'
                 '[[input]]\nat = "0s"\nsource = "ops"\njob = "job_x"\nerror = "timeout"\n', "input[2]: at",
                 "ops/job_x already has an input at 0s (input[1])", id="input-twice-in-one-source"),
    pytest.param('[[expect]]\nat = "0m"\nnotifications = [{ status = "firing", rule = "node-exception", '
                 'source = "ops", job = "job_sms", node = "DLI_SMS_GES" }]\n', "expect[0].notifications[0]: source",
                 "no [[input]] for job 'job_sms' in source 'ops': it is polled in 'default'",
                 id="expect-unpolled-source"),
    pytest.param('[[expect]]\nat = "0m"\nnotifications = [{ status = "firing", rule = "node-exception", '
                 'source = "a b", job = "job_sms", node = "DLI_SMS_GES" }]\n', "expect[0].notifications[0]: source",
                 "a source name is letters", id="expect-bad-source-name"),
    pytest.param('[[expect]]\nat = "0m"\nnotifications = [{ status = "firing", rule = "node-exception", '
                 'job = "default/job_sms", node = "DLI_SMS_GES" }]\n', "expect[0].notifications[0]: job",
                 "say source = 'default' and job = 'job_sms'", id="expect-job-slash"),
    pytest.param('[[silence]]\nsource = "prod/eu"\nstart = "5m"\nend = "6m"\n[[expect]]\nat = "0m"\nnothing = true\n',
                 "silence[0]: source", "no source name has a '/'", id="silence-source-slash"),
    pytest.param('[[silence]]\njob = "ops/job_sms"\nstart = "5m"\nend = "6m"\n[[expect]]\nat = "0m"\nnothing = true\n',
                 "silence[0]: job", "say source = 'ops' and job = 'job_sms'", id="silence-job-slash"),
    pytest.param('[[silence]]\nsource = ""\nstart = "5m"\nend = "6m"\n[[expect]]\nat = "0m"\nnothing = true\n',
                 "silence[0]: source", "is empty", id="silence-empty-source"),
    pytest.param('[[input]]\nat = "0m"\nsorce = "ops"\njob = "job_x"\nstatus = "NORMAL"\n', "input[1]: sorce",
                 "did you mean 'source'?", id="input-source-typo"),
])
def test_bad_sources_are_bad_file_errors(tmp_path: Path, extra: str, key: str, message: str) -> None:
    """A bad source (name, '/' in a job, unpolled source) is an exit-2 error naming the file and the key."""
    path = write(tmp_path, HEADER + FIRING_NODE + extra)
    code, out, err = run_here(path)
    assert code == EXIT_BAD_FILE, out + err
    assert err.startswith(f"error: {path}: {key}: ") and message in err, err
    assert err.count("\n") == 1


def test_same_job_at_same_time_in_two_sources_is_allowed(tmp_path: Path) -> None:
    """Two inputs for job_sms at 0m are fine when they are of different sources."""
    path = write(tmp_path, HEADER + FIRING_NODE + job_input("job_sms", "NORMAL", source="prod")
                 + '[[expect]]\nat = "0m"\nnotifications = [{ status = "firing", rule = "node-exception", '
                   'job = "job_sms", node = "DLI_SMS_GES" }]\n')
    code, out, err = run_here(path)
    assert (code, err) == (EXIT_OK, ""), out + err
