"""Forecaster (Prophet and seasonal-naive fallback), fit_many, backtest metrics, Hangzhou series."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasts.backtest import (
    _event_task,
    backtest,
    forecast_metrics,
    hangzhou_series,
    labelled_series,
    spread_origins,
)
from forecasts.model import (
    EventWindow,
    ForecastConfig,
    Forecaster,
    _at,
    _carried_departure,
    _conformal,
    _daytype_baseline,
    _weight_grid,
    choose_weights,
    day_windows,
    fit_many,
    workdays,
)
from tests.conftest import HANGZHOU

# Monday 4 March 2024: three weeks without a Chinese public holiday or adjusted working day.
START = pd.Timestamp("2024-03-04")
CONFIG = ForecastConfig()
# Event windows are naive local times of the site, like ``ds``.
LOCAL_19H = pd.Timestamp("2024-03-30 19:00").to_pydatetime()
LOCAL_23H = pd.Timestamp("2024-03-30 23:00").to_pydatetime()


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


def test_an_event_window_over_the_whole_history_falls_back_with_a_reason() -> None:
    frame = synthetic(28)
    # a site file whose window was mistyped to span years: no ordinary hour is left to fit
    window = EventWindow(
        pd.Timestamp("2000-01-01").to_pydatetime(),
        pd.Timestamp("2199-01-01").to_pydatetime(),
        "expo",
    )
    model = Forecaster.fit(frame, replace(CONFIG, events=(window,)))
    assert model.method == "seasonal_naive"
    assert model.fallback_reason is not None
    assert "only 0 ordinary steps" in model.fallback_reason
    # a window over the last two weeks leaves two ordinary weeks: the blend is fitted
    last = frame["ds"].iloc[-1].to_pydatetime()
    model = Forecaster.fit(
        frame,
        replace(CONFIG, events=(EventWindow(last - timedelta(days=14), last, "expo"),)),
    )
    assert model.method == "prophet", model.fallback_reason


@pytest.mark.parametrize("glitch", [1e6, 1e15])
def test_an_absurd_hour_in_the_history_leaves_the_forecast_and_band_as_they_were(
    glitch: float,
) -> None:
    frame = synthetic(35)
    clean = Forecaster.fit(frame, CONFIG).predict(24 * 7)
    # one hour 12 days back, in the weeks the calibration fit learns from: before it was left
    # out, 1e15 made the band's upper bound 1.7e9 people
    frame.loc[frame.index[-300], "y"] = glitch
    model = Forecaster.fit(frame, CONFIG)
    assert model.method == "prophet"
    forecast = model.predict(24 * 7)
    assert forecast["yhat"].max() <= 1.1 * clean["yhat"].max()
    assert forecast["yhat_upper"].max() <= 1.1 * clean["yhat_upper"].max()


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


def test_origins_spread_over_a_year_fall_on_every_weekday_alike() -> None:
    last = pd.Timestamp("2023-12-31 23:00")
    for count, every, per_weekday in ((21, 17, 3), (42, 8, 6)):
        origins = spread_origins(last, count, every)
        assert len(origins) == count and origins[-1] == pd.Timestamp("2023-12-24")
        assert set(np.diff(np.array(origins, dtype="datetime64[D]")).astype(int)) == {every}
        weekdays = pd.Series([o.day_of_week for o in origins]).value_counts()
        assert sorted(weekdays.index) == list(range(7))
        assert set(weekdays) == {per_weekday}


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


def test_the_calendar_survives_the_json_round_trip() -> None:
    config = ForecastConfig(
        country="AU",
        subdivision="NSW",
        events=(
            EventWindow(LOCAL_19H, LOCAL_23H, "match", 40_000.0),
            *day_windows([date(2024, 4, 2)]),
        ),
        transform="log1p",
    )
    assert ForecastConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_gap_far_back_does_not_force_the_naive_forecast() -> None:
    frame = synthetic(35)
    gappy = frame[(frame["ds"] < "2024-03-06") | (frame["ds"] >= "2024-03-09")]  # 3 days
    for weeks in (3, 0):  # the gap outside the recent weeks, or inside with 30 days after it
        model = Forecaster.fit(gappy, replace(CONFIG, history_weeks=weeks))
        assert model.method == "prophet"
    late = frame[(frame["ds"] < "2024-03-28") | (frame["ds"] >= "2024-03-30")]
    model = Forecaster.fit(late, CONFIG)  # 10 days after the gap: too few
    assert model.method == "seasonal_naive"
    assert model.fallback_reason is not None and "after a gap of 2 days" in model.fallback_reason


def test_the_baseline_is_the_median_of_the_last_same_weekday_hours() -> None:
    frame = synthetic(28)
    y = frame.set_index("ds")["y"]
    model = Forecaster.fit(frame, replace(CONFIG, prophet_weight=0.0, country=None, level_days=0))
    forecast = model.predict(24).set_index("ds")["yhat"]
    for t in forecast.index:
        same = [y[t - pd.Timedelta(weeks=k)] for k in range(1, 5)]
        # the median is taken on the square-root scale the model works on
        assert forecast[t] == pytest.approx(float(np.median(np.sqrt(same))) ** 2, rel=1e-9)


def test_the_day_type_baseline_is_the_median_of_the_last_days_of_that_type() -> None:
    # a different level every day, so the median says which days were taken
    ds = pd.date_range(START, periods=28 * 24, freq="1h")
    y = pd.Series(np.repeat(np.arange(28.0), 24), index=ds)
    config = replace(CONFIG, country=None, daytype_days=4)
    thursday = pd.Timestamp("2024-03-28 08:00")  # day 24; Monday to Thursday are workdays
    friday = pd.Timestamp("2024-03-29 08:00")
    base = _daytype_baseline(y, pd.DatetimeIndex([thursday, friday]), thursday.normalize(), config)
    # the last 4 workdays before it: Wed 27, Tue 26, Mon 25 and Thu 21 (days 23, 22, 21, 17),
    # not Sunday 24 or Friday 22
    assert base[0] == pytest.approx(np.median([23, 22, 21, 17]))
    # Friday (from the same origin, a day ahead) has only Fridays: 22, 15 and 8 March
    assert base[1] == pytest.approx(np.median([18, 11, 4]))


def test_the_blend_shares_go_to_what_forecast_the_calibration_days_best() -> None:
    rng = np.random.default_rng(3)
    seen = rng.uniform(5, 30, 24 * 7)
    good = seen + rng.normal(0, 0.2, len(seen))
    bad = seen + rng.normal(0, 5, len(seen))
    for best in range(3):
        parts = np.vstack([good if k == best else bad + k for k in range(4)])
        weights = choose_weights(parts, seen, CONFIG)
        assert max(range(4), key=lambda k: weights[k]) == best
        assert sum(weights) == pytest.approx(1.0)
    # the carried-over departure, however good, gets at most its cap; none when switched off
    parts = np.vstack([bad, bad + 1, bad + 2, good])
    assert choose_weights(parts, seen, CONFIG)[3] == pytest.approx(CONFIG.carryover_share)
    assert choose_weights(parts, seen, replace(CONFIG, carryover_days=0))[3] == 0.0
    # a fixed Prophet share is kept, and so is the default with too few known hours
    fixed = choose_weights(parts, seen, replace(CONFIG, prophet_weight=0.4))
    assert fixed == pytest.approx((0.4, 0.6, 0.0, 0.0))
    short = choose_weights(parts[:, :10], seen[:10], CONFIG)
    assert short == pytest.approx((0.7, 0.3, 0.0, 0.0))
    assert len(_weight_grid()) == 286


def test_a_fitted_model_keeps_its_chosen_shares_in_json(fitted: Forecaster) -> None:
    weights = json.loads(fitted.to_json())["blend"]["weights"]
    assert len(weights) == 4 and sum(weights) == pytest.approx(1.0)
    assert Forecaster.from_json(fitted.to_json())._blend == fitted._blend


def test_the_carried_departure_is_the_median_of_the_last_days_of_the_same_kind() -> None:
    # a different level every day on a flat history: each day departs from its baseline by
    # its own day number minus the median of its four same-weekdays before
    ds = pd.date_range(START, periods=35 * 24, freq="1h")
    level = np.repeat(np.arange(35.0), 24)
    level[ds.normalize() == pd.Timestamp("2024-04-02")] += 40  # one odd Tuesday (day 29)
    y = pd.Series(level, index=ds)
    config = replace(CONFIG, country=None)

    def departure(day: str) -> float:
        today = pd.Timestamp(day)
        times = pd.date_range(today, periods=24, freq="1h")
        carried = _carried_departure(y, times, today, config, 1.0)
        assert np.allclose(carried, carried[0])  # the same every hour here
        return float(carried[0])

    # day d departs from the median of d-7..d-28 (d - 17.5) by 17.5, the odd Tuesday by 57.5:
    # Wednesday 3 April takes Tuesday and Monday (the median of two is their mean)
    assert departure("2024-04-03") == pytest.approx((57.5 + 17.5) / 2)
    # Thursday 4 April takes Wednesday, Tuesday and Monday: the median leaves the odd day out
    assert departure("2024-04-04") == pytest.approx(17.5)
    # Monday 8 April comes after days off: nothing is carried over, nor to Saturday 6 April
    assert departure("2024-04-08") == 0.0
    assert departure("2024-04-06") == 0.0
    # Sunday 7 April takes Saturday
    assert departure("2024-04-07") == pytest.approx(17.5)
    # times on later days get nothing, and carryover_days 0 switches it off
    later = pd.date_range("2024-04-05", periods=48, freq="1h")
    carried = _carried_departure(y, later, later[0], config, 1.0)
    assert carried[24:].tolist() == [0.0] * 24 and carried[0] == pytest.approx(17.5)
    off = replace(config, carryover_days=0)
    assert _carried_departure(y, later, later[0], off, 1.0).tolist() == [0.0] * 48


def test_a_day_whose_clock_was_an_hour_off_is_not_carried_over() -> None:
    # the same day every day (peaks at 08:00 and 17:00); Monday 1 and Tuesday 2 April come an
    # hour early, as the Auckland counters did after daylight saving time began
    hours = np.arange(24.0)
    shape = 2 + 30 * np.exp(-((hours - 8) ** 2) / 2) + 25 * np.exp(-((hours - 17) ** 2) / 3)
    ds = pd.date_range(START, periods=35 * 24, freq="1h")
    y = pd.Series(np.tile(shape, 35), index=ds)
    early = ds.normalize().isin(pd.DatetimeIndex(["2024-04-01", "2024-04-02"]))
    y[early] = np.tile(np.roll(shape, -1), 2)
    config = replace(CONFIG, country=None)
    wednesday = pd.Timestamp("2024-04-03")
    times = pd.date_range(wednesday, periods=24, freq="1h")
    unguarded = _carried_departure(y, times, wednesday, replace(config, shift_guard=0.0), 1.0)
    assert np.abs(unguarded).max() > 10  # the early peaks would be carried into Wednesday
    assert _carried_departure(y, times, wednesday, config, 1.0).tolist() == [0.0] * 24
    # a day that is busier all day long is a departure, not a clock an hour off
    y[early] = np.tile(shape + 5, 2)
    assert _carried_departure(y, times, wednesday, config, 1.0) == pytest.approx(np.full(24, 5.0))


def test_the_baseline_follows_the_level_of_the_last_week() -> None:
    frame = synthetic(28)
    frame.loc[frame["ds"] >= frame["ds"].iloc[-1] - pd.Timedelta(days=7), "y"] *= 1.5
    config = replace(CONFIG, prophet_weight=0.0, country=None)
    flat = Forecaster.fit(frame, replace(config, level_days=0)).predict(24)["yhat"].sum()
    level = Forecaster.fit(frame, config).predict(24)["yhat"].sum()
    # the last week is 1.5x its own baseline (a median of 4 weeks, 3 of them at 1x)
    assert level == pytest.approx(1.5 * flat, rel=0.05)


MATCH_WEEKS = (0, 2, 4)  # past matches on these Saturdays; the coming one is in week 5


def with_matches(
    days: int, *, boost: float | Sequence[float], weeks: Sequence[int] = MATCH_WEEKS
) -> pd.DataFrame:
    """`synthetic` with a match on the Saturdays of ``weeks``, 19:00-22:00, ``boost`` people
    (one number for all, or one a week)."""
    frame = synthetic(days)
    week = (frame["ds"] - START) // pd.Timedelta(weeks=1)
    saturday = frame["ds"].dt.day_of_week == 5
    hours = frame["ds"].dt.hour.between(19, 21)
    for k, extra in zip(weeks, np.broadcast_to(boost, len(weeks)), strict=True):
        frame.loc[saturday & hours & (week == k), "y"] += extra
    return frame


def match_windows(weeks: Sequence[int], attendance: float | None = None) -> list[EventWindow]:
    saturdays = [START + pd.Timedelta(days=5 + 7 * k) for k in weeks]
    return [
        EventWindow(
            (day + pd.Timedelta(hours=19)).to_pydatetime(),
            (day + pd.Timedelta(hours=22)).to_pydatetime(),
            "match",
            attendance,
        )
        for day in saturdays
    ]


def test_event_windows_forecast_the_next_event_and_the_band_covers_it() -> None:
    frame = with_matches(35, boost=2000.0)
    events = tuple(match_windows([*MATCH_WEEKS, 5]))
    model = Forecaster.fit(frame, replace(CONFIG, events=events))
    assert model.method == "prophet"
    assert model.effects["match"] > 30  # sqrt(2040) - sqrt(40) = 38.8 on the square-root scale
    forecast = model.predict(24 * 7).set_index("ds")
    match = pd.date_range(events[-1].start, events[-1].end, freq="1h", inclusive="left")
    assert (forecast.loc[match, "yhat"] > 1500).all()
    assert (forecast.loc[match, "yhat_upper"] >= 0.9 * 2040).all()  # a past match: 2040
    # the hours around the match stay ordinary
    assert forecast.loc[match[0] - pd.Timedelta(hours=2), "yhat"] < 300
    # the same history without the calendar: the median of 4 Saturdays, 2 with a match
    blind = Forecaster.fit(frame, CONFIG).predict(24 * 7).set_index("ds")
    assert (blind.loc[match, "yhat"] < 0.6 * forecast.loc[match, "yhat"]).all()


def test_attendance_scales_the_event_effect() -> None:
    frame = with_matches(35, boost=1000.0)
    events = (*match_windows(MATCH_WEEKS, 10_000.0), *match_windows([5], 30_000.0))
    model = Forecaster.fit(frame, replace(CONFIG, events=events))
    forecast = model.predict(24 * 7).set_index("ds")
    at = pd.Timestamp(events[-1].start) + pd.Timedelta(hours=1)
    last_match = frame.set_index("ds")["y"][at - pd.Timedelta(weeks=1)]  # week 4: 10,000
    assert forecast.loc[at, "yhat"] > 2 * last_match


def test_an_implausible_attendance_is_taken_as_at_most_four_times_the_usual() -> None:
    frame = with_matches(35, boost=1000.0)

    def forecast_with(attendance: float) -> float:
        events = (*match_windows(MATCH_WEEKS, 10_000.0), *match_windows([5], attendance))
        model = Forecaster.fit(frame, replace(CONFIG, events=events))
        at = pd.Timestamp(events[-1].start) + pd.Timedelta(hours=1)
        return float(model.predict(24 * 7).set_index("ds").loc[at, "yhat"])

    typo = forecast_with(1e15)  # a site file with a few zeros too many
    assert np.isfinite(typo)
    assert typo == pytest.approx(forecast_with(40_000.0))
    assert typo > forecast_with(20_000.0)


def test_an_event_kind_whose_windows_differed_widens_the_band_in_its_windows() -> None:
    frame = with_matches(35, boost=[500.0, 2000.0, 3500.0])
    events = tuple(match_windows([*MATCH_WEEKS, 5]))
    model = Forecaster.fit(frame, replace(CONFIG, events=events))
    forecast = model.predict(24 * 7).set_index("ds")
    match = pd.date_range(events[-1].start, events[-1].end, freq="1h", inclusive="left")
    # one effect is the matches' middle (about 1,800); the biggest drew 3,540: the band must
    # reach it (the ordinary band alone stops near 2,100)
    assert (forecast.loc[match, "yhat"] < 2500).all()
    assert (forecast.loc[match, "yhat_upper"] >= 0.9 * 3540).all()
    assert (forecast.loc[match, "yhat_lower"] <= 1.1 * 540).all()
    # outside the window the band is the calibrated one
    before = match[0] - pd.Timedelta(hours=2)
    assert forecast.loc[before, "yhat_upper"] < 600
    again = Forecaster.from_json(model.to_json()).predict(24 * 7).set_index("ds")
    pd.testing.assert_frame_equal(again, forecast)


@settings(max_examples=60, deadline=None)
@given(
    residuals=st.lists(st.floats(-50, 50, allow_nan=False), min_size=24, max_size=400),
    width=st.sampled_from([0.5, 0.8, 0.9]),
)
def test_the_conformal_band_holds_at_least_its_share_of_the_calibration_errors(
    residuals: list[float], width: float
) -> None:
    errors = np.asarray(residuals)
    lower, upper = _conformal(errors, width)
    assert lower <= 0.0 <= upper
    inside = ((errors >= lower) & (errors <= upper)).mean()
    assert inside >= width - 1e-9
    # and no wider than the quantiles need (when neither side is clipped at 0)
    if lower < 0 < upper:
        strictly = ((errors > lower) & (errors < upper)).mean()
        assert strictly <= width + 3 / len(errors) + 1e-9


@given(
    hours=st.integers(2, 200),
    unit=st.sampled_from(["ns", "us", "s"]),
    index_kind=st.sampled_from(["grid", "masked", "holed"]),
    offsets=st.lists(st.integers(-400, 400), min_size=1, max_size=50),
)
def test_lookup_by_position_gives_what_reindex_gives(
    hours: int, unit: str, index_kind: str, offsets: list[int]
) -> None:
    # the baselines' fast lookup: every kind of index a history arrives with (a date_range
    # grid, a grid cut by a mask, which drops the index's freq, one with an hour missing, and
    # other units than nanoseconds), times on and off the grid (half hours) and out of range
    index = pd.date_range("2024-03-31", periods=hours, freq="1h").as_unit(unit)
    z = pd.Series(np.arange(hours, dtype=float) ** 0.5, index=index)
    if index_kind == "masked":
        z = z[np.arange(hours) >= 1]
    elif index_kind == "holed":
        z = z.drop(z.index[hours // 2])
    times = pd.DatetimeIndex(index[0] + pd.to_timedelta(np.asarray(offsets) * 30, unit="min"))
    expected = z.reindex(times).to_numpy(float)
    np.testing.assert_array_equal(_at(z, times), expected)


def test_days_off_follow_the_site_country() -> None:
    # Anzac Day, Thursday 25 April 2024: a public holiday in Australia, a workday in China.
    frame = synthetic(35, start=pd.Timestamp("2024-03-18"))
    au = Forecaster.fit(frame, replace(CONFIG, country="AU", subdivision="NSW"))
    cn = Forecaster.fit(frame, replace(CONFIG, country="CN"))
    anzac = pd.date_range("2024-04-25", periods=24, freq="1h")
    assert au.predict(anzac)["yhat"].sum() < 0.5 * cn.predict(anzac)["yhat"].sum()


@pytest.mark.skipif(not HANGZHOU.exists(), reason=f"Hangzhou metro data not found at {HANGZHOU}")
@pytest.mark.parametrize("flow", ["inflow", "outflow"])
def test_hangzhou_series_sums_the_10_minute_flow_per_hour(
    flow: Literal["inflow", "outflow"],
) -> None:
    expected = np.zeros(24)
    with HANGZHOU.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["station_idx"] == "7" and row["timestamp"].startswith("2019-01-08"):
                expected[int(row["timestamp"][11:13])] += int(row[flow])
    series = hangzhou_series(HANGZHOU, stations=[7], flow=flow)
    assert list(series) == ["HZ07"]
    frame = series["HZ07"]
    day = frame[frame["ds"].dt.date == date(2019, 1, 8)]
    assert day["ds"].dt.hour.tolist() == list(range(24))
    np.testing.assert_array_equal(day["y"].to_numpy(), expected)
    assert expected.sum() > 1000


@pytest.mark.skipif(not HANGZHOU.exists(), reason=f"Hangzhou metro data not found at {HANGZHOU}")
def test_a_fit_where_stan_falls_back_to_newton_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # station 6's outflow before 16 January: Stan's L-BFGS stops early, Prophet retries with
    # Newton and the fit succeeds; cmdstanpy used to log "error: code '1' Operation not
    # permitted" and Prophet that it falls back, which read as a failure
    frame = hangzhou_series(HANGZHOU, stations=[6], flow="outflow")["HZ06"]
    model = Forecaster.fit(frame[frame["ds"] < "2019-01-16"], replace(CONFIG, country="CN"))
    assert model.method == "prophet"
    said = [r.getMessage() for r in caplog.records if r.name.startswith(("cmdstanpy", "prophet"))]
    assert said == []


def test_labels_name_series_by_name_or_by_street() -> None:
    keys = ["30 Queen Street", "45 Queen Street", "61 Federal Street", "7 Custom Street East"]
    parts = ["Queen Street sensors (esp. 45/30/210 Queen St)", "61 Federal Street (Sky Tower)"]
    assert labelled_series(parts, keys) == [
        "30 Queen Street",
        "45 Queen Street",
        "61 Federal Street",
    ]
    assert labelled_series(["all sensors"], keys) == []


def test_a_forecast_big_crowd_is_warned_two_hours_before_its_first_hour() -> None:
    frame = with_matches(42, boost=2000.0, weeks=(2, 5))  # one match before, one to come
    events = tuple(match_windows([2, 5]))
    config = replace(CONFIG, events=events)
    coming = events[-1]
    task = {"event_id": "M5", "kind": "match", "start": coming.start, "end": coming.end}
    (row,) = _event_task("zone", frame, config, [task])
    # the match is far above the 99.5th percentile of the recent hours (the weekday peaks)
    assert row["status"] == "warned"
    assert row["threshold"] < 2000
    assert row["lead_min"] == 120  # raised 2 h before 19:00, the first hour above it
    # without the calendar the day-ahead forecast sees no big crowd coming
    (blind,) = _event_task("zone", frame, CONFIG, [task])
    assert blind["status"] == "missed"


def test_a_warning_for_an_event_that_drew_no_crowd_is_counted_in_vain() -> None:
    frame = with_matches(42, boost=2000.0, weeks=(2,))  # week 5's match drew nobody
    events = tuple(match_windows([2, 5]))
    coming = events[-1]
    task = {"event_id": "M5", "kind": "match", "start": coming.start, "end": coming.end}
    (row,) = _event_task("zone", frame, replace(CONFIG, events=events), [task])
    assert row["status"] == "warned in vain"
    assert row["actual_peak"] < row["threshold"] <= row["forecast_peak"]
    (blind,) = _event_task("zone", frame, CONFIG, [task])
    assert blind["status"] == "quiet"
