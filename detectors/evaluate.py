"""How well the surge detectors do on labelled real data: ``python -m detectors.evaluate``.

Runs the anomaly detector on the real footfall counts (Auckland 2019-2025, Dublin 2023) and the
call-burst scoring on the real Seattle Fire 911 hourly calls, all from ``../shared/data`` (see
its README), through the same code and the same `Settings` the pipelines use
(`detectors.anomaly.zone_detector`, `crowdwatch.calls.counts`), and prints one table:

- labelled surges (marches, parades, New Year's Eves, a riot) caught, and the lead from the
  first alert to the surge's peak;
- false-alarm episodes per sensor-week outside every labelled window; alarms on public holidays
  (the site calendar), in lockdowns, outages and other labelled disruptions on their own lines;
- the time from each labelled call surge's onset (its label's start) to the first burst alert,
  and burst alerts per ordinary week (weeks without a labelled window).

The last three lines are the headline: ``surges caught: <pct> %``, ``false alarms per
sensor-week: <number>`` and ``call surge onset to alert: <hours> h`` (worst labelled storm).
``--footfall CSV --timezone TZ --country CC`` evaluates another city's hourly counts alone
(`footfall_set`). The data are development data: defaults are chosen for the general case
(see README), not for these dates, and other cities' data will judge them too.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import polars as pl

from crowdwatch import footfall
from crowdwatch.calls.counts import SITE, BurstParams, burst_scores
from crowdwatch.settings import REPO_ROOT, Settings
from crowdwatch.site import public_holidays
from detectors.anomaly import AlertEpisodes, Observation, zone_detector

DATA_DIR = REPO_ROOT.parent / "shared" / "data"
HOUR_MS = 3_600_000
WEEK_MS = 7 * 24 * HOUR_MS
SURGE_KINDS = frozenset({"surge_march", "surge_nye", "parade", "riot"})
CALL_SURGE_KINDS = frozenset({"storm_wind", "heat_wave"})
# Labelled windows that are not ordinary time, by the line they are reported on.
QUIET_LINES = {
    "quiet_lockdown": "lockdowns",
    "sensor_outage": "outages and glitches",
    "data_outage": "outages and glitches",
    "timestamp_glitch": "outages and glitches",
    "quiet_holiday": "public holidays",
}
CATCH_BEFORE_MS = 2 * HOUR_MS
"""An alert this long before a labelled surge's start still counts as catching it."""
MIN_HISTORY_MS = 7 * 24 * HOUR_MS
"""A surge in a sensor's first week of data cannot be judged (the file starts in it)."""


@dataclass(frozen=True)
class FootfallSet:
    """One labelled footfall data set and its site calendar."""

    name: str
    csv: str
    timezone: str
    country: str | None
    subdivision: str | None = None


FOOTFALL_SETS = (
    FootfallSet(
        "auckland", "footfall/auckland/auckland_hourly_counts.csv", "Pacific/Auckland", "NZ", "AUK"
    ),
    FootfallSet(
        "dublin_2023", "footfall/dublin_2023/dublin_footfall_2023_hourly.csv", "Europe/Dublin", "IE"
    ),
)


@dataclass(frozen=True)
class Label:
    """One labelled window: what, when (epoch ms, UTC) and on which sensors."""

    event_id: str
    kind: str
    start_ms: int
    end_ms: int
    sensors: frozenset[str]


@dataclass
class SensorResult:
    """What the detector did on one sensor: its alarm episodes and the hours it saw."""

    sensor: str
    ts_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    episodes: list[tuple[int, int]]  # (first alarm, last alarm) epoch ms
    alarms: npt.NDArray[np.int64]  # every hour with a strong rise
    drops: int


@dataclass
class Table:
    """The printed rows, as (what, figure) pairs."""

    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, figure: str) -> None:
        """Add one row."""
        self.rows.append((what, figure))

    def render(self) -> str:
        """The rows aligned in two columns."""
        width = max(len(what) for what, _ in self.rows)
        return "\n".join(f"{what:<{width}}  {figure}" for what, figure in self.rows)


def local_ms(text: pl.Expr, timezone: str, *, skipped: str | None = None) -> pl.Expr:
    """Naive local ``YYYY-MM-DD HH:MM`` text (`crowdwatch.footfall.local_time`) → epoch ms (UTC).

    An hour that never was (a DST gap) is null, or read ``skipped`` later (``"1h"``).
    """
    return zoned_ms(footfall.local_time(text), timezone, skipped=skipped)


