"""``crowdwatch demo``: a simulated day with a surge, through the gate pipeline, explained.

The demo migrates the warehouse, simulates a weekday of gate passages at the site with a large
event ending at one station, mixes in a few malformed records (to show the dead-letter path),
replays it all through ``gate_flow`` and prints what happened from the warehouse: per-zone
peaks and when occupancy crossed 80 % and 100 % of capacity.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
from rich.console import Console

from crowdwatch.runner import print_frame, replay_files
from crowdwatch.settings import Settings
from crowdwatch.simulate import default_surge, simulate_day, write_records
from crowdwatch.site import Site, load_site
from crowdwatch.warehouse import Warehouse, describe_dsn

MALFORMED_SHARE = 0.001

PEAKS_SQL = """
SELECT
    zone_id,
    any(capacity) AS capacity,
    max(occupancy) AS peak,
    argMax(ts, occupancy) AS peak_at,
    round(100 * max(capacity_use), 1) AS peak_pct,
    if(countIf(capacity_use >= 0.8) > 0, minIf(ts, capacity_use >= 0.8), NULL) AS first_80,
    countIf(capacity_use >= 0.8) * any(window_s) / 60 AS minutes_80,
    if(countIf(capacity_use >= 1.0) > 0, minIf(ts, capacity_use >= 1.0), NULL) AS first_100,
    countIf(capacity_use >= 1.0) * any(window_s) / 60 AS minutes_100,
    sum(entries) AS entries,
    sum(exits) AS exits
