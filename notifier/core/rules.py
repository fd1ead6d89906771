"""Rule evaluation: which status rules hold for which entities, which transitions make events.

A pure function over the remembered entities and this poll's transitions (loading the
rule files is ``notifier.rulefile``'s job). It has to stay cheap at 10,000 jobs x 10
nodes: globs are compiled once per rule (cached), entities are bucketed by status so a
rule only visits entities in the statuses it cares about, and glob results are memoised
per job name and node type.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from notifier.core.models import (
    Condition,
    EntityKey,
    EntityState,
    Event,
    Rule,
    Transition,
    TransitionMatch,
    split_job_key,
)

Matcher = Callable[[str], bool]


def _match_all(_value: str) -> bool:
    return True


@lru_cache(maxsize=1024)
def _glob_matcher(patterns: tuple[str, ...]) -> Matcher:
    """One regex for a list of globs (``fnmatch.fnmatchcase`` semantics); "*" short-circuits."""
    if not patterns or "*" in patterns:
        return _match_all
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match  # type: ignore[return-value]


def _key_matcher(sources: tuple[str, ...], jobs: tuple[str, ...]) -> Matcher:
    """Matches a job key (``models.job_key``): ``sources`` globs on its source, ``jobs`` globs on the bare name."""
    source_ok, job_ok = _glob_matcher(sources), _glob_matcher(jobs)
    if source_ok is _match_all and job_ok is _match_all:
        return _match_all

    def match(key: str) -> bool:
        source, job = split_job_key(key)
        return bool(source_ok(source)) and bool(job_ok(job))
    return match


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
        jobs=_key_matcher(rule.sources, rule.jobs),
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


def stall_deadline(rules: Sequence[Rule], entities: Iterable[EntityState]) -> datetime | None:
    """When the first stalled-counter rule over these entities (one job's) could start to hold; None if none can.

    A counter seen moving at ``t`` stalls for a rule with ``for = D`` at ``t + D``; only a
    fetch after that moment can tell. The fetch planner asks for the job then, so a stall
    is not found a whole sweep late.
    """
    stall_rules = [_compile(r) for r in rules if r.stalled is not None and r.scope == "node" and not r.is_event]
    if not stall_rules:
        return None
    earliest: datetime | None = None
    for e in entities:
        if not e.node:
            continue
        for c in stall_rules:
            counter = c.rule.stalled
            moved = e.counters_since.get(counter) if counter is not None else None
            if (moved is None or e.status not in c.statuses
                    or not (c.node_types(e.node_type) and c.jobs(e.job) and c.nodes(e.node))):
                continue
            deadline = moved + timedelta(seconds=c.rule.for_)
            if earliest is None or deadline < earliest:
                earliest = deadline
    return earliest


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
