"""The demo's day in a warehouse: what `make demo` simulates and replays, run the demo's way.

Shared by the dashboard, alerting and report tests through the session fixture ``demo_day``
(tests/conftest.py): the day takes a while to replay and the tests only read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from app.demo import DemoDay, replay_demo_day, simulate_demo_day, time_slices
from crowdwatch.settings import Settings
from crowdwatch.site import Site, load_site
from crowdwatch.warehouse.client import Warehouse

DAY = date(2026, 11, 20)
ZONE = "STD-concourse"
"""The zone the demo's surge turns red: the stadium's paid concourse."""


@dataclass(frozen=True)
class DemoWarehouse:
    """The demo day replayed into a warehouse, and the moments to look at it.

    ``red_at`` is the first red alert at `ZONE` (event time); ``written_from`` and
    ``written_to`` bracket the replay on the wall clock, a minute either side.
    """

    warehouse: Warehouse
    site: Site
    demo: DemoDay
    red_at: datetime
    written_from: datetime
    written_to: datetime


@contextmanager
def demo_warehouse(settings: Settings) -> Iterator[DemoWarehouse]:
    """Migrate the settings' database, simulate the demo day into ``data_dir/demo`` and replay it.

    Calls the demo's own functions (`simulate_demo_day`, `time_slices`, `replay_demo_day`),
    so what the tests read is what ``crowdwatch demo`` writes.
    """
    site = load_site(settings.site_file)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        demo = simulate_demo_day(site, DAY, settings.data_dir / "demo")
        written_from = datetime.now(UTC) - timedelta(minutes=1)
        replay_demo_day(settings, site, time_slices(demo.signals, site.site.timezone))
        written_to = datetime.now(UTC) + timedelta(minutes=1)
        red = warehouse.query(
            "SELECT min(ts) AS ts FROM alerts FINAL WHERE level = 'red' AND zone_id = {z:String}",
            {"z": ZONE},
        )["ts"][0]
        assert red is not None, f"the demo day has no red alert at {ZONE}"
        yield DemoWarehouse(
            warehouse, site, demo, red.replace(tzinfo=UTC), written_from, written_to
        )
