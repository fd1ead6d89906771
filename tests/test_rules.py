"""Rule files: strict loading with errors naming file, rule and key; evaluation of conditions and events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from notifier.core.models import (
    Condition,
    EntityState,
    Event,
    Rule,
    Transition,
    TransitionMatch,
)
from notifier.core.rules import evaluate
from notifier.errors import ConfigError
from notifier.rulefile import load_rules, parse_rules

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "rules"
CHANNELS = ("slack", "mail", "hook")
T0 = datetime(2019, 3, 1, 3, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# --- loading: errors -----------------------------------------------------------------

RULE_HEAD = 'name = "r1"\nscope = "node"\n'

ERROR_CASES = [
    # (rule body or full file, where, key, message fragment)
    (RULE_HEAD + 'status = ["EXCEPTION"]\nseverty = "critical"\n', "rule 'r1'", "severty", "did you mean 'severity'?"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nfor = "10 minutes"\n', "rule 'r1'", "for", "invalid duration '10 minutes'"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nrepeat = "often"\n', "rule 'r1'", "repeat", "invalid duration 'often'"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nchannels = ["slak"]\n', "rule 'r1'", "channels",
     "unknown channel 'slak' (did you mean 'slack'?)"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nchannels = []\n', "rule 'r1'", "channels", "sends nowhere"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\ntransition = { to = ["STOPPED"] }\n', "rule 'r1'", "transition", "not both"),
    (RULE_HEAD, "rule 'r1'", "status", "required"),
    ('name = "r1"\nscope = "job"\nstatus = ["NORMAL"]\nstalled = "totalPutRecords"\n', "rule 'r1'", "stalled",
     'scope = "node"'),
    (RULE_HEAD + 'status = ["NORMAL"]\nstalled = "totalPutRecs"\n', "rule 'r1'", "stalled", "must be one of"),
    (RULE_HEAD + 'transition = { to = ["STOPPED"] }\nstalled = "totalPutRecords"\n', "rule 'r1'", "stalled",
     "not allowed with transition"),
    (RULE_HEAD + 'transition = { to = ["STOPPED"] }\nfor = "5m"\n', "rule 'r1'", "for", "not allowed with transition"),
    (RULE_HEAD + 'transition = { to = ["STOPPED"] }\nresolved = true\n', "rule 'r1'", "resolved", "never resolved"),
    (RULE_HEAD + 'transition = {}\n', "rule 'r1'", "transition", "give from"),
    (RULE_HEAD + 'transition = { form = ["NORMAL"] }\n', "rule 'r1'.transition", "form", "did you mean 'from'?"),
    (RULE_HEAD + 'status = ["EXCEPTON"]\n', "rule 'r1'", "status", "did you mean 'EXCEPTION'?"),
    (RULE_HEAD + 'status = []\n', "rule 'r1'", "status", "at least one status"),
    (RULE_HEAD + 'status = "EXCEPTION"\nseverity = "fatal"\n', "rule 'r1'", "severity", "must be one of"),
    ('name = "r1"\nscope = "cluster"\nstatus = ["NORMAL"]\n', "rule 'r1'", "scope", "must be one of"),
    ('scope = "job"\nstatus = ["NORMAL"]\n', "rule[0]", "name", "required key is missing"),
    ('name = 7\nscope = "job"\nstatus = ["NORMAL"]\n', "rule[0]", "name", "expected a string"),
    ('name = "r1"\nstatus = ["NORMAL"]\n', "rule 'r1'", "scope", "required key is missing"),
    ('name = "r1"\nscope = "job"\nstatus = ["NORMAL"]\nnodes = ["A"]\n', "rule 'r1'", "nodes", 'scope = "node"'),
    ('name = "r1"\nscope = "job"\nstatus = ["NORMAL"]\njobs = []\n', "rule 'r1'", "jobs", "matches nothing"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\ninhibits = ["x"]\n', "rule 'r1'", "inhibits", 'only scope = "job"'),
    (RULE_HEAD + 'status = ["EXCEPTION"]\ntemplate = "../etc"\n', "rule 'r1'", "template", "letters, digits"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nsummary = "{job.__class__}"\n', "rule 'r1'", "summary",
     "unknown placeholder"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nresolved = "yes"\n', "rule 'r1'", "resolved", "true or false"),
    ('name = "r1"\nscope = "job"\nstatus = ["EXCEPTION"]\ninhibits = ["node-exceptoin"]\n'
     '[[rule]]\nname = "node-exception"\nscope = "node"\nstatus = ["EXCEPTION"]\n',
     "rule 'r1'", "inhibits", "unknown rule 'node-exceptoin' (did you mean 'node-exception'?)"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nlabels = { "team-a" = "data" }\n', "rule 'r1'.labels", "team-a",
     "not a valid label name"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nlabels = { 1team = "data" }\n', "rule 'r1'.labels", "1team",
     "not starting with a digit"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nlabels = { severity = "page" }\n', "rule 'r1'.labels", "severity",
     "set by notifier itself"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nlabels = { project_id = "x" }\n', "rule 'r1'.labels", "project_id",
     "set by notifier itself"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nlabels = { __meta = "x" }\n', "rule 'r1'.labels", "__meta", "reserved"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nlabels = { team = 3 }\n', "rule 'r1'.labels", "team", "expected a string"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nlabels = { team = "" }\n', "rule 'r1'.labels", "team", "must not be empty"),
    (RULE_HEAD + 'status = ["EXCEPTION"]\nlabels = "team=data"\n', "rule 'r1'.labels", None, "expected a table"),
]


@pytest.mark.parametrize(
    ("body", "where", "key", "message"),
    ERROR_CASES,
    ids=["typo-key", "bad-for", "bad-repeat", "unknown-channel", "empty-channels", "status-and-transition",
         "no-status-no-transition", "stalled-on-job", "bad-counter", "stalled-with-transition",
         "for-with-transition", "resolved-with-transition", "empty-transition", "typo-in-transition",
         "typo-status", "empty-status", "bad-severity", "bad-scope", "missing-name", "name-not-string",
         "missing-scope", "nodes-on-job", "empty-jobs", "inhibits-on-node", "bad-template",
         "summary-attribute-access", "resolved-not-bool", "inhibits-unknown-rule", "label-name-dash",
         "label-name-digit", "label-builtin", "label-builtin-source-fact", "label-reserved-prefix", "label-not-string",
         "label-empty", "labels-not-a-table"],
)
def test_rule_errors_name_file_rule_and_key(tmp_path: Path, body: str, where: str, key: str, message: str) -> None:
    """Every invalid rule is rejected with an error naming the file, the rule and the key."""
    path = write(tmp_path, "team.toml", "[[rule]]\n" + body)
    with pytest.raises(ConfigError) as info:
        load_rules(tmp_path, CHANNELS)
    err = info.value
    assert (err.file, err.where, err.key) == (str(path), where, key)
    assert message in str(err) and str(path) in str(err)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [('rules = []\n', "rules", "did you mean 'rule'?"),
     ('[rule]\nname = "x"\n', "rule", "array of tables"),
     ('[[rule]\nname = "x"\n', None, "invalid TOML")],
    ids=["unknown-top-level-key", "single-table", "toml-syntax"],
)
def test_file_level_errors(tmp_path: Path, text: str, key: str | None, message: str) -> None:
    """Unknown top-level keys, a [rule] table instead of [[rule]] and TOML syntax errors name the file."""
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(ConfigError, match=r"invalid TOML|did you mean|array of tables") as info:
        load_rules(tmp_path, CHANNELS)
    assert (info.value.file, info.value.key) == (str(path), key) and message in str(info.value)


def test_duplicate_name_across_files_names_both(tmp_path: Path) -> None:
    """A rule name defined in two files is an error that names both files."""
    rule = '[[rule]]\nname = "same"\nscope = "job"\nstatus = ["EXCEPTION"]\n'
    first, second = write(tmp_path, "a.toml", rule), write(tmp_path, "b.toml", rule)
    with pytest.raises(ConfigError) as info:
        load_rules(tmp_path, CHANNELS)
    assert (info.value.file, info.value.where, info.value.key) == (str(second), "rule 'same'", "name")
    assert str(first) in str(info.value)


def test_duplicate_name_within_one_file() -> None:
    """parse_rules rejects a name used twice in the same file."""
    rule = {"name": "same", "scope": "job", "status": ["EXCEPTION"]}
    with pytest.raises(ConfigError, match="duplicate rule name 'same'"):
        parse_rules({"rule": [rule, rule]}, file="one.toml", channels=CHANNELS)


def test_rule_labels_are_kept_sorted() -> None:
    """A rule's labels table becomes sorted (name, value) pairs; no table means no labels."""
    rule = {"name": "r", "scope": "job", "status": ["EXCEPTION"], "labels": {"team": "data", "Tier": "1"}}
    (parsed,) = parse_rules({"rule": [rule]}, file="one.toml", channels=CHANNELS)
    assert parsed.labels == (("Tier", "1"), ("team", "data"))
    without = {k: v for k, v in rule.items() if k != "labels"}
    (plain,) = parse_rules({"rule": [without]}, file="one.toml", channels=CHANNELS)
    assert plain.labels == ()