def zoned_ms(naive: pl.Expr, timezone: str, *, skipped: str | None = None) -> pl.Expr:
    """Naive local datetimes → epoch ms (UTC); a DST gap's hour null or ``skipped`` later."""

    def zoned(t: pl.Expr) -> pl.Expr:
        return t.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")

    out = zoned(naive)
    if skipped is not None:
        out = out.fill_null(zoned(naive.dt.offset_by(skipped)))
    return out.dt.epoch("ms")


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


def read_labels(path: Path, timezone: str, sensors: Iterable[str]) -> list[Label]:
    """The labels of a data set, with ``sensor_or_area`` resolved to the set's sensor names.

    ``all sensors`` and ``city-wide`` mean every sensor; ``Queen Street sensors`` every sensor
    whose name holds "Queen Street"; anything else a sensor of that name (notes in brackets are
    ignored).

    Raises:
        ValueError: As `crowdwatch.footfall.read_labels` does, for a column missing or a row
            whose times are not a window.
    """
    names = list(sensors)
    frame = footfall.read_labels(path).with_columns(
        zoned_ms(pl.col("start_local"), timezone, skipped="1h").alias("start_ms"),
        zoned_ms(pl.col("end_local"), timezone, skipped="1h").alias("end_ms"),
    )
    labels = []
    for row in frame.iter_rows(named=True):
        chosen: set[str] = set()
        for part in row["areas"]:
            wanted = _norm(part.split("(")[0])
            if wanted in ("all sensors", "seattle city-wide") or "city-wide" in wanted:
                chosen.update(names)
            elif wanted.endswith(" sensors"):
                stem = wanted.removesuffix(" sensors")
                chosen.update(n for n in names if stem in _norm(n))
            else:
                chosen.update(n for n in names if _norm(n) == wanted)
        labels.append(
            Label(
                row["event_id"],
                row["kind"],
                int(row["start_ms"]),
                int(row["end_ms"]) + HOUR_MS - 1,  # the end hour is included
                frozenset(chosen),
            )
        )
    return labels


def read_footfall(data: FootfallSet) -> pl.DataFrame:
    """Hourly counts, long: ``sensor, ts_ms, value`` (totals only; missing hours left out).

    Raises:
        ValueError: As `crowdwatch.footfall.read_counts` does, for a file in neither footfall shape.
    """
    return (
        footfall.read_counts(DATA_DIR / data.csv)
        .select("sensor", zoned_ms(pl.col("ts_local"), data.timezone).alias("ts_ms"), "value")
        .drop_nulls()
        .sort("sensor", "ts_ms", maintain_order=True)
    )


def _outage_mask(ts: npt.NDArray[np.int64], sensor: str, labels: list[Label]) -> npt.NDArray[Any]:
    mask = np.zeros(ts.size, dtype=bool)
    for label in labels:
        if label.kind == "sensor_outage" and sensor in label.sensors:
            mask |= (ts >= label.start_ms) & (ts <= label.end_ms)
    return mask


def run_sensor(
    args: tuple[str, npt.NDArray[np.int64], npt.NDArray[np.float64], FootfallSet, Settings],
) -> SensorResult:
    """Feed one sensor's hours through the pipeline's detector and episode step."""
    sensor, ts, values, data, settings = args
    detector = zone_detector(
        settings, data.timezone, days_off=public_holidays(data.country, data.subdivision)
    )
    episodes = AlertEpisodes(settings.anomaly_refractory_s * 1000)
    found: list[tuple[int, int]] = []
    alarms: list[int] = []
    drops = 0
    for t, v in zip(ts.tolist(), values.tolist(), strict=True):
        x = Observation(t, v)
        z, mature = detector.assess(x)
        strong = mature and z >= settings.anomaly_strong_z
        if episodes.update(t, strong):
            found.append((t, t))
        elif strong:
            found[-1] = (found[-1][0], t)
        if strong:
            alarms.append(t)
        drops += z <= -settings.anomaly_strong_z
        detector.learn_one(x)
    return SensorResult(sensor, ts, values, found, np.array(alarms, dtype=np.int64), drops)


