"""Forecaster (Prophet and seasonal-naive fallback), fit_many, backtest metrics, Hangzhou series."""

from __future__ import annotations

import csv
import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

from forecasts.backtest import backtest, forecast_metrics, hangzhou_series
from forecasts.model import ForecastConfig, Forecaster, fit_many, workdays
from tests.conftest import HANGZHOU

# Monday 4 March 2024: three weeks without a Chinese public holiday or adjusted working day.
START = pd.Timestamp("2024-03-04")
CONFIG = ForecastConfig()


def synthetic(days: int, *, start: pd.Timestamp = START, seed: int = 1) -> pd.DataFrame:
    """Hourly gate inflow: closed at night, rush hours on weekdays, weekends at a fifth."""
    ds = pd.date_range(start, periods=days * 24, freq="1h")
    hour = ds.hour.to_numpy()
    shape = np.where((hour >= 6) & (hour <= 22), 200.0, 0.0)
    shape += np.where(np.isin(hour, [8, 18]), 800.0, 0.0)
    weekend = ds.day_of_week.to_numpy() >= 5
    level = np.where(weekend, 0.2, 1.0)
    noise = np.random.default_rng(seed).normal(1.0, 0.05, len(ds))
    return pd.DataFrame({"ds": ds, "y": np.round(shape * level * noise)})


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return synthetic(21)


@pytest.fixture(scope="module")
def fitted(history: pd.DataFrame) -> Forecaster:
    return Forecaster.fit(history, CONFIG)


def test_three_weeks_of_history_fit_prophet(fitted: Forecaster) -> None:
    assert fitted.method == "prophet"
    assert fitted.fallback_reason is None


def test_the_json_round_trip_predicts_the_same(fitted: Forecaster) -> None:
    text = fitted.to_json()
    loaded = Forecaster.from_json(text)
    assert json.loads(text)["prophet"] is not None
    assert loaded.method == "prophet"
    assert loaded.config == fitted.config
    pd.testing.assert_frame_equal(loaded.predict(48), fitted.predict(48))


def test_forecasts_and_intervals_are_never_negative(fitted: Forecaster) -> None:
    forecast = fitted.predict(24 * 7)
    assert (forecast["yhat_lower"] >= 0).all()
    assert (forecast["yhat_lower"] <= forecast["yhat"]).all()
    assert (forecast["yhat"] <= forecast["yhat_upper"]).all()
    # The night is closed: a model without the transform and clipping goes below 0 there.
    night = forecast[forecast["ds"].dt.hour.isin([1, 2, 3])]
    assert night["yhat"].max() < 20


def test_weekend_days_are_forecast_lower_than_weekdays(fitted: Forecaster) -> None:
    forecast = fitted.predict(24 * 7)  # Monday 25 .. Sunday 31 March
    daily = forecast.groupby(forecast["ds"].dt.date)["yhat"].sum()
    weekdays = daily.iloc[:5]
    weekend = daily.iloc[5:]
    assert weekend.max() < 0.4 * weekdays.min()
    # The weekday rush hour is kept: 08:00 on Tuesday far above 12:00.
    tuesday = forecast.set_index("ds")["yhat"]
    assert tuesday[pd.Timestamp("2024-03-26 08:00")] > 2 * tuesday[pd.Timestamp("2024-03-26 12:00")]


def test_days_off_follow_the_chinese_calendar_with_adjusted_working_days() -> None:
    ds = pd.Series(
        pd.to_datetime(
            ["2019-01-01 08:00", "2019-01-02 08:00", "2019-01-05 08:00", "2019-02-02 08:00"]
        )
    )
    # New Year's Day (a Tuesday) is off, Wednesday works, Saturday is off, and Saturday
    # 2 February 2019 was worked in exchange for the Spring Festival.
    assert workdays(ds, "CN").tolist() == [False, True, False, True]


def test_short_history_falls_back_to_seasonal_naive_with_a_reason() -> None:
    model = Forecaster.fit(synthetic(10), CONFIG)
    assert model.method == "seasonal_naive"
    assert model.fallback_reason is not None
    assert "less than 14 days" in model.fallback_reason
    assert (model.predict(24)["method"] == "seasonal_naive").all()


def test_a_long_gap_falls_back_to_seasonal_naive() -> None:
    frame = synthetic(21)
    gappy = frame[(frame["ds"] < "2024-03-12") | (frame["ds"] >= "2024-03-14")]
    model = Forecaster.fit(gappy, CONFIG)
    assert model.method == "seasonal_naive"
    assert model.fallback_reason is not None and "gap" in model.fallback_reason


