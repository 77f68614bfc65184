"""Rolling call counts per zone, station and district, and a burst score for each.

The state keeps the newest version of every call of the last ``baseline_weeks`` weeks. Each
update folds in a batch and returns rows only where something changed: a count over 5, 15 or
60 minutes changes when a call enters (its minute) and when it leaves each window (5, 15 and
60 minutes later), so those are the minutes written. An updated call is counted once, under
its newest group; its old group's counts are rewritten too.

Burst score (per zone, station and district, over crowd-relevant calls — groups of weight
≥ 0.5, e.g. crowding, disorder, fire, medical — and site-wide: ``site`` over the same calls,
``mass_incident`` over the weather- and traffic-driven groups, ``MASS_GROUPS``, whatever
their weight): the observed count over the last minutes against the expected count for those
hours of the week, as the Poisson tail surprise ``score = −log10 P(X ≥ observed | λ)`` (the
count-surveillance test behind CDC EARS-style Poisson detectors; calls at one place are rare
events). λ comes from the same hour-of-week slots of the previous weeks — a trimmed mean that
drops the largest week, so one earlier burst does not raise the baseline — shrunk toward the
parent area's rate (zone → station → district → site, `expected_rate`), never below
``floor_per_hour``. Several windows are scored and the largest score counts, less the log of
their number (`burst_scores`): 15 and 60 minutes for a zone, station or district (a sudden
cluster); up to 24 hours site-wide (a storm that doubles a county's calls for hours shows in
no 15 minutes, a heat wave over days). An alert needs ``score ≥ threshold`` (4 locally: one
chance in 10,000 under the background; 3.5 site-wide, where one series is judged, not
hundreds), at least ``min_calls`` calls in the window and a call in the last ``quiet``
minutes (a burst ends when its calls stop). The score is computed at every minute a
crowd-relevant call arrives, so a surge is flagged at the call that makes it one, and
re-scored when the quiet time passes and calls leave the window. Weeks are counted in hours
since the epoch, so a clock change shifts the slot by an hour.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy.stats import poisson

from crowdwatch.batches import REJECTED_SCHEMA
from crowdwatch.settings import Settings

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
WEEK_HOURS = 168
WINDOWS = (5, 15, 60)
CROWD_WEIGHT = 0.5
SITE = "site"
"""Key and level of the site-wide burst series."""
MASS_INCIDENT = "mass_incident"
"""Key (at level ``site``) of the site-wide series of weather- and traffic-driven calls."""
MASS_GROUPS = ("traffic", "weather")
"""Call groups that rise together in storms, heat and snow: a mass incident, not a crowd."""

COUNT_SCHEMA = pl.Schema(
    {
        "key": pl.String(),
        "level": pl.String(),
        "group": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "calls_5m": pl.UInt32(),
        "calls_15m": pl.UInt32(),
        "calls_60m": pl.UInt32(),
        "version": pl.UInt64(),
    }
)
BURST_SCHEMA = pl.Schema(
    {
        "key": pl.String(),
        "level": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "observed_15m": pl.UInt32(),
        "expected_15m": pl.Float32(),
        "score": pl.Float32(),
        "alert": pl.UInt8(),
        "version": pl.UInt64(),
    }
)
_STATE = pl.Schema(
    {
        "call_id": pl.String(),
        "version": pl.UInt64(),
        "minute": pl.Int64(),
        "group": pl.String(),
        "crowd": pl.Boolean(),
        "keys": pl.List(pl.Struct({"key": pl.String(), "level": pl.String()})),
    }
)


def poisson_surprise(
    observed: npt.NDArray[np.int64], lam: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``-log10 P(X >= observed)`` for X ~ Poisson(lam), elementwise (0 where observed is 0).

    Computed in log space, so far tails are exact: 9 calls against a background of 0.05 score
    17.3, not the ~300 that clipping ``1 - cdf`` at 1e-300 gave. `scipy.stats.poisson.logsf`
    serves while the tail is above 1e-250; beyond it (where it underflows to -inf), the tail is
    its first term times the series ``1 + λ/(k+1) + λ²/((k+1)(k+2)) + …`` (each term is at
    most half the one before there, so 60 terms are exact to double precision).
    """
    k = np.maximum(observed, 1).astype(np.float64)
    log_tail = poisson.logsf(k - 1, lam)
    far = log_tail < -250 * math.log(10)
    if far.any():
        ratios = lam[far, None] / (k[far, None] + np.arange(1, 61)[None, :])
        series = 1 + np.cumprod(ratios, axis=1).sum(axis=1)
        log_tail[far] = poisson.logpmf(k[far], lam[far]) + np.log(series)
    return np.where(observed > 0, -log_tail / math.log(10), 0.0)


