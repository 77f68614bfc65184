"""Benchmark: every dashboard query over a month of data, as Grafana would run it.

Replays the demo's day (gates, cameras, 110 calls through zone_risk) into a fresh embedded
warehouse, then grows it to a month by copying the day forward inside ClickHouse (offsets of
1, 2, 4, 8 and 16 days: 32 days; ids made unique per copy). Every panel, variable and
annotation query of every dashboard then runs with the plugin's macros expanded for the last
30 days, ``--repeat`` times; the median of each is printed, slowest first.

    .venv/bin/python bench/panel_latency.py [--repeat 3] [--data-dir DIR]

The last line is the slowest panel's median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from app.demo import replay_demo_day, simulate_demo_day, time_slices
from crowdwatch.settings import DEFAULT_SITE_FILE, Settings
from crowdwatch.site import load_site
from crowdwatch.warehouse.client import Warehouse
from dashboards.build import built_dashboards
from dashboards.macros import expand

DAY = date(2026, 11, 20)
VARIABLES = {"station": "STD", "zone": "STD-concourse"}
OFFSETS_DAYS = (1, 2, 4, 8, 16)

# How to move one copy of a table forward by {d} days: its time columns, and ids that must stay
# unique per copy. Tables not named keep one copy (site tables, state kept once per camera).
SHIFTS = {
    "zone_metrics": "ts + toIntervalDay({d}) AS ts",
    "video_zone_metrics": "ts + toIntervalDay({d}) AS ts",
    "video_roi_windows": "ts + toIntervalDay({d}) AS ts",
    "video_frames": "ts + toIntervalDay({d}) AS ts",
    "camera_health": "ts + toIntervalDay({d}) AS ts",
    "camera_status_log": "since + toIntervalDay({d}) AS since",
    "zone_state": "ts + toIntervalDay({d}) AS ts",
    "alerts": "ts + toIntervalDay({d}) AS ts, concat(alert_id, '+{d}d') AS alert_id",
    "calls": (
        "received_at + toIntervalDay({d}) AS received_at, "
        "updated_at + toIntervalDay({d}) AS updated_at, concat(call_id, '+{d}d') AS call_id"
    ),
    "call_counts": "ts + toIntervalDay({d}) AS ts",
    "call_bursts": "ts + toIntervalDay({d}) AS ts",
}


def grow_to_a_month(warehouse: Warehouse) -> None:
    """Copy every time-series table forward until it holds 32 days."""
    for days in OFFSETS_DAYS:
        for table, shift in SHIFTS.items():
            warehouse.command(
                f"INSERT INTO {table} SELECT * REPLACE ({shift.format(d=days)}) FROM {table}"
            )
        warehouse.command("OPTIMIZE TABLE zone_hourly FINAL")


def queries() -> list[tuple[str, str]]:
    """Every query of every dashboard: (``dashboard / panel / refId``, SQL)."""
    out = []
    for uid, board in built_dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets") or []:
                out.append((f"{uid} / {panel['title']} / {target['refId']}", target["rawSql"]))
        for variable in board.get("templating", {}).get("list", []):
            out.append((f"{uid} / variable {variable['name']}", variable["query"]))
        for annotation in board.get("annotations", {}).get("list", []):
            target = annotation.get("target") or {}
            if "rawSql" in target:
                out.append((f"{uid} / annotation {annotation['name']}", target["rawSql"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query")
    parser.add_argument("--data-dir", type=Path, help="keep the warehouse here (default: temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crowdwatch-panels-") as scratch:
        data_dir = args.data_dir or Path(scratch)
        settings = Settings(data_dir=data_dir, site_file=DEFAULT_SITE_FILE)
        site = load_site(settings.site_file)
        began = time.perf_counter()
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
            demo = simulate_demo_day(site, DAY, data_dir / "demo")
            replay_demo_day(settings, site, time_slices(demo.signals, site.site.timezone))
            grow_to_a_month(warehouse)
            sizes = warehouse.query(
                "SELECT count() AS zone_state, min(ts) AS first, max(ts) AS last FROM zone_state"
            ).row(0, named=True)
            print(
                f"a month of data in {time.perf_counter() - began:.0f} s: "
                f"{sizes['zone_state']:,} zone states from {sizes['first']:%Y-%m-%d} "
                f"to {sizes['last']:%Y-%m-%d}"
            )
            end = sizes["last"].replace(tzinfo=UTC) + timedelta(minutes=1)
            # pipeline health reads insertion (wall-clock) time: its range ends now
            now = datetime.now(UTC)
            timings = []
            for name, sql in queries():
                stop = now if name.startswith("crowdwatch-pipeline") else end
                expanded = expand(
                    sql, start=stop - timedelta(days=30), end=stop, variables=VARIABLES
                )
                runs = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    rows = warehouse.query(expanded).height
                    runs.append((time.perf_counter() - start) * 1000)
                timings.append((statistics.median(runs), max(runs), rows, name))
    timings.sort(reverse=True)
    print(
        f"{len(timings)} queries over 30 days, median / max of {args.repeat} runs, slowest first:"
    )
    for median, worst, rows, name in timings:
        print(f"  {median:7.1f} / {worst:7.1f} ms  {rows:>7,} rows  {name}")
    print(f"slowest_panel_median: {timings[0][0]:.0f} ms")


if __name__ == "__main__":
    main()