def test_the_naive_forecast_repeats_last_week() -> None:
    frame = synthetic(10)
    model = Forecaster.fit(frame, CONFIG)
    forecast = model.predict(24 * 9)  # past one week ahead: last week again
    y = frame.set_index("ds")["y"]
    for lag_weeks, part in ((1, forecast.iloc[:168]), (2, forecast.iloc[168:])):
        last_week = y.reindex(part["ds"] - pd.Timedelta(weeks=lag_weeks)).to_numpy()
        np.testing.assert_array_equal(part["yhat"].to_numpy(), last_week)
    assert (forecast["yhat_lower"] <= forecast["yhat"]).all()
    assert (forecast["yhat"] <= forecast["yhat_upper"]).all()
    loaded = Forecaster.from_json(model.to_json())
    pd.testing.assert_frame_equal(loaded.predict(24 * 9), forecast)


def test_less_than_a_week_of_history_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least a week"):
        Forecaster.fit(synthetic(5), CONFIG)


def test_fit_many_fits_in_two_processes_and_keeps_going_past_a_broken_series() -> None:
    series = {f"s{i}": synthetic(15, seed=i) for i in range(3)}
    series["broken"] = synthetic(15).assign(y=np.nan)
    results = fit_many(series, CONFIG, processes=2)
    assert list(results) == ["broken", "s0", "s1", "s2"]
    broken = results["broken"]
    assert broken.model_json is None
    assert broken.error is not None and "no observations" in broken.error
    for key in ("s0", "s1", "s2"):
        result = results[key]
        assert result.key == key
        assert result.error is None
        assert result.method == "prophet"
        assert result.seconds > 0
        assert result.model_json is not None
        assert len(Forecaster.from_json(result.model_json).predict(3)) == 3


def test_metrics_equal_hand_computed_values() -> None:
    actual = np.array([10.0, 0.0, 20.0, 30.0])
    yhat = np.array([12.0, 0.0, 15.0, 30.0])
    lower = np.array([8.0, 0.0, 16.0, 25.0])
    upper = np.array([14.0, 1.0, 18.0, 35.0])
    metrics = forecast_metrics(actual, yhat, lower, upper, scale=2.0)
    assert metrics["mae"] == pytest.approx(7 / 4)
    assert metrics["wape"] == pytest.approx(7 / 60)
    assert metrics["mase"] == pytest.approx(7 / 4 / 2)
    assert metrics["coverage"] == pytest.approx(3 / 4)  # 20 is outside 16..18
    assert metrics["smape"] == pytest.approx((4 / 22 + 0 + 10 / 35 + 0) / 4)
    assert metrics["smape_nonzero"] == pytest.approx((4 / 22 + 10 / 35 + 0) / 3)


def test_backtest_on_a_hand_made_series_scores_as_computed_by_hand() -> None:
    # 7 days at 10, an 8th at 12 (in-sample naive MAE 2), then a test day of 11s and 13s.
    ds = pd.date_range("2024-03-04", periods=9 * 24, freq="1h")
    y = np.full(len(ds), 10.0)
    y[7 * 24 : 8 * 24] = 12.0
    y[8 * 24 :] = np.tile([11.0, 13.0], 12)
    series = {"only": pd.DataFrame({"ds": ds, "y": y})}
    results = backtest(series, CONFIG, origins=[pd.Timestamp("2024-03-12")], horizon_hours=24)
    row = results.iloc[0]
    # 8 days of history: the model is the seasonal-naive forecast, 10 (a week before) all day,
    # its interval 10..12 (the only weekly error seen is +2).
    assert row["method"] == "seasonal_naive"
    assert row["n"] == 24
    for prefix in ("", "naive_"):
        assert row[f"{prefix}mae"] == pytest.approx(2.0)
        assert row[f"{prefix}wape"] == pytest.approx(48 / 288)
        assert row[f"{prefix}mase"] == pytest.approx(1.0)
        assert row[f"{prefix}coverage"] == pytest.approx(0.5)


def test_special_days_survive_the_json_round_trip() -> None:
    config = ForecastConfig(special_days=(date(2024, 3, 30),), transform="log1p")
    assert ForecastConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.skipif(not HANGZHOU.exists(), reason=f"Hangzhou metro data not found at {HANGZHOU}")
def test_hangzhou_series_sums_the_10_minute_inflow_per_hour() -> None:
    expected = np.zeros(24)
    with HANGZHOU.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["station_idx"] == "7" and row["timestamp"].startswith("2019-01-08"):
                expected[int(row["timestamp"][11:13])] += int(row["inflow"])
    series = hangzhou_series(HANGZHOU, stations=[7])
    assert list(series) == ["HZ07"]
    frame = series["HZ07"]
    day = frame[frame["ds"].dt.date == date(2019, 1, 8)]
    assert day["ds"].dt.hour.tolist() == list(range(24))
    np.testing.assert_array_equal(day["y"].to_numpy(), expected)
    assert expected.sum() > 1000