@dataclass(frozen=True)
class BurstParams:
    """How bursts are judged (see the module docstring)."""

    baseline_weeks: int = 8
    floor_per_hour: float = 0.2
    threshold: float = 4.0
    min_calls: int = 3
    windows: tuple[int, ...] = (15, 60)
    dispersion: float = 1.0
    prior_weeks: float = 1.0
    site_threshold: float = 3.5
    site_windows: tuple[int, ...] = (15, 60, 180, 360, 720, 1440)
    quiet: int = 10
    parent_calls: float = 4.0

    @classmethod
    def from_settings(cls, settings: Settings) -> BurstParams:
        """The parameters every pipeline (and ``python -m detectors.evaluate``) uses."""
        return cls(
            floor_per_hour=settings.burst_floor_per_hour,
            threshold=settings.burst_threshold,
            windows=settings.burst_windows,
            dispersion=settings.burst_dispersion,
            site_threshold=settings.burst_site_threshold,
            site_windows=settings.burst_site_windows,
            quiet=settings.burst_quiet_minutes,
            parent_calls=settings.burst_parent_calls,
        )

    def offsets(self) -> tuple[int, ...]:
        """Minutes after a call at which a burst changes: arrival, quiet's end, windows' ends."""
        return (0, *sorted({15, self.quiet, *self.windows, *self.site_windows}))

    def for_level(self, level: str) -> BurstParams:
        """The parameters of one level: site-wide series use the site's windows and threshold."""
        if level != SITE:
            return self
        return replace(self, threshold=self.site_threshold, windows=self.site_windows)


def weekly_rate(
    hourly: npt.NDArray[np.int64],
    hours: npt.NDArray[np.int64],
    weeks: int,
    prior: npt.NDArray[np.float64],
    prior_weeks: float = 1.0,
    *,
    prior_calls: float | None = None,
) -> npt.NDArray[np.float64]:
    """Expected calls per hour at ``hours``: the same hour of the previous ``weeks`` weeks.

    ``hourly`` counts calls per hour from hour 0; a trimmed mean over the weeks the series
    already covers drops the largest week once there are three or more, so one earlier burst
    does not raise the baseline. The mean is shrunk toward ``prior`` (calls per hour), as if
    that were ``prior_weeks`` more weeks: a slot seen in one or two weeks says little (0 or 3
    calls by chance), and a new site or a quiet zone is not judged against nothing. With
    ``prior_calls``, the prior weighs that many calls instead, at the larger of the slot's own
    mean and the prior: a slot that sees 30 calls an hour soon rests on its own weeks, a slot
    that sees one call a month on the prior.
    """
    past = hours[:, None] - WEEK_HOURS * np.arange(1, weeks + 1)[None, :]
    seen = past >= 0
    counts = np.where(seen, hourly[np.clip(past, 0, hourly.size - 1)] * (past < hourly.size), 0)
    n = seen.sum(axis=1)
    trim = n >= 3
    total = counts.sum(axis=1) - np.where(trim, counts.max(axis=1, initial=0), 0)
    kept = n - trim
    weight: float | npt.NDArray[np.float64] = prior_weeks
    if prior_calls is not None:
        weight = prior_calls / np.maximum(total / np.maximum(kept, 1), prior)
    return np.asarray((total + weight * prior) / (kept + weight))


