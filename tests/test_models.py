"""Counters and EntitiesByJob: the compact, read-only mappings that keep 110,000 entities small."""

from __future__ import annotations

import copy
import pickle
from datetime import datetime, timezone

import jinja2
import pytest

from notifier.core.counters import NO_COUNTERS, Counters, compact_counters
from notifier.core.models import EntitiesByJob, EntityState

T0 = datetime(2019, 3, 1, 3, 0, tzinfo=timezone.utc)
VALUES = {"totalGetBytes": 10, "totalGetRecords": 2, "totalPutBytes": 30, "totalPutRecords": 4}


def test_counters_behave_as_a_read_only_mapping() -> None:
    """Counters answer [], get, in, len, items and equality exactly like the dict they were built from."""
    c = Counters({"totalGetRecords": 2, "totalPutRecords": 4})
    assert c["totalPutRecords"] == 4 and c.get("totalGetBytes") is None and c.get("x", 7) == 7
    assert "totalGetRecords" in c and "totalPutBytes" not in c and "x" not in c and 3 not in c
    assert (len(c), list(c.items())) == (2, [("totalGetRecords", 2), ("totalPutRecords", 4)])
    as_dict = {"totalGetRecords": 2, "totalPutRecords": 4}
    assert c == as_dict and as_dict == c  # both directions: dict defers to Counters.__eq__
    assert c != Counters.of(None, 2, None, 5) and Counters.of(10, 2, 30, 4) == Counters(VALUES)
    with pytest.raises(KeyError):
        c["totalPutBytes"]
    with pytest.raises(AttributeError):
        c._put_records = 5  # type: ignore[misc]


def test_counters_refuse_unknown_names_and_compact_falls_back_to_a_dict() -> None:
    """Only the four API names fit in Counters; compact_counters keeps any other mapping as a dict."""
    with pytest.raises(ValueError, match="unknown counter 'legacy'"):
        Counters({"legacy": 1})
    assert type(compact_counters({"legacy": 1})) is dict and compact_counters({}) is NO_COUNTERS
    assert type(compact_counters(VALUES)) is Counters and compact_counters(VALUES) == VALUES


def test_counters_survive_copy_pickle_and_templates() -> None:
    """Counters round-trip through deepcopy and pickle, and Jinja reads ``counters.totalPutRecords``."""
    c = Counters.of(T0, None, T0, T0)
    assert copy.deepcopy(c) == c and pickle.loads(pickle.dumps(c)) == c
    rendered = jinja2.Template("{{ c.totalPutRecords }}/{{ c['totalGetBytes'] }}").render(c=Counters(VALUES))
    assert rendered == "4/10"


def _entity(job: str, node: str) -> EntityState:
    return EntityState(job=job, node=node, status="NORMAL", since=T0)


def test_entities_by_job_is_the_flat_mapping_grouped() -> None:
    """Grouping keeps every (job, node) lookup, iteration and equality of the flat mapping, plus per-job access."""
    flat = {e.key: e for e in (_entity("a", ""), _entity("a", "n1"), _entity("b", ""), _entity("a", "n2"))}
    grouped = EntitiesByJob.group(flat)
    assert grouped == flat and len(grouped) == 4 and EntitiesByJob.group(grouped) is grouped
    assert grouped[("a", "n2")] is flat[("a", "n2")] and ("b", "") in grouped and ("c", "") not in grouped
    assert sorted(grouped.items()) == sorted(flat.items()) and set(grouped.values()) == set(flat.values())
    assert list(grouped.job("a")) == [("a", ""), ("a", "n1"), ("a", "n2")] and grouped.job("zz") == {}
    assert grouped.get(("c", "")) is None and set(grouped.groups) == {"a", "b"}
