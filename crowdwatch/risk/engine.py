"""Zone risk: fuse a zone's latest readings into its state, level and alert lifecycle.

`StationRisk` keeps, per zone of one station, the latest gate occupancy, video headcount,
inflow and 110 burst result, and at every tick (event time) decides each zone's fused
headcount, density, share of capacity, level of service, inflow trend and warning level
(`crowdwatch.risk.levels`). Level changes become alert events with a stable id per episode — one
open alert per zone: ``opened`` when a zone leaves "no warning", ``escalated`` /
``de-escalated`` while it is open, ``resolved`` when it returns to no warning — each with the
reason (which threshold, which values).

Fused headcount, by the zone's ``headcount_from`` rule: ``video`` (cameras see the zone, e.g. a
platform), ``gates`` (occupancy from the gate model, e.g. an enclosed venue), ``max`` (both,
the larger: the safe side). ``auto`` is gates when gates count the zone, else video when a
camera watches it.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field, replace

import polars as pl

from crowdwatch.risk.levels import (
    RANK,
    LevelState,
    Thresholds,
    ZoneInputs,
    level_of_service,
    step,
    target_level,
)
from crowdwatch.risk.notify import AlertEvent, EventType
from crowdwatch.site import Level, Site, Zone


@dataclass
class ZoneReadings:
    """The latest of every source for one zone (plain, picklable)."""

    gate_occupancy: float | None = None
    video_headcount: float | None = None
    inflow_per_min: float | None = None
    burst_alert: bool = False
    burst_score: float = 0.0
    anomaly_score: float = 0.0
    anomaly_alert: bool = False
    surge_score: float = 0.0
    inflow_history: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=64))


@dataclass(frozen=True)
class ZoneState:
    """One zone at one tick."""

    zone_id: str
    station_id: str
    ts_ms: int
    headcount: float | None
    source: str
    density: float | None
    capacity_share: float | None
    level_of_service: str | None
    inflow_per_min: float | None
    inflow_trend_per_min2: float | None
    anomaly_score: float
    surge_score: float
    burst_score: float
    level: Level | None


def headcount_rule(zone: Zone, site: Site) -> str:
    """The zone's headcount source: its ``headcount_from``, with ``auto`` resolved.

    ``auto``: gates when gates count the zone (their occupancy model covers all of it, like a
    venue's balance), else video when a camera watches it (a platform), else gates.
    """
    if zone.headcount_from != "auto":
        return zone.headcount_from
    gated = zone.id in site.gate_fed_zones
    watched = any(roi.zone == zone.id for camera in site.cameras for roi in camera.rois)
    return "video" if watched and not gated else "gates"


class StationRisk:
    """The zones of one station: readings, levels and open alerts."""

    def __init__(
        self,
        station_id: str,
        site: Site,
        *,
        thresholds: Thresholds | None = None,
        trend_window_s: int = 300,
    ) -> None:
        self.station_id = station_id
        self.timezone = site.site.timezone
        self.zones = {z.id: z for z in site.zones_of(station_id)}
        self.rules = {z.id: headcount_rule(z, site) for z in self.zones.values()}
        self.thresholds = thresholds or Thresholds()
        self.trend_window_ms = trend_window_s * 1000
        self.readings = {zone_id: ZoneReadings() for zone_id in self.zones}
        self.levels = {zone_id: LevelState() for zone_id in self.zones}
        self.open_alerts: dict[str, str] = {}

    def observe(self, zone_id: str, ts_ms: int, **values: float | bool | None) -> None:
        """Record the newest readings of a zone.

        Names: ``gate_occupancy``, ``video_headcount``, ``inflow_per_min``, ``burst_alert``,
        ``burst_score``, ``anomaly_score``.
        """
        readings = self.readings[zone_id]
        for name, value in values.items():
            setattr(readings, name, value)
        inflow = values.get("inflow_per_min")
        if isinstance(inflow, int | float):
            readings.inflow_history.append((ts_ms, float(inflow)))

    def headcount_of(self, zone_id: str) -> tuple[float | None, str]:
        """The zone's fused headcount and where it came from."""
        readings, rule = self.readings[zone_id], self.rules[zone_id]
        if rule == "video":
            return readings.video_headcount, "video"
        if rule == "gates":
            return readings.gate_occupancy, "gates"
        seen = [v for v in (readings.video_headcount, readings.gate_occupancy) if v is not None]
        return (max(seen), "max") if seen else (None, "max")

    def _trend(self, readings: ZoneReadings, ts_ms: int) -> float | None:
        """Change of inflow per minute, per minute, over the trend window."""
        recent = [(t, v) for t, v in readings.inflow_history if t >= ts_ms - self.trend_window_ms]
        if len(recent) < 2 or recent[-1][0] == recent[0][0]:
            return None
        (t0, v0), (t1, v1) = recent[0], recent[-1]
        return (v1 - v0) / ((t1 - t0) / 60_000)

    def tick(self, ts_ms: int) -> tuple[list[ZoneState], list[AlertEvent]]:
        """Every zone's state at ``ts_ms``, and the alert events of the levels that changed."""
        states, events = [], []
        for zone_id, zone in self.zones.items():
            readings = self.readings[zone_id]
            headcount, source = self.headcount_of(zone_id)
            density = None if headcount is None else headcount / zone.area_m2
            share = None if headcount is None else headcount / zone.capacity
            inputs = ZoneInputs(
                capacity_share=share or 0.0,
                density=density or 0.0,
                strong_anomaly=readings.anomaly_alert,
                call_burst=readings.burst_alert,
            )
            change = step(self.levels[zone_id], inputs, ts_ms, self.thresholds)
            level = self.levels[zone_id].level
            states.append(
                ZoneState(
                    zone_id=zone_id,
                    station_id=self.station_id,
                    ts_ms=ts_ms,
                    headcount=headcount,
                    source=source,
                    density=density,
                    capacity_share=share,
                    level_of_service=None if density is None else level_of_service(density),
                    inflow_per_min=readings.inflow_per_min,
                    inflow_trend_per_min2=self._trend(readings, ts_ms),
                    anomaly_score=readings.anomaly_score,
                    surge_score=readings.surge_score,
                    burst_score=readings.burst_score,
                    level=level,
                )
            )
            if change is not None:
                events.append(
                    self._event(zone, change.previous, change.level, ts_ms, inputs, headcount)
                )
        return states, events

    def raise_late(self, decided: AlertEvent, at_ms: int) -> AlertEvent:
        """Raise a zone to the level a re-decided past tick reached (late readings).

        ``decided`` is the escalation that the tick would have made had its readings come on
        time. What people were told stays: the zone's open alert (if any) is escalated, else
        one opens at the tick the readings belong to. The hold starts at ``at_ms``, when it is
        decided.
        """
        state = self.levels[decided.zone_id]
        previous = state.level
        ts_ms = max(decided.ts_ms, state.since_ms) if previous else decided.ts_ms
        if previous is None:
            self.open_alerts[decided.zone_id] = f"{decided.zone_id}@{ts_ms}"
        state.level, state.since_ms = decided.level, at_ms
        state.calm_since_ms, state.calm_peak = None, None
        return replace(
            decided,
            alert_id=self.open_alerts[decided.zone_id],
            event="opened" if previous is None else "escalated",
            previous_level=previous,
            ts_ms=ts_ms,
            reason=f"{decided.reason} (decided on late readings)",
        )

    def _event(
        self,
        zone: Zone,
        previous: Level | None,
        level: Level | None,
        ts_ms: int,
        inputs: ZoneInputs,
        headcount: float | None,
    ) -> AlertEvent:
        kind: EventType
        if previous is None:
            self.open_alerts[zone.id] = f"{zone.id}@{ts_ms}"
            kind = "opened"
        elif level is None:
            kind = "resolved"
        else:
            kind = "escalated" if RANK[level] > RANK[previous] else "de-escalated"
        alert_id = self.open_alerts[zone.id]
        if level is None:
            del self.open_alerts[zone.id]
        values = {
            "capacity_share": round(inputs.capacity_share, 4),
            "density": round(inputs.density, 4),
            "headcount": round(headcount or 0.0, 1),
            "capacity": float(zone.capacity),
            "anomaly_score": round(self.readings[zone.id].anomaly_score, 3),
            "burst_score": round(self.readings[zone.id].burst_score, 3),
        }
        return AlertEvent(
            alert_id=alert_id,
            event=kind,
            kind="big_crowd",
            zone_id=zone.id,
            station_id=self.station_id,
            level=level or previous or "blue",
            previous_level=previous,
            ts_ms=ts_ms,
            reason=reason(inputs, self.thresholds, level),
            values=values,
            causes=causes(inputs, self.thresholds, level),
        )


def reason(inputs: ZoneInputs, thresholds: Thresholds, level: Level | None) -> str:
    """Which thresholds put the zone at ``level`` (or why it is calm again)."""
    if level is None:
        return f"calm: {inputs.capacity_share:.0%} of capacity, {inputs.density:.2f} persons/m²"
    parts = []
    crossed = [t for t in thresholds.share if inputs.capacity_share >= t]
    if crossed:
        parts.append(f"{inputs.capacity_share:.0%} of capacity ≥ {max(crossed):.0%}")
    if inputs.density > thresholds.red_density:
        parts.append(f"{inputs.density:.2f} persons/m² ≥ {thresholds.red_density}")
    elif inputs.density > thresholds.los_f_density:
        parts.append(f"{inputs.density:.2f} persons/m²: level of service F")
    if inputs.strong_anomaly:
        parts.append("strong anomaly: one step up")
    if inputs.call_burst:
        parts.append("burst of crowd-related 110 calls: one step up")
    plain = target_level(ZoneInputs(inputs.capacity_share, inputs.density), thresholds)
    if not parts or RANK[level] > RANK[plain]:
        parts.append("held while calming down")
    return "; ".join(parts)


def causes(inputs: ZoneInputs, thresholds: Thresholds, level: Level | None) -> tuple[str, ...]:
    """`reason` as codes that messages put in words, in the same order (see `AlertEvent`)."""
    if level is None:
        return ("calm",)
    found: list[str] = []
    if any(inputs.capacity_share >= t for t in thresholds.share):
        found.append("capacity")
    if inputs.density > thresholds.red_density:
        found.append("density")
    elif inputs.density > thresholds.los_f_density:
        found.append("los_f")
    if inputs.strong_anomaly:
        found.append("anomaly")
    if inputs.call_burst:
        found.append("burst")
    # held: the level is above what the inputs call for now (anomaly and calls included)
    if not found or RANK[level] > RANK[target_level(inputs, thresholds)]:
        found.append("held")
    return tuple(found)


ALERT_SCHEMA = pl.Schema(
    {
        "alert_id": pl.String(),
        "event": pl.String(),
        "kind": pl.String(),
        "zone_id": pl.String(),
        "station_id": pl.String(),
        "level": pl.String(),
        "previous_level": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "reason": pl.String(),
        "values": pl.String(),
    }
)


def alert_rows(events: list[AlertEvent]) -> pl.DataFrame:
    """``alerts`` rows: one per lifecycle event."""
    return (
        pl.DataFrame(
            {
                "alert_id": [e.alert_id for e in events],
                "event": [e.event for e in events],
                "kind": [e.kind for e in events],
                "zone_id": [e.zone_id for e in events],
                "station_id": [e.station_id for e in events],
                "level": [e.level for e in events],
                "previous_level": [e.previous_level for e in events],
                "ts": [e.ts_ms for e in events],
                "reason": [e.reason for e in events],
                "values": [json.dumps(e.values, sort_keys=True) for e in events],
            },
            schema_overrides={"ts": pl.Int64, "previous_level": pl.String},
        )
        .with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
        .cast(ALERT_SCHEMA)
    )
