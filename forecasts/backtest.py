"""Rolling-origin backtest of `Forecaster` against the weekly seasonal-naive forecast.

For every series and origin the model is fitted on the history before the origin and forecasts
the next ``horizon_hours``; the weekly seasonal-naive forecast is made from the same history.
Both are scored on the same actuals.

    python -m forecasts.backtest [--all | --set NAME ...] [--sensors N] [--origins 21]
        [--every-days 17] [--footfall CSV --country CC]

(or ``crowdwatch forecast backtest --all``) runs it on the shared sets — the Hangzhou metro
gate counts (hourly inflow per station, the starts of the last 7 days), the Auckland and Dublin
footfall counters (day-ahead from 21 midnights spread over the last year) — with a progress bar
(``--set hangzhou_outflow``: the stations' exits, a target the model was not tuned on),
then prints per set the MAE ratio against the naive overall and per origin weekday, the worst
sensor, the 80 % band's coverage, the median fit time, and the predicted-big-crowd warnings on
the labelled big-crowd events with their lead time, and last the two headline lines.
``--footfall CSV --country CC`` runs the same on another city's hourly counts (`load_footfall`).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import polars as pl

from crowdwatch.footfall import read_counts, read_labels
from crowdwatch.site import MAX_EVENT_DAYS, public_holidays
from forecasts.early_warning import warning_events, warning_values
from forecasts.model import (
    DAY_TYPES,
    WEEK,
    EventWindow,
    ForecastConfig,
    Forecaster,
    Transform,
    in_event_windows,
    process_pool,
    quiet_prophet_logging,
    regular_y,
    seasonal_naive,
)

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "hangzhou_metro"
    / "hangzhou_metro_10min_inout.csv"
)
METRICS = ("mae", "wape", "smape", "smape_nonzero", "mase", "coverage")
#: The columns of a `backtest` frame.
COLUMNS = (
    *("key", "origin", "train_hours", "method", "error", "seconds", "n"),
    *METRICS,
    *(f"naive_{m}" for m in METRICS),
    *("big_day", "warned_day"),
)
#: Label kinds a site would have in its calendar ahead of time (announced events); riots,
#: storms, outages and lockdowns are not.
CALENDAR_KINDS = ("surge_nye", "parade", "surge_march", "candidate_event")
#: Label kinds that are big crowds, for the lead time of predicted-big-crowd alerts.
SURGE_KINDS = ("surge_nye", "parade", "surge_march", "riot", "candidate_event")
#: A forecast point is a predicted big crowd above this quantile of the sensor's recent hours.
BIG_CROWD_QUANTILE = 0.995
#: The history a footfall origin needs before it: the forecaster's `min_history_days`, below
#: which it falls back to the seasonal-naive forecast.
ORIGIN_HISTORY = pd.Timedelta(days=ForecastConfig().min_history_days)
#: How far ahead the early warning looks (`forecasts.early_warning`).
WARNING_HORIZON = pd.Timedelta(minutes=120)

FloatArray = npt.NDArray[np.float64]


def naive_scale(train: pd.Series) -> float:
    """In-sample MAE of the weekly seasonal-naive forecast: mean |y(t) - y(t - 1 week)|.

    ``train`` is ``y`` on a regular grid indexed by ``ds``; pairs with a gap are skipped.
    NaN when no pair is observed.
    """
    errors = (train - train.shift(freq=WEEK)).dropna()
    return float(errors.abs().mean()) if len(errors) else float("nan")


def forecast_metrics(
    actual: FloatArray,
    yhat: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    scale: float,
) -> dict[str, float]:
    """Point and interval metrics of one forecast.

    Args:
        actual: Observed values (no NaN).
        yhat: Point forecast.
        lower: Lower interval bound.
        upper: Upper interval bound.
        scale: In-sample seasonal-naive MAE that scales MASE.

    Returns:
        ``mae``; ``wape`` = sum |e| / sum |y|; ``smape`` = mean 2|e| / (|y| + |yhat|) over all
        points, a point where both are 0 counting as 0 (a fraction in [0, 2], not percent);
        ``smape_nonzero`` the same over the points with ``y != 0``; ``mase`` = mae / scale;
        ``coverage`` = share of actuals within [lower, upper]; ``n`` points.
    """
    error = np.abs(actual - yhat)
    denom = np.abs(actual) + np.abs(yhat)
    ratio = np.divide(2.0 * error, denom, out=np.zeros_like(error), where=denom > 0)
    nonzero = actual != 0
    total = float(np.abs(actual).sum())
    mae = float(error.mean())
    return {
        "mae": mae,
        "wape": float(error.sum()) / total if total > 0 else float("nan"),
        "smape": float(ratio.mean()),
        "smape_nonzero": float(ratio[nonzero].mean()) if nonzero.any() else float("nan"),
        "mase": mae / scale if scale > 0 else float("nan"),
        "coverage": float(((actual >= lower) & (actual <= upper)).mean()),
        "n": float(len(actual)),
    }


def _score(frame: pd.DataFrame, actual: pd.Series, scale: float) -> dict[str, float]:
    seen = actual.notna().to_numpy()
    return forecast_metrics(
        actual.to_numpy(float)[seen],
        frame["yhat"].to_numpy(float)[seen],
        frame["yhat_lower"].to_numpy(float)[seen],
        frame["yhat_upper"].to_numpy(float)[seen],
        scale,
    )


def _big_crowd_day(
    train: pd.Series,
    forecast: pd.DataFrame,
    actual: pd.Series,
    config: ForecastConfig,
    effects: dict[str, float],
) -> dict[str, float]:
    """Whether the day had a big crowd and whether a predicted-big-crowd warning was raised.

    A big crowd is an hour above the sensor's `BIG_CROWD_QUANTILE` of its recent weeks (as for
    the labelled events); the warning compares what `warning_values` takes (the upper bound in
    the windows of event kinds that raise this series, the forecast elsewhere) with that
    level. A day warned without a big crowd is a warning in vain: the false alarm the people on
    duty would have been sent.
    """
    recent = train[train.index >= train.index[-1] - config.history_weeks * WEEK].dropna()
    if len(recent) == 0:
        return {"big_day": np.nan, "warned_day": np.nan}
    threshold = float(recent.quantile(BIG_CROWD_QUANTILE))
    seen = actual.notna().to_numpy()
    values = _warning_values(forecast, config, effects)
    return {
        "big_day": float((actual.to_numpy(float)[seen] >= threshold).any()),
        "warned_day": float((values[seen] >= threshold).any()),
    }


def _warning_values(
    forecast: pd.DataFrame, config: ForecastConfig, effects: dict[str, float]
) -> FloatArray:
    """What the early warning compares with a level, for ``forecast``'s rows (``ds`` sorted).

    As `forecasts.service.warn`: the upper bound in the windows of event kinds the model's
    ``effects`` say raise this series, the forecast elsewhere.
    """
    ds = pd.DatetimeIndex(forecast["ds"])
    in_event = in_event_windows(ds, warning_events(config.events, effects), config.freq)
    return warning_values(forecast["yhat"], forecast["yhat_upper"], in_event)


def _backtest_key(
    key: str,
    history: pd.DataFrame,
    config: ForecastConfig,
    origins: Sequence[pd.Timestamp],
    horizon_hours: int,
) -> list[dict[str, Any]]:
    y = regular_y(history, config.freq)
    rows: list[dict[str, Any]] = []
    for origin in origins:
        future = pd.date_range(origin, origin + pd.Timedelta(hours=horizon_hours), freq=config.freq)
        future = future[future < origin + pd.Timedelta(hours=horizon_hours)]
        train = y[y.index < origin]
        actual = y.reindex(future)
        row: dict[str, Any] = {"key": key, "origin": origin, "train_hours": len(train)}
        start = time.perf_counter()
        try:
            model = Forecaster.fit(pd.DataFrame({"ds": train.index, "y": train.to_numpy()}), config)
            forecast = model.predict(future)
        except ValueError as exc:
            row.update(method=None, error=str(exc), seconds=time.perf_counter() - start)
            rows.append(row)
            continue
        row.update(method=model.method, error=None, seconds=time.perf_counter() - start)
        scale = naive_scale(train)
        row.update(_score(forecast, actual, scale))
        naive = seasonal_naive(
            train[train.index >= origin - 5 * WEEK], future, config.interval_width
        )
        row.update({f"naive_{k}": v for k, v in _score(naive, actual, scale).items() if k != "n"})
        row.update(_big_crowd_day(train, forecast, actual, config, model.effects))
        rows.append(row)
    return rows


def backtest(
    series: dict[str, pd.DataFrame],
    config: ForecastConfig | None = None,
    *,
    origins: list[pd.Timestamp],
    horizon_hours: int,
    processes: int = 1,
) -> pd.DataFrame:
    """Rolling-origin backtest: one row per key and origin.

    Args:
        series: ``ds``/``y`` history per key (naive local time on the ``config.freq`` grid).
        config: Model settings; defaults to ``ForecastConfig()``.
        origins: Forecast origins; the model sees only the history before an origin.
        horizon_hours: Hours forecast from each origin.
        processes: Spawned worker processes (one key per task); 1 runs here.

    Returns:
        ``key, origin, train_hours, method, error, seconds, n`` and the `forecast_metrics` of
        the model (``mae``, ``wape``, ...) and of the weekly seasonal-naive forecast from the
        same history (``naive_mae``, ...). MASE of both is scaled by the in-sample naive MAE of
        the training part. A key/origin whose model cannot be fitted has ``error`` set and NaN
        metrics.
    """
    config = config or ForecastConfig()
    keys = sorted(series)
    stamps = [pd.Timestamp(o) for o in origins]
    rows: list[dict[str, Any]] = []
    if processes <= 1:
        for key in keys:
            rows += _backtest_key(key, series[key], config, stamps, horizon_hours)
    else:
        with process_pool(processes) as pool:
            futures: list[Future[list[dict[str, Any]]]] = [
                pool.submit(_backtest_key, key, series[key], config, stamps, horizon_hours)
                for key in keys
            ]
            for future in futures:
                rows += future.result()
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def naive_exact(results: pd.DataFrame) -> list[str]:
    """The keys on which the weekly naive forecast was exact at every origin scored.

    Their MAE ratio has nothing to divide by: such a column is a flag or a counter stuck at a
    reading for the backtest's days (Seattle's 911 file has ``in_source``, 1 in all but 118 of
    61,344 hours), not counts to forecast, and scoring it would make the worst sensor's ratio
    infinite and pad the coverage.
    """
    scored = results[results["error"].isna()]
    naive = scored.groupby("key")["naive_mae"].max()
    return sorted(naive.index[naive == 0])


def summarise(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-key and overall means of the backtest metrics.

    Metrics are averaged over origins (and keys). ``mae_ratio`` is our mean MAE over the naive
    mean MAE (below 1: better than repeating last week); overall it weights keys by their
    volume, so ``median_key_mae_ratio`` is reported too. ``prophet_share`` is the share of
    fits that used Prophet.

    Returns:
        ``(per_key, overall)``: a frame indexed by key and a one-row frame.
    """
    scored = results[results["error"].isna()]
    columns = [*METRICS, *(f"naive_{m}" for m in METRICS)]
    per_key = scored.groupby("key")[columns].mean()
    per_key["mae_ratio"] = per_key["mae"] / per_key["naive_mae"]
    per_key["prophet_share"] = scored.groupby("key")["method"].apply(
        lambda m: float((m == "prophet").mean())
    )
    per_key["origins"] = scored.groupby("key").size()
    overall = scored[columns].mean().to_frame().T
    overall["mae_ratio"] = overall["mae"] / overall["naive_mae"]
    overall["median_key_mae_ratio"] = float(per_key["mae_ratio"].median())
    overall["prophet_share"] = float((scored["method"] == "prophet").mean())
    overall["fits"] = len(scored)
    overall["failed"] = len(results) - len(scored)
    return per_key, overall


