"""Rule files (``rules/*.toml``): strict loading, and evaluation against entity states.

Loading is strict because a typo must never silently disable an alert: unknown keys are
errors with a close-match suggestion, a status that looks like a misspelt known status
is an error, and every error names the file, the rule and the key.

Evaluation is a pure function over the remembered entities and this poll's
transitions. It has to stay cheap at 10,000 jobs x 10 nodes: globs are compiled once
per rule (cached), entities are bucketed by status so a rule only visits entities in
the statuses it cares about, and glob results are memoised per job name and node type.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from notifier import summary
from notifier.errors import ConfigError
from notifier.models import (
    COUNTER_NAMES,
    KNOWN_STATUSES,
    SEVERITIES,
    Condition,
    EntityKey,
    EntityState,
    Event,
    Rule,
    Transition,
    TransitionMatch,
    normalize_status,
)
from notifier.tables import TableReader, load_toml

RULE_KEYS = (
    "name", "scope", "status", "transition", "for", "jobs", "nodes", "node_types", "severity",
    "channels", "template", "repeat", "resolved", "stalled", "inhibits", "summary",
)
"""Every key a ``[[rule]]`` table may hold."""

_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_-]+")

_SPELLCHECK_STATUSES = (*KNOWN_STATUSES, "PAUSE", "ABNORMAL", "DISABLE", "OVERLOAD", "INIT")
"""Statuses the API or SDK are known to send; a near miss of one of these is taken for a typo."""


# --- loading --------------------------------------------------------------------------

def load_rules(rules_dir: Path, channels: Collection[str]) -> tuple[Rule, ...]:
    """Load every ``*.toml`` of ``rules_dir`` (sorted by name) and check the rules against each other.

    ``channels`` are the channel names the config defines. A missing directory is an
    error; an empty one yields no rules.
    """
    rules_dir = Path(rules_dir)
    if not rules_dir.is_dir():
        reason = "not a directory" if rules_dir.exists() else "rules directory not found"
        raise ConfigError(reason, file=str(rules_dir))
    rules: list[Rule] = []
    for path in sorted(p for p in rules_dir.glob("*.toml") if p.is_file()):
        rules.extend(parse_rules(load_toml(path), file=str(path), channels=channels))
    return check_rules(rules)


def parse_rules(data: Mapping[str, Any], *, file: str, channels: Collection[str]) -> tuple[Rule, ...]:
    """Validate one parsed rule file: ``[[rule]]`` tables and nothing else.

    Names must be unique within the file; cross-file checks (names, ``inhibits``) are
    ``check_rules``'s job, since a rule may inhibit one defined in another file.
    """
    top = TableReader(data, file=file, where="")
    items = top.raw("rule", [])
    top.finish()
    if not isinstance(items, list):
        raise top.error("rule", "expected [[rule]] tables (an array of tables), got a single [rule] table"
                        if isinstance(items, Mapping) else f"expected [[rule]] tables, got {items!r}")
    rules = tuple(_parse_rule(item, index, file, channels) for index, item in enumerate(items))
    _check_unique(rules)
    return rules


def check_rules(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """Cross-rule checks over all files: unique names, and ``inhibits`` naming existing rules."""
    rules = tuple(rules)
    _check_unique(rules)
    by_name = {rule.name: rule for rule in rules}
    for rule in rules:
        for target in rule.inhibits:
            if target == rule.name:
                raise ConfigError("a rule cannot inhibit itself", file=rule.file, where=_where(rule.name),
                                  key="inhibits")
            if target not in by_name:
                close = difflib.get_close_matches(target, sorted(by_name), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown rule {target!r}{hint}", file=rule.file, where=_where(rule.name),
                                  key="inhibits")
    return rules


def _check_unique(rules: Sequence[Rule]) -> None:
    first: dict[str, Rule] = {}
    for rule in rules:
        if rule.name in first:
            raise ConfigError(f"duplicate rule name {rule.name!r} (first defined in {first[rule.name].file})",
                              file=rule.file, where=_where(rule.name), key="name")
        first[rule.name] = rule


def _where(name: str) -> str:
    return f"rule {name!r}"


def _parse_rule(data: Any, index: int, file: str, channels: Collection[str]) -> Rule:
    name_hint = data.get("name") if isinstance(data, Mapping) else None
    where = _where(name_hint) if isinstance(name_hint, str) and name_hint.strip() else f"rule[{index}]"
    r = TableReader(data, file=file, where=where)
    r.finish(RULE_KEYS)  # unknown keys first: a typo explains most other errors

    name = r.str("name")
    if not name.strip() or name != name.strip():
        raise r.error("name", f"must be a non-empty name without surrounding spaces, got {name!r}")
    scope = r.choice("scope", ("job", "node"))

    status = _statuses(r, "status") if r.has("status") else ()
    transition = _transition(r) if r.has("transition") else None
    if status and transition is not None:
        raise r.error("transition", "give either status (a condition) or transition (an event), not both")
    if not status and transition is None:
        raise r.error("status", "required: give status = [...] (a condition) or transition = { from, to } (an event)")
    is_event = transition is not None

    if is_event:
        for key, why in (("for", "an event fires once per transition, it has no pending time"),
                         ("repeat", "an event is sent once, never repeated"),
                         ("resolved", "an event is never resolved"),
                         ("stalled", "stalled needs a status list, not a transition"),
                         ("inhibits", "only status rules hold a firing alert that can inhibit others")):
            if r.has(key):
                raise r.error(key, f"not allowed with transition: {why}")

    if scope == "job":
        for key in ("nodes", "node_types", "stalled"):
            if r.has(key):
                raise r.error(key, 'only allowed with scope = "node"')
    elif r.has("inhibits"):
        raise r.error("inhibits", 'only scope = "job" rules can inhibit (a job alert mutes alerts of its job)')

    stalled = r.choice("stalled", COUNTER_NAMES, None)
    template = r.str("template", "default")
    if not _TEMPLATE_NAME.fullmatch(template):
        raise r.error("template", f"must be letters, digits, '_' or '-', got {template!r}")
    text = r.str("summary", None)
    if text is not None:
        problem = "must not be empty" if not text.strip() else summary.check_format(text)
        if problem:
            raise r.error("summary", problem)

    return Rule(
        name=name,
        scope=scope,
        channels=_channels(r, channels),
        status=status,
        transition=transition,
        for_=r.seconds("for", 0.0),
        jobs=_globs(r, "jobs", ("*",)),
        nodes=_globs(r, "nodes", ("*",)),
        node_types=r.str_list("node_types", ()),
        severity=r.choice("severity", SEVERITIES, "warning"),
        template=template,
        repeat=0.0 if is_event else r.seconds("repeat", 4 * 3600.0),  # events: said truthfully, never repeated
        resolved=not is_event and r.bool("resolved", True),
        stalled=stalled,
        inhibits=_dedupe(r.str_list("inhibits", ())),
        summary=text,
        file=file,
    )


def _statuses(r: TableReader, key: str) -> tuple[str, ...]:
    values = _dedupe(normalize_status(v) for v in r.str_list(key))
    if not values or not all(values):
        raise r.error(key, "list at least one status, e.g. [\"EXCEPTION\"]")
    for value in values:
        if value not in _SPELLCHECK_STATUSES:
            close = difflib.get_close_matches(value, _SPELLCHECK_STATUSES, n=1, cutoff=0.85)
            if close:
                raise r.error(key, f"unknown status {value!r} (did you mean {close[0]!r}?)")
    return values


def _transition(r: TableReader) -> TransitionMatch:
    t = r.table("transition")
    match = TransitionMatch(
        from_status=_statuses(t, "from") if t.has("from") else (),
        to_status=_statuses(t, "to") if t.has("to") else (),
    )
    t.finish(("from", "to"))
    if not match.from_status and not match.to_status:
        raise r.error("transition", "give from = [...], to = [...] or both")
    return match


def _globs(r: TableReader, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = r.str_list(key, default)
    if not value:
        raise r.error(key, f"an empty list matches nothing; omit {key} to match all")
    return value


def _channels(r: TableReader, known: Collection[str]) -> tuple[str, ...]:
    if not r.has("channels"):
        return tuple(sorted(known))
    names = _dedupe(r.str_list("channels"))
    if not names:
        raise r.error("channels", "an empty list sends nowhere; omit channels to use all of them")
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"channels: {', '.join(sorted(known)) or 'none defined'}"
            raise r.error("channels", f"unknown channel {name!r} ({hint})")
    return names


def _dedupe(values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# --- evaluation -----------------------------------------------------------------------

Matcher = Callable[[str], bool]


def _match_all(_value: str) -> bool:
    return True


@lru_cache(maxsize=1024)
def _glob_matcher(patterns: tuple[str, ...]) -> Matcher:
    """One regex for a list of globs (``fnmatch.fnmatchcase`` semantics); "*" short-circuits."""
    if not patterns or "*" in patterns:
        return _match_all
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A rule with its globs compiled; cached per (hashable, frozen) rule."""

    rule: Rule
    statuses: tuple[str, ...]
    jobs: Matcher
    nodes: Matcher
    node_types: Matcher
    from_status: frozenset[str]
    to_status: frozenset[str]


