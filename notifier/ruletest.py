"""``notifier test-rules FILE...``: rule unit tests, like ``promtool test rules`` for a polled API.

A test file (TOML) names the rule files to load, the poll interval, a timeline of status
API answers per job and the notifications expected at given times. The timeline is run
through the real pipeline with a virtual clock: each answer goes through
``source.parse.parse_status``, each cycle through ``core.cycle.plan_cycle`` (diff, rules,
lifecycle, inhibition, silences), and ``plan.notify`` (what the service would send) is
compared with the expectation of that cycle. No network, no state file, no channels.

The format (README, "Rule unit tests"; ``tests/rules/readme-example.toml``) is a
user-facing contract::

    rule_files = ["../../rules/default.toml"]   # relative to the test file
    interval = "1m"                             # cycles at 0, 1m, 2m, ... up to the last `at`
    strict = false                              # true: a cycle without [[expect]] must send nothing

    [[silence]]                                 # optional; the matchers of `notifier silence add`
    job = "job_sms"                             # globs on rule, source, job, node
    # source = "prod-*"                         # like --source: default every source
    start = "10m"
    end = "30m"

    [[input]]                                   # from `at` on, the API answers this for `job`
    at = "0m"
    # source = "ops"                            # the [sources.NAME] polling the job; default "default"
    job = "job_sms"                             # the bare DataArts job name (no '/')
    file = "../data/seed_status.json"           # a status API body, or inline:
    # status = "NORMAL"
    # nodes = [{ name = "N", type = "DLI SQL", status = "EXCEPTION" }]
    # or: error = "timeout"                     # the fetch fails (a FetchError of that kind)

    [[expect]]
    at = "0m"
    notifications = [{ status = "firing", rule = "node-exception", job = "job_sms", node = "DLI_SMS_GES" }]
    # or: nothing = true
    # a notification may also say source = "ops": compared when given (else any source's job_sms)

Cycles without an expectation are run but not checked, unless ``strict = true``.

Several sources: an ``[[input]]`` belongs to the source its ``source`` names (a name as
``[sources.NAME]`` allows, default ``"default"``: a lone ``[source]``), so a rule with
``sources = ["ops"]`` can be tested. ``job_x`` of source ``ops`` and ``job_x`` of
``default`` are two jobs with their own states and alerts, exactly as in the service
(the core's job keys ``ops/job_x`` and ``job_x``). Output names a job of a source other
than ``default`` by its job key: ``firing node-exception ops/job_x/NODE``.

Exit codes: 0 every check passed, 1 a check failed, 2 a test file is unusable (its
errors name the file, the table and the key, like every config error).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from notifier.core.cycle import plan_cycle
from notifier.core.durations import plural
from notifier.core.flap import FlapState
from notifier.core.models import (
    Alert,
    AlertState,
    EntitiesByJob,
    EntityKey,
    EntityState,
    FetchError,
    FetchResult,
    JobSnapshot,
)
from notifier.errors import ConfigError
from notifier.ruletestfile import (
    EPOCH,
    EXIT_BAD_FILE,
    EXIT_FAILED,
    EXIT_OK,
    Answer,
    Check,
    Expectation,
    Expected,
    Input,
    RuleTest,
    Totals,
    format_offset,
    load,
    subject,
)

# --- running --------------------------------------------------------------------------

def run_files(files: Sequence[Path], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run every test file; print one line per check and a summary. Exit 0, 1 (a check failed) or 2 (a bad file)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    totals = Totals()
    for path in files:
        totals.files += 1
        try:
            test = load(Path(path))
        except ConfigError as exc:
            totals.bad_files += 1
            out.flush()  # keep the lines in order when both streams go to one terminal or file
            print(f"error: {exc}", file=err)
            continue
        for check in run(test):
            print(f"{'PASS' if check.passed else 'FAIL'} {path}: {check.text}", file=out)
            if check.passed:
                totals.passed += 1
            else:
                totals.failed += 1
    summary = f"{plural(totals.files, 'file')}: {totals.passed} passed, {totals.failed} failed"
    if totals.bad_files:
        summary += f", {plural(totals.bad_files, 'bad file')} (not run)"
    print(summary, file=out)
    if totals.bad_files:
        return EXIT_BAD_FILE
    return EXIT_FAILED if totals.failed else EXIT_OK


def run(test: RuleTest) -> list[Check]:
    """Run the timeline through ``plan_cycle`` with a virtual clock and check every expectation."""
    inputs: dict[int, list[Input]] = {}
    for item in test.inputs:
        inputs.setdefault(item.at_ms, []).append(item)
    expected = {e.at_ms: e for e in test.expectations}
    in_force: dict[str, Answer] = {}  # by job key (source/job), in order of first appearance
    entities: Mapping[EntityKey, EntityState] = EntitiesByJob()
    alerts: Mapping[str, AlertState] = {}
    flaps: Mapping[str, FlapState] = {}
    checks: list[Check] = []
    for t in range(0, test.last_ms + 1, test.interval_ms):
        for item in inputs.get(t, ()):
            in_force[item.key] = item.answer
        answers = tuple(in_force.values())
        result = FetchResult(snapshots=tuple(a for a in answers if isinstance(a, JobSnapshot)),
                             errors=tuple(a for a in answers if isinstance(a, FetchError)))
        plan = plan_cycle(test.rules, entities, alerts, result, None, EPOCH + timedelta(milliseconds=t),
                          mutes=test.silences, flaps=flaps, flap_policy=test.noise)
        entities, alerts, flaps = plan.entities, plan.alerts, plan.flaps
        expectation = expected.get(t)
        if expectation is not None:
            checks.append(compare(expectation, plan.notify))
        elif test.strict and plan.notify:
            checks.append(compare(Expectation(t, format_offset(t), ()), plan.notify, strict=True))
    return checks


def compare(expectation: Expectation, got: Sequence[Alert], *, strict: bool = False) -> Check:
    """Exactly the expected notifications, in any order: a perfect matching, nothing left over."""
    want = expectation.notifications
    pairs = _match(want, got)
    head = f"at {expectation.label}: "
    if len(pairs) == len(want) == len(got):
        shown = ", ".join(w.describe() for w in want) if want else "nothing"
        return Check(True, head + shown)
    missing = [w for i, w in enumerate(want) if i not in pairs]
    matched = set(pairs.values())
    unexpected = [a for j, a in enumerate(got) if j not in matched]
    nothing = "nothing (strict = true: no [[expect]] at this cycle)" if strict else "nothing"
    if len(want) <= 1 and len(got) <= 1:
        exp_text = want[0].describe() if want else nothing
        got_text = describe_alert(got[0]) if got else "nothing"
        return Check(False, f"{head}expected {exp_text}; got: {got_text}")
    lines = [f"{head}notifications differ (expected {len(want)}, got {len(got)})"]
    lines += [f"      expected: {w.describe()}" for w in want] or [f"      expected: {nothing}"]
    lines += [f"           got: {describe_alert(a)}" for a in got] or ["           got: nothing"]
    lines += [f"       missing: {w.describe()}" for w in missing]
    lines += [f"    unexpected: {describe_alert(a)}" for a in unexpected]
    return Check(False, "\n".join(lines))


def describe_alert(alert: Alert) -> str:
    """``firing node-exception job_sms/DLI_SMS_GES [critical] "DLI_SMS_GES entered EXCEPTION (was NORMAL)"``.

    A job of another source than ``default`` is named by its job key: ``ops/job_sms/DLI_SMS_GES``.
    """
    return (f"{alert.status} {alert.rule} {subject(alert.key, alert.node)} [{alert.severity}] "
            f"{json.dumps(alert.summary, ensure_ascii=False)}")




def _match(want: Sequence[Expected], got: Sequence[Alert]) -> dict[int, int]:
    """A maximum matching expected -> got (augmenting paths; partial expectations can overlap)."""
    owner: dict[int, int] = {}  # got index -> expected index

    def place(i: int, seen: set[int]) -> bool:
        for j, alert in enumerate(got):
            if j in seen or not want[i].matches(alert):
                continue
            seen.add(j)
            if j not in owner or place(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(want)):
        place(i, set())
    return {i: j for j, i in owner.items()}
