"""Synthetic ticket-gate records: a realistic day of passages at a site, for demos and tests.

Every gate and direction is a non-homogeneous Poisson process with one rate per minute of local
time, drawn with numpy in one go (no loop per passage). A rate's shape comes from the role of the
gate's zone:

* ``interchange`` (a dwell zone at a station with two or more lines): weekday commute peaks
  around 08:15 and 18:15, people tap *out* in the morning (they work here) and *in* at night;
* ``local`` (any other dwell zone): the same peaks the other way round (people live here);
* ``venue`` (a balance zone, e.g. a scenic area): a daytime hump of arrivals from about 07:00
  to 17:00; each visitor leaves through an exit gate after a stay of 15 minutes to 5 hours, so
  the balance occupancy rises, falls and is 0 again in the evening.

Metro service stops from `SERVICE_CLOSES` to `SERVICE_OPENS`: dwell zones have no passages in
that gap. Weekends have lower, flat metro profiles.

Rates follow from capacity: a zone's expected weekday rates put its peak occupancy, under its
own occupancy model, at `PEAK_LOAD` of its capacity (stations are built for their flows).
Random minute-to-minute variation lifts the observed peak a few points above that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import polars as pl

from crowdwatch.batches import CALL_FIELDS, VIDEO_FIELDS
from crowdwatch.site import BalanceModel, Site, Zone

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Role = Literal["interchange", "local", "venue"]
ROLES: tuple[Role, ...] = ("interchange", "local", "venue")

COLUMNS = ("ts", "gate_id", "station_id", "direction", "ticket_type")
TICKET_TYPES = ("single", "stored_value", "qr", "senior")
# Shares of single-journey tickets, stored-value cards, QR-code payment and free senior cards,
# in the order of `TICKET_TYPES`; QR payment dominates in Chinese metros, scenic spots sell
# paper tickets at the door and let people over 65 in free.
TICKET_SHARES: dict[Role, tuple[float, float, float, float]] = {
    "interchange": (0.10, 0.30, 0.55, 0.05),
    "local": (0.07, 0.33, 0.52, 0.08),
    "venue": (0.20, 0.02, 0.66, 0.12),
}
# Expected weekday peak occupancy as a share of capacity, per role.
PEAK_LOAD: dict[Role, float] = {"interchange": 0.58, "local": 0.45, "venue": 0.64}
WEEKEND_VENUE_FACTOR = 1.1
SERVICE_OPENS = time(5, 30)
SERVICE_CLOSES = time(23, 30)
STAY_MINUTES = (15, 300)
STAY_MEAN_MINUTES = 120.0
MINUTES_PER_DAY = 1440
FIRST_PEAK_SHARE = 1 / 3
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.3f%:z"


@dataclass(frozen=True)
class Surge:
    """Extra people entering one station's gates for a while, e.g. when a concert ends.

    The entries rise to a peak a third of the way through and then ebb (a triangle). At a metro
    station, entries that would fall in the night closure are dropped.

    Attributes:
        station_id: the station whose entry gates take the surge, e.g. ``STD``.
        start: local time the surge starts.
        minutes: how long it lasts (at least 1).
        extra_entries: extra people entering over the whole surge (before ``scale``).
    """

    station_id: str
    start: time
    minutes: int
    extra_entries: int

    def __post_init__(self) -> None:
        if self.minutes < 1:
            raise ValueError(f"Surge.minutes must be at least 1, got {self.minutes}")
        if self.extra_entries < 0:
            raise ValueError(f"Surge.extra_entries must be 0 or more, got {self.extra_entries}")


def default_surge() -> Surge:
    """The demo surge: 6000 people leave a concert at the stadium from 21:30 for 45 minutes."""
    return Surge(station_id="STD", start=time(21, 30), minutes=45, extra_entries=6000)


@dataclass(frozen=True)
class _Timeline:
    """The minutes of one local day: their start (epoch ms) and their local wall-clock minute."""

    start_ms: Ints
    wall: Ints
    end_ms: int


@dataclass(frozen=True)
class _Passages:
    """Passages as parallel arrays: epoch ms, gate index, entry or exit, ticket type index."""

    ms: Ints
    gate: Ints
    inbound: npt.NDArray[np.bool_]
    ticket: Ints


@dataclass(frozen=True)
class _Stream:
    """One gate and direction with its expected passages per minute of the timeline."""

    gate: int
    inbound: bool
    role: Role
    rate: Floats


def _timeline(day: date, tz: ZoneInfo) -> _Timeline:
    """Every minute from local midnight to the next (23, 24 or 25 hours with DST)."""
    start = int(datetime.combine(day, time(0), tzinfo=tz).timestamp())
    end = int(datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).timestamp())
    starts = np.arange(start, end, 60, dtype=np.int64)
    wall = np.array(
        [
            (local := datetime.fromtimestamp(int(s), UTC).astimezone(tz)).hour * 60 + local.minute
            for s in starts
        ],
        dtype=np.int64,
    )
    return _Timeline(start_ms=starts * 1000, wall=wall, end_ms=end * 1000)


def _minute_of(t: time) -> int:
    return t.hour * 60 + t.minute


def _bump(hours: Floats, centre: float, width: float) -> Floats:
    return np.exp(-0.5 * ((hours - centre) / width) ** 2)


def _metro_profile(role: Role, wall: Ints, weekend: bool) -> tuple[Floats, Floats]:
    """Relative entries and exits per minute of a dwell zone (weekday peak direction ≈ 1)."""
    hours = (wall + 0.5) / 60
    is_open = (wall >= _minute_of(SERVICE_OPENS)) & (wall < _minute_of(SERVICE_CLOSES))
    if weekend:
        level = np.interp(
            hours,
            [5.5, 7.0, 10.0, 13.0, 17.0, 20.0, 22.0, 23.5],
            [0.03, 0.08, 0.32, 0.38, 0.38, 0.30, 0.15, 0.04],
        )
        return level * is_open, level * is_open
    offpeak = np.interp(
        hours, [5.5, 6.5, 10.0, 16.0, 20.0, 22.0, 23.5], [0.05, 0.15, 0.25, 0.25, 0.2, 0.12, 0.04]
    )
    morning = _bump(hours, 8.25, 0.45)
    evening = _bump(hours, 18.25, 0.5)
    if role == "interchange":
        inflow = 1.2 * offpeak + 0.35 * morning + 0.9 * evening
        outflow = 1.2 * offpeak + morning + 0.35 * evening
    else:
        inflow = offpeak + morning + 0.3 * evening
        outflow = offpeak + 0.25 * morning + 0.85 * evening
    return inflow * is_open, outflow * is_open


def _venue_arrivals(wall: Ints) -> Floats:
    """Relative arrivals per minute at a venue (peak ≈ 1 at 10:30)."""
    hours = (wall + 0.5) / 60
    return np.interp(
        hours,
        [7.0, 8.0, 9.5, 10.5, 12.0, 14.0, 15.5, 16.5, 17.0],
        [0.0, 0.25, 0.9, 1.0, 0.75, 0.6, 0.35, 0.1, 0.0],
        left=0.0,
        right=0.0,
    )


def _stay_pmf() -> Floats:
    """Probability of each whole-minute stay at a venue: gamma-shaped, 15 minutes to 5 hours."""
    low, high = STAY_MINUTES
    minutes = np.arange(high + 1, dtype=np.float64)
    shape = 3.0
    pdf: Floats = minutes ** (shape - 1) * np.exp(-minutes * shape / STAY_MEAN_MINUTES)
    pdf[:low] = 0.0
    return pdf / float(pdf.sum())


def _window_sums(x: Floats, length: int) -> Floats:
    """Sum of ``x`` over the last ``length`` minutes, at every minute."""
    c = np.concatenate(([0.0], np.cumsum(x)))
    idx = np.arange(1, x.size + 1)
    return c[idx] - c[np.maximum(idx - length, 0)]


def _role(site: Site, zone: Zone) -> Role:
    if isinstance(zone.occupancy, BalanceModel):
        return "venue"
    return "interchange" if len(site.station_by_id[zone.station].lines) >= 2 else "local"


def _profile(role: Role, wall: Ints, weekend: bool) -> tuple[Floats, Floats]:
    """Relative entries and exits per minute; a venue's exits are its arrivals after a stay."""
    if role == "venue":
        arrivals = _venue_arrivals(wall) * (WEEKEND_VENUE_FACTOR if weekend else 1.0)
        return arrivals, np.zeros_like(arrivals)
    return _metro_profile(role, wall, weekend)