def footfall_set(
    path: Path, timezone: str, country: str | None, subdivision: str | None = None
) -> FootfallSet:
    """Another city's hourly footfall CSV, in the shared sets' shape, named after its folder.

    Raises:
        ValueError: If the time zone, the country or the subdivision is unknown, the file is
            in neither footfall shape, or the ``labels.csv`` beside it has a bad row.
    """
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r} (an IANA name: Europe/Dublin)") from exc
    public_holidays(country, subdivision)
    # a file in neither shape, or labels that are not windows, fail here as a command-line
    # error; the evaluation reads the file again (a second or less for a city's year)
    footfall.read_counts(path)
    if (path.parent / "labels.csv").exists():
        footfall.read_labels(path.parent / "labels.csv")
    return FootfallSet(path.parent.name, str(path.resolve()), timezone, country, subdivision)


def evaluate_footfall(
    settings: Settings, workers: int, data: FootfallSet
) -> tuple[list[tuple[str, bool, float | None]], dict[str, float], float]:
    """Per labelled surge (caught, lead h); false-alarm episodes by line; ordinary sensor-weeks.

    A set without a ``labels.csv`` beside its CSV has no surges: all its time is ordinary.
    """
    frame = read_footfall(data)
    sensors = frame["sensor"].unique(maintain_order=True).to_list()
    label_file = DATA_DIR / Path(data.csv).parent / "labels.csv"
    labels = read_labels(label_file, data.timezone, sensors) if label_file.exists() else []
    jobs = []
    for (sensor,), part in frame.group_by("sensor", maintain_order=True):
        ts = part["ts_ms"].to_numpy()
        keep = ~_outage_mask(ts, str(sensor), labels)  # an outage's zeros are missing data
        jobs.append((str(sensor), ts[keep], part["value"].to_numpy()[keep], data, settings))
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(run_sensor, jobs, chunksize=1))
    holidays = public_holidays(data.country, data.subdivision)
    tz = ZoneInfo(data.timezone)
    lines: dict[str, float] = {}
    weeks = sum(_judge_sensor(result, labels, holidays, tz, lines) for result in results)
    return _judge_surges(results, labels), lines, weeks


def _judge_sensor(
    result: SensorResult,
    labels: list[Label],
    holidays: frozenset[int],
    tz: ZoneInfo,
    lines: dict[str, float],
) -> float:
    """Count the sensor's episodes by line; return its ordinary time in weeks."""
    mine = [lb for lb in labels if result.sensor in lb.sensors]
    ordinary = np.ones(result.ts_ms.size, dtype=bool)
    for label in mine:
        ordinary &= ~((result.ts_ms >= label.start_ms) & (result.ts_ms <= label.end_ms))
    days = np.array(
        [datetime.fromtimestamp(t / 1000, tz).toordinal() for t in result.ts_ms.tolist()]
    )
    ordinary &= ~np.isin(days, list(holidays))
    for start, _ in result.episodes:
        line = "ordinary time"
        for label in mine:
            if label.start_ms - CATCH_BEFORE_MS <= start <= label.end_ms:
                line = QUIET_LINES.get(label.kind, "labelled surges and disruptions")
                break
        else:
            if datetime.fromtimestamp(start / 1000, tz).toordinal() in holidays:
                line = "public holidays"
        lines[line] = lines.get(line, 0.0) + 1
    return float(ordinary.sum()) / 168.0


def _judge_surges(
    results: list[SensorResult], labels: list[Label]
) -> list[tuple[str, bool, float | None]]:
    out: list[tuple[str, bool, float | None]] = []
    by_sensor = {r.sensor: r for r in results}
    for label in labels:
        if label.kind not in SURGE_KINDS:
            continue
        mine = [by_sensor[s] for s in label.sensors if s in by_sensor]
        judged = [r for r in mine if r.ts_ms.size and r.ts_ms[0] <= label.start_ms - MIN_HISTORY_MS]
        if not judged:
            out.append((label.event_id, False, math.nan))  # no history before it: not judged
            continue
        first_alarm = min(
            (
                int(r.alarms[(r.alarms >= label.start_ms - CATCH_BEFORE_MS)].min())
                for r in judged
                if (
                    (r.alarms >= label.start_ms - CATCH_BEFORE_MS) & (r.alarms <= label.end_ms)
                ).any()
            ),
            default=None,
        )
        peak_ms, peak = label.start_ms, -1.0
        for r in judged:
            inside = (r.ts_ms >= label.start_ms) & (r.ts_ms <= label.end_ms)
            if inside.any() and r.values[inside].max() > peak:
                peak = float(r.values[inside].max())
                peak_ms = int(r.ts_ms[inside][np.argmax(r.values[inside])])
        lead = None if first_alarm is None else (peak_ms - first_alarm) / HOUR_MS
        out.append((label.event_id, first_alarm is not None, lead))
    return out