def hangzhou_series(
    path: Path | str,
    *,
    stations: list[int] | None = None,
    freq: str = "1h",
    flow: Literal["inflow", "outflow"] = "inflow",
) -> dict[str, pd.DataFrame]:
    """Entries (or exits) per station (``HZ00``..) summed from the 10-minute counts to ``freq``.

    Args:
        path: The ``timestamp,station_idx,inflow,outflow`` CSV (China local time, naive).
        stations: Station indexes to keep; all when None.
        freq: Step to sum to.
        flow: ``inflow`` (gate entries) or ``outflow`` (exits).

    Returns:
        ``ds``/``y`` frames keyed ``HZ`` + the two-digit station index, in key order.
    """
    raw = pd.read_csv(path, usecols=["timestamp", "station_idx", flow])
    if stations is not None:
        raw = raw[raw["station_idx"].isin(stations)]
    raw["ds"] = pd.to_datetime(raw["timestamp"]).dt.floor(freq)
    summed = raw.groupby(["station_idx", "ds"], sort=True)[flow].sum().reset_index()
    return {
        f"HZ{int(station):02d}": pd.DataFrame(
            {"ds": group["ds"].to_numpy(), "y": group[flow].to_numpy(float)}
        )
        for station, group in summed.groupby("station_idx", sort=True)
    }


