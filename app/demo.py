"""``crowdwatch demo``: a simulated day with a surge, through the zone risk pipeline, explained.

The demo migrates the warehouse and simulates three signals of one weekday at the site: gate
passages with a large event ending at one station (and a few malformed records, to show the
dead-letter path), camera messages that follow the crowds (one camera offline for a while, one
stuck), and 110 calls (an everyday background and a cluster of crowd calls near the event).
It writes each signal to a file, replays all three through ``zone_risk`` in event-time order
and prints what happened from the warehouse: per-zone peaks and when occupancy crossed 80 % and
100 % of capacity, the alert timeline, the response loop of the day's red alert with simulated
duty staff (`app.response_demo`: acknowledgements, a missed deadline, the escalation, sign-off
and the response KPIs), the call bursts and the cameras' faults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from rich.console import Console

from app import registry
from app.demo_forecast import HISTORY_WEEKS, early_warning, print_early_warning
from app.report.page import write_report
from app.report.queries import build_report
from app.response_demo import run_response_loop
from app.runner import prepare_warehouse, print_frame, run_flow
from app.simulate import (
    CallCluster,
    CameraFault,
    Surge,
    camera_payloads,
    default_call_cluster,
    default_camera_faults,
    default_surge,
    simulate_calls,
    simulate_cameras,
    simulate_day,
    write_records,
)
from crowdwatch.batches import RawBatch, RecordKind
from crowdwatch.settings import Settings
from crowdwatch.site import Site, load_site
from crowdwatch.sources.files import (
    KIND_ORDER,
    MERGE_SLICE_S,
    event_span,
    event_times,
    merge_runs,
)
from crowdwatch.warehouse.client import (
    TableRows,
    Warehouse,
    WarehouseError,
    by_table,
    describe_dsn,
)

MALFORMED_SHARE = 0.001
SLICE_S = MERGE_SLICE_S
"""Event time per replayed slice: every signal's records of one slice go in before the next.

Within a slice the gate records go first; the video horizon is raised to two slices for the
replay, so no camera window of a slice is cut off.
"""

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
SELECT alert_id, ts, zone_id, station_id, kind, event, level, previous_level, reason, values
FROM alerts FINAL
WHERE ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}
ORDER BY ts, zone_id
"""


BURSTS_SQL = """
SELECT
    key,
    level,
    min(ts) AS first,
    max(ts) AS last,
    max(observed_15m) AS calls_15m,
    min(expected_15m) AS expected_15m,
    round(max(score), 1) AS score
FROM call_bursts FINAL
WHERE alert = 1 AND level IN ('zone', 'station')
    AND ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}
GROUP BY key, level
ORDER BY first, level DESC, key
"""

CAMERA_FAULTS_SQL = """
SELECT camera_id, status, since, until
FROM
(
    SELECT
        camera_id,
        status,
        since,
        leadInFrame(toNullable(since)) OVER (
            PARTITION BY camera_id ORDER BY since
            ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
        ) AS until
    FROM camera_status_log FINAL
)
WHERE status != 'online' AND since >= {start:DateTime64(3)} AND since < {end:DateTime64(3)}
ORDER BY since, camera_id
"""


@dataclass(frozen=True)
class Signal:
    """One simulated signal: its file, its kind, its records as the file holds them, their times.

    ``times`` is each record's event time as text (ISO 8601), null or garbage where broken.
    """

    path: Path
    kind: RecordKind
    frame: pl.DataFrame
    times: pl.Series


def time_slices(signals: Sequence[Signal], timezone: str, slice_s: int = SLICE_S) -> list[RawBatch]:
    """The signals' records as batches in event-time order: slice by slice, every signal.

    The same order as ``crowdwatch replay`` of the three files (`merge_runs`). Each batch keeps
    its rows' positions in their file, so a second run stores a rejected row once, and its
    file's event-time span: a replay, so any day replays, a day after today too.
    """
    times = [event_times(s.kind, s.frame, timezone) for s in signals]
    spans = [event_span(s.kind, s.frame, timezone) for s in signals]
    ranks = [KIND_ORDER[s.kind] * len(signals) + i for i, s in enumerate(signals)]
    return [
        RawBatch(
            f"file:{signals[i].path.name}",
            signals[i].kind,
            signals[i].frame.slice(first, n),
            first,
            span_ms=spans[i],
        )
        for i, first, n in merge_runs(times, ranks, batch_rows=1_000_000, slice_s=slice_s)
    ]


