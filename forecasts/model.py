"""Hourly crowd forecasts: recent history, the site's calendar, calibrated bands.

A forecast on the transformed scale (``sqrt`` by default) is a blend of four forecasts of the
ordinary crowd, plus the effect of the site's event windows:

- **Prophet** fitted on the last ``history_weeks`` weeks: a daily pattern per day type
  (workdays, working Fridays, plain Saturdays, other days off — Sundays and the public holidays
  of the site's ``country``/``subdivision``, from the ``holidays`` package; adjusted working days
  count as workdays), a level per day type, weekly seasonality and the public holidays as Prophet
  holidays. A year-long history averages commuter peaks away; twelve weeks keep them (backtest
  in the README).
- **Two robust seasonal baselines**: the median of the last ``baseline_weeks`` same-weekday
  values at the same hour, and the median of the same hour on the last ``daytype_days`` days of
  the same day type (Monday to Thursday are one: eight values from two weeks where the
  same-weekday median has two), both skipping hours in event windows and days whose day type
  differs from their weekday's usual one (a holiday Monday), both scaled to the level of the
  last ``level_days``. On such a day itself the blend uses Prophet alone.
- **The latest days' departure carried over**: the same-weekday baseline plus, hour by hour,
  the median departure from it of the up to ``carryover_days`` days right before the forecast
  day that are working days (or days off) like it, in a row (a Thursday takes Monday to
  Wednesday, a Monday nothing): a shift that lasts shows on the next day. Its share is at most
  ``carryover_share``. A day that matches its baseline far better an hour earlier or later (a
  counter's clock an hour off after a change of daylight saving time) is left out.
- **Event windows** (start and end in local time, a kind, an optional expected attendance) are
  hour-level regressors with one coefficient per kind, fitted on the whole history given (not
  only the recent weeks: a New Year's Eve comes once a year) against the baseline's residuals.
  A window's regressor is its attendance over the kind's median attendance (1 without one).
  Hours inside event windows are left out of Prophet's and the baseline's fit.

``yhat`` is the blend of the four (shares summing to 1) + event effects, transformed back and
clipped at 0. A second Prophet is fitted on the history before the last ``calibration_days``;
it and the baselines (each day from its own midnight) forecast those days out of sample. The
shares are the ones, in steps of 0.1, whose blend had the least absolute error on those days
(per series: a metro station follows its weekday, a shopping street its last fortnight), and
the 80 % band is ``yhat`` plus the empirical quantiles of that blend's errors (split-conformal,
on the transformed scale, so it widens with the level). There is no fixed widening factor. In
an event window the band is at least as wide as the kind's past windows strayed from its one
effect (the conformal quantiles of those hours' residuals).

The ordinary fit leaves out event windows, unusual days (holidays, bridge days) and absurd hours
(above ``ABSURD_FACTOR`` times the series' 99th percentile: a glitch, not a crowd).

A series with too little recent history or a long gap in its recent history (gaps further back
do not matter), or one Prophet fails on, gets the weekly seasonal-naive forecast instead
(`method` says which, `fallback_reason` why).

Models are saved as JSON: Prophet's ``model_to_json`` plus the config, the baseline's tail and
the calibrated errors, never pickled.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from functools import cache
from typing import Any, Literal

import holidays  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

Transform = Literal["log1p", "sqrt", "none"]
Method = Literal["prophet", "seasonal_naive"]

WEEK = pd.Timedelta(days=7)
#: Past weeks the seasonal-naive forecast and its interval look back on.
NAIVE_WEEKS = 4
JSON_VERSION = 5
# A window's attendance scale is kept within [1/MAX_EVENT_SCALE, MAX_EVENT_SCALE] of its kind's
# usual draw: the effect is fit on windows near their kind's median, so a window 10 times larger
# (or an extra zero typed in the site file) would stretch it far past anything seen.
MAX_EVENT_SCALE = 4.0
# An ordinary hour above this many times the 99th percentile of a series' ordinary hours is a
# glitch, not a crowd: it is left out of the fit like a gap (`_clean`).
ABSURD_FACTOR = 100.0
DAY = timedelta(days=1)


@dataclass(frozen=True)
class EventWindow:
    """A known event at the site: from ``start`` to ``end`` (naive local time), of a ``kind``.

    ``attendance`` is the expected number of people, when known; windows of one kind with a
    larger attendance get a proportionally larger effect.
    """

    start: datetime
    end: datetime
    kind: str
    attendance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (times as ISO strings)."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "kind": self.kind,
            "attendance": self.attendance,
        }

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> EventWindow:
        """Inverse of `to_dict`."""
        return cls(
            datetime.fromisoformat(fields["start"]),
            datetime.fromisoformat(fields["end"]),
            str(fields["kind"]),
            fields.get("attendance"),
        )


def day_windows(days: Sequence[date], kind: str = "event_day") -> tuple[EventWindow, ...]:
    """Whole-day event windows (00:00 to 24:00) of ``kind`` for ``days``."""
    return tuple(
        EventWindow(datetime.combine(day, dtime()), datetime.combine(day, dtime()) + DAY, kind)
        for day in sorted(set(days))
    )


@dataclass(frozen=True)
class ForecastConfig:
    """How a series is forecast.

    Attributes:
        freq: Step of the series (``ds`` is on this grid; missing steps count as gaps).
        interval_width: Nominal coverage of ``yhat_lower``..``yhat_upper``.
        transform: Scale ``y`` is fitted on; forecasts are transformed back and clipped at 0.
        min_history_days: Less recent history than this gets the seasonal-naive forecast.
        country: ``holidays`` country code for public holidays and adjusted working days
            (None: no public holidays, weekends off).
        subdivision: ``holidays`` subdivision code (a state, province or region) or None.
        events: The site's event windows (`EventWindow`), past and coming.
        history_weeks: Weeks of recent history Prophet and the gap check see (0: all). Longer
            histories average the daily pattern over seasons and smooth commuter peaks away;
            shorter ones leave Prophet too little to tell day types apart.
        baseline_weeks: Same-weekday values the baseline takes the median of.
        daytype_days: Values the day-type baseline takes the median of: the same hour on the
            latest days of the same day type (0: off). Monday to Thursday are one day type,
            so eight of them are two weeks, where the same-weekday median has two values.
        prophet_weight: Prophet's share of the blend, the same-weekday baseline having the
            rest; None (the default): the shares of Prophet, the two baselines and the
            carried-over departure are chosen per series on the calibration days
            (`choose_weights`).
        calibration_days: Recent days forecast out of sample to calibrate the band. More days
            give steadier quantiles but a calibration model further from the present.
        calibration_level: Share of the calibration errors the band spans. Above
            ``interval_width`` on purpose: a week of recent errors rarely holds the odd bad day
            (a storm, a holiday, a shock) that the next day may be, and bands spanning 80 % of
            them covered 74-77 % of the backtest actuals on all three shared sets.
        carryover_days: The fourth component is the same-weekday baseline plus the median
            departure from it of up to this many days right before the forecast day that are
            of its kind (working day or day off) in a row (0: off): a shift that lasts, such
            as the weeks before a festival, or a season turning, shows on the next day.
        carryover_share: The most of the blend that component may take: it copies recent
            days' hours, and an odd day (a storm, a clock an hour off) with them.
        shift_guard: A day whose absolute departure from its baseline, moved an hour earlier
            or later, falls below this share of the unmoved one is not carried over: its
            clock was an hour off (the Auckland counters ran an hour early for two days
            after daylight saving time began), and carrying it would move the next day's
            peaks too (0: off).
        refit: Fit Prophet a second time on the whole recent history for the forecast. Off,
            the calibration model (fitted before the last ``calibration_days``) forecasts
            too: one fit instead of two, and the band is calibrated on exactly the model that
            forecasts.
        level_days: The baseline is scaled to the level of the last this many days against
            their own baseline (0: off), so that it follows a season ramping up or down.
        max_gap_hours: History before a longer run of missing steps is left out (Prophet
            would interpolate the trend across it); when too little is left after it, the
            seasonal-naive forecast is used.
        changepoint_prior_scale: Prophet's trend flexibility.
        daily_fourier_order: Fourier order of each daily seasonality.
        weekly_fourier_order: Fourier order of the weekly seasonality.
        day_types: The day types that each get a daily seasonality (`DAY_TYPES`).
        day_levels: Also fit a level per day type (a 0/1 regressor), as daily Fourier terms
            average 0 over a day and the smooth weekly term cannot move one day alone.
        seasonality_prior_scale: Prophet's prior on seasonality and holiday effects.
    """

    freq: str = "1h"
    interval_width: float = 0.8
    transform: Transform = "sqrt"
    min_history_days: int = 14
    country: str | None = "CN"
    subdivision: str | None = None
    events: tuple[EventWindow, ...] = ()
    history_weeks: int = 12
    baseline_weeks: int = 4
    daytype_days: int = 8
    prophet_weight: float | None = None
    calibration_days: int = 7
    calibration_level: float = 0.85
    level_days: int = 7
    carryover_days: int = 3
    carryover_share: float = 0.5
    shift_guard: float = 0.6
    refit: bool = True
    max_gap_hours: int = 24
    changepoint_prior_scale: float = 0.01
    daily_fourier_order: int = 10
    weekly_fourier_order: int = 3
    day_types: Literal["workday_offday", "workday_friday_saturday_offday"] = (
        "workday_friday_saturday_offday"
    )
    day_levels: bool = True
    seasonality_prior_scale: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (event windows as dicts)."""
        fields = asdict(self)
        fields["events"] = [event.to_dict() for event in self.events]
        return fields

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ForecastConfig:
        """Inverse of `to_dict`."""
        values = dict(fields)
        values["events"] = tuple(EventWindow.from_dict(e) for e in values["events"])
        return cls(**values)