def test_missing_directory_is_an_error_and_empty_gives_nothing(tmp_path: Path) -> None:
    """A missing rules directory is a ConfigError naming it; an empty one yields no rules."""
    with pytest.raises(ConfigError, match="rules directory not found") as info:
        load_rules(tmp_path / "nope", CHANNELS)
    assert info.value.file == str(tmp_path / "nope")
    assert load_rules(tmp_path, CHANNELS) == ()


# --- loading: valid files ------------------------------------------------------------

def test_defaults_of_a_minimal_rule() -> None:
    """A minimal rule gets the documented defaults, and all channels in sorted order."""
    (rule,) = parse_rules({"rule": [{"name": "r", "scope": "node", "status": ["exception"]}]},
                          file="f.toml", channels=CHANNELS)
    assert rule == Rule(name="r", scope="node", channels=("hook", "mail", "slack"), status=("EXCEPTION",),
                        for_=0.0, jobs=("*",), nodes=("*",), node_types=(), severity="warning", template="default",
                        repeat=4 * 3600.0, resolved=True, stalled=None, inhibits=(), summary=None, file="f.toml")


def test_fixture_directory_loads_across_files() -> None:
    """Rules load from every file in name order; STARTING is read as STARTTING; inhibits may cross files."""
    rules = {r.name: r for r in load_rules(DATA / "multi", CHANNELS)}
    assert list(rules) == ["sql-node-failed", "orders-starting", "job-down", "node-came-back"]
    starting = rules["orders-starting"]
    assert (starting.status, starting.for_, starting.repeat, starting.resolved) == (("STARTTING",), 300.0, 0.0, False)
    assert rules["job-down"].inhibits == ("sql-node-failed",)
    event = rules["node-came-back"]
    assert event.transition == TransitionMatch(from_status=("EXCEPTION",), to_status=())
    assert (event.is_event, event.resolved, event.repeat) == (True, False, 0.0)
    assert rules["sql-node-failed"].file == str(DATA / "multi" / "10-nodes.toml")


