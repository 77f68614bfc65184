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
drops the largest week, so one earlier burst does not raise the baseline — never below
``floor_per_hour``. Several windows are scored and the largest score counts, less the log of
their number (`burst_scores`): 15 and 60 minutes for a zone, station or district (a sudden
cluster); up to 12 hours site-wide (a storm that doubles a county's calls for hours shows in
no 15 minutes). An alert needs ``score ≥ threshold`` (4 locally: one chance in 10,000 under
the background; 3 site-wide, where one series is judged, not hundreds) and at least
``min_calls`` calls in the window. The score is computed at every minute a crowd-relevant
call arrives, so a surge is flagged at the call that makes it one, and re-scored when calls
leave the window. Weeks are counted in hours since the epoch, so a clock change shifts the
slot by an hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import polars as pl

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
    """``-log10 P(X >= observed)`` for X ~ Poisson(lam), elementwise (0 where observed is 0)."""
    cdf = np.zeros(observed.shape, dtype=np.float64)
    top = int(observed.max(initial=0))
    for i in range(top):
        term = np.exp(-lam + i * np.log(lam) - math.lgamma(i + 1))
        cdf += np.where(i < observed, term, 0.0)
    tail = np.clip(1.0 - cdf, 1e-300, 1.0)
    return np.where(observed > 0, -np.log10(tail), 0.0)


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
    site_threshold: float = 3.0
    site_windows: tuple[int, ...] = (15, 60, 180, 360, 720)

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
        )

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
) -> npt.NDArray[np.float64]:
    """Expected calls per hour at ``hours``: the same hour of the previous ``weeks`` weeks.

    ``hourly`` counts calls per hour from hour 0; a trimmed mean over the weeks the series
    already covers drops the largest week once there are three or more, so one earlier burst
    does not raise the baseline. The mean is shrunk toward ``prior`` (calls per hour), as if
    that were ``prior_weeks`` more weeks: a slot seen in one or two weeks says little (0 or 3
    calls by chance), and a new site or a quiet zone is not judged against nothing.
    """
    past = hours[:, None] - WEEK_HOURS * np.arange(1, weeks + 1)[None, :]
    seen = past >= 0
    counts = np.where(seen, hourly[np.clip(past, 0, hourly.size - 1)] * (past < hourly.size), 0)
    n = seen.sum(axis=1)
    trim = n >= 3
    total = counts.sum(axis=1) - np.where(trim, counts.max(axis=1, initial=0), 0)
    kept = n - trim
    return np.asarray((total + prior_weeks * prior) / (kept + prior_weeks))