@dataclass(frozen=True)
class FitResult:
    """One series fitted by `fit_many`: its model as JSON, or the error that stopped it."""

    key: str
    model_json: str | None
    method: str | None
    seconds: float
    error: str | None = None
    effects: dict[str, float] = field(default_factory=dict)
    fallback_reason: str | None = None  # why the seasonal-naive forecast was fitted


def quiet_prophet_logging() -> None:
    """Keep cmdstanpy's and Prophet's routine messages out of the output.

    Both log every fit at INFO; Prophet also logs at ERROR when plotly is missing (plotting is
    not used here). When Stan's L-BFGS stops early (a short or flat history: 5 of 80 Hangzhou
    stations' outflow from 16 January), cmdstanpy logs "Chain [1] error: code '1' Operation
    not permitted" (the exit code read as an OS error) and Prophet, at WARNING, that it falls
    back to Newton; the fit then goes on, and where Newton fails too the exception is the
    forecast's `Forecaster.fallback_reason`. So cmdstanpy says nothing below CRITICAL and
    Prophet's model code nothing below ERROR.
    """
    # cmdstanpy configures its logger (level DEBUG, an INFO handler) the first time it is asked
    # for it, so ask first and raise it afterwards.
    from cmdstanpy.utils import get_logger  # type: ignore[import-untyped, unused-ignore]

    get_logger().setLevel(logging.CRITICAL)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    logging.getLogger("prophet.models").setLevel(logging.ERROR)
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)


@contextmanager
def _prophet_warnings_ignored() -> Iterator[None]:
    # Prophet 1.1/1.5 calls pandas APIs that pandas 3 deprecates; the warnings are Prophet's to
    # fix and would otherwise fail a test run that treats warnings as errors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"prophet\.")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"prophet\.")
        yield


FloatArray = npt.NDArray[np.float64]


def _transform(y: FloatArray, kind: Transform) -> FloatArray:
    if kind == "log1p":
        return np.log1p(y)
    if kind == "sqrt":
        return np.sqrt(y)
    return y


def _inverse(v: FloatArray, kind: Transform) -> FloatArray:
    if kind == "log1p":
        out = np.expm1(v)
    elif kind == "sqrt":
        out = np.square(np.clip(v, 0.0, None))
    else:
        out = v
    return np.clip(out, 0.0, None)


def _calendar(country: str | None, subdivision: str | None, years: range) -> Any:
    return _cached_calendar(country, subdivision, years.start, years.stop)


@cache
def _cached_calendar(country: str | None, subdivision: str | None, first: int, stop: int) -> Any:
    # built once per process: a fit asks for the calendar of its dates a dozen times
    if country is None:
        return holidays.HolidayBase(years=list(range(first, stop)))
    return holidays.country_holidays(country, subdiv=subdivision, years=list(range(first, stop)))


def _unique_days(ds: pd.Series) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.intp]]:
    """The distinct days of ``ds`` (sorted) and, for each ``ds``, the index of its day."""
    days = pd.to_datetime(ds).to_numpy().astype("datetime64[D]")
    unique, inverse = np.unique(days, return_inverse=True)
    return unique, inverse.reshape(-1)


def workdays(
    ds: pd.Series, country: str | None, subdivision: str | None = None
) -> npt.NDArray[np.bool_]:
    """True where ``ds`` falls on a working day of ``country`` (and ``subdivision``).

    Weekends and public holidays are days off; adjusted working days (a weekend day worked in
    exchange for a longer holiday) are workdays. Without a country only weekends are off.
    """
    unique, inverse = _unique_days(ds)
    days = pd.DatetimeIndex(unique)
    calendar = _calendar(country, subdivision, range(days.min().year, days.max().year + 1))
    working = np.array([calendar.is_working_day(day.date()) for day in days], dtype=bool)
    return working[inverse]


def holiday_frame(config: ForecastConfig, first_year: int, last_year: int) -> pd.DataFrame:
    """Prophet's ``holidays`` frame: the public holidays of the years."""
    calendar = _calendar(config.country, config.subdivision, range(first_year, last_year + 1))
    rows = [(str(name), pd.Timestamp(day)) for day, name in sorted(calendar.items())]
    return pd.DataFrame(rows, columns=["holiday", "ds"])