def test_starting_alias_in_transition() -> None:
    """STARTING in a transition's from/to is stored as the API's STARTTING."""
    (rule,) = parse_rules({"rule": [{"name": "t", "scope": "job", "transition": {"from": ["STARTING"]}}]},
                          file="f.toml", channels=CHANNELS)
    assert rule.transition == TransitionMatch(from_status=("STARTTING",))


def test_default_rule_file_loads() -> None:
    """The shipped rules/default.toml loads with any set of channels and holds the documented rules."""
    rules = {r.name: r for r in load_rules(REPO / "rules", ("console",))}
    assert set(rules) >= {"node-exception", "job-exception", "job-stuck-starting", "stream-stalled", "job-stopped"}
    assert (rules["node-exception"].severity, rules["node-exception"].for_) == ("critical", 0.0)
    assert (rules["job-stuck-starting"].status, rules["job-stuck-starting"].for_) == (("STARTTING",), 600.0)
    stalled = rules["stream-stalled"]
    assert (stalled.stalled, stalled.for_, "ExecuteDISStream" in stalled.node_types) == ("totalPutRecords", 900.0, True)
    assert rules["job-stopped"].is_event
    assert all(r.channels == ("console",) for r in rules.values())


# --- evaluation ----------------------------------------------------------------------

