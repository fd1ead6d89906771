"""The four per-node counters of the status API, in a compact read-only mapping.

The stalled-counter rule needs, per node, each counter's value and when it last
changed; at 10,000 jobs x 10 nodes that is 200,000 small mappings, so their shape
matters (see ``Counters``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

COUNTER_NAMES = ("totalGetBytes", "totalGetRecords", "totalPutBytes", "totalPutRecords")
"""The per-node counters of the status API, by their API names (used in rules: ``stalled``)."""

V = TypeVar("V")
_ABSENT: Any = None


class Counters(Mapping[str, V], Generic[V]):
    """A read-only mapping over the four COUNTER_NAMES, stored in four slots.

    Why not a dict: every node carries two of these (values and change times) and a
    poll of 10,000 jobs x 10 nodes holds 200,000 of them, twice while diffing; a dict
    of four costs ~4 times as much. It behaves as a Mapping keyed by the API names
    (``[]``, ``get``, ``in``, ``items``, equality with any mapping, Jinja's
    ``counters.totalPutRecords``). A slot holding None means the counter is absent.
    Other names are refused: the parser never produces them; ``compact_counters``
    keeps such a mapping as a plain dict instead (hand-built entities, old state files).
    """

    __slots__ = ("_get_bytes", "_get_records", "_put_bytes", "_put_records")

    _get_bytes: V | None
    _get_records: V | None
    _put_bytes: V | None
    _put_records: V | None

    def __init__(self, values: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        slots: list[V | None] = [None, None, None, None]
        for name, value in (values.items() if isinstance(values, Mapping) else values):
            index = _COUNTER_INDEX.get(name)
            if index is None:
                raise ValueError(f"unknown counter {name!r}; counters are {', '.join(COUNTER_NAMES)}")
            slots[index] = value
        self._fill(*slots)

    @classmethod
    def of(cls, get_bytes: V | None, get_records: V | None, put_bytes: V | None,
           put_records: V | None) -> Counters[V]:
        """Build from values in COUNTER_NAMES order (None = absent), without a name lookup: the hot path."""
        new: Counters[V] = cls.__new__(cls)
        new._fill(get_bytes, get_records, put_bytes, put_records)
        return new

    def _fill(self, a: V | None, b: V | None, c: V | None, d: V | None) -> None:
        setter = object.__setattr__
        setter(self, "_get_bytes", a)
        setter(self, "_get_records", b)
        setter(self, "_put_bytes", c)
        setter(self, "_put_records", d)

    def slots(self) -> tuple[V | None, V | None, V | None, V | None]:
        """The four values in COUNTER_NAMES order, None where absent."""
        return (self._get_bytes, self._get_records, self._put_bytes, self._put_records)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Counters is immutable, cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Counters is immutable, cannot delete {name!r}")

    def __getitem__(self, name: str) -> V:
        index = _COUNTER_INDEX.get(name)
        value = _ABSENT if index is None else self.slots()[index]
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        index = _COUNTER_INDEX.get(name)
        value = _ABSENT if index is None else self.slots()[index]
        return default if value is None else value

    def __contains__(self, name: object) -> bool:
        index = _COUNTER_INDEX.get(name) if isinstance(name, str) else None
        return index is not None and self.slots()[index] is not None

    def __iter__(self) -> Iterator[str]:
        return (name for name, value in zip(COUNTER_NAMES, self.slots(), strict=True) if value is not None)

    def __len__(self) -> int:
        return 4 - self.slots().count(None)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Counters):
            return self.slots() == other.slots()
        return Mapping.__eq__(self, other)

    def __hash__(self) -> int:
        return hash(self.slots())

    def __repr__(self) -> str:
        return f"Counters({dict(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self).of, self.slots())


_COUNTER_INDEX: dict[str, int] = {name: i for i, name in enumerate(COUNTER_NAMES)}

NO_COUNTERS: Counters[Any] = Counters()
"""The shared empty Counters: jobs (node "") have none."""


def compact_counters(values: Mapping[str, V]) -> Mapping[str, V]:
    """``values`` as Counters when it only has API counter names (the norm), else as a plain dict copy."""
    if isinstance(values, Counters):
        return values
    if not values:
        return NO_COUNTERS
    if all(name in _COUNTER_INDEX for name in values):
        return Counters(values)
    return dict(values)