def _peak_rate_factor(zone: Zone, role: Role, has_in: bool, has_out: bool) -> float:
    """The multiplier that puts the zone's expected weekday peak occupancy at its `PEAK_LOAD`."""
    inflow, outflow = _profile(role, np.arange(MINUTES_PER_DAY, dtype=np.int64), weekend=False)
    inflow = inflow * has_in
    model = zone.occupancy
    if isinstance(model, BalanceModel):
        exits = np.convolve(inflow, _stay_pmf())[: inflow.size] * has_out
        peak = float(np.max(np.cumsum(inflow - exits)))
    else:
        occupancy = _window_sums(inflow, model.entry_minutes) + _window_sums(
            outflow * has_out, model.exit_minutes
        )
        peak = float(np.max(occupancy))
    return PEAK_LOAD[role] * zone.capacity / peak if peak > 0 else 0.0


def _surge_rate(surge: Surge, timeline: _Timeline) -> Floats:
    """Expected surge entries per minute of the timeline (a triangle peaking a third in)."""
    k = np.arange(surge.minutes) + 0.5
    top = surge.minutes * FIRST_PEAK_SHARE
    weights = np.where(k < top, k / top, (surge.minutes - k) / (surge.minutes - top))
    weights = weights / weights.sum()
    rate = np.zeros(timeline.wall.size)
    after = np.flatnonzero(timeline.wall >= _minute_of(surge.start))
    if after.size:
        first = int(after[0])
        span = min(surge.minutes, rate.size - first)
        rate[first : first + span] = surge.extra_entries * weights[:span]
    return rate


