"""Fixtures of the workflow tests: a clock, and a workflow on each store backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crowdwatch.store import Store
from crowdwatch.workflow.service import Workflow
from tests.crowdwatch.workflow.helpers import Clock, responding_site
from tests.stores import BACKENDS, store_url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def workflow(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Workflow]:
    with store_url(request.param, tmp_path) as url:
        store = Store(url, clock=clock)
        try:
            yield Workflow(store, responding_site(), public_url="http://duty.example/")
        finally:
            store.close()