CALLS_DIR = "emergency_calls/seattle_fire_hourly"
CALLS_TZ = "America/Los_Angeles"
BURST_REFRACTORY_MS = 3 * HOUR_MS
"""Burst alerts less than this apart are counted as one."""
WARM_UP_WEEKS = 8
"""The first weeks of a call series are its baseline's warm-up: not counted as ordinary."""


def hourly_to_minutes(ts_ms: npt.NDArray[np.int64], calls: npt.NDArray[np.int64]) -> Any:
    """Spread each hour's calls evenly over its minutes (epoch minutes, sorted)."""
    start = np.repeat(ts_ms // 60_000, calls)
    index = np.arange(calls.sum()) - np.repeat(np.cumsum(calls) - calls, calls)
    spread = ((index + 0.5) * 60 / np.repeat(calls, calls)).astype(np.int64)
    return np.sort(start + spread)


def burst_episodes(minutes: npt.NDArray[np.int64], params: BurstParams) -> list[int]:
    """Start (epoch ms) of each burst alert episode of one series, scored at every arrival."""
    points = np.unique(minutes)
    first_hour = int(minutes[0]) // 60
    burst = burst_scores(minutes, points, first_hour, params)
    episodes = AlertEpisodes(BURST_REFRACTORY_MS)
    alerts = points[burst.alert] * 60_000
    return [int(t) for t in alerts.tolist() if episodes.update(int(t), True)]


def evaluate_calls(settings: Settings) -> tuple[list[tuple[str, str, float | None]], float, float]:
    """Seattle's 911 hourly calls: onset to first alert per labelled surge; alerts per week.

    The city-wide calls are the site-wide series (mostly medical aid: crowd-relevant), scored
    as the pipeline scores its ``site`` key. Returns the labelled surges (id, kind, hours from
    onset to the first alert or None), alert episodes per ordinary week, and ordinary weeks.
    """
    params = BurstParams.from_settings(settings).for_level(SITE)
    frame = (
        pl.read_csv(DATA_DIR / CALLS_DIR / "seattle_fire_911_calls_hourly.csv")
        .select(local_ms(pl.col("ts_local"), CALLS_TZ).alias("ts_ms"), "calls")
        .drop_nulls()
    )
    minutes = hourly_to_minutes(frame["ts_ms"].to_numpy(), frame["calls"].to_numpy())
    starts = np.array(burst_episodes(minutes, params), dtype=np.int64)
    labels = read_labels(DATA_DIR / CALLS_DIR / "labels.csv", CALLS_TZ, ["all"])
    surges = []
    for label in labels:
        if label.kind in CALL_SURGE_KINDS or label.kind.startswith("candidate"):
            after = starts[(starts >= label.start_ms) & (starts <= label.end_ms)]
            hours = (int(after[0]) - label.start_ms) / HOUR_MS if after.size else None
            surges.append((label.event_id, label.kind, hours))
    # ordinary weeks: 168-hour blocks after the warm-up that touch no labelled window
    first = int(frame["ts_ms"][0]) + WARM_UP_WEEKS * WEEK_MS
    last = int(frame["ts_ms"][-1])
    blocks = np.arange(first, last - WEEK_MS + 1, WEEK_MS)
    ordinary = np.ones(blocks.size, dtype=bool)
    for label in labels:
        ordinary &= ~((blocks <= label.end_ms) & (blocks + WEEK_MS > label.start_ms))
    block_of = (starts - first) // WEEK_MS
    in_ordinary = (starts >= first) & (block_of < blocks.size)
    alerts = int(ordinary[block_of[in_ordinary]].sum())
    return surges, alerts / max(int(ordinary.sum()), 1), float(ordinary.sum())


def evaluate_collisions(settings: Settings) -> tuple[float, float]:
    """Seattle's motor-vehicle 911 calls (2010-2015) as the ``mass_incident`` series.

    No labels: every alert episode after the warm-up counts. Returns alerts per week and weeks.
    """
    params = BurstParams.from_settings(settings).for_level(SITE)
    frame = (
        pl.read_csv(DATA_DIR / "emergency_calls" / "seattle_fire_911_mva.csv")
        .unique("Incident Number")
        .select(
            pl.col("Datetime")
            .str.to_datetime("%m/%d/%Y %I:%M:%S %p %z", strict=False)
            .dt.epoch("ms")
            .alias("ts_ms")
        )
        .drop_nulls()
    )
    minutes = np.sort(frame["ts_ms"].to_numpy() // 60_000)
    starts = np.array(burst_episodes(minutes, params), dtype=np.int64)
    first = int(minutes[0]) * 60_000 + WARM_UP_WEEKS * WEEK_MS
    weeks = (int(minutes[-1]) * 60_000 - first) / WEEK_MS
    return float((starts >= first).sum()) / max(weeks, 1e-9), weeks


def evaluate_hangzhou(settings: Settings, workers: int) -> tuple[int, float]:
    """Hangzhou's 80 metro stations, 10-minute gate entries, 25 days of January 2019.

    No labels and under 4 weeks: the detector is mature only in the last days, and alarms are
    counted wherever they fall. Returns alarm episodes and station-weeks judged (mature slots).
    """
    data = FootfallSet(
        "hangzhou", "hangzhou_metro/hangzhou_metro_10min_inout.csv", "Asia/Shanghai", "CN"
    )
    frame = (
        pl.read_csv(DATA_DIR / data.csv)
        .select(
            pl.col("station_idx").cast(pl.String).alias("sensor"),
            pl.col("timestamp")
            .str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="ms")
            .dt.replace_time_zone(data.timezone)
            .dt.epoch("ms")
            .alias("ts_ms"),
            pl.col("inflow").cast(pl.Float64).alias("value"),
        )
        .sort("sensor", "ts_ms")
    )
    jobs = [
        (str(sensor), part["ts_ms"].to_numpy(), part["value"].to_numpy(), data, settings)
        for (sensor,), part in frame.group_by("sensor", maintain_order=True)
    ]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(run_sensor, jobs, chunksize=8))
    mature_from = int(frame["ts_ms"].min()) + 3 * WEEK_MS  # type: ignore[arg-type]
    span = (int(frame["ts_ms"].max()) - mature_from) / WEEK_MS  # type: ignore[arg-type]
    return sum(len(r.episodes) for r in results), span * len(results)


