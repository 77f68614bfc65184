"""Shared fixtures: one embedded ClickHouse engine per test process, a database per test.

chDB allows one engine path per process, so every test shares one path and gets a fresh
database of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from crowdwatch.settings import REPO_ROOT, Settings
from crowdwatch.warehouse.client import Warehouse
from tests.demo_day import DemoWarehouse, demo_warehouse

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
HANGZHOU = SHARED_DATA / "hangzhou_metro" / "hangzhou_metro_10min_inout.csv"
HANGZHOU_SITE = REPO_ROOT / "infra" / "sites" / "hangzhou_metro.yaml"
EXAMPLE_SITE = REPO_ROOT / "infra" / "sites" / "example_interchange.yaml"

_databases = itertools.count()

# No timed assertions: Hypothesis's per-example deadline (200 ms) fails examples on a busy
# machine without saying anything about the code under test.
hypothesis_settings.register_profile("crowdwatch", deadline=None)
hypothesis_settings.load_profile("crowdwatch")


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crowdwatch")


@pytest.fixture
def settings(engine_dir: Path) -> Settings:
    """Settings on the example site with a fresh, empty database on the shared engine."""
    return Settings(
        data_dir=engine_dir,
        site_file=EXAMPLE_SITE,
        clickhouse_database=f"test_{next(_databases)}",
    )


@pytest.fixture
def warehouse(settings: Settings) -> Iterator[Warehouse]:
    """A migrated warehouse for ``settings``."""
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as wh:
        wh.migrate()
        yield wh


@pytest.fixture(scope="session")
def demo_day(engine_dir: Path) -> Iterator[DemoWarehouse]:
    """The demo's day replayed once per session into its own database: read it, never write.

    Gate passages with malformed records, camera messages with an offline and a stuck camera,
    and 110 calls with a cluster at the stadium forecourt, through zone_risk as the demo runs.
    """
    settings = Settings(data_dir=engine_dir, site_file=EXAMPLE_SITE, clickhouse_database="demo_day")
    with demo_warehouse(settings) as day:
        yield day


@pytest.fixture
def hangzhou() -> Path:
    if not HANGZHOU.exists():
        pytest.skip(f"real data missing: {HANGZHOU} (the shared data folder sits beside the repo)")
    return HANGZHOU
