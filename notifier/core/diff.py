"""Diff one job's fresh snapshot against what was remembered: new entity states and transitions.

The clocks computed here ("in this status since", "this counter last moved at") are what
``for`` and ``stalled`` rules are measured against. They are persisted by the state
store, so a restart never resets them, and an entity that did not change comes back
*equal* to the remembered one so the store can write only the rows that changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from notifier.core.counters import NO_COUNTERS, Counters, compact_counters
from notifier.core.models import EntityKey, EntityState, JobDiff, JobSnapshot, NodeStatus, Transition, normalize_status


def diff_job(previous: Mapping[EntityKey, EntityState], snapshot: JobSnapshot, now: datetime) -> JobDiff:
    """Compare ``snapshot`` with the remembered entities of its job (empty on first sight).

    Statuses are normalized (``STARTING`` -> ``STARTTING``, upper case); unknown values
    are kept. New entities produce no transition; nodes no longer reported are listed
    in ``removed``.
    """
    job = snapshot.name
    entities: dict[EntityKey, EntityState] = {}
    transitions: list[Transition] = []
    # reuse the remembered key tuples: the new view then holds no second copy of 110,000 keys
    known = {key[1]: key for key in previous if key[0] == job}

    job_key = known.get("") or (job, "")
    old_job = previous.get(job_key)
    new_job = _job_entity(old_job, snapshot, now)
    entities[job_key] = new_job
    if old_job is not None and old_job.status != new_job.status:
        transitions.append(Transition(job, "", old_job.status, new_job.status, now))

    for node in snapshot.nodes:
        key = known.get(node.name) or (job, node.name)
        if key in entities:
            continue  # a repeated (or empty) node name: the first entity wins, one key cannot hold two states
        old = previous.get(key)
        new = _node_entity(old, job, node, now)
        entities[key] = new
        if old is not None and old.status != new.status:
            transitions.append(Transition(job, node.name, old.status, new.status, now, new.node_type))

    removed = tuple(sorted(key for key in previous if key[0] == job and key[1] and key not in entities))
    return JobDiff(entities=entities, transitions=tuple(transitions), removed=removed)


def _job_entity(old: EntityState | None, snapshot: JobSnapshot, now: datetime) -> EntityState:
    status = normalize_status(snapshot.status)
    if old is not None and old.status == status:
        since, previous_status = old.since, old.previous_status
    else:
        since = _job_since(old, snapshot.last_update_time, now)
        previous_status = old.status if old is not None else None
    new = EntityState(job=snapshot.name, node="", status=status, since=since,
                      previous_status=previous_status, started_at=snapshot.start_time)
    return old if new == old else new


def _job_since(old: EntityState | None, last_update: datetime | None, now: datetime) -> datetime:
    """The API's lastUpdateTime says best when the job entered its status; trust it within bounds.

    A clock in the future (server skew) is clamped to ``now``; on a change it may not
    predate the previous status's start, which would make the new status look older
    than what we saw before it.
    """
    if last_update is None:
        return now
    since = min(last_update, now)
    if old is not None and since < old.since:
        since = old.since
    return since


def _node_entity(old: EntityState | None, job: str, node: NodeStatus, now: datetime) -> EntityState:
    status = normalize_status(node.status)
    if (old is not None and old.status == status and old.node_type == node.type and old.log_path == node.log_path
            and old.counters == node.counters and _same_names(old.counters_since, old.counters)):
        return old  # the common case at 100,000 nodes a cycle: nothing moved, build nothing
    if old is not None and old.status == status:
        since, previous_status = old.since, old.previous_status
    else:
        since, previous_status = now, (old.status if old is not None else None)
    counters = compact_counters(node.counters)  # immutable: shared with the snapshot, not copied
    if old is None:
        return EntityState(job=job, node=node.name, status=status, since=since, previous_status=previous_status,
                           node_type=node.type, log_path=node.log_path, counters=counters,
                           counters_since=_counters_since(counters, NO_COUNTERS, NO_COUNTERS, now))
    # equal strings are taken from the remembered entity: the answer's copies are then freed with it
    return EntityState(job=old.job, node=old.node, status=old.status if old.status == status else status,
                       since=since, previous_status=previous_status,
                       node_type=old.node_type if old.node_type == node.type else node.type,
                       log_path=old.log_path if old.log_path == node.log_path else node.log_path, counters=counters,
                       counters_since=_counters_since(counters, old.counters, old.counters_since, now))


def _counters_since(counters: Mapping[str, int], old_counters: Mapping[str, int],
                    old_since: Mapping[str, datetime], now: datetime) -> Mapping[str, datetime]:
    """Per counter, when its value last changed: kept from before if it did not move, else ``now``."""
    if isinstance(counters, Counters) and isinstance(old_counters, Counters) and isinstance(old_since, Counters):
        # the hot path, slot by slot; same rule as below (None = absent)
        slots = tuple(None if value is None else at if value == was and at is not None else now
                      for value, was, at in zip(counters.slots(), old_counters.slots(), old_since.slots(), strict=True))
        if slots == (now, now, now, now):
            return _all_moved_at(now)  # the usual case for a flowing stream: one shared object per poll
        return Counters.of(*slots)
    return compact_counters({
        name: old_since[name] if name in old_counters and old_counters[name] == value and name in old_since else now
        for name, value in counters.items()
    })


_ALL_MOVED: list[Counters[datetime]] = []  # one-entry memo for _all_moved_at


def _all_moved_at(now: datetime) -> Counters[datetime]:
    """Four counters that all changed at ``now``; immutable, so every node of a poll may share it.

    Memoised by the identity of ``now`` (held by the memo, so it cannot be recycled):
    an equal datetime with another tzinfo still gets its own object.
    """
    memo = _ALL_MOVED
    if memo and memo[0].get("totalGetBytes") is now:
        return memo[0]
    shared = Counters.of(now, now, now, now)
    memo[:] = [shared]
    return shared


def _same_names(a: Mapping[str, object], b: Mapping[str, object]) -> bool:
    """Whether two mappings hold the same counter names (Counters: compared slot by slot, no sets built)."""
    if isinstance(a, Counters) and isinstance(b, Counters):
        return all((x is None) == (y is None) for x, y in zip(a.slots(), b.slots(), strict=True))
    return a.keys() == b.keys()
