"""Rule unit-test files (``notifier test-rules``): the format, read strictly into a ``RuleTest``.

``ruletest`` runs them; this module only reads and validates. The format is described in
``ruletest``'s docstring and README ("Rule unit tests").
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

from notifier.config import SOURCE_NAME, parse_noise
from notifier.core.flap import DEFAULT_FLAP, FlapPolicy
from notifier.core.models import (
    DEFAULT_SOURCE,
    SEVERITIES,
    Alert,
    FetchError,
    FetchErrorKind,
    JobSnapshot,
    Rule,
    job_key,
)
from notifier.core.mutes import Matchers, Silence
from notifier.errors import ConfigError, SourceError
from notifier.rulefile import check_rules, parse_rules
from notifier.source.parse import parse_status
from notifier.strict_toml import TableReader, load_toml

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
"""Offset 0 of every test timeline (a fixed date: summaries and timestamps are reproducible)."""

MAX_CYCLES = 100_000
"""A timeline longer than this is almost certainly a unit mistake ("1s" for "1m")."""

EXIT_OK, EXIT_FAILED, EXIT_BAD_FILE = 0, 1, 2

TOP_KEYS = ("rule_files", "interval", "strict", "noise", "silence", "input", "expect")
INPUT_KEYS = ("at", "source", "job", "file", "status", "nodes", "error")
NODE_KEYS = ("name", "status", "type", "logPath", "runningData",
             "totalGetBytes", "totalGetRecords", "totalPutBytes", "totalPutRecords")
EXPECT_KEYS = ("at", "notifications", "nothing")
NOTIFICATION_KEYS = ("status", "rule", "source", "job", "node", "severity", "summary_contains")
SILENCE_KEYS = ("rule", "source", "job", "node", "start", "end", "comment")
ERROR_KINDS: tuple[str, ...] = get_args(FetchErrorKind)
_COUNTER_KEYS = NODE_KEYS[5:]

Answer = JobSnapshot | FetchError


# --- the parsed test file -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Input:
    """From ``at_ms`` on (until the job's next input), the status API of ``source`` answers ``answer`` for ``job``.

    ``job`` is the bare DataArts job name; ``answer`` is named by the job key (``models.job_key``),
    as the shell names what each source fetched, so the same name in two sources is two jobs.
    """

    at_ms: int
    job: str
    answer: Answer
    source: str = DEFAULT_SOURCE  # a [sources.NAME] name; "default": a lone [source]

    @property
    def key(self) -> str:
        """The job key: ``ops/job_sms``, the bare name for the default source."""
        return job_key(self.source, self.job)


@dataclass(frozen=True, slots=True)
class Expected:
    """One notification an expectation asks for; ``source``, ``severity`` and ``summary_contains`` only when given."""

    status: str
    rule: str
    job: str  # the bare job name, as alerts carry it
    node: str | None  # None: a job-scope alert
    severity: str | None = None
    summary_contains: str | None = None
    source: str | None = None  # None: the job of any source

    def matches(self, alert: Alert) -> bool:
        return (alert.status == self.status and alert.rule == self.rule and alert.job == self.job
                and alert.node == self.node
                and (self.source is None or alert.source == self.source)
                and (self.severity is None or alert.severity == self.severity)
                and (self.summary_contains is None or self.summary_contains in alert.summary))

    def describe(self) -> str:
        job = self.job if self.source is None else job_key(self.source, self.job)
        text = f"{self.status} {self.rule} {subject(job, self.node)}"
        if self.severity is not None:
            text += f" severity={self.severity}"
        if self.summary_contains is not None:
            text += f" summary~{json.dumps(self.summary_contains, ensure_ascii=False)}"
        return text


@dataclass(frozen=True, slots=True)
class Expectation:
    """What ``plan.notify`` must hold at one cycle: exactly these notifications (none: nothing)."""

    at_ms: int
    label: str  # the `at` as the file wrote it
    notifications: tuple[Expected, ...]


@dataclass(frozen=True, slots=True)
class RuleTest:
    """One validated test file."""

    path: Path
    rules: tuple[Rule, ...]
    interval_ms: int
    inputs: tuple[Input, ...]
    expectations: tuple[Expectation, ...]
    silences: tuple[Silence, ...] = ()
    strict: bool = False
    noise: FlapPolicy = DEFAULT_FLAP  # flap damping, as in notifier.toml's [noise]

    @property
    def last_ms(self) -> int:
        return max([i.at_ms for i in self.inputs] + [e.at_ms for e in self.expectations])


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one expectation (or, with ``strict``, of one unexpected notification cycle)."""

    passed: bool
    text: str  # "at 5m: nothing", or the failure with its diff (several lines)


@dataclass
class Totals:
    files: int = 0
    passed: int = 0
    failed: int = 0
    bad_files: int = 0


def subject(job: str, node: str | None) -> str:
    """``job_sms/DLI_SMS_GES``; ``job`` is a job key, so a job of source ops reads ``ops/job_sms/DLI_SMS_GES``."""
    return f"{job}/{node}" if node else job


# --- loading --------------------------------------------------------------------------

def load(path: Path) -> RuleTest:
    """Read and validate a test file; every problem is a ConfigError naming file, table and key."""
    file = str(path)
    top = TableReader(load_toml(path), file=file, where="")
    top.finish(TOP_KEYS)
    base = path.parent
    rules = _load_rules(top, base)
    interval_ms = _ms(top.seconds("interval", 60.0, positive=True))
    strict = top.bool("strict", False)
    by_name = {rule.name: rule for rule in rules}

    inputs: list[Input] = []
    first: dict[tuple[str, int], str] = {}
    for reader in _tables(top, "input", required=True):
        item = _input(reader, base, interval_ms)
        other = first.setdefault((item.key, item.at_ms), reader.where)
        if other != reader.where:
            raise reader.error("at", f"{item.key} already has an input at {format_offset(item.at_ms)} ({other})")
        inputs.append(item)
    jobs = {(item.source, item.job) for item in inputs}

    expectations: list[Expectation] = []
    seen_at: dict[int, str] = {}
    for reader in _tables(top, "expect", required=True):
        expectation = _expectation(reader, interval_ms, by_name, jobs)
        other = seen_at.setdefault(expectation.at_ms, reader.where)
        if other != reader.where:
            raise reader.error("at", f"another expectation is at {expectation.label} ({other}); "
                                     "list every notification of a cycle in one [[expect]]")
        expectations.append(expectation)

    silences = tuple(_silence(r, index) for index, r in enumerate(_tables(top, "silence")))
    test = RuleTest(path=path, rules=rules, interval_ms=interval_ms, inputs=tuple(inputs),
                    expectations=tuple(sorted(expectations, key=lambda e: e.at_ms)), silences=silences,
                    strict=strict, noise=parse_noise(top.optional_table("noise")))
    cycles = test.last_ms // interval_ms + 1
    if cycles > MAX_CYCLES:
        raise top.error("interval", f"the timeline has {cycles} cycles (last at {format_offset(test.last_ms)}, "
                                    f"every {format_offset(interval_ms)}); at most {MAX_CYCLES}")
    return test


def _load_rules(top: TableReader, base: Path) -> tuple[Rule, ...]:
    """The named rule files only, checked together; channels: whatever names the rules use."""
    names = top.str_list("rule_files")
    if not names:
        raise top.error("rule_files", "list at least one rule file, e.g. [\"../../rules/default.toml\"]")
    loaded: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        rule_path = Path(os.path.normpath(base / name))
        try:
            loaded.append((str(rule_path), load_toml(rule_path)))
        except ConfigError as exc:
            raise top.error("rule_files", str(exc)) from None
    channels = {c for _, data in loaded for c in _channel_names(data)}
    try:
        rules = [rule for file, data in loaded for rule in parse_rules(data, file=file, channels=channels)]
        return check_rules(rules)
    except ConfigError as exc:
        raise top.error("rule_files", str(exc)) from None


def _channel_names(data: Mapping[str, Any]) -> set[str]:
    """Every channel name a rule file mentions: a test has no config, so every channel is accepted."""
    items = data.get("rule")
    names: set[str] = set()
    for item in items if isinstance(items, list) else ():
        value = item.get("channels") if isinstance(item, Mapping) else None
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        names.update(v for v in values if isinstance(v, str))
    return names


def _tables(top: TableReader, key: str, *, required: bool = False) -> list[TableReader]:
    items = top.raw(key, [])
    if isinstance(items, Mapping):
        raise top.error(key, f"expected [[{key}]] tables (an array of tables), got a single [{key}] table")
    if not isinstance(items, list):
        raise top.error(key, f"expected [[{key}]] tables, got {items!r}")
    if required and not items:
        raise top.error(key, f"required: at least one [[{key}]] table")
    return [TableReader(item, file=top.file, where=f"{key}[{index}]") for index, item in enumerate(items)]


def _at(r: TableReader, interval_ms: int) -> int:
    at_ms = _ms(r.seconds("at"))
    if at_ms % interval_ms:
        before = at_ms - at_ms % interval_ms
        raise r.error("at", f"{r.data['at']!r} is not on a cycle: cycles run every {format_offset(interval_ms)} "
                            f"from 0s; use {format_offset(before)} or {format_offset(before + interval_ms)}")
    return at_ms


def _source_name(r: TableReader, default: str | None) -> str | None:
    """A ``source = "ops"``: a name as ``[sources.NAME]`` allows it (config's ``SOURCE_NAME``), not a glob."""
    if not r.has("source"):
        return default
    name = r.str("source")
    if not SOURCE_NAME.fullmatch(name):
        raise r.error("source", f"{name!r}: a source name is letters, digits, '_' and '-', as in notifier.toml's "
                                f"[sources.NAME] (a lone [source] is {DEFAULT_SOURCE!r})")
    return name


def _job_name(r: TableReader) -> str:
    """A bare job name: no job name has a '/', so ``ops/job_sms`` means a source was meant."""
    job = r.str("job")
    if not job.strip():
        raise r.error("job", "must be a job name")
    if "/" in job:
        source, _, bare = job.partition("/")
        raise r.error("job", f"{job!r}: a job name has no '/'; to name a source say source = {source!r} "
                             f"and job = {bare!r}")
    return job


def _input(r: TableReader, base: Path, interval_ms: int) -> Input:
    r.finish(INPUT_KEYS)
    at_ms = _at(r, interval_ms)
    source = _source_name(r, DEFAULT_SOURCE) or DEFAULT_SOURCE  # (never None with a default: for mypy)
    job = _job_name(r)
    key = job_key(source, job)
    given = [k for k in ("file", "status", "error") if r.has(k)]
    if len(given) != 1:
        raise r.error(given[1] if given else "status",
                      "give exactly one of file = \"body.json\" (a status API body), status = \"...\" "
                      "with nodes = [...] (inline), or error = \"timeout\" (the fetch fails)")
    if r.has("nodes") and not r.has("status"):
        raise r.error("nodes", "only with an inline status = \"...\"")
    answer: Answer
    if r.has("error"):
        kind = r.choice("error", ERROR_KINDS)
        answer = FetchError(job=key, kind=kind, message=f"{key}: {kind} (simulated by {r.file})")
    elif r.has("file"):
        body_path = Path(os.path.normpath(base / r.str("file")))
        try:
            body = body_path.read_bytes()
        except OSError as exc:
            raise r.error("file", f"{body_path}: {exc.strerror or 'cannot read'}") from None
        answer = replace(_parse(r, "file", job, body, where=f"{body_path}: "), name=key)
    else:
        answer = replace(_parse(r, "status", job, json.dumps(_inline_body(r)).encode()), name=key)
    return Input(at_ms=at_ms, job=job, answer=answer, source=source)


def _parse(r: TableReader, key: str, job: str, body: bytes, *, where: str = "") -> JobSnapshot:
    """The real parser; a body it refuses is a mistake in the test (say error = "bad_response" to mean one).

    The snapshot is named ``job`` (bare), as the source names it; the caller renames it to the job key.
    """
    try:
        return parse_status(job, body)
    except SourceError as exc:
        raise r.error(key, f"{where}{exc} (to test a failed fetch, write error = \"{exc.kind}\")") from None


def _inline_body(r: TableReader) -> dict[str, Any]:
    """``status`` and ``nodes`` written in TOML, as the API body they stand for (node keys: the API's names)."""
    body: dict[str, Any] = {"status": r.str("status")}
    raw = r.raw("nodes", [])
    if not isinstance(raw, list):
        raise r.error("nodes", f"expected a list of node tables, got {raw!r}")
    nodes: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        n = TableReader(item, file=r.file, where=f"{r.where}.nodes[{index}]")
        n.finish(NODE_KEYS)
        name = n.str("name")
        if not name:
            raise n.error("name", "must be a node name")
        if name in seen:
            raise n.error("name", f"node {name!r} is listed twice")
        seen.add(name)
        node: dict[str, Any] = {"name": name, "status": n.str("status"), "type": n.str("type", "")}
        for key in ("logPath", "runningData"):
            if n.has(key):
                node[key] = n.str(key)
        for key in _COUNTER_KEYS:
            if n.has(key):
                node[key] = n.int(key, minimum=0)
        nodes.append(node)
    body["nodes"] = nodes
    return body


def _expectation(r: TableReader, interval_ms: int, rules: Mapping[str, Rule],
                 jobs: set[tuple[str, str]]) -> Expectation:
    r.finish(EXPECT_KEYS)
    at_ms = _at(r, interval_ms)
    label = str(r.data["at"]).strip()
    if r.has("nothing") == r.has("notifications"):
        raise r.error("notifications", "give notifications = [...] or nothing = true (exactly one)")
    if r.has("nothing"):
        if not r.bool("nothing"):
            raise r.error("nothing", "nothing = false says nothing; list notifications = [...] instead")
        return Expectation(at_ms, label, ())
    raw = r.raw("notifications")
    if not isinstance(raw, list):
        raise r.error("notifications", f"expected a list of notification tables, got {raw!r}")
    if not raw:
        raise r.error("notifications", "an empty list: write nothing = true")
    items = tuple(_expected(TableReader(item, file=r.file, where=f"{r.where}.notifications[{index}]"), rules, jobs)
                  for index, item in enumerate(raw))
    return Expectation(at_ms, label, items)


def _expected(n: TableReader, rules: Mapping[str, Rule], jobs: set[tuple[str, str]]) -> Expected:
    """One notification; ``jobs`` are the (source, bare job) pairs some [[input]] polls."""
    n.finish(NOTIFICATION_KEYS)
    status = n.choice("status", ("firing", "resolved"))
    name = n.str("rule")
    rule = rules.get(name)
    if rule is None:
        close = difflib.get_close_matches(name, sorted(rules), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"rules: {', '.join(sorted(rules))}"
        raise n.error("rule", f"no rule {name!r} in rule_files ({hint})")
    source = _source_name(n, None)
    job = _job_name(n)
    polled = sorted(s for s, j in jobs if j == job)
    if not polled:
        close = difflib.get_close_matches(job, sorted({j for _, j in jobs}), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise n.error("job", f"no [[input]] for job {job!r}: it is never polled{hint}")
    if source is not None and source not in polled:
        where = ", ".join(repr(s) for s in polled)
        raise n.error("source", f"no [[input]] for job {job!r} in source {source!r}: it is polled in {where} "
                                f"(an [[input]] without source = ... is in {DEFAULT_SOURCE!r})")
    node = n.str("node", None)
    if rule.scope == "node" and node is None:
        raise n.error("node", f"required: rule {name!r} has scope = \"node\"")
    if rule.scope == "job" and node is not None:
        raise n.error("node", f"rule {name!r} has scope = \"job\": its alerts have no node")
    if status == "resolved" and not rule.resolved:
        why = "an event" if rule.is_event else "resolved = false"
        raise n.error("status", f"rule {name!r} is {why}: it never sends a resolved notification")
    summary_contains = n.str("summary_contains", None)
    if summary_contains == "":
        raise n.error("summary_contains", "must not be empty")
    return Expected(status=status, rule=name, job=job, node=node, severity=n.choice("severity", SEVERITIES, None),
                    summary_contains=summary_contains, source=source)


def _silence(r: TableReader, index: int) -> Silence:
    r.finish(SILENCE_KEYS)
    if not any(r.has(k) for k in ("rule", "source", "job", "node")):
        raise r.error("rule", "give at least one matcher (rule, source, job, node); to silence everything "
                              "say rule = \"*\"")
    if r.has("source") and not r.str("source").strip():
        raise r.error("source", "is empty: an empty glob matches nothing; give a name or a glob such as 'prod-*'")
    for key in ("source", "job"):  # as `notifier silence add --source/--job` (silencecli.matchers_from)
        glob = r.str(key, "*")
        if "/" in glob:
            hint = (f"say source = {glob.partition('/')[0]!r} and job = {glob.partition('/')[2]!r}" if key == "job"
                    else "a source name is letters, digits, '_' and '-'")
            raise r.error(key, f"{glob!r}: no {key} name has a '/'; {hint}")
    matchers = Matchers(rule=r.str("rule", "*"), job=r.str("job", "*"), node=r.str("node", "*"),
                        source=r.str("source", "*"))
    start_ms = _ms(r.seconds("start", 0.0))
    end_ms = _ms(r.seconds("end"))
    if end_ms <= start_ms:
        raise r.error("end", f"must be after start ({format_offset(start_ms)})")
    starts_at = EPOCH + timedelta(milliseconds=start_ms)
    return Silence(id=f"test-{index + 1}", matchers=matchers, starts_at=starts_at,
                   ends_at=EPOCH + timedelta(milliseconds=end_ms), created_at=starts_at,
                   comment=r.str("comment", ""), author="test-rules")


# --- small helpers --------------------------------------------------------------------

def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def format_offset(ms: int) -> str:
    """An offset on the timeline, as a duration: 0s, 90s -> 1m30s, 5400000 -> 1h30m, 1500 -> 1s500ms."""
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        value, ms = divmod(ms, size)
        if value:
            parts.append(f"{value}{unit}")
    return "".join(parts)