def _surge_per_gate(site: Site, timeline: _Timeline, surge: Surge) -> tuple[set[str], Floats]:
    """The gates that take the surge and each one's expected extra entries per minute."""
    if surge.station_id not in site.station_by_id:
        known = ", ".join(site.station_by_id)
        raise ValueError(f"surge station {surge.station_id!r} is not in the site ({known})")
    gates = {g.id for g in site.gates if g.station == surge.station_id and g.direction != "out"}
    if not gates:
        raise ValueError(
            f"surge station {surge.station_id!r} has no gate that lets people in; "
            "give one of its gates direction in or both in the site file"
        )
    return gates, _surge_rate(surge, timeline) / len(gates)


def _streams(
    site: Site, timeline: _Timeline, weekend: bool, scale: float, surge: Surge | None
) -> list[_Stream]:
    """The Poisson streams of every gate and allowed direction (venue exits come later)."""
    gate_index = {g.id: i for i, g in enumerate(site.gates)}
    surge_gates, surge_rate = (
        _surge_per_gate(site, timeline, surge) if surge else (set(), np.zeros(timeline.wall.size))
    )
    is_open = (timeline.wall >= _minute_of(SERVICE_OPENS)) & (
        timeline.wall < _minute_of(SERVICE_CLOSES)
    )
    streams: list[_Stream] = []
    for zone in site.zones:
        in_gates = [g for g in site.gates if g.zone == zone.id and g.direction != "out"]
        out_gates = [g for g in site.gates if g.zone == zone.id and g.direction != "in"]
        if not in_gates and not out_gates:
            continue
        role = _role(site, zone)
        factor = scale * _peak_rate_factor(zone, role, bool(in_gates), bool(out_gates))
        inflow, outflow = _profile(role, timeline.wall, weekend)
        # A venue may open at night for an event; a metro station may not.
        hours = np.ones(timeline.wall.size) if role == "venue" else is_open
        for gate in in_gates:
            rate = inflow * factor / len(in_gates)
            if gate.id in surge_gates:
                rate = rate + surge_rate * scale
            streams.append(_Stream(gate_index[gate.id], True, role, rate * hours))
        if role != "venue":
            for gate in out_gates:
                rate = outflow * factor / len(out_gates)
                streams.append(_Stream(gate_index[gate.id], False, role, rate * hours))
    return streams


def _venue_exits(rng: np.random.Generator, site: Site, passages: _Passages) -> list[_Passages]:
    """Every venue entry's exit, through one of its zone's exit gates after a stay."""
    gate_zone = np.array([g.zone for g in site.gates])
    stay = _stay_pmf()
    exits: list[_Passages] = []
    for zone in site.zones:
        out_gates = [
            i for i, g in enumerate(site.gates) if g.zone == zone.id and g.direction != "in"
        ]
        if _role(site, zone) != "venue" or not out_gates:
            continue
        visitors = np.flatnonzero(passages.inbound & (gate_zone[passages.gate] == zone.id))
        stay_ms = rng.choice(stay.size, size=visitors.size, p=stay) * 60_000
        exits.append(
            _Passages(
                ms=passages.ms[visitors] + stay_ms + rng.integers(0, 60_000, visitors.size),
                gate=np.array(out_gates, dtype=np.int64)[
                    rng.integers(0, len(out_gates), visitors.size)
                ],
                inbound=np.zeros(visitors.size, dtype=np.bool_),
                ticket=passages.ticket[visitors],
            )
        )
    return exits


def _tickets(rng: np.random.Generator, role_of: Ints) -> Ints:
    """A ticket type (index into `TICKET_TYPES`) per passage, with the shares of its role."""
    u = rng.random(role_of.size)
    tickets = np.zeros(role_of.size, dtype=np.int64)
    for code, role in enumerate(ROLES):
        mine = role_of == code
        bounds = np.cumsum(TICKET_SHARES[role])[:-1]
        tickets[mine] = np.searchsorted(bounds, u[mine], side="right")
    return tickets