FOOTFALL = DEFAULT_DATA.parents[1] / "footfall"
#: The share of the hours a footfall sensor must have observed to be backtested.
MIN_COVERAGE = 0.9


def footfall_series(
    path: Path | str, *, min_coverage: float = MIN_COVERAGE, last_days: int | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Hourly counts per sensor from a footfall CSV, wide or long (`read_counts`).

    A value that is no count (text, a negative error code, infinity, 1e15) is a missing hour,
    and so are the hours of a sensor that reports 0 for 24 hours or more in a row: it was down.
    A row stamped after the present (year 2199) is no count either, and of an hour that comes
    twice (the clocks going back) the first is kept. Sensors with less than ``min_coverage`` of
    the hours observed (of the file's last ``last_days`` days, or of all) are left out, and so
    are columns with the same value in every observed hour: a flag or a code, or a counter
    that froze, has nothing to forecast (and a weekly naive error of 0 to compare with).

    Returns:
        ``ds``/``y`` frames keyed by sensor name, in key order; and the sensors left out, with
        the reason (the share of the hours they observed, or their one value).

    Raises:
        ValueError: As `read_counts` does, for a file in neither shape.
    """
    counts = read_counts(path)
    if counts.is_empty():
        return {}, {}
    first, last = counts["ts_local"].min(), counts["ts_local"].max()
    hours = pd.date_range(first, last, freq="1h")
    since = pd.Timestamp(last) - pd.Timedelta(days=last_days) if last_days else None
    series: dict[str, pd.DataFrame] = {}
    left_out: dict[str, str] = {}
    for (sensor,), part in counts.group_by("sensor", maintain_order=True):
        y = pd.Series(part["value"].to_numpy(), index=pd.DatetimeIndex(part["ts_local"].to_numpy()))
        y = y[~y.index.duplicated()].reindex(hours)
        zero = (y == 0).to_numpy()
        run_id = np.cumsum(~zero)
        run_length = pd.Series(zero).groupby(run_id).transform("sum").to_numpy()
        y[zero & (run_length >= 24)] = np.nan
        scored = y if since is None else y[y.index >= since]
        coverage = float(scored.notna().mean())
        if coverage < min_coverage:
            left_out[str(sensor)] = f"{coverage:.0%} of the hours"
            continue
        if scored.nunique() == 1:
            left_out[str(sensor)] = f"{scored.dropna().iloc[0]:g} in every hour"
            continue
        y = y.dropna()
        series[str(sensor)] = pd.DataFrame({"ds": y.index, "y": y.to_numpy()})
    return dict(sorted(series.items())), left_out


def footfall_labels(path: Path | str) -> pd.DataFrame:
    """A footfall set's ``labels.csv``: ``start``/``end`` as timestamps, ``sensors`` as lists.

    Raises:
        ValueError: As `read_labels` does, for a column missing or a row whose times are not
            a window.
    """
    labels = read_labels(path).rename(
        {"start_local": "start", "end_local": "end", "areas": "sensors"}
    )
    frame = labels.with_columns(pl.col("start", "end").dt.cast_time_unit("us")).to_pandas()
    frame["sensors"] = frame["sensors"].map(list)
    return frame


@dataclass(frozen=True)
class BacktestSet:
    """One data set to backtest: series, the site calendar, scoring origins, labelled events."""

    name: str
    series: dict[str, pd.DataFrame]
    config: ForecastConfig
    origins: list[pd.Timestamp]
    labels: pd.DataFrame | None = None
    left_out: dict[str, str] = field(default_factory=dict)
    """Sensors of the file left out, with the reason (`footfall_series`)."""


def spread_origins(
    last_day: pd.Timestamp,
    count: int,
    every_days: int = 17,
    first_day: pd.Timestamp | None = None,
) -> list[pd.Timestamp]:
    """``count`` midnight origins, ``every_days`` apart, the last a week before ``last_day``.

    17 days apart, consecutive origins fall on different weekdays (17 = 2 weeks + 3 days): 21
    origins cover every weekday three times, spread over a year. With ``first_day``, every
    origin leaves `ORIGIN_HISTORY` of data before it: when ``count`` origins ``every_days``
    apart do not fit, they come closer, the largest spacing that fits and is not a whole number
    of weeks (so that they still turn through the weekdays), and when even daily ones do not
    fit, there are as many as fit.

    Raises:
        ValueError: If the data leaves room for no origin at all.
    """
    end = last_day.normalize() - pd.Timedelta(days=7)
    if first_day is not None:
        earliest = (first_day + ORIGIN_HISTORY).ceil("D")
        room = (end - earliest).days
        if room < 0:
            raise ValueError(
                f"the data runs from {first_day:%Y-%m-%d} to {last_day:%Y-%m-%d}: a backtest "
                f"needs {ORIGIN_HISTORY.days + 8} days ({ORIGIN_HISTORY.days} of history, the "
                "forecast day and the week after it)"
            )
        if every_days * (count - 1) > room:
            fitting = [s for s in range(every_days - 1, 0, -1) if s % 7 and s * (count - 1) <= room]
            every_days, count = (fitting[0], count) if fitting else (1, room + 1)
    return [end - pd.Timedelta(days=every_days * k) for k in reversed(range(count))]


def calendar_events(labels: pd.DataFrame) -> tuple[EventWindow, ...]:
    """Event windows from the labels a site would know ahead of time (`CALENDAR_KINDS`).

    Raises:
        ValueError: If such a label is longer than a site's event window may be
            (`crowdwatch.site.MAX_EVENT_DAYS`): a year mistyped, which would leave every
            sensor's model no hour to train on.
    """
    known = labels[labels["kind"].isin(CALENDAR_KINDS)]
    too_long = known[known["end"] - known["start"] > pd.Timedelta(days=MAX_EVENT_DAYS)]
    if len(too_long):
        row = too_long.iloc[0]
        raise ValueError(
            f"label {row.event_id!r} ({row.kind}) runs from {row.start} to {row.end}, longer "
            f"than {MAX_EVENT_DAYS} days: an event window's hours are left out of training"
        )
    return tuple(
        EventWindow(row.start.to_pydatetime(), row.end.to_pydatetime(), str(row.kind))
        for row in known.itertuples()
    )


def load_set(
    name: str, *, sensors: int | None = None, origins: int = 21, every_days: int = 17
) -> BacktestSet:
    """A shared data set by name (`SETS`, `OTHER_SETS`).

    Hangzhou: hourly inflow of the 80 stations, the starts of the last 7 days as origins (the
    data covers 25 days), China's calendar; ``hangzhou_outflow`` the same with the stations'
    exits, a target the model was never tuned on. Footfall sets: the sensors with 90 % of the
    last year's hours, ``origins`` ``every_days`` apart (`spread_origins`), the country's calendar
    and the labelled announced events as event windows.
    """
    flows: dict[str, Literal["inflow", "outflow"]] = {
        "hangzhou": "inflow",
        "hangzhou_outflow": "outflow",
    }
    if name in flows:
        series = hangzhou_series(DEFAULT_DATA, flow=flows[name])
        last = max(frame["ds"].max() for frame in series.values()).normalize()
        chosen = [last - pd.Timedelta(days=k) for k in reversed(range(min(origins, 7)))]
        keys = sorted(series)[:sensors] if sensors else sorted(series)
        return BacktestSet(name, {k: series[k] for k in keys}, ForecastConfig(), chosen)
    files = {
        "auckland": ("auckland_hourly_counts.csv", "NZ", "AUK"),
        "dublin_2023": ("dublin_footfall_2023_hourly.csv", "IE", None),
    }
    if name not in files:
        raise ValueError(
            f"unknown backtest set {name!r}; expected one of {sorted(SETS + OTHER_SETS)}"
        )
    file, country, subdivision = files[name]
    return load_footfall(
        FOOTFALL / name / file,
        country=country,
        subdivision=subdivision,
        sensors=sensors,
        origins=origins,
        every_days=every_days,
    )


def load_footfall(
    path: Path | str,
    *,
    country: str | None,
    subdivision: str | None = None,
    sensors: int | None = None,
    origins: int = 21,
    every_days: int = 17,
) -> BacktestSet:
    """A footfall set from any city, in the shared data's shape, named after its folder.

    The CSV has ``ts_local`` (local time, hourly) and either one column of counts per sensor or
    the columns ``sensor`` and ``count`` (`footfall_series`); a ``labels.csv`` beside it (the
    shared sets' columns) is optional and gives the event windows and the labelled big crowds.

    Args:
        path: The counts CSV.
        country: ISO 3166 code of the site's public holidays, None for none.
        subdivision: Its subdivision (a state or region), if the holidays differ by one.
        sensors: The first N sensors only.
        origins: How many origins (`spread_origins`; fewer when the data is short).
        every_days: Days between origins.

    Raises:
        ValueError: If the file is in neither shape (`read_counts`), has no sensor with 90 % of
            the last year's hours or too few days, or the country or subdivision is unknown.
    """
    path = Path(path)
    public_holidays(country, subdivision)  # an unknown code fails here, not in every fit
    series, left_out = footfall_series(path, last_days=365)
    if not series:
        raise ValueError(
            f"{path}: no sensor has {MIN_COVERAGE * 100:.0f} % of the last year's hours and "
            "counts that vary" + (f" (left out: {_reasons(left_out)})" if left_out else "")
        )
    keys = sorted(series)[:sensors] if sensors else sorted(series)
    last = max(series[key]["ds"].max() for key in series)
    first = min(series[key]["ds"].min() for key in keys)
    label_file = path.parent / "labels.csv"
    labels = footfall_labels(label_file) if label_file.exists() else None
    config = replace(
        ForecastConfig(),
        country=country,
        subdivision=subdivision,
        events=calendar_events(labels) if labels is not None else (),
    )
    return BacktestSet(
        path.parent.name,
        {k: series[k] for k in keys},
        config,
        spread_origins(last, origins, every_days, first),
        labels,
        left_out,
    )


def _reasons(left_out: dict[str, str]) -> str:
    return ", ".join(f"{sensor} ({why})" for sensor, why in sorted(left_out.items()))


SETS = ("hangzhou", "auckland", "dublin_2023")
#: Sets run only when named with ``--set``, not by ``--all``: figures on data the model was
#: not tuned on.
OTHER_SETS = ("hangzhou_outflow",)


def _event_task(
    key: str, history: pd.DataFrame, config: ForecastConfig, events: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Lead times of predicted-big-crowd alerts for one sensor's labelled events."""
    y = regular_y(history, config.freq)
    rows = []
    for event in events:
        origin = pd.Timestamp(event["start"]).normalize()
        train = y[y.index < origin]
        window = pd.date_range(origin, pd.Timestamp(event["end"]), freq=config.freq)
        window = window[window >= pd.Timestamp(event["start"]).floor(config.freq)]
        row: dict[str, Any] = {"key": key, "event_id": event["event_id"], "kind": event["kind"]}
        recent = train[train.index >= origin - config.history_weeks * WEEK].dropna()
        if len(recent) < 24 * 7 or len(window) == 0:
            rows.append({**row, "status": "no history"})
            continue
        threshold = float(recent.quantile(BIG_CROWD_QUANTILE))
        actual = y.reindex(window)
        big = window[(actual >= threshold).to_numpy()]
        try:
            model = Forecaster.fit(pd.DataFrame({"ds": train.index, "y": train.to_numpy()}), config)
            forecast = model.predict(pd.date_range(origin, window[-1], freq=config.freq))
        except ValueError as exc:
            rows.append({**row, "status": f"error: {exc}"})
            continue
        forecast = forecast[forecast["ds"].isin(window)]
        values = _warning_values(forecast, config, model.effects)
        predicted = forecast.loc[values >= threshold, "ds"]
        row.update(threshold=threshold, actual_peak=float(actual.max()))
        row["forecast_peak"] = float(values.max())
        if len(big) == 0:
            # the event drew no big crowd here: a warning would have been a false alarm
            rows.append({**row, "status": "quiet" if predicted.empty else "warned in vain"})
            continue
        if predicted.empty:
            rows.append({**row, "status": "missed"})
            continue
        # the warning is raised when the predicted hour comes within the warning horizon (or
        # when the forecast is made, if that is later); its lead is up to the first big hour
        raised = max(origin, pd.Timestamp(predicted.iloc[0]) - WARNING_HORIZON)
        lead = (big[0] - raised) / pd.Timedelta(minutes=1)
        rows.append({**row, "status": "warned", "lead_min": float(lead)})
    return rows


def labelled_series(parts: list[str], keys: list[str]) -> list[str]:
    """The series a label's ``sensor_or_area`` parts name.

    A part names a series when it contains the series' name ("61 Federal Street (Sky Tower)");
    "<street> sensors ..." names every series on that street ("Queen Street sensors").
    """
    named: set[str] = set()
    for part in parts:
        named.update(key for key in keys if key in part)
        street = re.match(r"^(.+?) sensors\b", part)
        if street:
            named.update(key for key in keys if street.group(1) in key)
    return sorted(named)


def event_lead_times(data: BacktestSet, processes: int = 2) -> pd.DataFrame:
    """Predicted-big-crowd alerts on a set's labelled big-crowd events, per event and sensor.

    Each event's sensors are forecast from the midnight before it (the day-ahead forecast);
    a big crowd is an hour above the sensor's `BIG_CROWD_QUANTILE` of its recent weeks. A
    warning is raised `WARNING_HORIZON` before the first hour whose upper bound is above that;
    ``lead_min`` is from the warning to the first hour actually above it.
    """
    if data.labels is None:
        return pd.DataFrame(columns=["key", "event_id", "kind", "status", "lead_min"])
    per_key: dict[str, list[dict[str, Any]]] = {}
    surges = data.labels[data.labels["kind"].isin(SURGE_KINDS)]
    for event in surges.itertuples():
        for sensor in labelled_series(event.sensors, list(data.series)):
            if sensor in data.series:
                per_key.setdefault(sensor, []).append(
                    {
                        "event_id": event.event_id,
                        "kind": event.kind,
                        "start": event.start,
                        "end": event.end,
                    }
                )
    rows: list[dict[str, Any]] = []
    with process_pool(processes) as pool:
        futures = [
            pool.submit(_event_task, key, data.series[key], data.config, events)
            for key, events in sorted(per_key.items())
        ]
        for future in futures:
            rows += future.result()
    return pd.DataFrame(rows).reindex(
        columns=[
            "key",
            "event_id",
            "kind",
            "status",
            "threshold",
            "actual_peak",
            "forecast_peak",
            "lead_min",
        ]
    )


def weekday_ratios(results: pd.DataFrame) -> pd.Series:
    """MAE over the naive MAE per origin weekday (Monday first), from `backtest` rows."""
    scored = results[results["error"].isna()]
    weekday = pd.to_datetime(scored["origin"]).dt.day_of_week
    means = scored.groupby(weekday)[["mae", "naive_mae"]].mean()
    ratio = means["mae"] / means["naive_mae"]
    ratio.index = [WEEKDAYS[i] for i in ratio.index]
    return ratio


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def origin_ratios(results: pd.DataFrame) -> pd.DataFrame:
    """Per origin day: its weekday, MAE over the naive MAE (all keys) and the coverage.

    A weekday's ratio (`weekday_ratios`) pools that weekday's origins, so these show which days
    make it.
    """
    scored = results[results["error"].isna()]
    per = scored.groupby("origin")[["mae", "naive_mae", "coverage"]].mean()
    days = pd.DatetimeIndex(per.index)
    return pd.DataFrame(
        {
            "weekday": [WEEKDAYS[day] for day in days.day_of_week],
            "mae_ratio": (per["mae"] / per["naive_mae"]).to_numpy(),
            "coverage": per["coverage"].to_numpy(),
        },
        index=days.strftime("%Y-%m-%d").rename("origin"),
    )


def set_summary(name: str, results: pd.DataFrame, leads: pd.DataFrame) -> dict[str, Any]:
    """One set's headline figures: MAE ratios, coverage, fit time, warnings and lead times."""
    per_key, overall = summarise(results)
    weekdays = weekday_ratios(results)
    warned = leads[leads["status"] == "warned"] if len(leads) else leads
    big = leads[leads["status"].isin(["warned", "missed"])] if len(leads) else leads
    quiet = leads[leads["status"].isin(["warned in vain", "quiet"])] if len(leads) else leads
    scored = results[results["error"].isna() & results["big_day"].notna()]
    big_days = scored["big_day"] == 1
    warned_days = scored["warned_day"] == 1
    return {
        "set": name,
        "series": int(results["key"].nunique()),
        "fits": int(overall["fits"].iloc[0]),
        "mae_ratio": float(overall["mae_ratio"].iloc[0]),
        "weekday_ratio": weekdays,
        "worst_weekday": str(weekdays.idxmax()),
        "worst_weekday_ratio": float(weekdays.max()),
        "worst_sensor": str(per_key["mae_ratio"].idxmax()),
        "worst_sensor_ratio": float(per_key["mae_ratio"].max()),
        "median_sensor_ratio": float(per_key["mae_ratio"].median()),
        "coverage": float(overall["coverage"].iloc[0]),
        "naive_coverage": float(overall["naive_coverage"].iloc[0]),
        "median_fit_s": float(results["seconds"].median()),
        "prophet_share": float(overall["prophet_share"].iloc[0]),
        "big_crowds": len(big),
        "warned": len(warned),
        "median_lead_min": float(warned["lead_min"].median()) if len(warned) else float("nan"),
        "quiet_events": len(quiet),
        "vain_events": int((quiet["status"] == "warned in vain").sum()) if len(quiet) else 0,
        "days": len(scored),
        "big_days": int(big_days.sum()),
        "big_days_warned": int((big_days & warned_days).sum()),
        "vain_days": int((~big_days & warned_days).sum()),
    }


def print_summaries(summaries: list[dict[str, Any]], config: ForecastConfig) -> None:
    """The all-sets table, then the two headline lines."""
    print()
    width = max(12, *(len(s["set"]) for s in summaries))
    header = (
        f"{'set':<{width}} {'series':>6} {'fits':>5} {'MAE ratio':>9} "
        + " ".join(f"{d:>5}" for d in WEEKDAYS)
        + f" {'worst sensor':>12} {'cover':>6} {'fit s':>6} {'warned':>8} {'lead':>6}"
    )
    print(header)
    for s in summaries:
        weekdays = " ".join(f"{s['weekday_ratio'].get(d, float('nan')):>5.2f}" for d in WEEKDAYS)
        print(
            f"{s['set']:<{width}} {s['series']:>6} {s['fits']:>5} {s['mae_ratio']:>9.3f} "
            f"{weekdays} {s['worst_sensor_ratio']:>12.3f} {100 * s['coverage']:>5.1f}% "
            f"{s['median_fit_s']:>6.2f} {s['warned']:>3}/{s['big_crowds']:<4} "
            + (f"{s['median_lead_min']:>5.0f}m" if s["warned"] else "     -")
        )
    for s in summaries:
        per_week = 7 * s["vain_days"] / s["days"] if s["days"] else float("nan")
        print(
            f"{s['set']}: predicted big crowds on the backtest days: {s['big_days_warned']} of "
            f"{s['big_days']} big days warned, {s['vain_days']} of {s['days']} days warned in "
            f"vain ({per_week:.2f} per sensor-week); labelled events without a big crowd "
            f"warned in vain: {s['vain_events']} of {s['quiet_events']}"
        )
        print(
            f"{s['set']}: worst sensor {s['worst_sensor']} ({s['worst_sensor_ratio']:.3f}), "
            f"median sensor {s['median_sensor_ratio']:.3f}, Prophet blend in "
            f"{100 * s['prophet_share']:.0f} % of fits, naive coverage "
            f"{100 * s['naive_coverage']:.1f} %"
        )
    print(
        f"settings: history_weeks={config.history_weeks} prophet_weight={config.prophet_weight} "
        f"baseline_weeks={config.baseline_weeks} daytype_days={config.daytype_days} "
        f"level_days={config.level_days} carryover_days={config.carryover_days} "
        f"carryover_share={config.carryover_share} shift_guard={config.shift_guard} "
        f"calibration_days={config.calibration_days} "
        f"calibration_level={config.calibration_level}"
    )
    worst = max(summaries, key=lambda s: s["worst_weekday_ratio"])
    worst_ratio = max(max(s["mae_ratio"], s["worst_weekday_ratio"]) for s in summaries)
    print(
        f"worst MAE ratio (set, weekday): {worst_ratio:.3f} "
        f"({worst['set']}, {worst['worst_weekday']})"
    )
    low = min(s["coverage"] for s in summaries)
    high = max(s["coverage"] for s in summaries)
    print(f"80% coverage range: {100 * low:.1f}-{100 * high:.1f} %")


def run_backtest(
    data: BacktestSet, config: ForecastConfig, *, processes: int, progress: Any
) -> pd.DataFrame:
    """`backtest` of one set with a progress bar that advances per series."""
    keys = sorted(data.series)
    task = progress.add_task(f"{data.name}: {len(keys)} series", total=len(keys))
    rows: list[dict[str, Any]] = []
    with process_pool(processes) as pool:
        futures = [
            pool.submit(_backtest_key, key, data.series[key], config, data.origins, 24)
            for key in keys
        ]
        for future in as_completed(futures):
            rows += future.result()
            progress.advance(task)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """Backtest the forecasts on the shared data sets (or a footfall CSV) and print the tables."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    defaults = ForecastConfig()
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        choices=SETS + OTHER_SETS,
        help="repeatable; hangzhou_outflow (exits, a target not tuned on) runs only when named",
    )
    parser.add_argument(
        "--all", action="store_true", help="every shared set (the default without --footfall)"
    )
    parser.add_argument(
        "--footfall",
        type=Path,
        help="another city's hourly counts: a CSV of ts_local and one column per sensor (or the "
        "columns sensor and count), with an optional labels.csv beside it (needs --country)",
    )
    parser.add_argument(
        "--country", help="with --footfall: ISO 3166 code for public holidays ('none': none)"
    )
    parser.add_argument("--subdivision", help="with --footfall: a state or region code")
    parser.add_argument("--sensors", type=int, default=None, help="the first N series per set")
    parser.add_argument("--origins", type=int, default=21, help="origins per footfall set")
    parser.add_argument(
        "--every-days", type=int, default=17, help="days between footfall origins (8: 42 in a year)"
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--history-weeks", type=int, default=defaults.history_weeks)
    parser.add_argument("--prophet-weight", type=float, default=defaults.prophet_weight)
    parser.add_argument("--baseline-weeks", type=int, default=defaults.baseline_weeks)
    parser.add_argument("--daytype-days", type=int, default=defaults.daytype_days)
    parser.add_argument("--carryover-days", type=int, default=defaults.carryover_days)
    parser.add_argument("--carryover-share", type=float, default=defaults.carryover_share)
    parser.add_argument("--shift-guard", type=float, default=defaults.shift_guard)
    parser.add_argument("--calibration-days", type=int, default=defaults.calibration_days)
    parser.add_argument("--calibration-level", type=float, default=defaults.calibration_level)
    parser.add_argument("--transform", choices=get_args(Transform), default=defaults.transform)
    parser.add_argument("--day-types", choices=sorted(DAY_TYPES), default=defaults.day_types)
    parser.add_argument("--per-sensor", action="store_true", help="print every sensor's row")
    parser.add_argument(
        "--per-origin", action="store_true", help="print every origin day's MAE ratio"
    )
    args = parser.parse_args(argv)
    quiet_prophet_logging()
    changes = {
        "history_weeks": args.history_weeks,
        "prophet_weight": args.prophet_weight,
        "baseline_weeks": args.baseline_weeks,
        "daytype_days": args.daytype_days,
        "carryover_days": args.carryover_days,
        "carryover_share": args.carryover_share,
        "shift_guard": args.shift_guard,
        "calibration_days": args.calibration_days,
        "calibration_level": args.calibration_level,
        "transform": args.transform,
        "day_types": args.day_types,
    }
    if args.origins < 1 or args.every_days < 1:
        parser.error("--origins and --every-days must be at least 1")
    if (args.country or args.subdivision) and not args.footfall:
        parser.error("--country and --subdivision go with --footfall (the shared sets know theirs)")
    names = args.sets or ([] if args.footfall and not args.all else list(SETS))
    footfall = None
    if args.footfall:
        if args.country is None:
            parser.error("--footfall needs --country (an ISO 3166 code, or 'none')")
        try:
            footfall = load_footfall(
                args.footfall,
                country=None if args.country.lower() == "none" else args.country.upper(),
                subdivision=args.subdivision,
                sensors=args.sensors,
                origins=args.origins,
                every_days=args.every_days,
            )
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
        print(
            f"{footfall.name}: {len(footfall.series)} sensors, {len(footfall.origins)} origins "
            f"from {footfall.origins[0]:%Y-%m-%d} to {footfall.origins[-1]:%Y-%m-%d}"
        )
        if footfall.left_out:
            print(
                f"{footfall.name}: left out (a sensor needs {MIN_COVERAGE * 100:.0f} % of the "
                f"last year's hours and counts that vary): {_reasons(footfall.left_out)}"
            )
    summaries = []
    start = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn()) as progress:
        shared = (
            load_set(name, sensors=args.sensors, origins=args.origins, every_days=args.every_days)
            for name in names
        )
        for data in chain(shared, [footfall] if footfall else []):
            config = replace(data.config, **changes)
            results = run_backtest(data, config, processes=args.processes, progress=progress)
            exact = naive_exact(results)
            if exact:
                progress.console.print(
                    f"{data.name}: left out of the figures, the weekly naive forecast was exact "
                    f"on every day (no counts to compare): {', '.join(exact)}"
                )
                results = results[~results["key"].isin(exact)]
            leads = event_lead_times(replace(data, config=config), args.processes)
            summaries.append(set_summary(data.name, results, leads))
            if args.per_sensor:
                per_key, _ = summarise(results)
                progress.console.print(per_key[["mae_ratio", "coverage"]].round(3).to_string())
            if args.per_origin:
                progress.console.print(origin_ratios(results).round(3).to_string())
            if len(leads):
                progress.console.print(leads.round(1).to_string(index=False))
    print(
        f"{sum(s['fits'] for s in summaries)} fits in {time.perf_counter() - start:.0f} s "
        f"with {args.processes} processes"
    )
    print_summaries(summaries, config)


if __name__ == "__main__":
    main()
