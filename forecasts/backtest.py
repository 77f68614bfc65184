"""Rolling-origin backtest of `Forecaster` against the weekly seasonal-naive forecast.

For every series and origin the model is fitted on the history before the origin and forecasts
the next ``horizon_hours``; the weekly seasonal-naive forecast is made from the same history.
Both are scored on the same actuals.

    python -m forecasts.backtest [--stations 80] [--origins 7] [--processes 2]

runs it on the Hangzhou metro gate counts (hourly inflow per station) with one origin at the
start of each of the last ``--origins`` days and a 24 h horizon.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from forecasts.model import (
    DAY_TYPES,
    WEEK,
    ForecastConfig,
    Forecaster,
    Transform,
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
    columns = ["key", "origin", "train_hours", "method", "error", "seconds", "n"]
    columns += [*METRICS, *(f"naive_{m}" for m in METRICS)]
    return pd.DataFrame(rows).reindex(columns=columns)


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
    path: Path | str, *, stations: list[int] | None = None, freq: str = "1h"
) -> dict[str, pd.DataFrame]:
    """Inflow per station (``HZ00``..) summed from the 10-minute gate counts to ``freq``.

    Args:
        path: The ``timestamp,station_idx,inflow,outflow`` CSV (China local time, naive).
        stations: Station indexes to keep; all when None.
        freq: Step to sum to.

    Returns:
        ``ds``/``y`` frames keyed ``HZ`` + the two-digit station index, in key order.
    """
    raw = pd.read_csv(path, usecols=["timestamp", "station_idx", "inflow"])
    if stations is not None:
        raw = raw[raw["station_idx"].isin(stations)]
    raw["ds"] = pd.to_datetime(raw["timestamp"]).dt.floor(freq)
    summed = raw.groupby(["station_idx", "ds"], sort=True)["inflow"].sum().reset_index()
    return {
        f"HZ{int(station):02d}": pd.DataFrame(
            {"ds": group["ds"].to_numpy(), "y": group["inflow"].to_numpy(float)}
        )
        for station, group in summed.groupby("station_idx", sort=True)
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Backtest the default model on the Hangzhou metro stations and print the tables."""
    defaults = ForecastConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--stations", type=int, default=80, help="the first N stations")
    parser.add_argument("--origins", type=int, default=7, help="the starts of the last K days")
    parser.add_argument("--horizon", type=int, default=24, help="hours")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--transform", choices=get_args(Transform), default=defaults.transform)
    parser.add_argument(
        "--changepoint-prior-scale", type=float, default=defaults.changepoint_prior_scale
    )
    parser.add_argument("--daily-fourier-order", type=int, default=defaults.daily_fourier_order)
    parser.add_argument("--weekly-fourier-order", type=int, default=defaults.weekly_fourier_order)
    parser.add_argument(
        "--seasonality-prior-scale", type=float, default=defaults.seasonality_prior_scale
    )
    parser.add_argument("--interval-scale", type=float, default=defaults.interval_scale)
    parser.add_argument("--day-types", choices=sorted(DAY_TYPES), default=defaults.day_types)
    parser.add_argument(
        "--day-levels", action=argparse.BooleanOptionalAction, default=defaults.day_levels
    )
    args = parser.parse_args(argv)
    quiet_prophet_logging()
    config = replace(
        ForecastConfig(),
        transform=args.transform,
        changepoint_prior_scale=args.changepoint_prior_scale,
        daily_fourier_order=args.daily_fourier_order,
        weekly_fourier_order=args.weekly_fourier_order,
        day_types=args.day_types,
        day_levels=args.day_levels,
        seasonality_prior_scale=args.seasonality_prior_scale,
        interval_scale=args.interval_scale,
    )
    series = hangzhou_series(args.data, stations=list(range(args.stations)))
    last_day = max(frame["ds"].max() for frame in series.values()).normalize()
    origins = [last_day - pd.Timedelta(days=k) for k in reversed(range(args.origins))]
    start = time.perf_counter()
    results = backtest(
        series,
        config,
        origins=origins,
        horizon_hours=args.horizon,
        processes=args.processes,
    )
    elapsed = time.perf_counter() - start
    per_key, overall = summarise(results)
    shown = ["mae", "naive_mae", "mae_ratio", "mase", "naive_mase", "wape", "naive_wape"]
    shown += ["smape_nonzero", "naive_smape_nonzero", "coverage", "naive_coverage"]
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(per_key[[*shown, "prophet_share"]].round(3).to_string())
        print()
        print(f"config: {config}")
        print(f"origins: {origins[0]:%Y-%m-%d} .. {origins[-1]:%Y-%m-%d}, {args.horizon} h")
        print(f"{len(results)} fits in {elapsed:.1f} s with {args.processes} processes")
        print(overall.round(3).T.to_string(header=False))


if __name__ == "__main__":
    main()
