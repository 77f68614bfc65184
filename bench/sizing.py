"""Sizing: rows per day and zone for every table, and disk per zone and month, from the demo day.

Runs the demo (`app.demo.run_demo`: a simulated weekday at the example site with a
surge, camera messages and 110 calls, through the zone-risk pipeline) into a fresh embedded
warehouse, merges every table (``OPTIMIZE … FINAL``, as background merges would), and reads
``system.parts``: rows, compressed bytes per row and bytes on disk (data, marks, indexes) per
table. A month is 30 such days, except for tables with a TTL, which keep only their last N
days, and state tables (the site, camera status), which keep one. Per zone means divided by
the site's zones. The last line is the headline.

The demo day takes as long as ``crowdwatch demo`` (about 40 s); the warehouse a demo left can
be measured instead, in seconds:

    .venv/bin/python bench/sizing.py [--data-dir .crowdwatch]
"""

from __future__ import annotations

import argparse
import io
import re
import tempfile
import time
from datetime import date
from pathlib import Path

import polars as pl
from rich.console import Console

from app.demo import run_demo
from crowdwatch.settings import DEFAULT_SITE_FILE, Settings
from crowdwatch.site import load_site
from crowdwatch.warehouse.client import Warehouse

DAYS_PER_MONTH = 30
MIB = 1024 * 1024
_TTL_DAYS = re.compile(r"\bTTL\b.*?(?:toIntervalDay\((\d+)\)|INTERVAL (\d+) DAY)", re.DOTALL)

PARTS_SQL = """
SELECT
    p.table AS table,
    sum(p.rows) AS rows,
    sum(p.data_compressed_bytes) AS compressed,
    sum(p.data_uncompressed_bytes) AS uncompressed,
    sum(p.bytes_on_disk) AS on_disk,
    any(t.create_table_query) AS ddl,
    any(t.partition_key) AS partition_key
FROM system.parts AS p
INNER JOIN system.tables AS t ON t.database = p.database AND t.name = p.table
WHERE p.database = {db:String} AND p.active AND p.table != 'schema_migrations'
GROUP BY p.table
ORDER BY on_disk DESC
"""


def table_sizes(warehouse: Warehouse) -> pl.DataFrame:
    """Rows, bytes and retention of every table with data, after merging it."""
    tables = warehouse.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree'",
        {"db": warehouse.database},
    )["name"].to_list()
    for table in tables:
        warehouse.command(f"OPTIMIZE TABLE `{table}` FINAL")
    sizes = warehouse.query(PARTS_SQL, {"db": warehouse.database})
    kept = []
    for ddl, partition_key in zip(sizes["ddl"], sizes["partition_key"], strict=True):
        if ttl := _TTL_DAYS.search(ddl):
            kept.append(min(DAYS_PER_MONTH, int(ttl[1] or ttl[2])))
        elif partition_key:
            kept.append(DAYS_PER_MONTH)
        else:
            # neither partitioned by time nor expiring: current state (the site, camera
            # status), replaced in place, so it does not grow with the days
            kept.append(1)
    return sizes.drop("ddl", "partition_key").with_columns(pl.Series("days_kept", kept))


def measure(settings: Settings) -> tuple[pl.DataFrame, int, int]:
    """Table sizes per day, gate passages per day and the days the warehouse holds."""
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        counts = warehouse.query(
            "SELECT toInt64(sum(entries) + sum(exits)) AS n, "
            "toInt64(uniqExact(toDate(ts, {tz:String}))) AS days "
            "FROM zone_metrics FINAL WHERE scope = 'zone'",
            {"tz": load_site(settings.site_file).site.timezone},
        )
        days = max(int(counts["days"][0]), 1)
        sizes = table_sizes(warehouse).with_columns(
            (pl.col(c) // days).alias(c) for c in ("rows", "compressed", "uncompressed", "on_disk")
        )
    return sizes, int(counts["n"][0] or 0) // days, days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="measure the demo warehouse left here")
    args = parser.parse_args()
    site = load_site(DEFAULT_SITE_FILE)
    zones = len(site.zones)
    day = date(2026, 11, 20)
    if args.data_dir is not None:
        settings = Settings(data_dir=args.data_dir, site_file=DEFAULT_SITE_FILE)
        sizes, events, days = measure(settings)
        source = f"the warehouse in {args.data_dir} ({days} day(s), figures per day)"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), site_file=DEFAULT_SITE_FILE)
            start = time.perf_counter()
            run_demo(settings, Console(file=io.StringIO(), width=120), day=day)
            elapsed = time.perf_counter() - start
            sizes, events, _ = measure(settings)
        source = f"the demo day {day} (the demo ran in {elapsed:.0f} s)"

    sizes = sizes.with_columns(
        (pl.col("rows") / zones).alias("rows_per_zone_day"),
        (pl.col("compressed") / pl.col("rows").clip(1)).alias("bytes_per_row"),
        (pl.col("on_disk") * pl.col("days_kept") / zones / MIB).alias("mib_per_zone_month"),
    )
    print(
        f"{source}: {site.site.name}, {zones} zones, {len(site.stations)} stations, "
        f"{len(site.cameras)} cameras; {events:,} gate passages a day"
    )
    print(
        f"{'table':<28}{'rows/day':>11}{'rows/zone/day':>15}{'B/row':>8}{'days':>6}{'MiB/zone/mo':>13}"
    )
    for row in sizes.iter_rows(named=True):
        print(
            f"{row['table']:<28}{row['rows']:>11,}{row['rows_per_zone_day']:>15,.0f}"
            f"{row['bytes_per_row']:>8.1f}{row['days_kept']:>6}{row['mib_per_zone_month']:>13.3f}"
        )
    per_day = sizes["on_disk"].sum()
    ratio = sizes["uncompressed"].sum() / max(sizes["compressed"].sum(), 1)
    print(
        f"on disk per day: {per_day / MIB:.2f} MiB for the site, {per_day / zones / 1024:.1f} "
        f"KiB per zone (after merges, with marks and indexes; compression {ratio:.1f}x); a "
        f"month keeps 30 days, tables with a TTL fewer, state tables one"
    )
    print(f"disk_per_site_month: {sizes['mib_per_zone_month'].sum() * zones:.1f} MiB")
    print(f"disk_per_zone_month: {sizes['mib_per_zone_month'].sum():.2f} MiB")


if __name__ == "__main__":
    main()