def simulate_day(
    site: Site, day: date, *, seed: int = 0, scale: float = 1.0, surge: Surge | None = None
) -> pl.DataFrame:
    """Simulate one local day of ticket-gate passages at a site.

    Args:
        site: the site; every gate gets passages in the directions it allows.
        day: the local day (midnight to midnight in the site's time zone).
        seed: the random seed; the same arguments give the same frame.
        scale: multiplies every rate, the surge's included.
        surge: extra entries at one station, e.g. `default_surge()`.

    Returns:
        One row per passage, sorted by time, with String columns `COLUMNS`: ``ts`` (ISO 8601
        with the site's UTC offset and milliseconds), ``gate_id``, ``station_id``,
        ``direction`` (``in``/``out``) and ``ticket_type`` (one of `TICKET_TYPES`).

    Raises:
        ValueError: ``scale`` is negative, or the surge's station is unknown or has no gate
            that lets people in.
    """
    if scale < 0:
        raise ValueError(f"scale must be 0 or more, got {scale}")
    rng = np.random.default_rng(seed)
    timeline = _timeline(day, site.tz)
    streams = _streams(site, timeline, day.weekday() >= 5, scale, surge)
    if not streams:
        return pl.DataFrame(schema=dict.fromkeys(COLUMNS, pl.String))
    counts = rng.poisson(np.stack([s.rate for s in streams]))
    # One element per passage: its stream and its minute, from the flat index into `counts`.
    stream_of, minute_of = np.divmod(
        np.repeat(np.arange(counts.size, dtype=np.int64), counts.ravel()), timeline.wall.size
    )
    role_of = np.array([ROLES.index(s.role) for s in streams], dtype=np.int64)[stream_of]
    drawn = _Passages(
        ms=timeline.start_ms[minute_of] + rng.integers(0, 60_000, minute_of.size),
        gate=np.array([s.gate for s in streams], dtype=np.int64)[stream_of],
        inbound=np.array([s.inbound for s in streams], dtype=np.bool_)[stream_of],
        ticket=_tickets(rng, role_of),
    )
    parts = [drawn, *_venue_exits(rng, site, drawn)]
    ms = np.concatenate([p.ms for p in parts])
    # Sorted by time; a late venue visitor who would leave after midnight is not in this day.
    order = np.argsort(ms, kind="stable")
    order = order[ms[order] < timeline.end_ms]
    gate = np.concatenate([p.gate for p in parts])[order]
    inbound = np.concatenate([p.inbound for p in parts])[order]
    ticket = np.concatenate([p.ticket for p in parts])[order]
    return pl.DataFrame(
        {
            "ts": pl.Series(ms[order], dtype=pl.Int64)
            .cast(pl.Datetime("ms", "UTC"))
            .dt.convert_time_zone(site.site.timezone)
            .dt.strftime(TS_FORMAT),
            "gate_id": pl.Series([g.id for g in site.gates], dtype=pl.String).gather(gate),
            "station_id": pl.Series([g.station for g in site.gates], dtype=pl.String).gather(gate),
            "direction": pl.Series(["out", "in"], dtype=pl.String).gather(inbound.astype(np.int64)),
            "ticket_type": pl.Series(TICKET_TYPES, dtype=pl.String).gather(ticket),
        }
    )


def write_records(frame: pl.DataFrame, path: Path) -> None:
    """Write records as CSV (``.csv``), JSON lines (``.jsonl``) or Parquet (``.parquet``).

    Raises:
        ValueError: the suffix is none of those.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.write_csv(path)
    elif suffix == ".jsonl":
        frame.write_ndjson(path)
    elif suffix == ".parquet":
        frame.write_parquet(path)
    else:
        raise ValueError(
            f"cannot write records to {path}: unsupported suffix {path.suffix!r} "
            "(use .csv, .jsonl or .parquet)"
        )


# --- camera messages ---------------------------------------------------------------------

CAMERA_INTERVAL_S = 5
"""Seconds between a simulated camera's messages (each message stands for one frame)."""
CAMERA_VIEW_SHARE: dict[str, float] = {
    "platform": 0.03,
    "entrance": 0.04,
    "plaza": 0.08,
    "scenic_area": 0.01,
}
"""Share of the people of a camera's driving zone that its region sees, by the ROI zone's kind.

A platform camera sees one stretch of platform, a scenic-area camera one promenade of a large
park: a few dozen people at the busiest times. Other kinds see `DEFAULT_VIEW_SHARE`.
"""
DEFAULT_VIEW_SHARE = 0.03
LINE_SHARE = 0.3
"""Share of the station's gate passages that also cross a camera's counting line."""
_ROI_LIST = pl.List(pl.Struct({"id": pl.String(), "persons": pl.Int64()}))
_LINE_LIST = pl.List(pl.Struct({"id": pl.String(), "in": pl.Int64(), "out": pl.Int64()}))
CAMERA_SCHEMA = pl.Schema(
    {
        "camera_id": pl.String(),
        "frame": pl.Int64(),
        "ts": pl.String(),
        "persons": pl.Int64(),
        "rois": _ROI_LIST,
        "lines": _LINE_LIST,
    }
)


@dataclass(frozen=True)
class CameraFault:
    """A camera that goes silent (``offline``) or freezes its counts (``stuck``) for a while.

    Attributes:
        camera_id: the camera.
        kind: ``offline`` (no messages at all) or ``stuck`` (messages keep coming, frames keep
            counting, but the people counts stay at the value of the fault's first message:
            a frozen image).
        start: local time the fault starts.
        minutes: how long it lasts.
    """

    camera_id: str
    kind: Literal["offline", "stuck"]
    start: time
    minutes: int


def default_camera_faults() -> tuple[CameraFault, ...]:
    """The demo's faults: a camera offline 19:00-19:30 and one frozen 20:00-20:45.

    Central's entrance camera goes silent, then its L2 platform camera freezes; both at Central,
    whose other cameras keep the station's event-time clock going (so they are noticed).
    """
    return (
        CameraFault("CTR-CAM03", "offline", time(19, 0), 30),
        CameraFault("CTR-CAM02", "stuck", time(20, 0), 45),
    )


def _passage_minutes(passages: pl.DataFrame, timeline: _Timeline) -> pl.DataFrame:
    """``gate_id, direction, minute`` (index into the timeline) of every passage of the day."""
    minute = (
        pl.col("ts").str.to_datetime(TS_FORMAT, time_unit="ms").dt.epoch("ms")
        - int(timeline.start_ms[0])
    ) // 60_000
    return passages.select("gate_id", "direction", minute.alias("minute")).filter(
        pl.col("minute").is_between(0, timeline.wall.size - 1)
    )