FROM zone_metrics FINAL
WHERE scope = 'zone' AND ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}
GROUP BY zone_id
ORDER BY peak_pct DESC
"""

REJECTED_SQL = """
SELECT reason, count() AS records
FROM rejected_events FINAL
WHERE source = {source:String}
GROUP BY reason
ORDER BY records DESC, reason
"""


ALERTS_SQL = """
SELECT ts, zone_id, station_id, event, level, previous_level, reason
FROM alerts FINAL
WHERE ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}
ORDER BY ts, zone_id
"""


def print_timeline(alerts: pl.DataFrame, site: Site, console: Console) -> None:
    """The alert events in time order, with who is called."""
    console.rule("big-crowd warnings (alerts)")
    if alerts.height == 0:
        console.print("no warnings")
        return
    colours = {"blue": "blue", "yellow": "yellow", "orange": "dark_orange", "red": "red"}
    for row in alerts.iter_rows(named=True):
        level = row["level"]
        shown = max(
            level, row["previous_level"] or level, key=["blue", "yellow", "orange", "red"].index
        )
        called = ", ".join(r.replace("_", " ") for r, _ in site.routes(row["station_id"], shown))
        console.print(
            f"{row['ts'].astimezone(site.tz):%H:%M:%S}  {row['zone_id']:<15} "
            f"{row['event']:<12} [{colours[level]}]{level.upper():<6}[/]  {row['reason']}"
            + (f"  → {called}" if called else ""),
            highlight=False,
        )


def malformed(records: pl.DataFrame, share: float, seed: int) -> pl.DataFrame:
    """Copies of some records, broken the ways real feeds break.

    Impossible times, unknown gates, impossible directions and missing times, in turn.
    """
    sample = records.sample(max(4, int(records.height * share)), seed=seed).with_row_index("_i")
    kind = pl.col("_i") % 4
    return sample.with_columns(
        pl.when(kind == 0)
        .then(pl.lit("2026-13-45T25:61:00"))
        .when(kind == 3)
        .then(pl.lit(None, pl.String))
        .otherwise("ts")
        .alias("ts"),
        pl.when(kind == 1).then(pl.lit("GATE-404")).otherwise("gate_id").alias("gate_id"),
        pl.when(kind == 2).then(pl.lit("sideways")).otherwise("direction").alias("direction"),
    ).drop("_i")


def local_day_bounds(site: Site, day: date) -> tuple[datetime, datetime]:
    """The UTC start and end of a local day at the site."""
    start = datetime(day.year, day.month, day.day, tzinfo=site.tz).astimezone(UTC)
    return start, start + timedelta(days=1)


def zone_peaks(warehouse: Warehouse, start: datetime, end: datetime) -> pl.DataFrame:
    """Per zone: peak occupancy and when it first crossed 80 % and 100 % of capacity."""
    return warehouse.query(PEAKS_SQL, {"start": start, "end": end})


def peaks_table(peaks: pl.DataFrame, tz: ZoneInfo) -> pl.DataFrame:
    """The peaks as short text columns that fit a terminal, times local to the site."""

    def hhmm(column: str) -> pl.Expr:
        return pl.col(column).dt.convert_time_zone(str(tz)).dt.strftime("%H:%M")

    def crossing(share: int) -> pl.Expr:
        first, minutes = f"first_{share}", f"minutes_{share}"
        return (
            pl.when(pl.col(first).is_null())
            .then(pl.lit("-"))
            .otherwise(pl.format("{} ({} min)", hhmm(first), pl.col(minutes).cast(pl.Int64)))
            .alias(f">={share} % from")
        )

    return peaks.select(
        pl.col("zone_id").alias("zone"),
        pl.col("capacity"),
        pl.format("{} ({} %) {}", "peak", "peak_pct", hhmm("peak_at")).alias("peak"),
        crossing(80),
        crossing(100),
        pl.format("{}/{}", "entries", "exits").alias("in/out"),
    )


def run_demo(settings: Settings, console: Console, *, day: date) -> None:
    """Run the whole demo and print its story."""
    site = load_site(settings.site_file)
    console.rule("[bold]crowdwatch demo")
    console.print(
        f"site: {site.site.name} — {len(site.stations)} stations, {len(site.zones)} zones, "
        f"{len(site.gates)} gates ({settings.site_file})"
    )
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        applied = warehouse.migrate()
    console.print(
        f"warehouse: {describe_dsn(settings.dsn())} — "
        f"{'applied ' + ', '.join(m.name for m in applied) if applied else 'schema up to date'}"
    )

    surge = default_surge()
    records = simulate_day(site, day, seed=0, surge=surge)
    bad = malformed(records, MALFORMED_SHARE, seed=1)
    feed = pl.concat([records, bad]).sort("ts", nulls_last=True)
    path = settings.data_dir / "demo" / f"gate_passages_{day.isoformat()}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_records(feed, path)
    console.print(
        f"simulated {day:%A %Y-%m-%d}: {records.height:,} gate passages, a large event ending "
        f"at {surge.station_id} at {surge.start:%H:%M} (+{surge.extra_entries:,} people over "
        f"{surge.minutes} min), and {bad.height} injected malformed records → {path}"
    )
    replay_files(settings, "zone_risk", [path], speed=None, console=console)

    start, end = local_day_bounds(site, day)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        peaks = zone_peaks(warehouse, start, end)
        rejected = warehouse.query(REJECTED_SQL, {"source": f"file:{path.name}"})
        alerts = warehouse.query(ALERTS_SQL, {"start": start, "end": end})
    print_frame(
        peaks_table(peaks, site.tz),
        console,
        title=f"Zones on {day} (local times, {site.site.timezone})",
    )
    for row in peaks.filter(pl.col("first_100").is_not_null()).iter_rows(named=True):
        console.print(
            f"[red]{row['zone_id']}[/red] went over capacity ({row['capacity']:,}) at "
            f"{row['first_100'].astimezone(site.tz):%H:%M}, peaked at {row['peak']:,} "
            f"({row['peak_pct']} %) at {row['peak_at'].astimezone(site.tz):%H:%M}, "
            f"{row['minutes_100']:.0f} min at or above 100 %."
        )
    print_timeline(alerts, site, console)
    print_frame(rejected, console, title="Rejected records (rejected_events)")
    console.rule("where the data lives")
    console.print(
        f"warehouse: {describe_dsn(settings.dsn())}, database {settings.clickhouse_database}\n"
        "query it:\n"
        '  .venv/bin/crowdwatch query "SELECT zone_id, max(occupancy) FROM zone_metrics FINAL '
        'GROUP BY zone_id"\n'
        '  .venv/bin/crowdwatch query "SELECT reason, count() FROM rejected_events GROUP BY '
        'reason"'
    )