#: The day types of each `ForecastConfig.day_types` choice; each gets its own daily pattern.
DAY_TYPES: dict[str, tuple[str, ...]] = {
    "workday_offday": ("workday", "offday"),
    "workday_friday_saturday_offday": ("workday", "friday", "saturday", "offday"),
}
#: The usual day type of each weekday (Monday first), without holidays.
USUAL_DAY_TYPES: dict[str, tuple[str, ...]] = {
    "workday_offday": ("workday",) * 5 + ("offday",) * 2,
    "workday_friday_saturday_offday": ("workday",) * 4 + ("friday", "saturday", "offday"),
}


def day_types(ds: pd.Series, config: ForecastConfig) -> pd.Series:
    """The day type of each ``ds``: one of ``DAY_TYPES[config.day_types]``.

    ``workday`` and ``offday`` follow `workdays` (adjusted working days are workdays). With
    four types a working Friday is ``friday`` (the evening peak differs) and a Saturday that is
    no public holiday is ``saturday`` (some people work: a morning peak a Sunday has not).
    """
    unique, inverse = _unique_days(ds)
    days = pd.DatetimeIndex(unique)
    working = workdays(pd.Series(days), config.country, config.subdivision)
    labels = np.where(working, "workday", "offday").astype(object)
    if config.day_types == "workday_friday_saturday_offday":
        weekday = days.day_of_week.to_numpy()
        calendar = _calendar(
            config.country, config.subdivision, range(days.min().year, days.max().year + 1)
        )
        holiday = np.array([day.date() in calendar for day in days], dtype=bool)
        labels[working & (weekday == 4)] = "friday"
        labels[~working & (weekday == 5) & ~holiday] = "saturday"
    return pd.Series(labels[inverse], index=pd.RangeIndex(len(inverse)), dtype=object)


def usual_days(index: pd.DatetimeIndex, config: ForecastConfig) -> npt.NDArray[np.bool_]:
    """True where a time's day type is its weekday's usual one (not a holiday or swapped day)."""
    labels = day_types(pd.Series(index), config).to_numpy()
    usual = np.asarray(USUAL_DAY_TYPES[config.day_types], dtype=object)[index.day_of_week]
    return np.asarray(labels == usual, dtype=bool)


def event_regressors(
    index: pd.DatetimeIndex, events: Sequence[EventWindow], freq: str = "1h"
) -> dict[str, FloatArray]:
    """One regressor per event kind on ``index``: a window's scale in the steps it overlaps.

    A window's scale is its attendance over the median attendance of its kind's windows that
    have one (1 when it or its kind has none), kept within 1/``MAX_EVENT_SCALE`` to
    ``MAX_EVENT_SCALE``. Overlapping windows of one kind add up.
    """
    step = pd.Timedelta(freq)
    reference: dict[str, float] = {}
    for kind in {e.kind for e in events}:
        given = [e.attendance for e in events if e.kind == kind and e.attendance]
        reference[kind] = float(np.median(given)) if given else 1.0
    columns: dict[str, FloatArray] = {}
    for event in events:
        column = columns.setdefault(event.kind, np.zeros(len(index)))
        # steps [t, t + step) that overlap [start, end)
        lo = int(index.searchsorted(pd.Timestamp(event.start) - step, side="right"))
        hi = int(index.searchsorted(pd.Timestamp(event.end), side="left"))
        scale = event.attendance / reference[event.kind] if event.attendance else 1.0
        scale = min(max(scale, 1 / MAX_EVENT_SCALE), MAX_EVENT_SCALE)
        column[lo:hi] += scale
    return columns


def in_event_windows(
    index: pd.DatetimeIndex, events: Sequence[EventWindow], freq: str = "1h"
) -> npt.NDArray[np.bool_]:
    """Whether each step of ``index`` (sorted, naive local time) overlaps an event window."""
    inside = np.zeros(len(index), dtype=bool)
    for column in event_regressors(index, events, freq).values():
        inside |= column > 0
    return inside


def _with_conditions(frame: pd.DataFrame, config: ForecastConfig) -> pd.DataFrame:
    labels = day_types(frame["ds"], config).to_numpy()
    columns: dict[str, Any] = {}
    for kind in DAY_TYPES[config.day_types]:
        columns[kind] = labels == kind
        if config.day_levels and kind != "workday":
            columns[f"level_{kind}"] = (labels == kind).astype(float)
    return frame.assign(**columns)


def regular_y(history: pd.DataFrame, freq: str) -> pd.Series:
    """``y`` on the full ``freq`` grid from the first to the last observation (gaps are NaN)."""
    missing = {"ds", "y"} - set(history.columns)
    if missing:
        raise ValueError(f"history needs columns ds and y; missing {sorted(missing)}")
    ds = pd.to_datetime(history["ds"])
    if ds.dt.tz is not None:
        raise ValueError("history ds must be naive local time; got a time zone, drop it first")
    y = pd.Series(pd.to_numeric(history["y"], errors="coerce").to_numpy(float), index=ds)
    y = y[y.notna()]
    if y.empty:
        raise ValueError("history has no observations (every y is missing)")
    if y.index.has_duplicates:
        raise ValueError("history has duplicate ds; aggregate to one row per step first")
    y = y.sort_index()
    grid = pd.date_range(y.index[0], y.index[-1], freq=freq)
    if not y.index.isin(grid).all():
        raise ValueError(f"history ds is not on a regular {freq} grid")
    return y.reindex(grid)