@lru_cache(maxsize=4096)
def _compile(rule: Rule) -> _Compiled:
    t = rule.transition or TransitionMatch()
    return _Compiled(
        rule=rule,
        statuses=rule.status,
        jobs=_glob_matcher(rule.jobs),
        nodes=_glob_matcher(rule.nodes) if rule.scope == "node" else _match_all,
        node_types=_glob_matcher(rule.node_types) if rule.scope == "node" else _match_all,
        from_status=frozenset(t.from_status),
        to_status=frozenset(t.to_status),
    )


class _Memo:
    """Memoises a matcher for one evaluation: 10,000 jobs meet the same globs once per rule, not once per node."""

    __slots__ = ("_fn", "_seen")

    def __init__(self, fn: Matcher) -> None:
        self._fn = fn
        self._seen: dict[str, bool] = {}

    def __call__(self, value: str) -> bool:
        hit = self._seen.get(value)
        if hit is None:
            hit = self._seen[value] = bool(self._fn(value))
        return hit


def evaluate(rules: Sequence[Rule], entities: Mapping[EntityKey, EntityState], transitions: Sequence[Transition],
             now: datetime) -> tuple[tuple[Condition, ...], tuple[Event, ...]]:
    """Which status rules hold for which entities, and which transitions make events.

    ``entities`` is everything the lifecycle should judge (typically the remembered
    states, updated with this poll's diffs). Conditions come out in rule order, then
    status order, then entity order; events in rule order, then transition order.
    """
    jobs_by_status: dict[str, list[EntityState]] = {}
    nodes_by_status: dict[str, list[EntityState]] = {}
    for entity in entities.values():
        bucket = jobs_by_status if entity.node == "" else nodes_by_status
        bucket.setdefault(entity.status, []).append(entity)

    conditions: list[Condition] = []
    events: list[Event] = []
    for rule in rules:
        c = _compile(rule)
        if rule.is_event:
            events.extend(Event(rule.name, t) for t in _matching_transitions(c, transitions))
        elif rule.scope == "job":
            conditions.extend(_job_conditions(c, jobs_by_status))
        else:
            conditions.extend(_node_conditions(c, nodes_by_status, now))
    return tuple(conditions), tuple(events)


