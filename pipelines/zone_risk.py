"""Zone risk: every source fused per zone, four-colour levels, and alerts to the people on duty.

One dataflow takes gate records, camera messages and 110 calls together (a `RawBatch` of any kind),
runs each through the same steps as its own pipeline (``gate_flow``, ``video_headcount``, ``calls``:
the same tables are written), and turns their newest per-zone results into readings: gate occupancy
and inflow, video headcount, call bursts. Per station a `RiskState` advances in event time, every
``risk_tick_s`` seconds: anomaly scores per zone (a seasonal robust baseline on the headcount,
EWMA/CUSUM on the inflow's seasonal residual; ``detectors.anomaly``), then
`crowdwatch.risk.engine.StationRisk` decides each zone's state and level. ``zone_state`` gets one
row per zone and tick, ``alerts`` the lifecycle events, and the `WorkflowSink` records each event in
the workflow store (who must acknowledge by when; `crowdwatch.workflow`) and writes it to the
durable alert outbox, from where it goes at once to the roles the site file routes it to
(`crowdwatch.risk.outbox`), with the zone's plan and each role's acknowledge link.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source as BytewaxSource
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from crowdwatch.batches import RawBatch
from crowdwatch.flow import default_source, now_ms, warehouse_output
from crowdwatch.risk.engine import StationRisk, ZoneState, alert_rows
from crowdwatch.risk.levels import RANK, Thresholds
from crowdwatch.risk.notify import AlertEvent
from crowdwatch.settings import Settings
from crowdwatch.site import Site, load_site
from crowdwatch.warehouse.client import TableRows
from crowdwatch.workflow.loop import WorkflowSink
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
        "stale_sources": pl.List(pl.String()),
        "version": pl.UInt64(),
    }
)


Source = Literal["gates", "video", "calls"]
"""Which signal a reading comes from: each has its own event-time clock per station."""


@dataclass(frozen=True)
class Reading:
    """The newest result of one source for one zone."""

    zone_id: str
    ts_ms: int
    values: dict[str, float | bool]
    source: Source = "gates"


def _valid_from(ts: pl.Expr, seconds: pl.Expr | int) -> pl.Expr:
    """When a window's values hold (epoch ms): at its end, in event time.

    Only the records say what time it is: a window still filling holds from its end too, and
    is decided again when its later records come (at the station's watermark).
    """
    return ts.dt.epoch("ms") + seconds * 1000


def gate_readings(rows: pl.DataFrame) -> list[Reading]:
    """Occupancy and inflow per zone and window from ``zone_metrics`` rows, in time order."""
    zones = rows.filter(pl.col("scope") == "zone").select(
        "zone_id",
        _valid_from(pl.col("ts"), pl.col("window_s")).alias("at"),
        "occupancy",
        "inflow_per_min",
    )
    return [
        Reading(z, at, {"gate_occupancy": float(o), "inflow_per_min": float(i)}, "gates")
        for z, at, o, i in zones.sort("at").iter_rows()
    ]


def video_readings(rows: pl.DataFrame) -> list[Reading]:
    """Headcount per zone and window from ``video_zone_metrics`` rows, in time order."""
    zones = rows.select(
        "zone_id", _valid_from(pl.col("ts"), pl.col("window_s")).alias("at"), "headcount"
    )
    return [
        Reading(z, at, {"video_headcount": float(h)}, "video")
        for z, at, h in zones.sort("at").iter_rows()
    ]


def burst_readings(rows: pl.DataFrame) -> list[Reading]:
    """Burst results per zone from ``call_bursts`` rows (at the end of their minute)."""
    zones = rows.filter(pl.col("level") == "zone").select(
        "key", _valid_from(pl.col("ts"), 60).alias("at"), "alert", "score"
    )
    return [
        Reading(z, at, {"burst_alert": bool(a), "burst_score": float(s)}, "calls")
        for z, at, a, s in zones.sort("at").iter_rows()
    ]


@dataclass
class SourceClock:
    """One source's clock at one station: its newest reading (event time), when it came (wall)."""

    event_ms: int
    heard_ms: int


@dataclass
class RiskState:
    """One station: its `StationRisk`, anomaly detectors per zone, and the event-time clock.

    The station's clock is a watermark over its sources (gates, video, calls): the newest
    event time every active source has passed — the slowest one's. Readings of faster sources
    are held until the watermark reaches them, so every tick sees every source up to it. A
    source stops holding the others back (it is *stale*) when it has been idle: live, no
    reading for ``idle_ms`` of wall-clock time; in a replay, its event time more than
    ``replay_idle_ms`` behind the station's newest (its input ended or has a gap). A reading
    behind the last decided tick (a stale source back, a window corrected) re-decides the ticks
    it belongs to, within ``redecide_ms`` (`_redecide`).
    """

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
    live: bool = False
    idle_ms: int = 60_000
    replay_idle_ms: int = 900_000
    clocks: dict[Source, SourceClock] = field(default_factory=dict)
    held: list[Reading] = field(default_factory=list)
    redecide_ms: int = 600_000
    checkpoints: list[tuple[int, Any]] = field(default_factory=list)
    applied: list[Reading] = field(default_factory=list)
    scores: dict[int, dict[str, tuple[float, bool, float]]] = field(default_factory=dict)

    def receive(
        self, readings: list[Reading], now_ms: int
    ) -> tuple[list[ZoneState], list[AlertEvent]]:
        """Take a batch of readings at wall-clock ``now_ms``; decide up to the new watermark."""
        for reading in readings:
            clock = self.clocks.get(reading.source)
            if clock is None:
                self.clocks[reading.source] = SourceClock(reading.ts_ms, now_ms)
            else:
                clock.event_ms = max(clock.event_ms, reading.ts_ms)
                clock.heard_ms = now_ms
        self.held += readings
        return self.release(now_ms)

    def stale(self, now_ms: int) -> list[Source]:
        """The sources that no longer hold the others back, by name."""
        if self.live:
            return sorted(s for s, c in self.clocks.items() if now_ms - c.heard_ms > self.idle_ms)
        newest = max((c.event_ms for c in self.clocks.values()), default=0)
        return sorted(
            s for s, c in self.clocks.items() if newest - c.event_ms > self.replay_idle_ms
        )

    def watermark(self, now_ms: int) -> int | None:
        """The slowest active source's event time (the newest of all when every one is idle)."""
        stale = self.stale(now_ms)
        active = [c.event_ms for s, c in self.clocks.items() if s not in stale]
        if active:
            return min(active)
        return max((c.event_ms for c in self.clocks.values()), default=None)

    def release(
        self, now_ms: int, *, everything: bool = False
    ) -> tuple[list[ZoneState], list[AlertEvent]]:
        """Decide on the held readings the watermark has passed (all of them at end of input)."""
        until = (
            max((c.event_ms for c in self.clocks.values()), default=None)
            if everything
            else self.watermark(now_ms)
        )
        if until is None or not self.held:
            return [], []
        due = [r for r in self.held if r.ts_ms <= until]
        self.held = [r for r in self.held if r.ts_ms > until]
        return self.advance(due)

    def next_idle_ms(self) -> int | None:
        """Live: when the next source holding back held readings turns idle (wall clock)."""
        if not self.live or not self.held:
            return None
        return min((c.heard_ms for c in self.clocks.values()), default=0) + self.idle_ms + 1

    def advance(self, readings: list[Reading]) -> tuple[list[ZoneState], list[AlertEvent]]:
        """Run every tick up to the readings' newest time, each seeing the readings up to it.

        Readings at or before the last tick are late: they re-decide the ticks they belong to
        (`_redecide`). Then decide once more at the newest reading's time, so that a level
        change is not held back until the next tick.
        """
        if not readings:
            return [], []
        ordered = sorted(readings, key=lambda r: r.ts_ms)
        last = self.last_tick_ms
        late = [] if last is None else [r for r in ordered if r.ts_ms <= last]
        states, events = self._redecide(late) if late else ([], [])
        fresh = ordered[len(late) :]
        if not fresh:
            return states, events
        self.applied += fresh
        if self.last_tick_ms is None:
            self.last_tick_ms = fresh[0].ts_ms // self.tick_ms * self.tick_ms - self.tick_ms
        newest = fresh[-1].ts_ms // self.tick_ms * self.tick_ms
        # a long gap is skipped, not ticked through (at most max_ticks per advance)
        self.last_tick_ms = max(self.last_tick_ms, newest - self.max_ticks * self.tick_ms)
        pending = iter(fresh)
        reading = next(pending, None)
        for tick in range(self.last_tick_ms + self.tick_ms, newest + 1, self.tick_ms):
            while reading is not None and reading.ts_ms <= tick:
                self.risk.observe(reading.zone_id, reading.ts_ms, **reading.values)
                reading = next(pending, None)
            self._score_anomalies(tick)
            self.scores[tick] = {
                zone_id: (r.anomaly_score, r.anomaly_alert, r.surge_score)
                for zone_id, r in self.risk.readings.items()
            }
            tick_states, tick_events = self.risk.tick(tick)
            states += tick_states
            events += tick_events
            self.last_tick_ms = tick
            self._checkpoint(tick)
        while reading is not None:  # readings since the last tick
            self.risk.observe(reading.zone_id, reading.ts_ms, **reading.values)
            reading = next(pending, None)
        # decide at once on what came after the last tick: an escalation does not wait for the
        # next tick (its zone state row does)
        if fresh[-1].ts_ms > self.last_tick_ms:
            events += self.risk.tick(fresh[-1].ts_ms)[1]
        return states, events

    def _checkpoint(self, tick: int) -> None:
        """Keep the zones' decisions every half re-decide window, and what came since.

        The oldest kept checkpoint is the newest one at least ``redecide_ms`` behind ``tick``,
        so a late reading that recent always has a checkpoint before it.
        """
        if self.checkpoints and tick - self.checkpoints[-1][0] < self.redecide_ms // 2:
            return
        risk = self.risk
        self.checkpoints.append(
            (tick, copy.deepcopy((risk.readings, risk.levels, risk.open_alerts)))
        )
        behind = [i for i, (at, _) in enumerate(self.checkpoints) if at <= tick - self.redecide_ms]
        if behind:
            del self.checkpoints[: behind[-1]]
        oldest = self.checkpoints[0][0]
        self.applied = [r for r in self.applied if r.ts_ms > oldest]
        self.scores = {at: s for at, s in self.scores.items() if at > oldest}

    def _redecide(self, late: list[Reading]) -> tuple[list[ZoneState], list[AlertEvent]]:
        """Apply late readings to the ticks they belong to and decide those ticks again.

        From the last checkpoint before the earliest late reading, the ticks up to the last
        one are run again on a copy with every reading in time order (anomaly scores as they
        were computed). Their zone states replace the earlier ones; the zones keep the
        corrected readings. What people were told stands: a zone whose re-decided ticks
        reached a higher level than it has now is raised (`StationRisk.raise_late`), and every
        zone is decided again at the last tick. A late reading older than every checkpoint
        (more than ``redecide_ms`` behind) is applied at the last tick only.
        """
        last = self.last_tick_ms
        assert last is not None
        first = late[0].ts_ms
        base = next((cp for cp in reversed(self.checkpoints) if cp[0] < first), None)
        if base is None:
            for old in late:
                self.risk.observe(old.zone_id, old.ts_ms, **old.values)
            return [], self.risk.tick(last)[1]
        self.applied = sorted(self.applied + late, key=lambda r: r.ts_ms)
        base_tick, saved = base
        scratch = copy.copy(self.risk)
        scratch.readings, scratch.levels, scratch.open_alerts = copy.deepcopy(saved)
        from_tick = -(-first // self.tick_ms) * self.tick_ms
        states: list[ZoneState] = []
        raised: dict[str, AlertEvent] = {}
        pending = iter([r for r in self.applied if r.ts_ms > base_tick])
        reading: Reading | None = next(pending, None)
        for tick in range(base_tick + self.tick_ms, last + 1, self.tick_ms):
            while reading is not None and reading.ts_ms <= tick:
                scratch.observe(reading.zone_id, reading.ts_ms, **reading.values)
                reading = next(pending, None)
            for zone_id, (score, alert, surge) in self.scores.get(tick, {}).items():
                zone = scratch.readings[zone_id]
                zone.anomaly_score, zone.anomaly_alert, zone.surge_score = score, alert, surge
            tick_states, tick_events = scratch.tick(tick)
            if tick < from_tick:
                continue
            states += tick_states
            for event in (e for e in tick_events if e.event in ("opened", "escalated")):
                top = raised.get(event.zone_id)
                now = self.risk.levels[event.zone_id].level
                if RANK[event.level] > RANK[top.level if top else now]:
                    raised[event.zone_id] = event
        while reading is not None:
            scratch.observe(reading.zone_id, reading.ts_ms, **reading.values)
            reading = next(pending, None)
        self.risk.readings = scratch.readings
        self.checkpoints = [cp for cp in self.checkpoints if cp[0] < from_tick]
        events = [
            self.risk.raise_late(event, last)
            for event in sorted(raised.values(), key=lambda e: e.ts_ms)
        ]
        return states, events + self.risk.tick(last)[1]

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


def zone_state_rows(
    states: list[ZoneState], version: int, stale: list[Source] | None = None
) -> pl.DataFrame:
    """``zone_state`` rows; ``stale``: the station's sources that no longer hold it back."""
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
                    "stale_sources": stale or [],
                    "version": version,
                }
                for s in states
            ],
            schema_overrides={"ts": pl.Int64, "stale_sources": pl.List(pl.String())},
            infer_schema_length=None,
        )
        .with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
        .cast(ZONE_STATE_SCHEMA)
    )


