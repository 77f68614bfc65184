"""Ticket-gate flows: entries, exits, inflow rate and occupancy per zone and station.

Input is micro-batches of gate records (one per passage, or counts per interval). Each batch is
parsed and validated at once with polars; bad rows go to ``rejected_events``. Good rows are
counted per zone and event-time window, then a per-station state adds them up and computes
occupancy with each zone's model (``dwell`` or ``balance``). Every window whose values change
is written to ``zone_metrics``; a late record rewrites its window (and the later windows whose
occupancy it moves) with a higher version, so late data corrects, and is never dropped silently.
Records later than ``late_horizon_s`` behind their station's newest go to ``rejected_events``.

Event time comes from the records only; the system clock only stamps versions and rejects, so
replaying history is exact.

Run: ``crowdwatch run gate_flow --input FILE`` or
``CROWDWATCH_INPUT_PATH=FILE python -m bytewax.run "pipelines.gate_flow:build()"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.outputs import Sink

from crowdwatch.batches import RawBatch
from crowdwatch.flow import now_ms, one_source_flow
from crowdwatch.gates.occupancy import StationWindows, gate_fed_zones
from crowdwatch.gates.records import GateDirectory, Parsed, parse_batch
from crowdwatch.settings import Settings
from crowdwatch.site import Site
from crowdwatch.warehouse.client import TableRows

StationUpdate = tuple[pl.DataFrame, pl.DataFrame]
"""Metric rows and too-late counts from one station update."""


StationFlows = tuple[str, pl.DataFrame]
"""A station id and that station's flows from one batch."""


def by_station(parsed: Parsed) -> Iterable[tuple[str, StationFlows]]:
    """Split a batch's flows into one frame per station, keyed by station (the state's key)."""
    if parsed.flows.height == 0:
        return []
    return [
        (str(key[0]), (str(key[0]), frame.drop("station_id")))
        for key, frame in parsed.flows.partition_by("station_id", as_dict=True).items()
    ]


def late_rejects(station_id: str, late: pl.DataFrame, horizon_s: int) -> pl.DataFrame:
    """Counts that came too late to correct their window, as ``rejected_events`` rows."""
    return late.select(
        pl.lit(now_ms()).cast(pl.Datetime("ms", "UTC")).alias("received_at"),
        pl.lit("gate_flow").alias("source"),
        pl.format(f"late {station_id} {{}} {{}}", "zone_id", "window").alias("position"),
        pl.lit(
            f"later than the late horizon of {horizon_s} s behind the station's newest record"
        ).alias("reason"),
        pl.struct(
            pl.lit(station_id).alias("station_id"),
            "zone_id",
            pl.col("window").cast(pl.Datetime("ms", "UTC")).dt.to_string().alias("window"),
            "entries",
            "exits",
        )
        .struct.json_encode()
        .alias("payload"),
    )


StationMapper = Callable[
    [StationWindows | None, StationFlows], tuple[StationWindows, StationUpdate]
]


def station_updater(site: Site, settings: Settings) -> StationMapper:
    """The stateful step: fold a station's flows into its windows, emit changed rows."""
    zones = gate_fed_zones(site)

    def update(
        state: StationWindows | None, item: StationFlows
    ) -> tuple[StationWindows, StationUpdate]:
        station_id, flows = item
        if state is None:
            state = StationWindows(
                station_id,
                zones[station_id],
                window_s=settings.window_s,
                horizon_s=settings.late_horizon_s,
                rate_minutes=settings.rate_window_minutes,
                timezone=site.site.timezone,
            )
        metrics, late = state.update(flows, time.time_ns())
        return state, (metrics, late_rejects(station_id, late, settings.late_horizon_s))

    return update


@operator
def gate_rows(
    step_id: str, up: Stream[RawBatch], site: Site, settings: Settings
) -> Stream[TableRows]:
    """Gate records → ``zone_metrics`` and ``rejected_events`` rows (the whole pipeline)."""
    directory = GateDirectory.from_site(
        site,
        settings.time_bounds(),
        max_gate_per_min=settings.max_gate_per_min,
        max_station_per_min=settings.max_station_per_min,
    )
    window_ms = settings.window_s * 1000
    parsed = op.map("parse", up, lambda b: parse_batch(b, directory, window_ms, now_ms()))
    # Parsed(flows, rejected)
    rejected = op.filter_map(
        "rejected", parsed, lambda p: ("rejected_events", p.rejected) if p.rejected.height else None
    )
    # ("rejected_events", frame)
    per_station = op.flat_map("by_station", parsed, by_station)
    # (station_id, (station_id, flows of that station))
    updates = op.stateful_map("station_windows", per_station, station_updater(site, settings))
    # (station_id, (metric rows, too-late counts))
    metrics = op.filter_map(
        "metric_rows", updates, lambda kv: ("zone_metrics", kv[1][0]) if kv[1][0].height else None
    )
    # ("zone_metrics", frame)
    late = op.filter_map(
        "late_rows", updates, lambda kv: ("rejected_events", kv[1][1]) if kv[1][1].height else None
    )
    # ("rejected_events", frame)
    return op.merge("rows", rejected, metrics, late)


def build(
    settings: Settings | None = None,
    *,
    source: Source[RawBatch] | None = None,
    sink: Sink[TableRows] | None = None,
) -> Dataflow:
    """Build the gate-flow dataflow.

    Args:
        settings: defaults to ``Settings()`` from the environment.
        source: `RawBatch` items; defaults to replaying ``settings.input_path``.
        sink: ``(table, frame)`` items; defaults to the warehouse of ``settings``.
    """
    return one_source_flow(
        "gate_flow", gate_rows, settings, source, sink, kinds=("passage", "count")
    )
