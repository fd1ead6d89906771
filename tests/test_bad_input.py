"""Bad input (issue 10): broken configs, rule files, rule test files and templates.

For every case the real CLI (``python -m notifier ...``) must exit 2 with a message naming
the file and the key or line, and must never print a traceback.

The corpus is ``tests/data/bad/<case>/``: the files of one broken setup plus ``expect.toml``::

    # what is broken (one line)
    command = ["check", "-c", "notifier.toml"]   # argv after `python -m notifier`, run in a copy of the case
    exit = 2
    contains = ["rules/r.toml", "rule 'x'", "for"]   # substrings of stdout + stderr
    absent = ["source: source:"]                  # optional: substrings that must not appear
    [env]                                         # optional: extra environment (fake secrets only)
    BAD_INPUT_SLACK_TOKEN = "xoxb-test"

Every config points its source at ``http://127.0.0.1:9`` with ``auth = "none"``; ``check``
does not contact it without ``--online``. Cases that cannot sensibly be committed (files of
megabytes, permission bits) are built here in ``tmp_path`` (``GENERATED``).

Known bugs are strict xfails listed in ``KNOWN_BUGS``: the fix removes its entry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BAD = Path(__file__).resolve().parent / "data" / "bad"
CHECK = ("check", "-c", "notifier.toml")
EXPECT_KEYS = frozenset({"command", "exit", "contains", "absent", "env"})
MIN_CASES = 40

KNOWN_BUGS: dict[str, str] = {}


@dataclass(frozen=True)
class Expect:
    """What one case must print and exit with."""

    command: tuple[str, ...]
    contains: tuple[str, ...]
    exit: int = 2
    absent: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def read_expect(path: Path) -> Expect:
    data = tomllib.loads(path.read_text())
    unknown = set(data) - EXPECT_KEYS
    assert not unknown, f"{path}: unknown keys {sorted(unknown)} (known: {sorted(EXPECT_KEYS)})"
    return Expect(command=tuple(data["command"]), contains=tuple(data["contains"]), exit=data.get("exit", 2),
                  absent=tuple(data.get("absent", ())), env=dict(data.get("env", {})))


def corpus_names() -> list[str]:
    return sorted(p.name for p in BAD.iterdir() if p.is_dir())


# --- cases built here: huge files and permission bits ------------------------------------

GOOD_CONFIG = """\
[source]
endpoint = "http://127.0.0.1:9"
project_id = "b384b9e9ab9b4ee8994c8633aabc9505"
auth = "none"

[jobs]
names = ["job_sms"]

[state]
path = "state.db"

[paths]
rules = "rules"
templates = "templates"

[channels.stdout]
type = "console"
"""
WEBHOOK = '\n[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/hook"\nsecret_file = "hook-secret.txt"\n'
GOOD_RULE = '[[rule]]\nname = "x"\nscope = "node"\nstatus = ["EXCEPTION"]\n'
GOOD_TEST = """\
rule_files = ["rules/r.toml"]
interval = "1m"

[[input]]
at = "0m"
job = "job_sms"
status = "NORMAL"
nodes = [{ name = "N", type = "DLI SQL", status = "EXCEPTION" }]