def clock_minute(item: TableRows) -> int | None:
    """The newest window start (epoch minute) in gate or camera rows; None for other tables."""
    table, rows = item
    if table not in ("zone_metrics", "video_zone_metrics") or rows.height == 0:
        return None
    newest = rows["ts"].max()
    assert isinstance(newest, datetime)
    return int(newest.timestamp()) // 60


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


class StationLogic(StatefulBatchLogic[StationReadings, Decided, RiskState]):
    """Feeds a station's readings to its `RiskState` and decides as its watermark moves.

    Live, it wakes when a source holding back readings turns idle on the wall clock; at the
    end of the input (a replay) every held reading is decided. Bytewax builds the logic
    without its key, so the state is created from the first readings' station.
    """

    def __init__(self, make: Callable[[str], RiskState], state: RiskState | None) -> None:
        self.make = make
        self.state = state

    def _decided(self, states: list[ZoneState], events: list[AlertEvent]) -> list[Decided]:
        if not states and not events:
            return []
        assert self.state is not None
        stale = self.state.stale(now_ms())
        return [(zone_state_rows(states, time.time_ns(), stale), events)]

    def on_batch(self, values: list[StationReadings]) -> tuple[Iterable[Decided], bool]:
        """Take the readings; decide what the watermark passed."""
        out: list[Decided] = []
        for station_id, readings in values:
            self.state = self.state or self.make(station_id)
            out += self._decided(*self.state.receive(readings, now_ms()))
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Decided], bool]:
        """A source went idle: decide what the others hold."""
        if self.state is None:
            return [], StatefulBatchLogic.RETAIN
        return self._decided(*self.state.release(now_ms())), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Decided], bool]:
        """The input ended: every source has, so everything held is decided."""
        if self.state is None:
            return [], StatefulBatchLogic.RETAIN
        return (
            self._decided(*self.state.release(now_ms(), everything=True)),
            StatefulBatchLogic.RETAIN,
        )

    def notify_at(self) -> datetime | None:
        """Live: when the next source could turn idle."""
        at = None if self.state is None else self.state.next_idle_ms()
        return None if at is None else datetime.fromtimestamp(at / 1000, UTC)

    def snapshot(self) -> RiskState:
        """A copy of the state (the live one keeps changing)."""
        assert self.state is not None
        return copy.deepcopy(self.state)