def _job_conditions(c: _Compiled, by_status: Mapping[str, list[EntityState]]) -> list[Condition]:
    name = c.rule.name
    jobs = c.jobs
    return [Condition(name, e.job, "", e.since)
            for status in c.statuses for e in by_status.get(status, ()) if jobs(e.job)]


def _node_conditions(c: _Compiled, by_status: Mapping[str, list[EntityState]], now: datetime) -> list[Condition]:
    name, counter = c.rule.name, c.rule.stalled
    jobs, nodes, types = _Memo(c.jobs), c.nodes, _Memo(c.node_types)
    out: list[Condition] = []
    for status in c.statuses:
        for e in by_status.get(status, ()):
            if not (types(e.node_type) and jobs(e.job) and nodes(e.node)):
                continue
            if counter is None:
                out.append(Condition(name, e.job, e.node, e.since))
                continue
            moved = e.counters_since.get(counter)
            if moved is None or counter not in e.counters or moved >= now:
                continue  # unknown counter, or it moved at this very poll: not stalled
            out.append(Condition(name, e.job, e.node, max(e.since, moved)))
    return out


def _matching_transitions(c: _Compiled, transitions: Sequence[Transition]) -> list[Transition]:
    want_job = c.rule.scope == "job"
    return [
        t for t in transitions
        if (t.node == "") == want_job
        and (not c.from_status or t.from_status in c.from_status)
        and (not c.to_status or t.to_status in c.to_status)
        and c.jobs(t.job)
        and (want_job or (c.nodes(t.node) and c.node_types(t.node_type)))
    ]
