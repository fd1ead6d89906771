"""The state store as a fixture: opened in tmp_path, always closed, even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.state import StateStore


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    """Where ``store`` keeps its file: in a directory of its own, which opening creates (mode 0700)."""
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(state_path: Path) -> Iterator[StateStore]:
    """A fresh StateStore at ``state_path``; closing it again inside the test is harmless."""
    with StateStore.open(state_path) as s:
        yield s
