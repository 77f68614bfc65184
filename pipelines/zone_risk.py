"""Zone risk: every source fused per zone, four-colour levels, and alerts to the people on duty.

One dataflow takes gate records, camera messages and 110 calls together (a `RawBatch` of any kind),
runs each through the same steps as its own pipeline (``gate_flow``, ``video_headcount``, ``calls``:
the same tables are written), and turns their newest per-zone results into readings: gate occupancy
and inflow, video headcount, call bursts. Per station a `RiskState` advances in event time, every
``risk_tick_s`` seconds: anomaly scores per zone (a seasonal robust baseline on the headcount,
EWMA/CUSUM on the inflow's seasonal residual; ``detectors.anomaly``), then
`crowdwatch.risk.engine.StationRisk` decides each zone's state and level. ``zone_state`` gets one
row per zone and tick, ``alerts`` the lifecycle events, and the `OutboxSink` writes each event to
the durable alert outbox, from where it goes at once to the roles the site file routes it to
(`crowdwatch.risk.outbox`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from crowdwatch.batches import RawBatch
from crowdwatch.flow import default_sink, default_source, now_ms
from crowdwatch.risk.engine import StationRisk, ZoneState, alert_rows
from crowdwatch.risk.levels import Thresholds
from crowdwatch.risk.notify import AlertEvent
from crowdwatch.risk.outbox import OutboxSink
from crowdwatch.settings import Settings
from crowdwatch.site import Site, load_site
from crowdwatch.warehouse.client import TableRows
from detectors.anomaly import (
    AlertEpisodes,
    Observation,
    SeasonalCusum,
    SeasonalRobustBaseline,
    zone_detector,
)
from pipelines import gate_flow, video_headcount
from pipelines.calls import call_rows

GATE_KINDS = ("passage", "count")
CALL_KINDS = ("call",)

ZONE_STATE_SCHEMA = pl.Schema(
    {
        "zone_id": pl.String(),
        "station_id": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "headcount": pl.Float32(),
        "source": pl.String(),
        "density": pl.Float32(),
        "capacity_share": pl.Float32(),
        "level_of_service": pl.String(),
        "inflow_per_min": pl.Float32(),
        "inflow_trend_per_min2": pl.Float32(),
        "anomaly_score": pl.Float32(),
        "surge_score": pl.Float32(),
        "burst_score": pl.Float32(),
        "level": pl.String(),
        "version": pl.UInt64(),
    }
)


@dataclass(frozen=True)
class Reading:
    """The newest result of one source for one zone."""

    zone_id: str
    ts_ms: int
    values: dict[str, float | bool]


def _valid_from(ts: pl.Expr, seconds: pl.Expr | int) -> pl.Expr:
    """When a window's values hold (epoch ms): at its end, or now for a window still open.

    A replay of history sees closed windows, each at its end. Live, the newest window is still
    filling; its values hold from now, so a crossing is decided as soon as it is seen.
    """
    return pl.min_horizontal(ts.dt.epoch("ms") + seconds * 1000, pl.lit(now_ms()))


def gate_readings(rows: pl.DataFrame) -> list[Reading]:
    """Occupancy and inflow per zone and window from ``zone_metrics`` rows, in time order."""
    zones = rows.filter(pl.col("scope") == "zone").select(
        "zone_id",
        _valid_from(pl.col("ts"), pl.col("window_s")).alias("at"),
        "occupancy",
        "inflow_per_min",
    )
    return [
        Reading(z, at, {"gate_occupancy": float(o), "inflow_per_min": float(i)})
        for z, at, o, i in zones.sort("at").iter_rows()
    ]


def video_readings(rows: pl.DataFrame) -> list[Reading]:
    """Headcount per zone and window from ``video_zone_metrics`` rows, in time order."""
    zones = rows.select(
        "zone_id", _valid_from(pl.col("ts"), pl.col("window_s")).alias("at"), "headcount"
    )
    return [
        Reading(z, at, {"video_headcount": float(h)}) for z, at, h in zones.sort("at").iter_rows()
    ]


def burst_readings(rows: pl.DataFrame) -> list[Reading]:
    """Burst results per zone from ``call_bursts`` rows (at the end of their minute)."""
    zones = rows.filter(pl.col("level") == "zone").select(
        "key", _valid_from(pl.col("ts"), 60).alias("at"), "alert", "score"
    )
    return [
        Reading(z, at, {"burst_alert": bool(a), "burst_score": float(s)})
        for z, at, a, s in zones.sort("at").iter_rows()
    ]


@dataclass
class RiskState:
    """One station: its `StationRisk`, anomaly detectors per zone, and the event-time clock."""

    risk: StationRisk
    tick_ms: int
    settings: Settings = field(default_factory=Settings)
    days_off: frozenset[int] = frozenset()
    event_days: frozenset[int] = frozenset()
    seasonal: dict[str, SeasonalRobustBaseline] = field(default_factory=dict)
    surge: dict[str, SeasonalCusum] = field(default_factory=dict)
    episodes: dict[str, AlertEpisodes] = field(default_factory=dict)
    last_tick_ms: int | None = None
    max_ticks: int = 8640

    def advance(self, readings: list[Reading]) -> tuple[list[ZoneState], list[AlertEvent]]:
        """Run every tick up to the readings' newest time, each seeing the readings up to it.

        Then decide once more at the newest reading's time, so that a level change is not held
        back until the next tick.
        """
        states: list[ZoneState] = []
        events: list[AlertEvent] = []
        if not readings:
            return states, events
        ordered = sorted(readings, key=lambda r: r.ts_ms)
        newest = ordered[-1].ts_ms // self.tick_ms * self.tick_ms
        if self.last_tick_ms is None:
            self.last_tick_ms = ordered[0].ts_ms // self.tick_ms * self.tick_ms - self.tick_ms
        # a long gap is skipped, not ticked through (at most max_ticks per advance)
        self.last_tick_ms = max(self.last_tick_ms, newest - self.max_ticks * self.tick_ms)
        pending = iter(ordered)
        reading = next(pending, None)
        for tick in range(self.last_tick_ms + self.tick_ms, newest + 1, self.tick_ms):
            while reading is not None and reading.ts_ms <= tick:
                self.risk.observe(reading.zone_id, reading.ts_ms, **reading.values)
                reading = next(pending, None)
            self._score_anomalies(tick)
            tick_states, tick_events = self.risk.tick(tick)
            states += tick_states
            events += tick_events
            self.last_tick_ms = tick
        while reading is not None:  # readings since the last tick
            self.risk.observe(reading.zone_id, reading.ts_ms, **reading.values)
            reading = next(pending, None)
        # decide at once on what came after the last tick: an escalation does not wait for the
        # next tick (its zone state row does)
        if ordered[-1].ts_ms > (self.last_tick_ms or 0):
            events += self.risk.tick(ordered[-1].ts_ms)[1]
        return states, events

    def _score_anomalies(self, ts_ms: int) -> None:
        """Score, then learn, each zone's headcount and inflow at this tick.

        ``anomaly_score`` is the seasonal deviation of the headcount in units of
        ``anomaly_strong_z`` (negative for drops, which are shown but raise nothing); a rise
        of 1 or more against a mature baseline (the zone's own past weeks, not the young one of
        its first weeks) opens or extends an episode (`AlertEpisodes`), and while the episode
        lasts the zone is one step up: one alert per episode, not one per flicker. The
        EWMA/CUSUM surge score runs on the inflow's seasonal residual, so a daily ramp does
        not fire; it is kept beside the level for analysts.
        """
        config = self.settings
        for zone_id, readings in self.risk.readings.items():
            headcount, _ = self.risk.headcount_of(zone_id)
            if headcount is not None:
                seasonal = self.seasonal.get(zone_id)
                if seasonal is None:
                    seasonal = self.seasonal[zone_id] = zone_detector(
                        config,
                        self.risk.timezone,
                        days_off=self.days_off,
                        skip_days=self.event_days,
                    )
                x = Observation(ts_ms, headcount)
                deviation, mature = seasonal.assess(x)
                readings.anomaly_score = deviation / config.anomaly_strong_z
                seasonal.learn_one(x)
                strong = mature and readings.anomaly_score >= 1.0
            else:
                strong = False
            episodes = self.episodes.setdefault(
                zone_id, AlertEpisodes(config.anomaly_refractory_s * 1000)
            )
            episodes.update(ts_ms, strong)
            readings.anomaly_alert = episodes.active
            if readings.inflow_per_min is not None:
                surge = self.surge.get(zone_id)
                if surge is None:
                    surge = self.surge[zone_id] = SeasonalCusum(
                        zone_detector(
                            config,
                            self.risk.timezone,
                            days_off=self.days_off,
                            skip_days=self.event_days,
                        )
                    )
                x = Observation(ts_ms, readings.inflow_per_min)
                readings.surge_score = surge.score_one(x)
                surge.learn_one(x)


def zone_state_rows(states: list[ZoneState], version: int) -> pl.DataFrame:
    """``zone_state`` rows."""
    if not states:
        return pl.DataFrame(schema=ZONE_STATE_SCHEMA)
    return (
        pl.DataFrame(
            [
                {
                    "zone_id": s.zone_id,
                    "station_id": s.station_id,
                    "ts": s.ts_ms,
                    "headcount": s.headcount,
                    "source": s.source,
                    "density": s.density,
                    "capacity_share": s.capacity_share,
                    "level_of_service": s.level_of_service,
                    "inflow_per_min": s.inflow_per_min,
                    "inflow_trend_per_min2": s.inflow_trend_per_min2,
                    "anomaly_score": s.anomaly_score,
                    "surge_score": s.surge_score,
                    "burst_score": s.burst_score,
                    "level": s.level,
                    "version": version,
                }
                for s in states
            ],
            schema_overrides={"ts": pl.Int64},
            infer_schema_length=None,
        )
        .with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
        .cast(ZONE_STATE_SCHEMA)
    )


StationReadings = tuple[str, list[Reading]]
"""A station id and readings of its zones."""


def readings_by_station(site: Site, item: TableRows) -> list[tuple[str, StationReadings]]:
    """The readings in one table's rows, grouped by the station of their zone."""
    table, rows = item
    if table == "zone_metrics":
        readings = gate_readings(rows)
    elif table == "video_zone_metrics":
        readings = video_readings(rows)
    elif table == "call_bursts":
        readings = [r for r in burst_readings(rows) if r.zone_id in site.zone_by_id]
    else:
        return []
    grouped: dict[str, list[Reading]] = {}
    for reading in readings:
        grouped.setdefault(site.zone_by_id[reading.zone_id].station, []).append(reading)
    return [(station, (station, readings)) for station, readings in grouped.items()]