def _nanoseconds(times: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
    """``times`` as nanoseconds since the epoch, whatever the index's unit."""
    return np.asarray(times.as_unit("ns").asi8)


def _at(z: pd.Series, times: pd.DatetimeIndex | npt.NDArray[np.int64]) -> FloatArray:
    """``z.reindex(times)`` as floats, looked up by position when ``z`` is on a regular grid.

    ``times`` may be nanoseconds since the epoch (`_nanoseconds`). The baselines look a series
    up at a few thousand lagged times a fit, and pandas' lookup by label took 60 % of their
    time; on a grid, a time's position is arithmetic.
    """
    stamps = _nanoseconds(times) if isinstance(times, pd.DatetimeIndex) else times
    grid = _nanoseconds(z.index)
    step = int(grid[1] - grid[0]) if len(grid) > 1 else 0
    if step <= 0 or (z.index.freq is None and not (np.diff(grid) == step).all()):
        return np.asarray(z.reindex(pd.DatetimeIndex(stamps)).to_numpy(float))
    offset = stamps - grid[0]
    position = offset // step
    hit = (offset % step == 0) & (position >= 0) & (position < len(grid))
    out = np.full(len(stamps), np.nan)
    out[hit] = z.to_numpy(float)[position[hit]]
    return out


def _after_last_gap(y: pd.Series, longest: pd.Timedelta) -> tuple[pd.Series, pd.Timedelta | None]:
    """``y`` from its first observation after the last run of missing steps over ``longest``.

    Prophet would draw its trend across a long gap; the history before it is left out instead
    (a gap far back costs nothing). Returns the rest and that gap (None when there is none).
    """
    observed = y.index[y.notna().to_numpy()]
    if len(observed) == 0:
        return y.iloc[:0], None
    step = y.index.freq or pd.Timedelta(hours=1)
    jumps = observed[1:] - observed[:-1] - pd.Timedelta(step)
    long = np.flatnonzero(jumps > longest)
    if len(long) == 0:
        return y[observed[0] :], None
    last = long[-1]
    return y[observed[last + 1] :], jumps[last]


def seasonal_naive(
    tail: pd.Series, future: pd.DatetimeIndex, interval_width: float
) -> pd.DataFrame:
    """Weekly seasonal-naive forecast: the value one week earlier, with an empirical interval.

    ``yhat`` at ``t`` is the observed value at ``t - k`` weeks for the smallest ``k >= 1`` that
    is observed (beyond one week ahead that is last week's value again). The interval adds to
    ``yhat`` the ``(1 - w) / 2`` and ``(1 + w) / 2`` quantiles of the one-week-lag errors
    ``y(t) - y(t - 1 week)`` observed in ``tail`` at the same time of day (all times of day
    when fewer than 8 errors are known there), clipped at 0. The errors are one-week-ahead
    errors, so the interval is too narrow for horizons beyond a week.

    Args:
        tail: ``y`` on a regular grid indexed by naive ``ds`` (NaN for gaps); at least a week.
        future: Times to forecast, after the end of ``tail``.
        interval_width: Nominal coverage of the interval.

    Returns:
        A frame with ``ds, yhat, yhat_lower, yhat_upper``.
    """
    observed = tail.dropna()
    yhat = np.full(len(future), np.nan)
    for i, t in enumerate(future):
        k = max(1, int(np.ceil((t - tail.index[-1]) / WEEK)))
        for lag in range(k, k + NAIVE_WEEKS):
            value = observed.get(t - lag * WEEK)
            if value is not None:
                yhat[i] = value
                break
    errors = (tail - tail.shift(freq=WEEK)).dropna()
    slot = errors.index.hour * 60 + errors.index.minute
    q_lo, q_hi = (1.0 - interval_width) / 2.0, (1.0 + interval_width) / 2.0
    pooled = (
        (float(errors.quantile(q_lo)), float(errors.quantile(q_hi))) if len(errors) else (0.0, 0.0)
    )
    lower = np.empty(len(future))
    upper = np.empty(len(future))
    for i, t in enumerate(future):
        same = errors[slot == t.hour * 60 + t.minute]
        lo, hi = (
            (float(same.quantile(q_lo)), float(same.quantile(q_hi))) if len(same) >= 8 else pooled
        )
        lower[i], upper[i] = yhat[i] + lo, yhat[i] + hi
    return pd.DataFrame(
        {
            "ds": future,
            "yhat": yhat,
            "yhat_lower": np.clip(np.minimum(lower, yhat), 0.0, None),
            "yhat_upper": np.maximum(upper, yhat),
        }
    )


def _seasonal_baseline(
    z: pd.Series, times: pd.DatetimeIndex, origin: pd.Timestamp | pd.DatetimeIndex, weeks: int
) -> FloatArray:
    """Median of the latest ``weeks`` same-weekday values of ``z`` at each of ``times``.

    Only values before ``origin`` (one per time, or one for all) count: the lags are the whole
    weeks that reach back before it. NaN where none of those values is known.
    """
    if len(times) == 0:
        return np.empty(0)
    stamps = _nanoseconds(times)
    origins = (
        _nanoseconds(origin)
        if isinstance(origin, pd.DatetimeIndex)
        else pd.Timestamp(origin).as_unit("ns").value
    )
    first = np.maximum(np.floor((stamps - origins) / WEEK.value).astype(int) + 1, 1)
    lagged = np.full((len(times), weeks), np.nan)
    for j in range(weeks):
        lagged[:, j] = _at(z, stamps - (first + j) * WEEK.value)
    known = np.isfinite(lagged).any(axis=1)
    out = np.full(len(times), np.nan)
    out[known] = np.nanmedian(lagged[known], axis=1)
    return out


def _daytype_baseline(
    z: pd.Series,
    times: pd.DatetimeIndex,
    origin: pd.Timestamp | pd.DatetimeIndex,
    config: ForecastConfig,
) -> FloatArray:
    """Median of ``z`` at the same hour on the latest ``daytype_days`` days of the same day type.

    Only days before ``origin`` (one per time, or one for all) count, looking back as far as
    the same-weekday baseline (``baseline_weeks`` weeks); NaN where no such value is known.
    On a workday (Monday to Thursday) that is the latest two weeks' eight values where the
    same-weekday median has two; a Friday, Saturday or Sunday gets its own weekday's values.
    """
    out = np.full(len(times), np.nan)
    if len(times) == 0 or config.daytype_days <= 0:
        return out
    span = 7 * config.baseline_weeks
    first = np.maximum(np.floor((times - origin) / DAY).to_numpy(float).astype(int) + 1, 1)
    lags = first[:, None] + np.arange(span)[None, :]  # days back, nearest first
    lagged = times.to_numpy()[:, None] - lags * np.timedelta64(1, "D")
    values = _at(z, pd.DatetimeIndex(lagged.ravel())).reshape(lagged.shape)
    own_days = times.to_numpy().astype("datetime64[D]")
    lagged_days = lagged.astype("datetime64[D]")
    unique = np.unique(np.concatenate([own_days, lagged_days.ravel()]))
    labels = day_types(pd.Series(pd.DatetimeIndex(unique)), config).to_numpy()
    own = labels[np.searchsorted(unique, own_days)]
    same = labels[np.searchsorted(unique, lagged_days)] == own[:, None]
    usable = same & np.isfinite(values)
    chosen = usable & (np.cumsum(usable, axis=1) <= config.daytype_days)
    known = chosen.any(axis=1)
    out[known] = np.nanmedian(np.where(chosen, values, np.nan)[known], axis=1)
    return out


def _usual_level(z: pd.Series, times: pd.DatetimeIndex, weeks: int) -> FloatArray:
    """What ``z`` usually is at ``times`` (each from the values before it), for event effects.

    The seasonal baseline; where an event recurs every week at the same hour (no same-weekday
    value is left), the median of the same hour on the 7 days before.
    """
    level = _seasonal_baseline(z, times, times, weeks)
    missing = ~np.isfinite(level)
    if missing.any():
        at = times[missing]
        days = np.column_stack([_at(z, at - pd.Timedelta(days=d)) for d in range(1, 8)])
        known = np.isfinite(days).any(axis=1)
        fallback = np.full(len(at), np.nan)
        fallback[known] = np.nanmedian(days[known], axis=1)
        level[missing] = fallback
    return level


@dataclass(frozen=True)
class _Blend:
    """The blend's shares, event effects and calibrated error quantiles.

    ``weights`` are the shares of Prophet, the same-weekday baseline, the day-type baseline and
    the same-weekday baseline with the latest days' departure carried over. ``event_bands`` are
    the error quantiles of each event kind's past hours around its effect: in a window of that
    kind the band is at least that wide.
    """

    effects: dict[str, float]
    lower: float
    upper: float
    calibration_points: int
    weights: tuple[float, ...] = (0.7, 0.3, 0.0, 0.0)
    event_bands: dict[str, tuple[float, float]] = field(default_factory=dict)


def _conformal(residuals: FloatArray, width: float) -> tuple[float, float]:
    """Split-conformal quantiles of the out-of-sample errors for a two-sided ``width`` band."""
    n = len(residuals)
    tail = (1.0 - width) / 2.0
    # the finite-sample correction: the (1 - tail)(n + 1)-th smallest error
    hi = min(1.0, np.ceil((1.0 - tail) * (n + 1)) / n)
    lo = max(0.0, np.floor(tail * (n + 1)) / n)
    upper = float(np.quantile(residuals, hi, method="higher"))
    lower = float(np.quantile(residuals, lo, method="lower"))
    return min(lower, 0.0), max(upper, 0.0)


class Forecaster:
    """A forecast model for one series: the Prophet/baseline blend or the seasonal-naive fallback.

    Build one with `fit` (or `from_json`); it is fitted once and only predicts afterwards.

    Attributes:
        config: How it was fitted.
        method: ``"prophet"`` (the blend) or ``"seasonal_naive"``.
        fallback_reason: Why the blend was not used, ``None`` when it was.
        last_ds: The last step of the history.
        effects: Fitted effect of each event kind on the transformed scale (per unit of
            attendance scale); empty for the seasonal-naive forecast.
        band: The calibrated error quantiles ``(lower, upper)`` on the transformed scale.
    """

    def __init__(
        self,
        config: ForecastConfig,
        method: Method,
        last_ds: pd.Timestamp,
        tail: pd.Series,
        *,
        fallback_reason: str | None = None,
        prophet: Any = None,
        blend: _Blend | None = None,
    ) -> None:
        if method == "prophet" and (prophet is None or blend is None):
            raise ValueError("a prophet Forecaster needs its fitted Prophet model and blend")
        self.config = config
        self.method: Method = method
        self.last_ds = pd.Timestamp(last_ds)
        self.fallback_reason = fallback_reason
        self._prophet = prophet
        self._tail = tail
        self._blend = blend

    @property
    def effects(self) -> dict[str, float]:
        """Event effect per kind (transformed scale); empty for the seasonal-naive forecast."""
        return dict(self._blend.effects) if self._blend else {}

    @property
    def band(self) -> tuple[float, float] | None:
        """Calibrated error quantiles on the transformed scale; None for the naive forecast."""
        return (self._blend.lower, self._blend.upper) if self._blend else None

    @classmethod
    def fit(cls, history: pd.DataFrame, config: ForecastConfig | None = None) -> Forecaster:
        """Fit the blend to ``history``, or fall back to the seasonal-naive forecast.

        Args:
            history: ``ds`` (naive local time on the ``config.freq`` grid) and ``y`` (counts);
                rows with a missing ``y`` are gaps. Give all of it: event effects are fitted on
                the whole history, the rest on the last ``config.history_weeks``.
            config: Defaults to ``ForecastConfig()``.

        Returns:
            The fitted forecaster; ``method`` and ``fallback_reason`` say what was fitted.

        Raises:
            ValueError: The history has no observations, is not on the grid, or covers less
                than one week (not even the seasonal-naive forecast is possible).
        """
        config = config or ForecastConfig()
        y = regular_y(history, config.freq)
        last_ds = y.index[-1]
        step = pd.Timedelta(config.freq)
        if y.index[-1] - y.index[0] + step < WEEK:
            raise ValueError(
                f"history covers {y.index[-1] - y.index[0] + step}, the seasonal-naive "
                "forecast needs at least a week"
            )
        tail = y[y.index > last_ds - (NAIVE_WEEKS + 1) * WEEK]
        recent = (
            y if config.history_weeks <= 0 else y[y.index > last_ds - config.history_weeks * WEEK]
        )
        recent, gap = _after_last_gap(recent, config.max_gap_hours * step)
        span = recent.index[-1] - recent.index[0] + step if len(recent) else pd.Timedelta(0)
        reason: str | None = None
        if span < pd.Timedelta(days=config.min_history_days):
            reason = f"history covers {span}, less than {config.min_history_days} days"
            if gap is not None:
                reason = (
                    f"history after a gap of {gap} (more than {config.max_gap_hours} h) covers "
                    f"{span}, less than {config.min_history_days} days"
                )
        if reason is None:
            try:
                prophet, blend = _fit_blend(y, recent, config)
            except TooLittleHistory as exc:
                reason = str(exc)
            except Exception as exc:  # Stan or Prophet failing on one series is data, not a bug
                reason = f"prophet failed: {type(exc).__name__}: {exc}"
            else:
                return cls(config, "prophet", last_ds, tail, prophet=prophet, blend=blend)
        return cls(config, "seasonal_naive", last_ds, tail, fallback_reason=reason)

    def predict(self, future: pd.DatetimeIndex | int) -> pd.DataFrame:
        """Forecast at the times of ``future`` or for the ``future`` steps after the history.

        Returns:
            ``ds, yhat, yhat_lower, yhat_upper, method``; all forecasts are >= 0.
        """
        if isinstance(future, int):
            index = pd.date_range(
                self.last_ds + pd.Timedelta(self.config.freq), periods=future, freq=self.config.freq
            )
        else:
            index = pd.DatetimeIndex(future)
        if index.tz is not None:
            raise ValueError("future must be naive local time like the history")
        if self.method == "prophet":
            frame = self._predict_blend(index)
        else:
            frame = seasonal_naive(self._tail, index, self.config.interval_width)
        frame["method"] = self.method
        return frame.reset_index(drop=True)

    def _predict_blend(self, index: pd.DatetimeIndex) -> pd.DataFrame:
        assert self._blend is not None
        config = self.config
        order = np.argsort(index.asi8, kind="stable")
        times = index[order]
        clean = _clean(self._tail, config)
        origin = self.last_ds + pd.Timedelta(config.freq)
        parts = _components(self._prophet, clean, times, origin, config)
        mid = _blend_mid(parts, self._blend.weights, times, self._blend.effects, config)
        lower, upper = _band_at(self._blend, times, config)
        back = np.empty((3, len(mid)))
        back[:, order] = (mid, mid + lower, mid + upper)
        kind = config.transform
        return pd.DataFrame(
            {
                "ds": index,
                "yhat": _inverse(back[0], kind),
                "yhat_lower": _inverse(back[1], kind),
                "yhat_upper": _inverse(back[2], kind),
            }
        )

    def to_json(self) -> str:
        """The model as JSON: Prophet's ``model_to_json``, the history tail, blend, config."""
        payload: dict[str, Any] = {
            "version": JSON_VERSION,
            "config": self.config.to_dict(),
            "method": self.method,
            "fallback_reason": self.fallback_reason,
            "last_ds": self.last_ds.isoformat(),
            "prophet": None,
            "blend": asdict(self._blend) if self._blend else None,
            "tail": {
                "start": self._tail.index[0].isoformat(),
                "y": [None if np.isnan(v) else float(v) for v in self._tail.to_numpy()],
            },
        }
        if self._prophet is not None:
            from prophet.serialize import model_to_json  # type: ignore[import-untyped, unused-ignore]

            payload["prophet"] = model_to_json(self._prophet)
        return json.dumps(payload)

    @classmethod
    def from_json(cls, text: str) -> Forecaster:
        """Load a model saved with `to_json`."""
        payload = json.loads(text)
        if payload.get("version") != JSON_VERSION:
            raise ValueError(
                f"model JSON version {payload.get('version')!r}, expected {JSON_VERSION}; "
                "refit the model (crowdwatch forecast train)"
            )
        config = ForecastConfig.from_dict(payload["config"])
        prophet = None
        if payload["prophet"] is not None:
            quiet_prophet_logging()
            from prophet.serialize import model_from_json  # type: ignore[import-untyped, unused-ignore]

            with _prophet_warnings_ignored():
                prophet = model_from_json(payload["prophet"])
        values = np.array([np.nan if v is None else v for v in payload["tail"]["y"]], float)
        index = pd.date_range(payload["tail"]["start"], periods=len(values), freq=config.freq)
        return cls(
            config,
            payload["method"],
            pd.Timestamp(payload["last_ds"]),
            pd.Series(values, index=index),
            fallback_reason=payload["fallback_reason"],
            prophet=prophet,
            blend=_blend_from_dict(payload["blend"]) if payload["blend"] else None,
        )


class TooLittleHistory(ValueError):
    """The history has too few ordinary observations for the blend (the reason says which)."""


def _clean(y: pd.Series, config: ForecastConfig) -> pd.Series:
    """``y`` on the transformed scale, NaN in event windows, on unusual days and where absurd.

    Absurd: above ``ABSURD_FACTOR`` times the 99th percentile of the ordinary hours, a glitch
    no crowd makes (one such hour in Prophet's weeks made its calibration fit, and with it the
    band, millions of people wide).
    """
    keep = usual_days(y.index, config) & ~in_event_windows(y.index, config.events, config.freq)
    ordinary = y.where(keep)
    if ordinary.notna().any():
        ceiling = ABSURD_FACTOR * float(np.nanquantile(ordinary.to_numpy(float), 0.99))
        if ceiling > 0:
            ordinary = ordinary.where(ordinary <= ceiling)
    return pd.Series(_transform(ordinary.to_numpy(float), config.transform), index=y.index)


def _recent_level(clean: pd.Series, origin: pd.Timestamp, config: ForecastConfig) -> float:
    """How the last ``level_days`` before ``origin`` compare with their own baseline.

    The sum of the observed values over the sum of what the seasonal baseline said for the
    same hours (usual, non-event hours only), within 0.5..2; 1 when switched off or unknown.
    A month's median lags a season that is ramping up or down (school holidays, December);
    this scales the baseline to the latest week's level.
    """
    if config.level_days <= 0:
        return 1.0
    window = (clean.index >= origin - pd.Timedelta(days=config.level_days)) & (clean.index < origin)
    times = clean.index[window]
    z = clean.to_numpy(float)[window]
    base = _seasonal_baseline(clean, times, times, config.baseline_weeks)
    known = np.isfinite(z) & np.isfinite(base)
    if known.sum() < 24:
        return 1.0
    expected = float(_inverse(base[known], config.transform).sum())
    if expected <= 0:
        return 1.0
    seen = float(_inverse(z[known], config.transform).sum())
    return float(np.clip(seen / expected, 0.5, 2.0))


def _blend_from_dict(fields: dict[str, Any]) -> _Blend:
    values = dict(fields)
    values["weights"] = tuple(values["weights"])
    values["event_bands"] = {k: (lo, hi) for k, (lo, hi) in values["event_bands"].items()}
    return _Blend(**values)


def _band_at(
    blend: _Blend, times: pd.DatetimeIndex, config: ForecastConfig
) -> tuple[FloatArray, FloatArray]:
    """The band's error quantiles at ``times``: the calibrated ones, wider in event windows.

    An event's hours are forecast by its kind's one effect; how far its past hours strayed from
    that (`_Blend.event_bands`) is the least the band spans there.
    """
    lower = np.full(len(times), blend.lower)
    upper = np.full(len(times), blend.upper)
    for kind, column in event_regressors(times, config.events, config.freq).items():
        if kind in blend.event_bands:
            lo, hi = blend.event_bands[kind]
            inside = column > 0
            lower[inside] = np.minimum(lower[inside], lo)
            upper[inside] = np.maximum(upper[inside], hi)
    return lower, upper


def _components(
    prophet: Any,
    clean: pd.Series,
    times: pd.DatetimeIndex,
    origin: pd.Timestamp,
    config: ForecastConfig,
    *,
    day_ahead: bool = False,
) -> FloatArray:
    """Prophet, the two baselines and the carried-over departure at sorted ``times`` (4 rows).

    On the transformed scale, from the history before ``origin``; the baselines are scaled to
    the recent level (`_recent_level`) and NaN where unknown. ``day_ahead``: the baselines,
    which need no fit, forecast each day from its own midnight instead (as they do in use;
    for the calibration days, which the calibration Prophet forecasts from ``origin``).
    """
    future = _with_conditions(pd.DataFrame({"ds": times}), config)
    with _prophet_warnings_ignored():
        trend = prophet.predict(future)["yhat"].to_numpy(float)
    parts = np.vstack([trend, np.full((3, len(times)), np.nan)])
    days = times.normalize() if day_ahead else pd.DatetimeIndex([origin] * len(times))
    for day in days.unique():
        at = np.flatnonzero(days == day)
        parts[1:, at] = _baselines(clean, times[at], max(day, origin), config)
    return parts


def _baselines(
    clean: pd.Series, times: pd.DatetimeIndex, origin: pd.Timestamp, config: ForecastConfig
) -> FloatArray:
    """The two baselines scaled to the recent level, and the first plus the carried departure.

    Three rows; the departure (`_carried_departure`) is of the days before ``origin``'s day.
    """
    bases = np.vstack(
        [
            _seasonal_baseline(clean, times, origin, config.baseline_weeks),
            _daytype_baseline(clean, times, origin, config),
        ]
    )
    ratio = _recent_level(clean, origin, config)
    bases = _scaled(bases, ratio, config)
    carried = bases[0] + _carried_departure(clean, times, origin, config, ratio)
    return np.vstack([bases, carried])


def _scaled(bases: FloatArray, ratio: float, config: ForecastConfig) -> FloatArray:
    """``bases`` (transformed scale, NaN where unknown) times ``ratio`` on the original scale."""
    if ratio == 1.0:
        return bases
    known = np.isfinite(bases)
    raw = _inverse(np.where(known, bases, 0.0), config.transform)
    return np.where(known, _transform(raw * ratio, config.transform), np.nan)


def _carried_departure(
    clean: pd.Series,
    times: pd.DatetimeIndex,
    origin: pd.Timestamp,
    config: ForecastConfig,
    ratio: float,
) -> FloatArray:
    """The latest days' departure from their same-weekday baseline, for the times of one day.

    The days are the up to ``carryover_days`` days right before ``origin``'s day that are, like
    it, working days (or, like it, days off), stopping at the first that is not: a Thursday
    takes Wednesday, Tuesday and Monday, a Monday or a Saturday nothing; a day whose clock
    looks an hour off (`_clock_shifted`, ``shift_guard``) is left out. Per hour, the median
    of their departures (transformed scale, each day against its own baseline, scaled by the
    same ``ratio``); unknown hours count as 0, and so do times on later days.
    """
    out = np.zeros(len(times))
    today = origin.normalize()
    first_day = np.asarray(times.normalize() == today)
    if config.carryover_days <= 0 or not first_day.any():
        return out
    days = pd.DatetimeIndex([today - k * DAY for k in range(config.carryover_days + 1)])
    working = workdays(pd.Series(days), config.country, config.subdivision)
    departures = []
    for k in range(1, len(days)):
        if working[k] != working[0]:
            break
        hours = pd.date_range(days[k], days[k] + DAY, freq=config.freq, inclusive="left")
        base = _seasonal_baseline(clean, hours, days[k], config.baseline_weeks)
        base = _scaled(base[None, :], ratio, config)[0]
        seen = _at(clean, hours)
        if not _clock_shifted(clean, hours, seen, base, config.shift_guard):
            departures.append(seen - base)
    if not departures:
        return out
    stack = np.vstack(departures)
    known = np.isfinite(stack).any(axis=0)
    departure = np.zeros(stack.shape[1])
    departure[known] = np.nanmedian(stack[:, known], axis=0)
    slot = ((times[first_day] - today) // pd.Timedelta(config.freq)).to_numpy()
    out[first_day] = departure[np.clip(slot, 0, len(departure) - 1)]
    return out


def _clock_shifted(
    clean: pd.Series, hours: pd.DatetimeIndex, seen: FloatArray, base: FloatArray, guard: float
) -> bool:
    """Whether the day of ``hours`` (``seen``) matches ``base`` far better an hour off.

    True when the absolute difference between ``base`` and the values an hour before (or
    after) ``hours`` sums to less than ``guard`` times that of ``seen``, over
    the hours known in both; False with ``guard`` 0 or when less than half the day is known.
    """
    if guard <= 0:
        return False
    hour = pd.Timedelta(hours=1)
    own = np.abs(seen - base)
    known = np.isfinite(own)
    if known.sum() < len(hours) // 2:
        return False
    for shift in (-hour, hour):
        moved = np.abs(_at(clean, hours + shift) - base)
        both = known & np.isfinite(moved)
        if both.sum() >= known.sum() - 2 and moved[both].sum() < guard * own[both].sum():
            return True
    return False


def _blend_mid(
    components: FloatArray,
    weights: Sequence[float],
    times: pd.DatetimeIndex,
    effects: dict[str, float],
    config: ForecastConfig,
) -> FloatArray:
    """The blend of ``components`` (`_components`) plus the event effects.

    Each time mixes the components known there, their ``weights`` scaled to sum to 1; on
    days whose day type is not their weekday's usual one (a holiday Monday) the baselines are
    left out, and where nothing with a weight is known Prophet stands alone.
    """
    share = np.asarray(weights, dtype=float)[:, None] * np.isfinite(components)
    share[1:] *= usual_days(times, config)
    total = share.sum(axis=0)
    share[0] = np.where(total > 0, share[0], 1.0)
    total = np.where(total > 0, total, 1.0)
    mid = (share * np.nan_to_num(components)).sum(axis=0) / total
    for kind, column in event_regressors(times, config.events, config.freq).items():
        mid = mid + effects.get(kind, 0.0) * column
    return np.asarray(mid, dtype=float)


def _weight_grid(step: float = 0.1) -> FloatArray:
    """Every (Prophet, same-weekday, day-type, carried-over) share in ``step``s summing to 1."""
    n = round(1 / step)
    return np.array(
        [
            (i / n, j / n, k / n, (n - i - j - k) / n)
            for i in range(n + 1)
            for j in range(n + 1 - i)
            for k in range(n + 1 - i - j)
        ]
    )


def choose_weights(
    components: FloatArray, seen: FloatArray, config: ForecastConfig
) -> tuple[float, ...]:
    """The blend shares with the least absolute error on out-of-sample days, by grid search.

    ``components`` (4 rows, `_components`) forecast hours before which the model saw nothing
    (the calibration days) and ``seen`` is what happened, all on the transformed scale; only
    hours where every component and the actual are known count, and the error is taken on the
    original scale (the MAE the forecast is judged by). The carried-over departure gets at most
    ``carryover_share`` (none with ``carryover_days`` 0). With ``prophet_weight`` set, or fewer
    than a day of such hours, that fixed share (0.7 when unset) and the same-weekday baseline.
    """
    fixed = 0.7 if config.prophet_weight is None else config.prophet_weight
    default = (fixed, 1.0 - fixed, 0.0, 0.0)
    known = np.isfinite(components).all(axis=0) & np.isfinite(seen)
    if config.prophet_weight is not None or known.sum() < 24:
        return default
    grid = _weight_grid()
    if config.daytype_days <= 0:
        grid = grid[grid[:, 2] == 0]
    limit = config.carryover_share if config.carryover_days > 0 else 0.0
    grid = grid[grid[:, 3] <= limit + 1e-9]
    mixes = _inverse(grid @ components[:, known], config.transform)
    errors = np.abs(mixes - _inverse(seen[known], config.transform)).sum(axis=1)
    best = grid[int(np.argmin(errors))]
    return (float(best[0]), float(best[1]), float(best[2]), float(best[3]))


def _event_effects(
    y: pd.Series, z: pd.Series, clean: pd.Series, config: ForecastConfig
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Each event kind's effect and band (`_Blend`), from every past window of it in ``y``.

    The effect is the least-squares slope of the hours' departure from their usual level
    (`_usual_level`) on the kind's regressor; the band, the conformal quantiles of what is left
    (with a window or two, their widest hours). A kind with no past hour has neither yet.
    """
    effects: dict[str, float] = {}
    bands: dict[str, tuple[float, float]] = {}
    for kind, column in event_regressors(y.index, config.events, config.freq).items():
        hit = (column > 0) & np.isfinite(z.to_numpy())
        times = y.index[hit]
        residual = z.to_numpy()[hit] - _usual_level(clean, times, config.baseline_weeks)
        known = np.isfinite(residual)
        if not known.any():
            continue
        x, departure = column[hit][known], residual[known]
        effects[kind] = float((x * departure).sum() / (x**2).sum())
        bands[kind] = _conformal(departure - effects[kind] * x, config.calibration_level)
    return effects, bands


def _fit_blend(y: pd.Series, recent: pd.Series, config: ForecastConfig) -> tuple[Any, _Blend]:
    """Fit the event effects (whole history), Prophet (recent weeks), the shares and the band."""
    clean = _clean(y, config)
    z = pd.Series(_transform(y.to_numpy(float), config.transform), index=y.index)
    effects, event_bands = _event_effects(y, z, clean, config)
    train = clean[recent.index].dropna()
    step = pd.Timedelta(config.freq)
    if len(train) < WEEK / step:
        raise TooLittleHistory(
            f"only {len(train)} ordinary steps in the history (the rest are gaps, event windows "
            "or unusual days); the model needs a week of them"
        )
    origin = recent.index[-1] + step
    # as many calibration days as the setting asks, as long as a fortnight is left before them
    # (at least 7: a short history calibrates on its last week)
    spare = (origin - train.index[0]) - 2 * WEEK
    days = max(7, min(config.calibration_days, spare.days))
    cal_origin = origin - pd.Timedelta(days=days)
    early = train[train.index < cal_origin]
    if len(early) == 0 or early.index[-1] - early.index[0] + step < WEEK:
        raise TooLittleHistory(
            f"less than a week of history before the last {days} days, which calibrate the band"
        )
    calibration = _fit_prophet(early, config)
    cal_times = recent.index[recent.index >= cal_origin]
    parts = _components(calibration, clean, cal_times, cal_origin, config, day_ahead=True)
    cal_seen = z.reindex(cal_times).to_numpy()
    ordinary = cal_seen.copy()
    ordinary[
        ~usual_days(cal_times, config) | in_event_windows(cal_times, config.events, config.freq)
    ] = np.nan
    weights = choose_weights(parts, ordinary, config)
    cal_mid = _blend_mid(parts, weights, cal_times, effects, config)
    # every observed hour counts, holidays and event hours too: they are forecast the same way
    residuals = (cal_seen - cal_mid)[np.isfinite(cal_seen)]
    if len(residuals) < 24:
        raise TooLittleHistory(f"only {len(residuals)} observed hours to calibrate the band")
    lower, upper = _conformal(residuals, config.calibration_level)
    model = _fit_prophet(train, config) if config.refit else calibration
    return model, _Blend(effects, lower, upper, len(residuals), weights, event_bands)


@cache
def _fast_backend_class() -> Any:
    from prophet.models import CmdStanPyBackend  # type: ignore[import-untyped, unused-ignore]

    class FastBackend(CmdStanPyBackend):  # type: ignore[misc, unused-ignore]
        """Prophet's cmdstanpy backend, handing Stan its data as arrays instead of lists.

        Prophet turns the feature matrix into nested lists, which stanio then walks value by
        value to write Stan's JSON input: 60-70 % of a fit's time on 12 weeks of hourly data.
        Arrays go through stanio's one-call fast path (and ujson) instead; the JSON is equal.
        """

        @staticmethod
        def prepare_data(init: dict[str, Any], data: dict[str, Any]) -> tuple[Any, Any]:
            inits, lists = CmdStanPyBackend.prepare_data(init, data)
            stan_data: dict[str, Any] = dict(lists)
            for name in ("y", "t", "cap", "t_change", "s_a", "s_m"):
                stan_data[name] = np.asarray(data[name])
            stan_data["X"] = data["X"].to_numpy()
            return inits, stan_data

    return FastBackend


def _fast_backend() -> Any:
    return _fast_backend_class()()


def _fit_prophet(z: pd.Series, config: ForecastConfig) -> Any:
    """Prophet fitted to ``z`` (already on the transformed scale), without interval sampling."""
    quiet_prophet_logging()
    from prophet import Prophet  # type: ignore[import-untyped, unused-ignore]

    history = _with_conditions(pd.DataFrame({"ds": z.index, "y": z.to_numpy(float)}), config)
    model = Prophet(
        yearly_seasonality=False,
        weekly_seasonality=config.weekly_fourier_order,
        daily_seasonality=False,
        holidays=holiday_frame(config, z.index[0].year, z.index[-1].year + 1),
        uncertainty_samples=0,
        changepoint_prior_scale=config.changepoint_prior_scale,
        seasonality_prior_scale=config.seasonality_prior_scale,
        holidays_prior_scale=config.seasonality_prior_scale,
    )
    model.stan_backend = _fast_backend()
    order = config.daily_fourier_order
    for kind in DAY_TYPES[config.day_types]:
        model.add_seasonality(f"daily_{kind}", period=1, fourier_order=order, condition_name=kind)
        if config.day_levels and kind != "workday":
            model.add_regressor(f"level_{kind}", mode="additive")
    with _prophet_warnings_ignored():
        model.fit(history)
    return model


def _fit_one(key: str, history: pd.DataFrame, config: ForecastConfig) -> FitResult:
    start = time.perf_counter()
    try:
        forecaster = Forecaster.fit(history, config)
        text = forecaster.to_json()
    except Exception as exc:  # one bad series must not stop the others
        return FitResult(
            key, None, None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
        )
    return FitResult(
        key,
        text,
        forecaster.method,
        time.perf_counter() - start,
        effects=forecaster.effects,
        fallback_reason=forecaster.fallback_reason,
    )


def process_pool(processes: int) -> ProcessPoolExecutor:
    """A pool of ``processes`` *spawned* workers with quiet Prophet logging.

    Spawn, not fork: a forked child inherits the parent's threads and locks and Stan can
    deadlock in it.
    """
    return ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=quiet_prophet_logging,
    )


def fit_many(
    series: dict[str, pd.DataFrame], config: ForecastConfig | None = None, *, processes: int = 2
) -> dict[str, FitResult]:
    """Fit one `Forecaster` per series in ``processes`` spawned processes.

    Args:
        series: ``ds``/``y`` history per key.
        config: Defaults to ``ForecastConfig()``.
        processes: Worker processes; 1 fits in this process.

    Returns:
        One `FitResult` per key, in key order; a series that fails has ``error`` set and
        ``model_json`` None, the others are unaffected. ``seconds`` is the time to fit and
        serialise that series in its worker.
    """
    config = config or ForecastConfig()
    keys = sorted(series)
    if processes <= 1:
        return {key: _fit_one(key, series[key], config) for key in keys}
    results: dict[str, FitResult] = {}
    with process_pool(processes) as pool:
        futures: dict[str, Future[FitResult]] = {
            key: pool.submit(_fit_one, key, series[key], config) for key in keys
        }
        for key, future in futures.items():
            try:
                results[key] = future.result()
            except Exception as exc:  # a worker that died, or a frame that cannot be pickled
                results[key] = FitResult(key, None, None, 0.0, f"{type(exc).__name__}: {exc}")
    return results


__all__ = [
    "FitResult",
    "ForecastConfig",
    "Forecaster",
    "TooLittleHistory",
    "fit_many",
    "holiday_frame",
    "process_pool",
    "quiet_prophet_logging",
    "regular_y",
    "seasonal_naive",
    "workdays",
]
