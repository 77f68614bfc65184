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