class _BatchPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, batches: list[RawBatch], resume: int | None) -> None:
        self.batches = batches
        self.next = resume or 0

    def next_batch(self) -> list[RawBatch]:
        if self.next >= len(self.batches):
            raise StopIteration
        self.next += 1
        return [self.batches[self.next - 1]]

    def snapshot(self) -> int:
        return self.next


class BatchSource(FixedPartitionedSource[RawBatch, int]):
    """Prepared batches, in order, as one partition (resumes at the next batch)."""

    def __init__(self, batches: list[RawBatch]) -> None:
        self.batches = batches

    def list_parts(self) -> list[str]:
        """One partition."""
        return ["batches"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _BatchPartition:
        """The batches from the one after the last emitted."""
        return _BatchPartition(self.batches, resume_state)


class _BufferedPartition(StatelessSinkPartition[TableRows]):
    def __init__(self, dsn: str, database: str, flush_rows: int) -> None:
        self.warehouse = Warehouse.connect(dsn, database)
        self.flush_rows = flush_rows
        self.items: list[TableRows] = []
        self.rows = 0

    def write_batch(self, items: list[TableRows]) -> None:
        self.items.extend(items)
        self.rows += sum(frame.height for _, frame in items)
        if self.rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        for table, frame in by_table(self.items).items():
            self.warehouse.insert(table, frame)
        self.items.clear()
        self.rows = 0

    def close(self) -> None:
        self.flush()
        self.warehouse.close()


class BufferedWarehouseSink(DynamicSink[TableRows]):
    """The warehouse sink for a replay of history: rows gathered into large inserts.

    A replay of a day in thousands of small batches would otherwise make thousands of small
    inserts, each costing the engine a new part. Rows are written when ``flush_rows`` have
    gathered and when the dataflow ends; the tables keep the newest version of every row, so
    the order of inserts does not matter.
    """

    def __init__(self, dsn: str, database: str, flush_rows: int = 500_000) -> None:
        self.dsn = dsn
        self.database = database
        self.flush_rows = flush_rows

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _BufferedPartition:
        """One connection per worker."""
        return _BufferedPartition(self.dsn, self.database, self.flush_rows)


DELIVERIES_SQL = """
SELECT alert_id, event, event_ts AS ts, role, status
FROM alert_deliveries FINAL
WHERE event_ts >= {start:DateTime64(3)} AND event_ts < {end:DateTime64(3)} AND attempt = 0
ORDER BY role
"""
"""What the replay decided for each role of each alert event of a day.

The replay is in log mode, so its decisions are the rows decided without sending (attempt 0:
logged, no contact). The response loop's deliveries of the same alert events, attempts 1 and
on, are its own section's, and on a second run of the demo would read as the replay's."""

OUTCOMES = {
    "delivered": "reached",
    "no_contact": "no contact",
    "logged": "not sent (CROWDWATCH_NOTIFY=log)",
    "stale": "not sent (too old)",
    "retry": "still trying",
    "failed": "refused",
    "expired": "given up",
}
"""How each delivery status reads in the timeline."""


def who_was_told(deliveries: pl.DataFrame) -> dict[tuple[str, str, datetime], str]:
    """Per alert event (alert id, event, time): which roles were reached, and why not the rest.

    ``deliveries`` are rows of `DELIVERIES_SQL`; roles are grouped by outcome, reached first.
    """
    told: dict[tuple[str, str, datetime], dict[str, dict[str, None]]] = {}
    for row in deliveries.iter_rows(named=True):
        outcomes = told.setdefault((row["alert_id"], row["event"], row["ts"]), {})
        # a role with several contacts or channels is one name in the line
        outcomes.setdefault(row["status"], {})[row["role"].replace("_", " ")] = None
    return {
        key: "; ".join(
            f"{OUTCOMES.get(status, status)}: {', '.join(roles)}"
            for status, roles in sorted(outcomes.items(), key=lambda o: o[0] != "delivered")
        )
        for key, outcomes in told.items()
    }


def print_timeline(
    alerts: pl.DataFrame, deliveries: pl.DataFrame, site: Site, console: Console
) -> None:
    """The alert events in time order, with who was reached (from ``alert_deliveries``).

    An event that routes to nobody (blue calls no one by default) shows no arrow.
    """
    console.rule("big-crowd warnings (alerts)")
    if alerts.height == 0:
        console.print("no warnings")
        return
    colours = {"blue": "blue", "yellow": "yellow", "orange": "dark_orange", "red": "red"}
    told = who_was_told(deliveries)
    for row in alerts.iter_rows(named=True):
        level = row["level"]
        outcome = told.get((row["alert_id"], row["event"], row["ts"]))
        console.print(
            f"{row['ts'].astimezone(site.tz):%H:%M:%S}  {row['zone_id']:<15} "
            f"{row['event']:<12} [{colours[level]}]{level.upper():<6}[/]  {row['reason']}"
            + (f"  → {outcome}" if outcome else ""),
            highlight=False,
        )


def print_bursts(bursts: pl.DataFrame, site: Site, console: Console) -> None:
    """The call bursts per zone and station: when, how many calls, how surprising."""
    console.rule("110 call bursts")
    if bursts.height == 0:
        console.print("no bursts")
    for row in bursts.iter_rows(named=True):
        console.print(
            f"{row['first'].astimezone(site.tz):%H:%M}-{row['last'].astimezone(site.tz):%H:%M}  "
            f"{row['level']} {row['key']}: up to {row['calls_15m']} crowd calls in 15 min "
            f"(background {row['expected_15m']:.2f}), score {row['score']:.1f}",
            highlight=False,
        )


def print_camera_faults(faults: pl.DataFrame, site: Site, console: Console) -> None:
    """Cameras that were offline or stuck, and for how long."""
    console.rule("camera faults")
    if faults.height == 0:
        console.print("every camera online and working all day")
    for row in faults.iter_rows(named=True):
        since = row["since"].astimezone(site.tz)
        until = row["until"].astimezone(site.tz) if row["until"] is not None else None
        console.print(
            f"{row['camera_id']} {row['status']} from {since:%H:%M:%S}"
            + (
                f" to {until:%H:%M:%S} ({(until - since).total_seconds() / 60:.0f} min)"
                if until
                else " (still)"
            ),
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


@dataclass(frozen=True)
class DemoDay:
    """The demo's simulated day: what each signal holds, and the signals as written to files.

    ``signals`` are the gate passages (with the malformed records, sorted by time), the camera
    messages and the 110 calls, in that order.
    """

    day: date
    surge: Surge
    passages: pl.DataFrame
    malformed: pl.DataFrame
    faults: tuple[CameraFault, ...]
    messages: pl.DataFrame
    cluster: CallCluster
    calls: pl.DataFrame
    signals: tuple[Signal, Signal, Signal]


def simulate_demo_day(site: Site, day: date, folder: Path) -> DemoDay:
    """Simulate the demo's three signals of ``day`` and write each to a file in ``folder``.

    Seeded: the same site and day give the same records. ``folder`` is created if missing.
    """
    surge = default_surge()
    passages = simulate_day(site, day, seed=0, surge=surge)
    bad = malformed(passages, MALFORMED_SHARE, seed=1)
    feed = pl.concat([passages, bad]).sort("ts", nulls_last=True)
    folder.mkdir(parents=True, exist_ok=True)
    gates_path = folder / f"gate_passages_{day.isoformat()}.csv"
    write_records(feed, gates_path)
    faults = default_camera_faults()
    messages = simulate_cameras(site, day, passages, seed=2, faults=faults)
    camera_path = folder / f"camera_messages_{day.isoformat()}.jsonl"
    write_records(messages, camera_path)
    cluster = default_call_cluster()
    calls = simulate_calls(site, day, seed=3, cluster=cluster)
    calls_path = folder / f"calls_{day.isoformat()}.csv"
    write_records(calls, calls_path)
    signals = (
        Signal(gates_path, "passage", feed, feed["ts"]),
        Signal(camera_path, "video", camera_payloads(messages), messages["ts"]),
        Signal(calls_path, "call", calls, calls["received_at"]),
    )
    return DemoDay(day, surge, passages, bad, faults, messages, cluster, calls, signals)


def replay_settings(settings: Settings) -> Settings:
    """``settings`` for the replay of a simulated day: in log mode, with a longer video horizon.

    A simulated day pages nobody, whatever ``CROWDWATCH_NOTIFY`` says: its alerts are logged,
    never sent to the site file's contacts. The video horizon is raised to two slices.
    """
    return settings.model_copy(
        update={"video_horizon_s": max(settings.video_horizon_s, 2 * SLICE_S), "notify": "log"}
    )


def replay_demo_day(settings: Settings, site: Site, batches: list[RawBatch]) -> None:
    """Run ``batches`` (from `time_slices`) through zone_risk into the settings' warehouse.

    The warehouse must be migrated; the site is synced into it first. The run has the
    `replay_settings`, and rows go through the `BufferedWarehouseSink`.
    """
    prepare_warehouse(settings, site)
    build = registry.get("zone_risk")
    replay = replay_settings(settings)
    sink = BufferedWarehouseSink(settings.dsn(), settings.clickhouse_database)
    run_flow(build(replay, source=BatchSource(batches), sink=sink), settings.workers)


OWNED_SQL = r"""
SELECT
    (SELECT count() FROM demo_days)
    + (SELECT count() FROM rejected_events
       WHERE match(source, '^file:gate_passages_\d{4}-\d{2}-\d{2}\.csv$')) AS demo_marks,
    (SELECT count() FROM zone_metrics) + (SELECT count() FROM alerts) AS rows
"""
"""Whether a demo wrote into the database, and how much data it holds.

A demo's marks are its days in ``demo_days`` and, from a demo run before that table, the
malformed records its gate file (``gate_passages_<day>.csv``) leaves in ``rejected_events``."""


def claim_for_demo(warehouse: Warehouse, settings: Settings, site: Site, day: date) -> None:
    """Mark ``day`` as the demo's in ``demo_days``; refuse a database that holds real data.

    The demo writes its simulated day (alerts, a red one among them, and six weeks of history
    that forecasts train on) into the settings' database. One that already holds zone metrics
    or alerts but no mark of a demo (`OWNED_SQL`) is a deployment's or a replay's: it is
    refused, before anything is written.

    Raises:
        WarehouseError: The database holds data that no demo wrote.
    """
    owned = warehouse.query(OWNED_SQL).row(0, named=True)
    if owned["rows"] and not owned["demo_marks"]:
        raise WarehouseError(
            f"database {settings.clickhouse_database!r} ({describe_dsn(settings.dsn())}) holds "
            f"zone metrics or alerts that no demo wrote (rows: {owned['rows']:,}); the demo "
            "would mix a simulated day, alerts included, into them. Run it on a database of "
            "its own: CROWDWATCH_CLICKHOUSE_DATABASE=crowdwatch_demo crowdwatch demo"
        )
    warehouse.insert(
        "demo_days",
        pl.DataFrame(
            {"day": [day], "site": [site.site.name], "written_at": [datetime.now(UTC)]},
            schema={"day": pl.Date, "site": pl.String, "written_at": pl.Datetime("ms", "UTC")},
        ),
    )


def run_demo(settings: Settings, console: Console, *, day: date, lang: str = "zh-CN") -> None:
    """Run the whole demo and print its story; the response loop in ``lang`` (zh-CN, en)."""
    site = load_site(settings.site_file)
    console.rule("[bold]crowdwatch demo")
    console.print(
        f"site: {site.site.name} — {len(site.stations)} stations, {len(site.zones)} zones, "
        f"{len(site.gates)} gates ({settings.site_file})"
    )
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        applied = warehouse.migrate()
        claim_for_demo(warehouse, settings, site, day)
    console.print(
        f"warehouse: {describe_dsn(settings.dsn())} — "
        f"{'applied ' + ', '.join(m.name for m in applied) if applied else 'schema up to date'}"
    )

    folder = settings.data_dir / "demo"
    demo = simulate_demo_day(site, day, folder)
    gates, cameras, calls = demo.signals
    console.print(
        f"simulated {day:%A %Y-%m-%d}: {demo.passages.height:,} gate passages, a large event "
        f"ending at {demo.surge.station_id} at {demo.surge.start:%H:%M} "
        f"(+{demo.surge.extra_entries:,} people over {demo.surge.minutes} min), and "
        f"{demo.malformed.height} injected malformed records → {gates.path}"
    )
    console.print(
        f"simulated {demo.messages.height:,} camera messages from {len(site.cameras)} cameras ("
        + ", ".join(f"{f.camera_id} {f.kind} {f.start:%H:%M}+{f.minutes} min" for f in demo.faults)
        + f") → {cameras.path}"
    )
    cluster = demo.cluster
    console.print(
        f"simulated {demo.calls.height} 110 calls, {cluster.calls} of them crowd calls from "
        f"{cluster.zone_id} from {cluster.start:%H:%M} over {cluster.minutes} min → {calls.path}"
    )
    batches = time_slices(demo.signals, site.site.timezone)
    console.print(
        f"replaying the three files through zone_risk in event-time order ({len(batches):,} "
        f"batches of up to {SLICE_S} s) …"
    )
    replay_demo_day(settings, site, batches)

    start, end = site.day_bounds(day)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        console.print(
            f"simulating {HISTORY_WEEKS} weeks of history before {day} and forecasting the "
            "day from it (trained up to its midnight), warning every 15 min …"
        )
        early = early_warning(settings, warehouse, site, day, demo.surge)
        peaks = zone_peaks(warehouse, start, end)
        rejected = warehouse.query(REJECTED_SQL, {"source": f"file:{gates.path.name}"})
        alerts = warehouse.query(ALERTS_SQL, {"start": start, "end": end})
        deliveries = warehouse.query(DELIVERIES_SQL, {"start": start, "end": end})
        bursts = warehouse.query(BURSTS_SQL, {"start": start, "end": end})
        camera_faults = warehouse.query(CAMERA_FAULTS_SQL, {"start": start, "end": end})
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
    print_timeline(alerts, deliveries, site, console)
    print_early_warning(early, peaks, site, console)
    # the duty staff handle the day's crowd itself, not the forecast's warning of it
    observed = alerts.filter(pl.col("kind") != "predicted_big_crowd")
    run_response_loop(settings, site, observed, console, lang=lang)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        report = build_report(
            warehouse,
            now=datetime.now(UTC),
            tz=site.tz,
            title=f"crowdwatch report — {site.site.name}",
        )
    report_path = write_report(report, settings.data_dir / "report.html")
    print_bursts(bursts, site, console)
    print_camera_faults(camera_faults, site, console)
    print_frame(rejected, console, title="Rejected records (rejected_events)")
    console.rule("where the data lives")
    database = settings.clickhouse_database
    # the commands name a database that is not the default, as the demo was told it
    prefix = (
        ""
        if database == Settings.model_fields["clickhouse_database"].default
        else f"CROWDWATCH_CLICKHOUSE_DATABASE={database} "
    )
    console.print(
        f"warehouse: {describe_dsn(settings.dsn())}, database {database}\n"
        "query it:\n"
        f'  {prefix}.venv/bin/crowdwatch query "SELECT zone_id, max(occupancy) FROM zone_metrics '
        'FINAL GROUP BY zone_id"\n'
        f'  {prefix}.venv/bin/crowdwatch query "SELECT reason, count() FROM rejected_events '
        'GROUP BY reason"\n'
        "dashboards: infra/grafana/dashboards (set the time range to the demo day)\n"
        f"the day's story as a page of the dashboards' key panels: {report_path.as_uri()}\n"
        f"  ({prefix}.venv/bin/crowdwatch report draws it again, for any zone and range)"
    )
