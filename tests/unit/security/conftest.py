"""Shared fixtures: a throw-away sqlite store and a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    import time

    return ManualClock(start=time.time())  # real "now": TLS stacks check validity against it


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", clock=clock)
    yield s
    s.close()