def _minute_counts(minutes: pl.DataFrame, size: int, gates: list[str], direction: str) -> Ints:
    """Passages per minute through ``gates`` in ``direction`` (``minutes``: `_passage_minutes`)."""
    rows = minutes.filter(pl.col("gate_id").is_in(gates) & (pl.col("direction") == direction))
    return np.bincount(rows["minute"].to_numpy().astype(np.int64), minlength=size).astype(np.int64)


def _occupancy(site: Site, minutes: pl.DataFrame, size: int, zone_id: str) -> Floats:
    gates = [g.id for g in site.gates if g.zone == zone_id]
    entries = _minute_counts(minutes, size, gates, "in").astype(np.float64)
    exits = _minute_counts(minutes, size, gates, "out").astype(np.float64)
    model = site.zone_by_id[zone_id].occupancy
    if isinstance(model, BalanceModel):
        walk = np.cumsum(entries - exits)
        return np.asarray(walk - np.minimum(np.minimum.accumulate(walk), 0), dtype=np.float64)
    return _window_sums(entries, model.entry_minutes) + _window_sums(exits, model.exit_minutes)


def zone_occupancy(site: Site, day: date, passages: pl.DataFrame, zone_id: str) -> Floats:
    """People in a gate-fed zone at the end of every minute of a local day, by its model.

    Dwell: entries over the last ``entry_minutes`` plus exits over the last ``exit_minutes``.
    Balance: entries minus exits since local midnight, never below 0.
    """
    timeline = _timeline(day, site.tz)
    size = timeline.wall.size
    return _occupancy(site, _passage_minutes(passages, timeline), size, zone_id)


HISTORY_SCHEMA = pl.Schema(
    {
        "zone_id": pl.String(),
        "station_id": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "entries": pl.Int64(),
        "exits": pl.Int64(),
        "occupancy": pl.Int64(),
    }
)


def _hourly(site: Site, day: date, passages: pl.DataFrame) -> pl.DataFrame:
    """Per gate-fed zone and local hour of ``day``: entries, exits and the peak occupancy."""
    timeline = _timeline(day, site.tz)
    size = timeline.wall.size
    minutes = _passage_minutes(passages, timeline)
    hour_start = timeline.start_ms[::60]
    frames = []
    for zone_id in sorted(site.gate_fed_zones):
        gates = [g.id for g in site.gates if g.zone == zone_id]
        per_hour = [
            np.add.reduceat(_minute_counts(minutes, size, gates, d), np.arange(0, size, 60))
            for d in ("in", "out")
        ]
        peak = np.maximum.reduceat(_occupancy(site, minutes, size, zone_id), np.arange(0, size, 60))
        frames.append(
            pl.DataFrame(
                {
                    "zone_id": zone_id,
                    "station_id": site.zone_by_id[zone_id].station,
                    "ts": pl.Series(hour_start).cast(pl.Datetime("ms", "UTC")),
                    "entries": per_hour[0],
                    "exits": per_hour[1],
                    "occupancy": np.round(peak).astype(np.int64),
                },
                schema=HISTORY_SCHEMA,
            )
        )
    return pl.concat(frames)


def simulate_history(
    site: Site,
    days: list[date],
    *,
    seed: int = 0,
    surge_days: frozenset[date] = frozenset(),
    surge: Surge | None = None,
    noise: float = 0.08,
) -> pl.DataFrame:
    """Hourly gate history of many days, cheaply: per gate-fed zone and hour, `HISTORY_SCHEMA`.

    Four days are simulated passage by passage (`simulate_day`): a workday, a Saturday, a
    Sunday, and a workday with ``surge`` (for ``surge_days``). Every day of ``days`` takes its
    template's hours, each multiplied by its own log-normal factor (``noise``: its spread) and
    the whole day by another, so that no two days are alike. ``occupancy`` is the peak of the
    hour; ``ts`` the hour's start. Seeded: the same arguments give the same frame.
    """
    rng = np.random.default_rng(seed)
    weekday = min(days, key=lambda d: (d.weekday() >= 5, d))
    saturday = next((d for d in days if d.weekday() == 5), weekday)
    sunday = next((d for d in days if d.weekday() == 6), weekday)
    templates = {
        "workday": (weekday, None),
        "saturday": (saturday, None),
        "sunday": (sunday, None),
        "surge": (weekday, surge),
    }
    hours = {
        name: _hourly(site, day, simulate_day(site, day, seed=seed + i, surge=extra))
        for i, (name, (day, extra)) in enumerate(templates.items())
    }
    frames = []
    for day in sorted(days):
        name = (
            "surge"
            if day in surge_days and surge is not None
            else ({5: "saturday", 6: "sunday"}.get(day.weekday(), "workday"))
        )
        template = hours[name]
        factor = np.exp(rng.normal(0.0, noise, template.height) + rng.normal(0.0, noise / 2))
        # the template's local hours moved to the day's, on the site's clock (moved in UTC, every
        # hour after a change of the clocks was one off); the hour that never was is left out,
        # the one that comes twice is simulated once
        local = pl.col("ts").dt.convert_time_zone(site.site.timezone).dt.replace_time_zone(None)
        frames.append(
            template.with_columns(
                local.dt.offset_by(f"{(day - templates[name][0]).days}d")
                .dt.replace_time_zone(site.site.timezone, ambiguous="earliest", non_existent="null")
                .dt.convert_time_zone("UTC"),
                *(
                    (pl.col(c).cast(pl.Float64) * factor).round().cast(pl.Int64)
                    for c in ("entries", "exits", "occupancy")
                ),
            ).drop_nulls("ts")
        )
    return pl.concat(frames).sort("zone_id", "ts")