def mean_rate_before(
    hourly: npt.NDArray[np.int64], hours: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """The series' mean calls per hour over all hours before each of ``hours``."""
    before = np.clip(hours, 0, hourly.size)
    so_far = np.concatenate([[0], np.cumsum(hourly)])[before]
    return np.asarray(np.divide(so_far, before, out=np.zeros(hours.size), where=before > 0))


def burst_scores(
    minutes: npt.NDArray[np.int64],
    points: npt.NDArray[np.int64],
    first_hour: int,
    params: BurstParams,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Burst score of one series at ``points`` (epoch minutes); ``minutes`` its sorted calls.

    Each window ``w`` of ``params.windows`` counts the calls in the ``w`` minutes up to a point
    and scores them against the expected count over the same minutes (`weekly_rate`, never below
    ``floor_per_hour``) as a Poisson tail surprise, with counts and expectation divided by
    ``params.dispersion`` (quasi-Poisson: real call counts vary more than Poisson counts). The
    score is the largest window's, less ``log10(len(windows))`` (Bonferroni: looking at three
    windows is three chances). A short window catches a sudden cluster, a long one a storm
    that doubles the calls for hours. Points in the stream's first hour score 0.

    Returns:
        Calls in the last 15 minutes, the calls expected in them, and the score.
    """
    hourly = np.bincount(minutes // 60 - first_hour, minlength=1)
    best = np.zeros(points.size)
    observed_15 = np.zeros(points.size, dtype=np.int64)
    expected_15 = np.zeros(points.size)
    upto = np.searchsorted(minutes, points, side="right")
    prior = mean_rate_before(hourly, points // 60 - first_hour)
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
            rate = weekly_rate(
                hourly, hour - first_hour, params.baseline_weeks, prior, params.prior_weeks
            )
            expected += np.where(overlap > 0, rate * overlap / 60, 0.0)
        expected = np.maximum(expected, params.floor_per_hour * window / 60)
        score = poisson_surprise(
            np.floor(observed / params.dispersion).astype(np.int64), expected / params.dispersion
        )
        if window in params.windows:
            best = np.maximum(best, np.where(observed >= params.min_calls, score, 0.0))
        if window == 15:
            observed_15, expected_15 = observed, expected
    # in the first hour of the stream nothing is known yet: no score
    known = points // 60 - first_hour >= 1
    score = np.where(known, np.maximum(best - math.log10(len(params.windows)), 0.0), 0.0)
    return observed_15, expected_15, score


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

        The changed rows come per table.
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
        previous = self.calls.join(new.select("call_id"), on="call_id", how="semi")
        self.calls = (
            pl.concat([self.calls, new])
            .sort("version")
            .unique("call_id", keep="last", maintain_order=True)
        )
        newest = int(self.calls["minute"].max())  # type: ignore[arg-type]
        self.watermark = newest if self.watermark is None else max(self.watermark, newest)
        oldest = self.watermark - self.params.baseline_weeks * WEEK_HOURS * 60 - 60
        self.calls = self.calls.filter(pl.col("minute") >= oldest)
        first = int(self.calls["minute"].min()) * MINUTE_MS // HOUR_MS  # type: ignore[arg-type]
        self.first_hour = first if self.first_hour is None else min(self.first_hour, first)

        changed = pl.concat([previous, new])
        exploded = self._exploded(self.calls)
        touched = self._exploded(changed)
        return {
            "call_counts": self._counts(exploded, touched),
            "call_bursts": self._bursts(exploded, touched),
        }

    @staticmethod
    def _exploded(calls: pl.DataFrame) -> pl.DataFrame:
        return (
            calls.explode("keys").unnest("keys").select("key", "level", "group", "crowd", "minute")
        )

    def _points(self, touched: pl.DataFrame, offsets: tuple[int, ...]) -> pl.DataFrame:
        assert self.watermark is not None
        return (
            touched.select(
                "key",
                "level",
                "group",
                pl.concat_list([pl.col("minute") + o for o in offsets]).alias("point"),
            )
            .explode("point")
            .filter(pl.col("point") <= self.watermark)
            .unique()
        )

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

    def _counts(self, exploded: pl.DataFrame, touched: pl.DataFrame) -> pl.DataFrame:
        points = self._points(touched, (0, *WINDOWS))
        by_series = exploded.partition_by("key", "level", "group", as_dict=True)
        out = []
        for (key, level, group), at in points.group_by("key", "level", "group"):
            minutes = np.sort(by_series[(key, level, group)]["minute"].to_numpy())
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

    def _bursts(self, exploded: pl.DataFrame, touched: pl.DataFrame) -> pl.DataFrame:
        """Scores where a crowd-relevant count changed: at arrivals and 15 minutes later."""
        scored = pl.col("crowd") | (pl.col("key") == MASS_INCIDENT)
        crowd = exploded.filter(scored).partition_by("key", "level", as_dict=True)
        points = self._points(touched, (0, 15)).select("key", "level", "point").unique()
        out = []
        for (key, level), at in points.group_by("key", "level"):
            series = crowd.get((key, level))
            minutes = (
                np.sort(series["minute"].to_numpy())
                if series is not None
                else np.zeros(0, np.int64)
            )
            p = at["point"].to_numpy()
            assert self.first_hour is not None
            params = self.params.for_level(level)
            observed, lam, score = burst_scores(minutes, p, self.first_hour, params)
            alert = score >= params.threshold
            out.append(
                pl.DataFrame(
                    {
                        "key": key,
                        "level": level,
                        "ts": p * MINUTE_MS,
                        "observed_15m": observed,
                        "expected_15m": lam,
                        "score": score,
                        "alert": alert.astype(np.uint8),
                    }
                )
            )
        return self._rows(out, BURST_SCHEMA)