def _footfall_rows(
    table: Table, settings: Settings, workers: int, sets: Iterable[FootfallSet]
) -> list[str]:
    """Add the footfall rows to ``table``; return the two footfall headline lines.

    Several sets are pooled; each also gets its own false-alarm row.
    """
    surges: list[tuple[str, bool, float | None]] = []
    lines: dict[str, float] = {}
    weeks = 0.0
    per_set: list[tuple[str, float, float]] = []
    for data in sets:
        its_surges, its_lines, its_weeks = evaluate_footfall(settings, workers, data)
        surges += its_surges
        weeks += its_weeks
        for line, n in its_lines.items():
            lines[line] = lines.get(line, 0.0) + n
        per_set.append((data.name, its_lines.get("ordinary time", 0.0), its_weeks))
    judged = [(e, c, lead) for e, c, lead in surges if lead is None or not math.isnan(lead)]
    for event_id, caught, lead in surges:
        if lead is not None and math.isnan(lead):
            table.add(f"  {event_id}", "not judged (no week of history before it)")
        elif caught and lead is not None:
            table.add(f"  {event_id}", f"caught, first alarm {lead:+.0f} h before the peak")
        else:
            table.add(f"  {event_id}", "missed")
    caught_leads = [lead for _, caught, lead in judged if caught and lead is not None]
    median_lead = statistics.median(caught_leads) if caught_leads else math.nan
    n_caught = sum(c for _, c, _ in judged)
    table.add(
        "footfall surges caught", f"{n_caught} of {len(judged)}, median lead {median_lead:.1f} h"
    )
    ordinary = lines.pop("ordinary time", 0.0)
    table.add("false-alarm episodes, ordinary time", f"{ordinary:.0f} in {weeks:,.0f} sensor-weeks")
    for line, n in sorted(lines.items()):
        table.add(f"alarm episodes in {line}", f"{n:.0f}")
    for name, n, its_weeks in per_set if len(per_set) > 1 else []:
        table.add(
            f"  false alarms per sensor-week, {name}",
            f"{n / max(its_weeks, 1e-9):.2f} ({n:.0f} in {its_weeks:,.0f} sensor-weeks)",
        )
    # no labelled surge: nothing was caught or missed, and 0 % would say all were missed
    caught_pct = 100.0 * n_caught / len(judged) if judged else math.nan
    return [
        f"surges caught: {caught_pct:.0f} %",
        f"false alarms per sensor-week: {ordinary / max(weeks, 1e-9):.2f}",
    ]