def _driving_zone(site: Site, zone: Zone) -> str | None:
    """The gate-fed zone whose occupancy a camera's ROI follows: its own, else its station's."""
    gated = {g.zone for g in site.gates}
    if zone.id in gated:
        return zone.id
    entry = site.entry_zone_of(zone.station)
    if entry in gated:
        return entry
    return next((z.id for z in site.zones if z.station == zone.station and z.id in gated), None)


def simulate_cameras(
    site: Site,
    day: date,
    passages: pl.DataFrame,
    *,
    seed: int = 0,
    interval_s: int = CAMERA_INTERVAL_S,
    faults: tuple[CameraFault, ...] = (),
) -> pl.DataFrame:
    """Simulate a local day of camera messages that follow the simulated gate passages.

    Every camera of the site sends a message every ``interval_s`` seconds (cameras a fraction
    of a second apart), its frame number advancing at the camera's frame rate. Each ROI's
    people count is Poisson around `CAMERA_VIEW_SHARE` of the occupancy of the zone it follows
    (its own zone when gates count it, else its station's gate-fed entry zone), interpolated
    between minutes; counting lines see `LINE_SHARE` of the station's gate passages.

    Args:
        site: the site; every camera, ROI and counting line is simulated.
        day: the local day.
        passages: the day's gate passages (`simulate_day`), which drive the counts.
        seed: the random seed.
        interval_s: seconds between a camera's messages.
        faults: cameras offline or stuck for a while (`default_camera_faults`).

    Returns:
        One row per message with the camera message fields `VIDEO_FIELDS` (``rois`` and
        ``lines`` as lists of structs), sorted by time: written as JSON lines it is the camera
        message format of `crowdwatch.video.messages`.

    Raises:
        ValueError: ``interval_s`` is not positive, or a fault names an unknown camera.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    cameras = {c.id: c for c in site.cameras}
    for fault in faults:
        if fault.camera_id not in cameras:
            raise ValueError(f"camera fault: {fault.camera_id!r} is not a camera of the site")
    rng = np.random.default_rng(seed)
    timeline = _timeline(day, site.tz)
    day_ms = timeline.start_ms[0]
    size = timeline.wall.size
    minutes = _passage_minutes(passages, timeline)
    occupancy: dict[str, Floats] = {}
    frames: list[pl.DataFrame] = []
    for index, camera in enumerate(site.cameras):
        phase_ms = index * interval_s * 1000 // max(len(site.cameras), 1)
        ms = np.arange(day_ms + phase_ms, timeline.end_ms, interval_s * 1000, dtype=np.int64)
        minute_float = (ms - day_ms) / 60_000
        keep = np.ones(ms.size, dtype=np.bool_)
        frozen = np.zeros(ms.size, dtype=np.bool_)
        for fault in faults:
            if fault.camera_id != camera.id:
                continue
            start = int(datetime.combine(day, fault.start, tzinfo=site.tz).timestamp() * 1000)
            inside = (ms >= start) & (ms < start + fault.minutes * 60_000)
            if fault.kind == "offline":
                keep &= ~inside
            else:
                frozen |= inside
        rois: list[Ints] = []
        for roi in camera.rois:
            zone = site.zone_by_id[roi.zone]
            driver = _driving_zone(site, zone)
            if driver is None:
                expected = np.zeros(ms.size)
            else:
                if driver not in occupancy:
                    occupancy[driver] = _occupancy(site, minutes, size, driver)
                share = CAMERA_VIEW_SHARE.get(zone.kind.value, DEFAULT_VIEW_SHARE)
                # occupancy holds at the end of each minute: minute i ends at i + 1
                ends = np.arange(1, occupancy[driver].size + 1, dtype=np.float64)
                expected = share * np.interp(minute_float, ends, occupancy[driver], left=0.0)
            counts = rng.poisson(expected).astype(np.int64)
            rois.append(_freeze(counts, frozen))
        station_gates = [g.id for g in site.gates if g.station == camera.station]
        line_counts: list[tuple[Ints, Ints]] = []
        minute = np.minimum(minute_float.astype(np.int64), size - 1)
        for _ in camera.lines:
            per_message = interval_s / 60 * LINE_SHARE
            entries = _minute_counts(minutes, size, station_gates, "in")[minute]
            exits = _minute_counts(minutes, size, station_gates, "out")[minute]
            entered = rng.poisson(entries * per_message).astype(np.int64)
            exited = rng.poisson(exits * per_message).astype(np.int64)
            # a frozen image sees nobody cross
            line_counts.append((np.where(frozen, 0, entered), np.where(frozen, 0, exited)))
        columns: dict[str, Ints] = {f"_roi{j}": c for j, c in enumerate(rois)}
        for j, (entered, exited) in enumerate(line_counts):
            columns[f"_in{j}"], columns[f"_out{j}"] = entered, exited
        raw = pl.DataFrame({"ms": ms, **columns}).filter(pl.Series(keep))
        frames.append(
            raw.select(
                pl.lit(camera.id).alias("camera_id"),
                ((pl.col("ms") - day_ms) * camera.fps // 1000).cast(pl.Int64).alias("frame"),
                pl.col("ms").alias("_ms"),
                pl.sum_horizontal(f"_roi{j}" for j in range(len(rois))).alias("persons"),
                pl.concat_list(
                    pl.struct(id=pl.lit(roi.id), persons=pl.col(f"_roi{j}"))
                    for j, roi in enumerate(camera.rois)
                ).alias("rois"),
                (
                    pl.concat_list(
                        pl.struct(
                            pl.lit(line.id).alias("id"),
                            pl.col(f"_in{j}").alias("in"),
                            pl.col(f"_out{j}").alias("out"),
                        )
                        for j, line in enumerate(camera.lines)
                    )
                    if camera.lines
                    else pl.lit([], dtype=_LINE_LIST)
                ).alias("lines"),
            )
        )
    if not frames:
        return pl.DataFrame(schema=CAMERA_SCHEMA)
    return (
        pl.concat(frames)
        .sort("_ms", "camera_id")
        .with_columns(
            pl.col("_ms")
            .cast(pl.Datetime("ms", "UTC"))
            .dt.convert_time_zone(site.site.timezone)
            .dt.strftime(TS_FORMAT)
            .alias("ts")
        )
        .select(VIDEO_FIELDS)
        .cast(CAMERA_SCHEMA)
    )


def _freeze(counts: Ints, frozen: npt.NDArray[np.bool_]) -> Ints:
    """Counts held at the first value of every frozen run (a stuck camera repeats its image)."""
    if not frozen.any():
        return counts
    index = np.arange(counts.size)
    starts = frozen & ~np.concatenate(([False], frozen[:-1]))
    # the index of each run's first message, carried forward through the run
    held = np.maximum.accumulate(np.where(starts, index, 0))
    return np.where(frozen, counts[held], counts)


def camera_payloads(messages: pl.DataFrame) -> pl.DataFrame:
    """Camera messages as JSON lines: one ``payload`` column, as a broker or file delivers them."""
    return messages.select(pl.struct(VIDEO_FIELDS).struct.json_encode().alias("payload"))


# --- 110 calls ---------------------------------------------------------------------------

BACKGROUND_CALLS = (
    ("交通事故 traffic collision", 0.30, 3),
    ("盗窃 theft reported", 0.20, 3),
    ("突发疾病 medical emergency", 0.15, 2),
    ("打架 fight in the street", 0.08, 2),
    ("冒烟 smoke from a building", 0.04, 1),
    ("噪音投诉 noise complaint", 0.23, 4),
)
"""Everyday calls: category text (matched by ``infra/calls/categories.yaml``), share, priority."""
CLUSTER_CALLS = (
    ("人群拥挤 crowd crush at the stadium exit", 0.6, 1),
    ("踩踏 people pushed over at the stairs", 0.2, 1),
    ("晕倒 person fainted in the crowd", 0.2, 1),
)
"""Calls from inside a crowd: crowding mostly, and a medical call or two."""
BACKGROUND_RADIUS_M = 5000.0
M_PER_DEG_LAT = 110_540.0
BACKGROUND_PER_DAY = 48.0
_CALL_HOURLY = np.interp(
    np.arange(24) + 0.5,
    [0, 5, 8, 12, 18, 21, 24],
    [0.3, 0.2, 1.0, 1.2, 1.4, 1.1, 0.4],
)


@dataclass(frozen=True)
class CallCluster:
    """A burst of calls from one place: people in a crowd calling 110.

    Attributes:
        zone_id: the zone they call from (its geometry's centre).
        start: local time of the first call.
        minutes: over how long the calls come in.
        calls: how many.
        radius_m: how far from the zone's centre the callers stand (uniform in the disc).
    """

    zone_id: str
    start: time
    minutes: int
    calls: int
    radius_m: float = 60.0


def default_call_cluster() -> CallCluster:
    """The demo's cluster: 12 calls from the stadium forecourt as the concert crowd presses in."""
    return CallCluster("STD-plaza", time(21, 38), 20, 12)


def district_of(lat: float, lon: float) -> str:
    """A district name for a point of the example site (Hangzhou's districts, roughly)."""
    if lon >= 120.20:
        return "Binjiang"
    if lon < 120.155:
        return "Xihu"
    return "Gongshu" if lat >= 30.27 else "Shangcheng"


def _around(
    rng: np.random.Generator, centre: tuple[float, float], radius_m: float, n: int
) -> tuple[Floats, Floats]:
    """``n`` points uniform in a disc of ``radius_m`` around ``centre`` (lat, lon)."""
    distance = radius_m * np.sqrt(rng.random(n))
    angle = rng.random(n) * 2 * np.pi
    lat = centre[0] + distance * np.cos(angle) / M_PER_DEG_LAT
    lon = centre[1] + distance * np.sin(angle) / (M_PER_DEG_LAT * np.cos(np.radians(centre[0])))
    return lat, lon


def simulate_calls(
    site: Site,
    day: date,
    *,
    seed: int = 0,
    per_day: float = BACKGROUND_PER_DAY,
    cluster: CallCluster | None = None,
) -> pl.DataFrame:
    """Simulate a local day of 110 call records around the site, with an optional cluster.

    The background is a Poisson process over the day (quiet at night, busiest in the evening)
    of everyday calls (`BACKGROUND_CALLS`), uniform in a disc of `BACKGROUND_RADIUS_M` around
    the centre of the site's zones, so few land inside a zone. A cluster adds crowd calls
    (`CLUSTER_CALLS`) from around one zone over a few minutes: a burst.

    Args:
        site: the site; its zones place the background and the cluster.
        day: the local day.
        seed: the random seed.
        per_day: expected background calls over the day.
        cluster: a burst of calls from one zone (`default_call_cluster`).

    Returns:
        One row per call with String columns `CALL_FIELDS`, sorted by ``received_at`` (ISO 8601
        with the site's offset). Caller fields are empty: the simulation has no callers.

    Raises:
        ValueError: ``per_day`` is negative, or the cluster's zone is unknown or has no
            geometry.
    """
    if per_day < 0:
        raise ValueError(f"per_day must be 0 or more, got {per_day}")
    centres = [c for z in site.zones if (c := z.centre) is not None]
    if not centres:
        raise ValueError("the site has no zone with a geometry: calls cannot be placed")
    centre = (float(np.mean([c[0] for c in centres])), float(np.mean([c[1] for c in centres])))
    rng = np.random.default_rng(seed)
    timeline = _timeline(day, site.tz)
    hourly = _CALL_HOURLY[timeline.wall // 60]
    per_minute = per_day * hourly / hourly.sum()
    minute = np.repeat(np.arange(timeline.wall.size), rng.poisson(per_minute))
    n = minute.size
    ms = timeline.start_ms[minute] + rng.integers(0, 60_000, n)
    lat, lon = _around(rng, centre, BACKGROUND_RADIUS_M, n)
    kinds = rng.choice(len(BACKGROUND_CALLS), size=n, p=[k[1] for k in BACKGROUND_CALLS])
    texts = [BACKGROUND_CALLS[k][0] for k in kinds]
    priorities = [BACKGROUND_CALLS[k][2] for k in kinds]
    if cluster is not None:
        zone = site.zone_by_id.get(cluster.zone_id)
        where = None if zone is None else zone.centre
        if where is None:
            raise ValueError(
                f"call cluster zone {cluster.zone_id!r} is not a zone of the site with a geometry"
            )
        start = int(datetime.combine(day, cluster.start, tzinfo=site.tz).timestamp() * 1000)
        extra = np.sort(rng.integers(0, cluster.minutes * 60_000, cluster.calls)) + start
        c_lat, c_lon = _around(rng, where, cluster.radius_m, cluster.calls)
        c_kinds = rng.choice(
            len(CLUSTER_CALLS), size=cluster.calls, p=[k[1] for k in CLUSTER_CALLS]
        )
        ms = np.concatenate([ms, extra])
        lat, lon = np.concatenate([lat, c_lat]), np.concatenate([lon, c_lon])
        texts += [CLUSTER_CALLS[k][0] for k in c_kinds]
        priorities += [CLUSTER_CALLS[k][2] for k in c_kinds]
    order = np.argsort(ms, kind="stable")
    ms = ms[order]
    count = ms.size
    received = (
        pl.Series(ms, dtype=pl.Int64)
        .cast(pl.Datetime("ms", "UTC"))
        .dt.convert_time_zone(site.site.timezone)
        .dt.strftime(TS_FORMAT)
    )
    lat, lon = lat[order], lon[order]
    return pl.DataFrame(
        {
            "call_id": [f"SIM-{day:%Y%m%d}-{i:05d}" for i in range(count)],
            "received_at": received,
            "updated_at": pl.Series([None] * count, dtype=pl.String),
            "lat": [f"{v:.6f}" for v in lat],
            "lon": [f"{v:.6f}" for v in lon],
            "district": [district_of(a, b) for a, b in zip(lat, lon, strict=True)],
            "address": pl.Series([None] * count, dtype=pl.String),
            "category_code": pl.Series([None] * count, dtype=pl.String),
            "category_text": [texts[i] for i in order],
            "priority": [str(priorities[i]) for i in order],
            "status": "closed",
            "caller_phone": pl.Series([None] * count, dtype=pl.String),
            "caller_name": pl.Series([None] * count, dtype=pl.String),
            "caller_id_number": pl.Series([None] * count, dtype=pl.String),
            "description": pl.Series([None] * count, dtype=pl.String),
        },
        schema=dict.fromkeys(CALL_FIELDS, pl.String),
    )