def build(
    settings: Settings | None = None,
    *,
    source: BytewaxSource[RawBatch] | None = None,
    sink: Sink[TableRows] | None = None,
    alert_sink: Sink[AlertEvent] | None = None,
) -> Dataflow:
    """Build the zone risk dataflow.

    Args:
        settings: defaults to ``Settings()`` from the environment.
        source: `RawBatch` items of any kind; defaults to replaying ``settings.input_path``.
        sink: ``(table, frame)`` items; defaults to the warehouse of ``settings``.
        alert_sink: alert events; defaults to the workflow and its durable outbox, delivered
            to the site's contacts as ``config.notify_mode`` says.
    """
    config = settings or Settings()
    site = load_site(config.site_file)
    thresholds = Thresholds()
    tick_ms = config.risk_tick_s * 1000

    def station(station_id: str) -> RiskState:
        return RiskState(
            StationRisk(station_id, site, thresholds=thresholds),
            tick_ms,
            config,
            days_off=site.site.days_off(),
            event_days=site.site.event_ordinals(),
            live=config.live,
            idle_ms=config.source_idle_s * 1000,
            replay_idle_ms=config.replay_idle_s * 1000,
            redecide_ms=config.risk_redecide_s * 1000,
        )

    flow = Dataflow("zone_risk")
    raw = op.input("records", flow, source or default_source(config, site.site.timezone))
    # RawBatch of any kind
    gates_or_not = op.branch("is_gate", raw, lambda b: b.kind in GATE_KINDS)
    calls_or_video = op.branch("is_call", gates_or_not.falses, lambda b: b.kind in CALL_KINDS)
    gate_and_video = op.merge(
        "gate_and_video_rows",
        gate_flow.gate_rows("gates", gates_or_not.trues, site, config),
        video_headcount.video_rows("video", calls_or_video.falses, site, config),
    )
    # (table, frame)
    clock = op.filter_map("clock", gate_and_video, clock_minute)
    # epoch minute: the newest window the gates or cameras began, which moves the call windows
    rows = op.merge(
        "source_rows",
        gate_and_video,
        call_rows("calls", calls_or_video.trues, site, config, clock),
    )
    # (table, frame): what the three pipelines write
    readings = op.flat_map("readings", rows, lambda item: readings_by_station(site, item))
    # (station_id, (station_id, [Reading]))
    decided = op.stateful_batch(
        "station_risk", readings, lambda resume: StationLogic(station, resume)
    )
    # (station_id, (zone_state rows, alert events))
    states = op.filter_map(
        "zone_state", decided, lambda kv: ("zone_state", kv[1][0]) if kv[1][0].height else None
    )
    # ("zone_state", frame)
    events = op.flat_map("alert_events", decided, lambda kv: kv[1][1])
    # AlertEvent
    alerts = op.map("alert_rows", events, lambda event: ("alerts", alert_rows([event])))
    # ("alerts", frame)
    warehouse_output(op.merge("rows", rows, states, alerts), sink, config)
    op.output("notify", events, alert_sink or WorkflowSink(config, site))
    return flow