def rule(name: str = "r", scope: str = "node", **kw: object) -> Rule:
    return Rule(name=name, scope=scope, channels=("slack",), **kw)  # type: ignore[arg-type]


def job(name: str, status: str, since: datetime = T0) -> EntityState:
    return EntityState(job=name, node="", status=status, since=since)


def nd(jobname: str, name: str, status: str, type: str = "DLI SQL", since: datetime = T0,
       counters: dict[str, int] | None = None, counters_since: dict[str, datetime] | None = None) -> EntityState:
    return EntityState(job=jobname, node=name, status=status, since=since, node_type=type,
                       counters=counters or {}, counters_since=counters_since or {})


def index(entities: Iterable[EntityState]) -> dict[tuple[str, str], EntityState]:
    return {e.key: e for e in entities}


ENTITIES = index([
    job("job_sms", "EXCEPTION"), job("job_orders", "EXCEPTION"), job("batch_x", "NORMAL"),
    nd("job_sms", "DLI_SMS_GES", "EXCEPTION"), nd("job_sms", "DIS_INPUT", "EXCEPTION", "ExecuteDISStream"),
    nd("job_orders", "DLI_ORDERS", "EXCEPTION"), nd("job_sms", "DLI_OK", "NORMAL"),
])


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (rule(scope="job", status=("EXCEPTION",)), [("job_sms", ""), ("job_orders", "")]),
        (rule(scope="job", status=("EXCEPTION",), jobs=("job_s*",)), [("job_sms", "")]),
        (rule(status=("EXCEPTION",)),
         [("job_sms", "DLI_SMS_GES"), ("job_sms", "DIS_INPUT"), ("job_orders", "DLI_ORDERS")]),
        (rule(status=("EXCEPTION",), nodes=("DLI_*",), jobs=("job_sms", "job_ord?rs")),
         [("job_sms", "DLI_SMS_GES"), ("job_orders", "DLI_ORDERS")]),
        (rule(status=("EXCEPTION",), node_types=("Execute*Stream",)), [("job_sms", "DIS_INPUT")]),
        (rule(status=("EXCEPTION",), jobs=("JOB_SMS",)), []),
        (rule(status=("NORMAL", "EXCEPTION"), nodes=("DLI_OK", "DIS_INPUT")),
         [("job_sms", "DLI_OK"), ("job_sms", "DIS_INPUT")]),
    ],
    ids=["job-scope", "job-glob", "node-scope-skips-jobs", "node-and-job-globs", "node-types", "globs-case-sensitive",
         "several-statuses"],
)
def test_status_rules(r: Rule, expected: list[tuple[str, str]]) -> None:
    """A status rule holds for every entity of its scope whose status and names match."""
    conditions, events = evaluate([r], ENTITIES, (), T0 + MIN)
    assert [(c.job, c.node) for c in conditions] == expected
    assert all(c.rule == "r" and c.active_since == T0 for c in conditions) and events == ()


STALLED = rule(status=("NORMAL",), stalled="totalPutRecords", node_types=("ExecuteDISStream",))