Decided = tuple[pl.DataFrame, list[AlertEvent]]
"""Zone state rows and the alert events of one advance."""


def build(
    settings: Settings | None = None,
    *,
    source: Source[RawBatch] | None = None,
    sink: Sink[TableRows] | None = None,
    alert_sink: Sink[AlertEvent] | None = None,
) -> Dataflow:
    """Build the zone risk dataflow.

    Args:
        settings: defaults to ``Settings()`` from the environment.
        source: `RawBatch` items of any kind; defaults to replaying ``settings.input_path``.
        sink: ``(table, frame)`` items; defaults to the warehouse of ``settings``.
        alert_sink: alert events; defaults to the durable outbox, delivered to the site's
            contacts as ``config.notify_mode`` says.
    """
    config = settings or Settings()
    site = load_site(config.site_file)
    thresholds = Thresholds()
    tick_ms = config.risk_tick_s * 1000

    def decide(
        state: RiskState | None, item: tuple[str, list[Reading]]
    ) -> tuple[RiskState, Decided]:
        station_id, readings = item
        state = state or RiskState(
            StationRisk(station_id, site, thresholds=thresholds),
            tick_ms,
            config,
            days_off=site.site.days_off(),
            event_days=site.site.event_ordinals(),
        )
        states, events = state.advance(readings)
        return state, (zone_state_rows(states, time.time_ns()), events)

    flow = Dataflow("zone_risk")
    raw = op.input("records", flow, source or default_source(config, site.site.timezone))
    # RawBatch of any kind
    gates_or_not = op.branch("is_gate", raw, lambda b: b.kind in GATE_KINDS)
    calls_or_video = op.branch("is_call", gates_or_not.falses, lambda b: b.kind in CALL_KINDS)
    rows = op.merge(
        "source_rows",
        gate_flow.gate_rows("gates", gates_or_not.trues, site, config),
        video_headcount.video_rows("video", calls_or_video.falses, site, config),
        call_rows("calls", calls_or_video.trues, site, config),
    )
    # (table, frame): what the three pipelines write
    readings = op.flat_map("readings", rows, lambda item: readings_by_station(site, item))
    # (station_id, (station_id, [Reading]))
    decided = op.stateful_map("station_risk", readings, decide)
    # (station_id, (zone_state rows, alert events))
    states = op.filter_map(
        "zone_state", decided, lambda kv: ("zone_state", kv[1][0]) if kv[1][0].height else None
    )
    # ("zone_state", frame)
    events = op.flat_map("alert_events", decided, lambda kv: kv[1][1])
    # AlertEvent
    alerts = op.map("alert_rows", events, lambda event: ("alerts", alert_rows([event])))
    # ("alerts", frame)
    op.output("warehouse", op.merge("rows", rows, states, alerts), sink or default_sink(config))
    op.output("notify", events, alert_sink or OutboxSink(config, site))
    return flow