[[expect]]
at = "0m"
notifications = [{ status = "firing", rule = "x", job = "job_sms", node = "N" }]
"""
PADDING_LINE = "# " + "padding " * 9 + "\n"  # 75 bytes
HUGE_LINES = 70_000  # about 5 MB of padding


def base_setup(case: Path, *, webhook: bool = False) -> Path:
    """A setup `check` accepts (test_the_generated_cases_start_from_a_good_setup): one console channel, one rule."""
    (case / "rules").mkdir(parents=True)
    (case / "templates").mkdir()
    (case / "notifier.toml").write_text(GOOD_CONFIG + (WEBHOOK if webhook else ""))
    (case / "rules" / "r.toml").write_text(GOOD_RULE)
    (case / "t.toml").write_text(GOOD_TEST)
    if webhook:
        (case / "hook-secret.txt").write_text("s3cret-for-signing\n")
        (case / "hook-secret.txt").chmod(0o600)
    return case


def huge_rule_file(case: Path) -> Expect:
    """5 MB of comments, then a rule with a bad duration."""
    base_setup(case)
    rule = '[[rule]]\nname = "big"\nscope = "node"\nstatus = ["EXCEPTION"]\nfor = "forever"\n'
    (case / "rules" / "huge.toml").write_text(PADDING_LINE * HUGE_LINES + rule)
    return Expect(CHECK, ("rules/huge.toml", "rule 'big'", "for", "forever"))


def huge_rule_count(case: Path) -> Expect:
    """20 000 rules in one file, the last one a duplicate name."""
    base_setup(case)
    rules = "".join(f'[[rule]]\nname = "r{i}"\nscope = "node"\nstatus = ["EXCEPTION"]\n\n' for i in range(20_000))
    (case / "rules" / "many.toml").write_text(rules + '[[rule]]\nname = "r7"\nscope = "node"\nstatus = ["EXCEPTION"]\n')
    return Expect(CHECK, ("rules/many.toml", "rule 'r7'", "name", "duplicate"))


def huge_config(case: Path) -> Expect:
    """5 MB of comments, then the config with an unterminated string."""
    base_setup(case)
    broken = GOOD_CONFIG.replace('project_id = "b384b9e9ab9b4ee8994c8633aabc9505"', 'project_id = "b384b9e9')
    line = HUGE_LINES + 3  # the project_id line
    (case / "notifier.toml").write_text(PADDING_LINE * HUGE_LINES + broken)
    return Expect(CHECK, ("notifier.toml", "invalid TOML", f"line {line}"))


def huge_template(case: Path) -> Expect:
    """A 5 MB template (plain text: 300 000 expressions would only time Jinja's compiler) reaching for an
    undefined field on its last line."""
    base_setup(case)
    lines = HUGE_LINES
    text = "{% for a in alerts %}\n" + PADDING_LINE * lines + "{{ a.no_such_field }}\n{% endfor %}\n"
    (case / "templates" / "default.console.j2").write_text(text)
    return Expect(CHECK, (f"default.console.j2:{lines + 2}", "no_such_field", "stdout"))


def huge_rule_test(case: Path) -> Expect:
    """A rule test file of 5 MB of comments, then a misspelt key."""
    base_setup(case)
    (case / "t.toml").write_text(PADDING_LINE * HUGE_LINES + GOOD_TEST.replace("interval =", "intervall ="))
    return Expect(("test-rules", "t.toml"), ("t.toml", "intervall", "interval"))


def config_world_writable(case: Path) -> Expect:
    base_setup(case)
    (case / "notifier.toml").chmod(0o666)
    return Expect(CHECK, ("notifier.toml", "writable"))


def rule_file_world_writable(case: Path) -> Expect:
    base_setup(case)
    (case / "rules" / "r.toml").chmod(0o666)
    return Expect(CHECK, ("rules/r.toml", "writable"))


def rules_dir_world_writable(case: Path) -> Expect:
    base_setup(case)
    (case / "rules").chmod(0o777)
    return Expect(CHECK, ("rules", "writable"))


def secret_file_world_writable(case: Path) -> Expect:
    base_setup(case, webhook=True)
    (case / "hook-secret.txt").chmod(0o666)
    return Expect(CHECK, ("hook-secret.txt", "writable"))


GENERATED: dict[str, Callable[[Path], Expect]] = {
    "huge-rule-file": huge_rule_file,
    "huge-rule-count": huge_rule_count,
    "huge-config": huge_config,
    "huge-template": huge_template,
    "huge-rule-test": huge_rule_test,
    "config-world-writable": config_world_writable,
    "rule-file-world-writable": rule_file_world_writable,
    "rules-dir-world-writable": rules_dir_world_writable,
    "secret-file-world-writable": secret_file_world_writable,
}


# --- running -------------------------------------------------------------------------------

def notifier(cwd: Path, expect: Expect) -> subprocess.CompletedProcess[str]:
    """The real CLI of this checkout, in ``cwd``, with the case's extra environment."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFIER_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(expect.env)
    return subprocess.run([sys.executable, "-m", "notifier", *expect.command], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)


def prepare(name: str, tmp: Path) -> tuple[Path, Expect]:
    """A fresh copy of corpus case ``name`` (or the generated one) under ``tmp``, and what it must print."""
    case = tmp / name
    if name in GENERATED:
        case.mkdir(parents=True)
        return case, GENERATED[name](case)
    shutil.copytree(BAD / name, case)
    return case, read_expect(case / "expect.toml")


Run = tuple[Expect, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Run]]]:
    """Every selected case, started at once on a thread pool (each is a process: ~0.5 s of start-up)."""
    selected = sorted({item.callspec.params["case"] for item in request.session.items
                       if getattr(item, "originalname", None) == "test_bad_input" and hasattr(item, "callspec")})

    def one(name: str) -> Run:
        case, expect = prepare(name, tmp_path_factory.mktemp("bad"))
        return expect, notifier(case, expect)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        yield {name: pool.submit(one, name) for name in selected}


def params() -> list[object]:
    return [pytest.param(name, id=name,
                         marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name])] if name in KNOWN_BUGS else [])
            for name in [*corpus_names(), *GENERATED]]


@pytest.mark.parametrize("case", params())
def test_bad_input(case: str, runs: dict[str, Future[Run]]) -> None:
    """Exit 2, the file and the key or line in the message, no traceback."""
    expect, result = runs[case].result()
    output = result.stdout + result.stderr
    shown = f"$ notifier {' '.join(expect.command)}\n--- exit {result.returncode}, output:\n{output}"
    assert "Traceback" not in output, shown
    assert result.returncode == expect.exit, shown
    missing = [s for s in expect.contains if s not in output]
    assert not missing, f"missing {missing}\n{shown}"
    present = [s for s in expect.absent if s in output]
    assert not present, f"must not say {present}\n{shown}"


# --- the corpus itself -----------------------------------------------------------------------

def test_the_corpus_is_large_and_every_case_says_what_it_expects() -> None:
    names = corpus_names()
    assert len(names) >= MIN_CASES, f"{len(names)} cases under {BAD}; the issue asks for at least {MIN_CASES}"
    assert not set(names) & set(GENERATED), "a generated case shadows a corpus directory"
    for name in names:
        expect = read_expect(BAD / name / "expect.toml")
        assert expect.command[0] in ("check", "test-rules"), name
        assert expect.exit == 2, name
        assert expect.contains, f"{name}: contains names nothing (at least the file)"
        first = (BAD / name / "expect.toml").read_text().splitlines()[0]
        assert first.startswith("# "), f"{name}: expect.toml starts with a '# what is broken' line"


def test_every_known_bug_names_a_case() -> None:
    """A stale KNOWN_BUGS entry (a renamed case) would silently drop its xfail."""
    assert set(KNOWN_BUGS) <= {*corpus_names(), *GENERATED}


@pytest.mark.parametrize("webhook", [False, True], ids=["console", "webhook-secret"])
def test_the_generated_cases_start_from_a_good_setup(tmp_path: Path, webhook: bool) -> None:
    """The base of every generated case passes, so each failure comes from what the case broke."""
    case = base_setup(tmp_path / "base", webhook=webhook)
    for command in (CHECK, ("test-rules", "t.toml")):
        result = notifier(case, Expect(command, ()))
        assert result.returncode == 0, result.stdout + result.stderr