def mean_rate_before(
    hourly: npt.NDArray[np.int64], hours: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """The series' mean calls per hour over all hours before each of ``hours``.

    Over a day at least: in a young stream, one busy first hour is not the background.
    """
    before = np.clip(hours, 0, hourly.size)
    so_far = np.concatenate([[0], np.cumsum(hourly)])[before]
    return np.asarray(so_far / np.maximum(before, 24))


def calls_before(
    hourly: npt.NDArray[np.int64], hours: npt.NDArray[np.int64], span: int
) -> npt.NDArray[np.int64]:
    """Calls in the ``span`` hours before each of ``hours`` (``hourly`` counts from hour 0)."""
    cumulative = np.concatenate([[0], np.cumsum(hourly)])
    return np.asarray(
        cumulative[np.clip(hours, 0, hourly.size)]
        - cumulative[np.clip(hours - span, 0, hourly.size)]
    )


def expected_rate(
    chain: Sequence[npt.NDArray[np.int64]], hours: npt.NDArray[np.int64], params: BurstParams
) -> npt.NDArray[np.float64]:
    """Expected calls per hour of a series at ``hours``, borrowing from its parent areas.

    ``chain`` holds hourly counts (from the same hour 0), the widest area first and the series
    last, e.g. site, district, station, zone. The widest is judged on its own: its weekly slots
    (`weekly_rate`) shrunk toward its mean rate as if that were ``params.prior_weeks`` more
    weeks. Every narrower area is shrunk toward its parent's expected rate scaled by its share
    of the parent's calls over the baseline weeks (Laplace-smoothed: a series with no calls yet
    has share 1 / (parent's calls + 1)) — empirical Bayes with a gamma prior worth
    ``params.parent_calls`` calls: the prior weighs ``parent_calls / rate`` weeks (the rate the
    slot's own weeks show, or the prior's if larger), so a sparse zone (0.01 calls an hour)
    follows its station's hours of the day and week, while a busy district (2 an hour or more)
    soon rests on its own slots.
    """
    root = chain[0]
    rate = weekly_rate(
        root, hours, params.baseline_weeks, mean_rate_before(root, hours), params.prior_weeks
    )
    span = params.baseline_weeks * WEEK_HOURS
    for parent, child in itertools.pairwise(chain):
        share = (calls_before(child, hours, span) + 1) / (calls_before(parent, hours, span) + 1)
        prior = np.maximum(share * rate, 1e-9)
        rate = weekly_rate(
            child, hours, params.baseline_weeks, prior, prior_calls=params.parent_calls
        )
    return rate


@dataclass(frozen=True)
class Burst:
    """A series' burst at some points: calls in and expected over 15 minutes, score, alert."""

    observed_15: npt.NDArray[np.int64]
    expected_15: npt.NDArray[np.float64]
    score: npt.NDArray[np.float64]
    alert: npt.NDArray[np.bool_]


def burst_scores(
    minutes: npt.NDArray[np.int64],
    points: npt.NDArray[np.int64],
    first_hour: int,
    params: BurstParams,
    parents: Sequence[npt.NDArray[np.int64]] = (),
) -> Burst:
    """Burst score and alert of one series at ``points`` (epoch minutes); ``minutes`` its calls.

    ``minutes`` are sorted, as are ``parents``' (the calls of the areas the series lies in,
    nearest first: for a zone its station, district and the site), whose rates the series'
    expected rate borrows from (`expected_rate`). Each window ``w`` of ``params.windows``
    counts the calls in the ``w`` minutes up to a point and scores them against the expected
    count over the same minutes (never below ``floor_per_hour``) as a Poisson tail surprise,
    with counts and expectation divided by ``params.dispersion`` (quasi-Poisson: real call
    counts vary more than Poisson counts). The score is the largest window's, less
    ``log10(len(windows))`` (Bonferroni: looking at three windows is three chances). A short
    window catches a sudden cluster, a long one a storm that doubles the calls for hours.

    A window over an hour is scored only once the series' calls go back as far again before it:
    on the first day of a stream a 24-hour window would hold all of its history and find the
    evening busier than the day's mean. An alert needs the score at the line and a call in
    the last ``params.quiet`` minutes: a burst ends once its calls stop, although a longer
    window still finds the last hour unusual (a longer window can open a burst with any call,
    never hold one after the calls).
    """
    chain = [np.bincount(m // 60 - first_hour, minlength=1) for m in (*reversed(parents), minutes)]
    # every hour from the longest window's start to the newest point, each rated once
    # (windows overlap and points share hours)
    newest, oldest = (int(points.max()), int(points.min())) if points.size else (0, 0)
    first = (oldest - max(15, *params.windows) + 1) // 60
    hours = np.arange(first, newest // 60 + 2)
    rates = expected_rate(chain, hours - first_hour, params)
    best = np.zeros(points.size)
    observed_15 = np.zeros(points.size, dtype=np.int64)
    expected_15 = np.zeros(points.size)
    upto = np.searchsorted(minutes, points, side="right")
    for window in sorted({15, *params.windows}):
        observed = upto - np.searchsorted(minutes, points - window, side="right")
        # the window is minutes (p - w, p]; spread each hour's rate over its minutes in it
        expected = np.zeros(points.size)
        start = points - window + 1
        for k in range(window // 60 + 2):
            hour = start // 60 + k
            overlap = np.clip(
                np.minimum(points, hour * 60 + 59) - np.maximum(start, hour * 60) + 1, 0, 60
            )
            rate = rates[np.clip(hour - first, 0, hours.size - 1)]
            expected += np.where(overlap > 0, rate * overlap / 60, 0.0)
        expected = np.maximum(expected, params.floor_per_hour * window / 60)
        score = poisson_surprise(
            np.floor(observed / params.dispersion).astype(np.int64), expected / params.dispersion
        )
        if window in params.windows:
            # a window over an hour counts once the series has been heard for as long before
            # it: in a young stream a day-long window holds the whole history, daily rhythm
            # and all (short windows are judged against a day's mean at least)
            known = (window <= 60) | (points - window - first_hour * 60 >= window)
            counted = (observed >= params.min_calls) & known
            best = np.maximum(best, np.where(counted, score, 0.0))
        if window == 15:
            observed_15, expected_15 = observed, expected
    score = np.maximum(best - math.log10(len(params.windows)), 0.0)
    recent = upto - np.searchsorted(minutes, points - params.quiet, side="right") > 0
    return Burst(observed_15, expected_15, score, (score >= params.threshold) & recent)


PARENT_LEVEL = {"zone": "station", "station": "district", "district": SITE}
"""The area a series' expected rate borrows from, one level up; site-wide series stand alone."""


def parent_areas(
    crowd: pl.DataFrame, series: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """The parent area of each zone and station of ``series`` (and of those zones' stations).

    ``crowd`` holds one row per call and area (``call``, ``key``, ``level``). A zone's parent
    is the station most of its calls also belong to, a station's the district most of its
    calls carry (the site file does not say which district a station lies in).
    """
    parents: dict[tuple[str, str], tuple[str, str]] = {}
    wanted = {key for key, level in series if level == "zone"}
    for level in ("zone", "station"):
        if level == "station":
            wanted = {key for key, lv in series if lv == "station"} | {
                key for key, lv in parents.values() if lv == "station"
            }
        if not wanted:
            continue
        up = PARENT_LEVEL[level]
        best = (
            crowd.filter((pl.col("level") == level) & pl.col("key").is_in(sorted(wanted)))
            .select("call", "key")
            .join(
                crowd.filter(pl.col("level") == up).select("call", pl.col("key").alias("parent")),
                on="call",
            )
            .group_by("key", "parent")
            .len()
            .sort(["key", "len", "parent"], descending=[False, True, False])
            .unique("key", keep="first", maintain_order=True)
        )
        for key, parent in best.select("key", "parent").iter_rows():
            parents[str(key), level] = (str(parent), up)
    return parents


def area_chain(
    area: tuple[str, str], parents: dict[tuple[str, str], tuple[str, str]]
) -> list[tuple[str, str]]:
    """The areas above ``area``, nearest first, up to the site (none for site-wide series)."""
    chain: list[tuple[str, str]] = []
    while area[1] != SITE:
        area = parents.get(area, (SITE, SITE))
        chain.append(area)
    return chain


class CallWindows:
    """All calls of the baseline period, and the rows their arrival and updates change."""

    def __init__(self, timezone: str, params: BurstParams | None = None) -> None:
        self.timezone = timezone
        self.params = params or BurstParams()
        self.calls = pl.DataFrame(schema=_STATE)
        self.first_hour: int | None = None
        self.watermark: int | None = None
        self.version = 0

    def update(self, calls: pl.DataFrame, now_ns: int) -> dict[str, pl.DataFrame]:
        """Fold in parsed calls (`crowdwatch.calls.records.CALL_SCHEMA`); return changed rows.

        The changed rows come per table: ``call_counts``, ``call_bursts`` and, for calls older
        than the baseline period behind the newest call (nothing left to count them against),
        ``rejected_events``.
        """
        if calls.height == 0:
            return {}
        self.version = max(now_ns, self.version + 1)
        new = calls.select(
            "call_id",
            "version",
            (pl.col("received_at").dt.epoch("ms") // MINUTE_MS).alias("minute"),
            "group",
            (pl.col("weight") >= CROWD_WEIGHT).alias("crowd"),
            pl.concat_list(
                pl.col("zones").list.eval(pl.struct(key=pl.element(), level=pl.lit("zone"))),
                pl.col("stations").list.eval(pl.struct(key=pl.element(), level=pl.lit("station"))),
                pl.concat_list(pl.struct(key=pl.col("district"), level=pl.lit("district"))),
                pl.concat_list(pl.struct(key=pl.lit(SITE), level=pl.lit(SITE))),
                pl.when(pl.col("group").is_in(MASS_GROUPS))
                .then(pl.concat_list(pl.struct(key=pl.lit(MASS_INCIDENT), level=pl.lit(SITE))))
                .otherwise(
                    pl.concat_list(pl.struct(key=pl.lit(SITE), level=pl.lit(SITE))).list.head(0)
                ),
            ).alias("keys"),
        ).cast(_STATE)
        before = self.watermark
        newest = int(new["minute"].max())  # type: ignore[arg-type]
        self.watermark = newest if self.watermark is None else max(self.watermark, newest)
        too_old = new["minute"] < self._oldest()
        new = new.filter(~too_old)
        previous = self.calls.join(new.select("call_id"), on="call_id", how="semi")
        self.calls = (
            pl.concat([self.calls, new])
            .sort("version")
            .unique("call_id", keep="last", maintain_order=True)
        )
        tables = self._changed(pl.concat([previous, new]), before)
        if too_old.any():
            tables["rejected_events"] = self._too_old(calls.filter(too_old), now_ns)
        return tables

    def advance(self, minute: int, now_ns: int) -> dict[str, pl.DataFrame]:
        """Move the clock to ``minute`` (epoch minutes) without a call; return changed rows.

        Counts and burst scores change when calls leave their windows, not only when calls
        arrive: the rows of the minutes passed are written, so a burst's score decays and its
        alert ends 15 minutes after its calls even when no further call comes. The clock is
        any source's event time (or the wall clock, live); it never moves back.
        """
        if self.watermark is None or minute <= self.watermark:
            return {}
        self.version = max(now_ns, self.version + 1)
        before, self.watermark = self.watermark, minute
        return self._changed(self.calls.clear(), before)

    def _oldest(self) -> int:
        """The oldest minute kept: the baseline weeks and an hour behind the watermark."""
        assert self.watermark is not None
        return self.watermark - self.params.baseline_weeks * WEEK_HOURS * 60 - 60

    def _changed(self, changed: pl.DataFrame, before: int | None) -> dict[str, pl.DataFrame]:
        """Rows at the points ``changed`` calls touch, and where calls left a window since."""
        self.calls = self.calls.filter(pl.col("minute") >= self._oldest())
        if self.calls.height == 0:
            return {}
        first = int(self.calls["minute"].min()) * MINUTE_MS // HOUR_MS  # type: ignore[arg-type]
        self.first_hour = first if self.first_hour is None else min(self.first_hour, first)
        exploded = self._exploded(self.calls)
        touched = self._exploded(changed)
        burst_offsets = self.params.offsets()
        if before is not None and before < (self.watermark or 0):
            # windows the calls of the longest window left while the clock moved from `before`
            horizon = max(WINDOWS[-1], burst_offsets[-1])
            leaving = self._exploded(self.calls.filter(pl.col("minute") > before - horizon))
        else:
            leaving = touched.clear()
        return {
            "call_counts": self._counts(
                exploded, self._points(touched, leaving, (0, *WINDOWS), before)
            ),
            "call_bursts": self._bursts(
                exploded,
                self._points(touched, leaving, burst_offsets, before).select(
                    "key", "level", "point"
                ),
            ),
        }

    def _too_old(self, calls: pl.DataFrame, now_ns: int) -> pl.DataFrame:
        """Calls older than the baseline period, as ``rejected_events`` rows (scrubbed fields)."""
        weeks = self.params.baseline_weeks
        return calls.select(
            pl.lit(now_ns // 1_000_000).cast(pl.Datetime("ms", "UTC")).alias("received_at"),
            pl.col("source"),
            pl.format("call {} v{}", "call_id", "version").alias("position"),
            pl.lit(
                f"older than the {weeks}-week baseline behind the newest call: not counted"
            ).alias("reason"),
            pl.struct(
                "call_id",
                pl.col("received_at").dt.to_string(),
                "group",
                "district",
            )
            .struct.json_encode()
            .alias("payload"),
        ).cast(REJECTED_SCHEMA)

    @staticmethod
    def _exploded(calls: pl.DataFrame) -> pl.DataFrame:
        return (
            calls.with_row_index("call")
            .explode("keys")
            .unnest("keys")
            .select("key", "level", "group", "crowd", "minute", "call")
        )

    def _points(
        self,
        touched: pl.DataFrame,
        leaving: pl.DataFrame,
        offsets: tuple[int, ...],
        before: int | None,
    ) -> pl.DataFrame:
        """Minutes to write, up to the watermark.

        Every offset of the touched calls, and the offsets of ``leaving`` calls that the clock
        passed since ``before``.
        """
        assert self.watermark is not None

        def at(calls: pl.DataFrame) -> pl.DataFrame:
            return calls.select(
                "key",
                "level",
                "group",
                pl.concat_list([pl.col("minute") + o for o in offsets]).alias("point"),
            ).explode("point")

        passed = at(leaving).filter(pl.col("point") > (before if before is not None else 0))
        return pl.concat([at(touched), passed]).filter(pl.col("point") <= self.watermark).unique()

    def _rows(self, parts: list[pl.DataFrame], schema: pl.Schema) -> pl.DataFrame:
        """The parts as one frame of ``schema``: ``ts`` from epoch ms, this update's version."""
        if not parts:
            return pl.DataFrame(schema=schema)
        return (
            pl.concat(parts)
            .with_columns(
                pl.col("ts").cast(pl.Datetime("ms", "UTC")), pl.lit(self.version).alias("version")
            )
            .cast(schema)
        )

    def _counts(self, exploded: pl.DataFrame, points: pl.DataFrame) -> pl.DataFrame:
        by_series = exploded.partition_by("key", "level", "group", as_dict=True)
        out = []
        for (key, level, group), at in points.group_by("key", "level", "group"):
            # a series can be empty: an updated call left its old group, or calls aged out
            series = by_series.get((key, level, group))
            minutes = (
                np.sort(series["minute"].to_numpy())
                if series is not None
                else np.zeros(0, np.int64)
            )
            p = at["point"].to_numpy()
            upto = np.searchsorted(minutes, p, side="right")
            counts = {
                f"calls_{w}m": upto - np.searchsorted(minutes, p - w, side="right") for w in WINDOWS
            }
            out.append(
                pl.DataFrame(
                    {"key": key, "level": level, "group": group, "ts": p * MINUTE_MS, **counts}
                )
            )
        return self._rows(out, COUNT_SCHEMA)

    def _bursts(self, exploded: pl.DataFrame, points: pl.DataFrame) -> pl.DataFrame:
        """Scores where a burst count changed: at arrivals and as calls leave each window."""
        scored = pl.col("crowd") | (pl.col("key") == MASS_INCIDENT)
        rows = exploded.filter(scored)
        crowd = rows.partition_by("key", "level", as_dict=True)
        points = points.unique()
        series = {(str(k), str(lv)) for k, lv in points.select("key", "level").unique().iter_rows()}
        parents = parent_areas(rows.filter(pl.col("crowd")), series)
        sorted_minutes: dict[tuple[str, str], npt.NDArray[np.int64]] = {}

        def minutes_of(key: str, level: str) -> npt.NDArray[np.int64]:
            if (key, level) not in sorted_minutes:
                calls = crowd.get((key, level))
                sorted_minutes[key, level] = (
                    np.sort(calls["minute"].to_numpy())
                    if calls is not None
                    else np.zeros(0, np.int64)
                )
            return sorted_minutes[key, level]

        out = []
        for (key, level), at in points.group_by("key", "level"):
            p = at["point"].to_numpy()
            assert self.first_hour is not None
            params = self.params.for_level(str(level))
            chain = [minutes_of(*area) for area in area_chain((str(key), str(level)), parents)]
            burst = burst_scores(
                minutes_of(str(key), str(level)), p, self.first_hour, params, chain
            )
            out.append(
                pl.DataFrame(
                    {
                        "key": key,
                        "level": level,
                        "ts": p * MINUTE_MS,
                        "observed_15m": burst.observed_15,
                        "expected_15m": burst.expected_15,
                        "score": burst.score,
                        "alert": burst.alert.astype(np.uint8),
                    }
                )
            )
        return self._rows(out, BURST_SCHEMA)