def footfall_lines(settings: Settings, workers: int, data: FootfallSet) -> list[str]:
    """The footfall evaluation of one set alone: its table's lines, the two headlines last."""
    started = time.perf_counter()
    table = Table()
    headline = _footfall_rows(table, settings, workers, [data])
    table.add("evaluated in", f"{time.perf_counter() - started:.0f} s")
    return [*table.render().splitlines(), *headline]


def table_lines(settings: Settings, workers: int) -> list[str]:
    """Run every evaluation and return the table's lines, the headline last."""
    started = time.perf_counter()
    table = Table()
    headline = _footfall_rows(table, settings, workers, FOOTFALL_SETS)
    call_surges, per_week, call_weeks = evaluate_calls(settings)
    for event_id, kind, hours in call_surges:
        label = f"  {event_id} ({kind})"
        table.add(label, "no alert" if hours is None else f"first alert {hours:.1f} h after onset")
    table.add("911 burst alerts per ordinary week", f"{per_week:.2f} over {call_weeks:.0f} weeks")
    mva_per_week, mva_weeks = evaluate_collisions(settings)
    table.add(
        "collision calls (mass incident): alerts per week",
        f"{mva_per_week:.2f} over {mva_weeks:.0f} weeks (no labels)",
    )
    hz_episodes, hz_weeks = evaluate_hangzhou(settings, workers)
    table.add(
        "Hangzhou metro entries: alarm episodes",
        f"{hz_episodes} in {hz_weeks:.0f} station-weeks of mature baselines (no labels)",
    )
    table.add("evaluated in", f"{time.perf_counter() - started:.0f} s")
    storms = [h for _, kind, h in call_surges if kind in CALL_SURGE_KINDS]
    worst = (
        "never"
        if None in storms or not storms
        else f"{max(h for h in storms if h is not None):.1f}"
    )
    return [*table.render().splitlines(), *headline, f"call surge onset to alert: {worst} h"]


def main(argv: list[str] | None = None) -> int:
    """Print the evaluation table; exit 2 when the shared data is missing."""
    parser = argparse.ArgumentParser(prog="python -m detectors.evaluate", description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="processes for the footfall sets")
    parser.add_argument(
        "--footfall",
        type=Path,
        help="evaluate another city's hourly counts alone: a CSV of ts_local and one column per "
        "sensor (or the columns sensor and count), with an optional labels.csv beside it (needs "
        "--timezone and --country)",
    )
    parser.add_argument("--timezone", help="with --footfall: the counts' IANA time zone")
    parser.add_argument(
        "--country", help="with --footfall: ISO 3166 code for public holidays ('none': none)"
    )
    parser.add_argument("--subdivision", help="with --footfall: a state or region code")
    args = parser.parse_args(argv)
    if args.footfall:
        if args.timezone is None or args.country is None:
            parser.error("--footfall needs --timezone and --country (an ISO 3166 code, or 'none')")
        country = None if args.country.lower() == "none" else args.country.upper()
        try:
            data = footfall_set(args.footfall, args.timezone, country, args.subdivision)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
        print("\n".join(footfall_lines(Settings(), args.workers, data)))
        return 0
    if not DATA_DIR.is_dir():
        print(f"error: no shared data at {DATA_DIR} (expected ../shared/data)", file=sys.stderr)
        return 2
    print("\n".join(table_lines(Settings(), args.workers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