@pytest.mark.parametrize(
    ("since", "counters", "counters_since", "expected"),
    [
        (T0, {"totalPutRecords": 5}, {"totalPutRecords": T0 + 5 * MIN}, T0 + 5 * MIN),
        (T0 + 8 * MIN, {"totalPutRecords": 5}, {"totalPutRecords": T0 + 5 * MIN}, T0 + 8 * MIN),
        (T0, {"totalPutRecords": 5}, {"totalPutRecords": T0 + 10 * MIN}, None),
        (T0, {"totalGetRecords": 5}, {"totalGetRecords": T0}, None),
    ],
    ids=["unchanged-since-5m", "status-newer-than-counter", "moved-at-this-poll", "counter-missing"],
)
def test_stalled_rule(since: datetime, counters: dict[str, int], counters_since: dict[str, datetime],
                      expected: datetime | None) -> None:
    """A stalled rule holds only once the counter did not move at this poll, active since max(since, last move)."""
    now = T0 + 10 * MIN
    entity = nd("job_sms", "DIS_INPUT", "NORMAL", "ExecuteDISStream", since, counters, counters_since)
    conditions, _ = evaluate([STALLED], index([entity]), (), now)
    assert [c.active_since for c in conditions] == ([] if expected is None else [expected])


def tr(node: str, frm: str, to: str, jobname: str = "job_sms", type: str = "") -> Transition:
    return Transition(job=jobname, node=node, from_status=frm, to_status=to, at=T0, node_type=type)


TRANSITIONS = (
    tr("", "NORMAL", "STOPPED"), tr("", "NORMAL", "STOPPING", "job_orders"), tr("", "STARTTING", "STOPPED", "job_x"),
    tr("DIS_INPUT", "EXCEPTION", "NORMAL", type="ExecuteDISStream"),
    tr("DLI_SMS_GES", "NORMAL", "EXCEPTION", type="DLI SQL"),
)


@pytest.mark.parametrize(
    ("match", "scope", "extra", "expected"),
    [
        (TransitionMatch(("NORMAL",), ("STOPPED", "STOPPING")), "job", {}, [("job_sms", ""), ("job_orders", "")]),
        (TransitionMatch((), ("STOPPED",)), "job", {}, [("job_sms", ""), ("job_x", "")]),
        (TransitionMatch(("NORMAL",), ()), "job", {"jobs": ("job_o*",)}, [("job_orders", "")]),
        (TransitionMatch(("EXCEPTION",), ()), "node", {}, [("job_sms", "DIS_INPUT")]),
        (TransitionMatch((), ("EXCEPTION", "NORMAL")), "node", {"node_types": ("DLI SQL",)},
         [("job_sms", "DLI_SMS_GES")]),
        (TransitionMatch((), ("STOPPED",)), "node", {}, []),
    ],
    ids=["from-and-to", "to-only", "from-with-job-glob", "node-from-only", "node-types", "job-transitions-not-node"],
)
def test_transition_rules(match: TransitionMatch, scope: str, extra: dict[str, object],
                          expected: list[tuple[str, str]]) -> None:
    """A transition rule yields one event per matching transition of its scope."""
    conditions, events = evaluate([rule("t", scope, transition=match, **extra)], {}, TRANSITIONS, T0)
    assert conditions == ()
    assert [(e.transition.job, e.transition.node) for e in events] == expected
    assert all(isinstance(e, Event) and e.rule == "t" for e in events)


def test_evaluate_keeps_rule_order() -> None:
    """Conditions come out grouped by rule, in the order the rules are given."""
    rules = [rule("b", "job", status=("EXCEPTION",), jobs=("job_sms",)),
             rule("a", status=("EXCEPTION",), nodes=("DLI_SMS_GES",))]
    conditions, _ = evaluate(rules, ENTITIES, (), T0)
    assert conditions == (Condition("b", "job_sms", "", T0), Condition("a", "job_sms", "DLI_SMS_GES", T0))
