from __future__ import annotations

import math
import pickle
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors.anomaly import (
    AlertEpisodes,
    EwmaCusum,
    ForecastResidual,
    Observation,
    SeasonalCusum,
    SeasonalRobustBaseline,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 16, tzinfo=SHANGHAI)  # a Monday, local midnight
MINUTE_MS = 60_000
WEEK_MS = 7 * 24 * 60 * MINUTE_MS


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def level(ts_ms: int) -> float:
    """Headcount of a station concourse: quiet nights, weekday rush hours, a flat weekend."""
    local = datetime.fromtimestamp(ts_ms / 1000, tz=SHANGHAI)
    hour = local.hour + local.minute / 60
    if local.weekday() >= 5:
        return 20.0 + 80.0 * math.exp(-(((hour - 14.0) / 3.0) ** 2))
    morning = math.exp(-(((hour - 8.0) / 1.2) ** 2))
    evening = math.exp(-(((hour - 18.0) / 1.5) ** 2))
    return 20.0 + 200.0 * morning + 150.0 * evening


# --- SeasonalRobustBaseline -------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_weeks() -> tuple[bytes, np.random.Generator]:
    """A baseline that has learned four weeks of Poisson counts at one per minute."""
    rng = np.random.default_rng(1)
    detector = SeasonalRobustBaseline()
    for ts in range(ms(START), ms(START) + 4 * WEEK_MS, MINUTE_MS):
        detector.learn_one(Observation(ts, float(rng.poisson(level(ts)))))
    return pickle.dumps(detector), rng


def test_seasonal_scores_low_on_the_weekly_pattern_it_has_seen(
    four_weeks: tuple[bytes, np.random.Generator],
) -> None:
    state, rng = four_weeks
    detector = pickle.loads(state)
    scores = []
    week5 = ms(START) + 4 * WEEK_MS
    for ts in range(week5, week5 + WEEK_MS, MINUTE_MS):
        x = Observation(ts, float(rng.poisson(level(ts))))
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    assert np.median(scores) < 1.5
    assert np.percentile(scores, 99) < 4.0
    assert max(scores) < 8.0


def test_seasonal_scores_a_surge_at_a_quiet_slot_high(
    four_weeks: tuple[bytes, np.random.Generator],
) -> None:
    detector: SeasonalRobustBaseline = pickle.loads(four_weeks[0])
    wednesday = START + timedelta(weeks=4, days=2)
    night = ms(wednesday + timedelta(hours=3, minutes=5))
    rush = ms(wednesday + timedelta(hours=8, minutes=5))
    # 200 people at 03:05 is a surge; the same 200 at 08:05 is an ordinary rush hour.
    assert detector.score_one(Observation(night, 200.0)) > 20.0
    assert detector.score_one(Observation(rush, 200.0)) < 3.0
    baseline = detector.baseline(night)
    assert baseline is not None
    assert baseline[0] == pytest.approx(20.0, abs=3.0)


def test_seasonal_a_past_surge_does_not_mask_a_new_one() -> None:
    detector = SeasonalRobustBaseline()
    rng = np.random.default_rng(2)
    slot = START + timedelta(days=2, hours=3)  # Wednesday 03:00-03:15
    for week in range(5):
        for minute in range(15):
            ts = ms(slot + timedelta(weeks=week, minutes=minute))
            # Week 1 had an incident: 200 people all through the slot.
            value = 200.0 if week == 1 else float(rng.poisson(20))
            detector.learn_one(Observation(ts, value))
    new_surge = Observation(ms(slot + timedelta(weeks=5, minutes=5)), 200.0)
    assert detector.score_one(new_surge) > 20.0
    baseline = detector.baseline(new_surge.ts_ms)
    assert baseline is not None
    median, scale = baseline
    assert median == pytest.approx(20.0, abs=3.0)  # a mean would say 56
    assert scale < 10.0


def test_seasonal_floor_on_a_flat_history() -> None:
    detector = SeasonalRobustBaseline(period="day")
    closed = START + timedelta(hours=2)
    busy = START + timedelta(hours=8)
    for day in range(3):
        for minute in range(15):
            detector.learn_one(Observation(ms(closed + timedelta(days=day, minutes=minute)), 0.0))
            detector.learn_one(Observation(ms(busy + timedelta(days=day, minutes=minute)), 500.0))
    # The last busy slot closes when a later slot starts.
    detector.learn_one(Observation(ms(busy + timedelta(days=2, hours=1)), 0.0))
    # Spread 0: the scale is min_scale (1 person) at 0, and at 500 the larger of 10 % of the
    # median (50) and sqrt(500) = 22.4 (the Poisson floor).
    assert detector.score_one(Observation(ms(closed + timedelta(days=3)), 3.0)) == 3.0
    assert detector.score_one(Observation(ms(busy + timedelta(days=3)), 600.0)) == 2.0
    assert detector.score_one(Observation(ms(busy + timedelta(days=3)), 500.0)) == 0.0


def _flat_days(detector: SeasonalRobustBaseline, value: float, days: int, hour: int) -> None:
    """``days`` days with ``value`` all through the 15 minutes from ``hour``, then one later."""
    for day in range(days):
        slot = START + timedelta(days=day, hours=hour)
        for minute in range(15):
            detector.learn_one(Observation(ms(slot + timedelta(minutes=minute)), value))
        detector.learn_one(Observation(ms(slot + timedelta(minutes=30)), value))


def test_seasonal_poisson_floor_on_small_counts() -> None:
    # Eight quiet nights at exactly 4 people: without a count floor 15 people would be z = 11.
    detector = SeasonalRobustBaseline(period="day", poisson_scale=1.0, min_relative_scale=0.0)
    _flat_days(detector, 4.0, 8, hour=3)
    assert detector.baseline(ms(START + timedelta(days=8, hours=3))) == (4.0, 2.0)
    assert detector.score_one(Observation(ms(START + timedelta(days=8, hours=3)), 15.0)) == 5.5
    wide = SeasonalRobustBaseline(period="day", poisson_scale=2.5, min_relative_scale=0.0)
    _flat_days(wide, 4.0, 8, hour=3)
    assert wide.score_one(Observation(ms(START + timedelta(days=8, hours=3)), 15.0)) == 2.2


def test_seasonal_drops_are_reported_but_do_not_score() -> None:
    detector = SeasonalRobustBaseline(period="day")
    _flat_days(detector, 400.0, 4, hour=9)
    empty = Observation(ms(START + timedelta(days=4, hours=9)), 0.0)
    assert detector.score_one(empty) == 0.0
    assert detector.deviation(empty) == -10.0  # 400 below a usual 400, in units of 40
    assert detector.score_one(Observation(empty.ts_ms, 800.0)) == 10.0


def test_seasonal_public_holidays_are_sundays_and_not_learned() -> None:
    # Four weeks: busy weekdays (300 at noon), quiet Sundays (50).
    wednesday = (START + timedelta(weeks=4, days=2)).date().toordinal()
    detector = SeasonalRobustBaseline(days_off=frozenset({wednesday}))
    for day in range(35):
        moment = START + timedelta(days=day, hours=12)
        quiet = moment.weekday() == 6 or moment.date().toordinal() == wednesday
        value = 50.0 if quiet else 300.0
        for minute in range(0, 15, 5):
            detector.learn_one(Observation(ms(moment + timedelta(minutes=minute)), value))
        detector.learn_one(Observation(ms(moment + timedelta(hours=1)), value))
    holiday = START + timedelta(weeks=4, days=2, hours=12)
    # The holiday is judged against Sundays: 50 is normal, 300 a surge.
    assert detector.score_one(Observation(ms(holiday), 50.0)) == 0.0
    assert detector.score_one(Observation(ms(holiday), 300.0)) > 10.0
    # The quiet holiday did not pull the ordinary Wednesday baseline down.
    baseline = detector.baseline(ms(holiday + timedelta(weeks=1)))
    assert baseline is not None and baseline[0] == 300.0


def test_a_new_zone_scores_a_doubling_within_its_first_day() -> None:
    # Acceptance (issue 16): a zone seen for the first time this morning, counting about 200
    # people a minute, gets a non-zero score when its counts double before the day is out.
    rng = np.random.default_rng(5)
    detector = SeasonalRobustBaseline()
    first = START + timedelta(hours=6)
    doubled: list[float] = []
    normal: list[float] = []
    for minute in range(12 * 60):
        ts = ms(first + timedelta(minutes=minute))
        value = float(rng.poisson(200))
        if minute >= 3 * 60:  # from 09:00 on, score a doubling and an ordinary minute
            doubled.append(detector.score_one(Observation(ts, 2 * value)))
            normal.append(detector.score_one(Observation(ts, value)))
        detector.learn_one(Observation(ts, value))
    assert min(doubled) > 0.0
    assert min(doubled) > max(normal)
    assert float(np.median(normal)) < 1.0


def test_seasonal_slots_follow_local_time_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # clocks go forward on 2026-03-29
    detector = SeasonalRobustBaseline(period="day", timezone="Europe/Berlin")
    for day in (26, 27, 28):
        for hour, value in ((7, 0.0), (8, 100.0), (9, 0.0)):
            for minute in range(15):
                moment = datetime(2026, 3, day, hour, minute, tzinfo=berlin)
                detector.learn_one(Observation(ms(moment), value))
    after = datetime(2026, 3, 30, 8, 5, tzinfo=berlin)  # 06:05 UTC, was 07:05 UTC
    assert detector.score_one(Observation(ms(after), 100.0)) == 0.0
    assert detector.score_one(Observation(ms(after - timedelta(hours=1)), 100.0)) > 50.0


def test_seasonal_ignores_late_data() -> None:
    detector = SeasonalRobustBaseline(period="day", min_history=1)
    slot = START + timedelta(hours=3)
    detector.learn_one(Observation(ms(slot), 10.0))
    detector.learn_one(Observation(ms(slot + timedelta(minutes=15)), 10.0))
    detector.learn_one(Observation(ms(slot + timedelta(minutes=1)), 1_000.0))  # late
    detector.learn_one(Observation(ms(slot + timedelta(minutes=30)), 10.0))
    # 10 people: the scale is the Poisson floor sqrt(10); the late 1,000 changed nothing.
    assert detector.baseline(ms(slot + timedelta(days=1))) == (10.0, math.sqrt(10.0))
    assert detector.baseline(ms(slot + timedelta(days=1, minutes=15))) == (10.0, math.sqrt(10.0))


def three_weeks_of_nights(time_of_day_spread: float) -> SeasonalRobustBaseline:
    """Hourly slots, three weeks: 22:00 moves by 30 % from week to week on six weekdays and
    happens to be 100 on all three Fridays; 10:00 is 100 every day."""
    detector = SeasonalRobustBaseline(
        slot_minutes=60, history=3, min_history=3, time_of_day_spread=time_of_day_spread
    )
    for day in range(21):
        night = 100.0 if day % 7 == 4 else (70.0, 100.0, 130.0)[day // 7]
        for hour, value in ((10, 100.0), (22, night)):
            detector.learn_one(Observation(ms(START + timedelta(days=day, hours=hour)), value))
    detector.learn_one(Observation(ms(START + timedelta(days=21)), 100.0))  # closes the last slot
    return detector


def test_a_slot_steady_by_chance_takes_its_time_of_days_spread() -> None:
    friday = START + timedelta(weeks=3, days=4)
    night, morning = ms(friday + timedelta(hours=22)), ms(friday + timedelta(hours=10))
    alone, pooled = three_weeks_of_nights(0.0), three_weeks_of_nights(1.0)
    # Alone, Friday 22:00's three weeks agree, so the scale is the floor (10 % and sqrt(100)):
    # 130 people is z = 3.
    assert alone.deviation(Observation(night, 130.0)) == pytest.approx(3.0)
    # Pooled, the median of the seven 22:00 slots' spreads is the six that moved by 30 %:
    # 1.4826 * MAD 30 / median 100 of the level 100.
    assert pooled.deviation(Observation(night, 130.0)) == pytest.approx(30 / (1.4826 * 30))
    # A time of day that never moves keeps its floor.
    assert pooled.deviation(Observation(morning, 130.0)) == pytest.approx(3.0)


def test_a_snapshot_from_before_the_time_of_days_spread_resumes_with_it() -> None:
    detector = three_weeks_of_nights(1.0)
    old_state = dict(vars(detector))
    del old_state["_day_spread"], old_state["time_of_day_spread"]
    resumed = SeasonalRobustBaseline.__new__(SeasonalRobustBaseline)
    resumed.__setstate__(old_state)  # what pickle.loads does with an older snapshot
    assert resumed == detector
    assert pickle.loads(pickle.dumps(detector)) == detector


@pytest.mark.parametrize(
    "kwargs",
    [
        {"slot_minutes": 7},
        {"min_history": 9},
        {"timezone": "Mars/Olympus"},
        {"min_scale": 0.0},
        {"time_of_day_spread": -1.0},
        {"time_of_day_spread": math.nan},
    ],
)
def test_seasonal_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SeasonalRobustBaseline(**kwargs)  # type: ignore[arg-type]


# --- EwmaCusum --------------------------------------------------------------------------------


def normal_noise(n: int, seed: int, mean: float = 30.0, sd: float = 5.0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    return [Observation(i * 10_000, float(v)) for i, v in enumerate(rng.normal(mean, sd, n))]


def test_cusum_detects_a_step_up_within_a_few_observations() -> None:
    detector = EwmaCusum()
    before = normal_noise(200, seed=0)
    step = normal_noise(10, seed=1, mean=50.0)  # +4 SD
    scores = []
    for x in before:
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    assert max(scores) < 1.0  # no alarm on the noise before the step
    delay = None
    for i, x in enumerate(step, start=1):
        if detector.score_one(x) >= 1.0:
            delay = i
            break
        detector.learn_one(x)
    assert delay is not None and delay <= 4


def test_cusum_false_alarms_on_noise_are_rare() -> None:
    # Expected about one per 1,300 observations of normal noise and one per 900 of Poisson
    # counts (see the class docstring); allow one per 500.
    detector = EwmaCusum()
    for x in normal_noise(20_000, seed=5):
        detector.learn_one(x)
    rng = np.random.default_rng(6)
    poisson = EwmaCusum()
    for i, v in enumerate(rng.poisson(30, 20_000)):
        poisson.learn_one(Observation(i * 10_000, float(v)))
    assert detector.detections <= 40
    assert poisson.detections <= 40


def test_cusum_restarts_after_a_detection() -> None:
    detector = EwmaCusum()
    for x in normal_noise(100, seed=0):
        detector.learn_one(x)
    assert detector.detections == 0
    detector.learn_one(Observation(0, 30.0 + 20 * 5.0))  # 20 SD: S far above h
    assert detector.detections == 1
    assert detector.cusum == 0.0


def test_cusum_floor_on_a_constant_series_and_one_sidedness() -> None:
    detector = EwmaCusum()
    for i in range(20):
        assert detector.score_one(Observation(i, 0.0)) == 0.0  # warm-up
        detector.learn_one(Observation(i, 0.0))
    assert detector.warmed_up
    # SD 0 is floored at min_std = 1: z = value, score = (z - k) / h.
    assert detector.score_one(Observation(20, 1.0)) == pytest.approx(0.1)
    assert detector.score_one(Observation(20, 20.0)) == pytest.approx(3.9)
    assert detector.score_one(Observation(20, -50.0)) == 0.0


# --- ForecastResidual -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(50.0, 0.0), (100.0, 0.0), (120.0, 0.0), (130.0, 0.5), (140.0, 1.0), (220.0, 5.0)],
)
def test_forecast_residual_is_zero_inside_the_band_and_grows_outside(
    value: float, expected: float
) -> None:
    x = Observation(0, value, yhat=100.0, lower=80.0, upper=120.0)
    assert ForecastResidual().score_one(x) == pytest.approx(expected)


def test_forecast_residual_without_a_forecast_or_with_a_degenerate_band() -> None:
    detector = ForecastResidual(min_band=2.0)
    assert detector.score_one(Observation(0, 1e6)) == 0.0
    assert detector.score_one(Observation(0, 1e6, yhat=10.0)) == 0.0
    assert detector.score_one(Observation(0, 6.0, yhat=0.0, lower=0.0, upper=0.0)) == 3.0
    detector.learn_one(Observation(0, 1.0))
    detector.learn_one(Observation(0, 1.0, yhat=1.0, lower=0.0, upper=2.0))
    assert (detector.n_seen, detector.n_with_forecast) == (2, 1)


bounded = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(a=bounded, b=bounded, yhat=bounded, width=st.floats(min_value=0.0, max_value=1e6))
def test_forecast_residual_grows_with_the_value(
    a: float, b: float, yhat: float, width: float
) -> None:
    detector = ForecastResidual()
    low, high = sorted((a, b))
    band = {"yhat": yhat, "lower": yhat - width, "upper": yhat + width}
    assert detector.score_one(Observation(0, low, **band)) <= detector.score_one(
        Observation(0, high, **band)
    )


# --- Observation ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["value", "yhat", "lower", "upper"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_observation_refuses_non_finite_numbers(field: str, bad: float) -> None:
    numbers = {"value": 1.0, "yhat": 1.0, "lower": 0.0, "upper": 2.0, field: bad}
    with pytest.raises(ValueError, match=field):
        Observation(0, **numbers)


# --- SeasonalCusum ----------------------------------------------------------------------------


def test_cusum_on_the_seasonal_residual_ignores_daily_ramps() -> None:
    rng = np.random.default_rng(11)
    raw, seasonal = EwmaCusum(), SeasonalCusum()
    raw_alarms, seasonal_alarms = 0, 0
    for ts in range(ms(START), ms(START) + 5 * WEEK_MS, 5 * MINUTE_MS):
        x = Observation(ts, float(rng.poisson(level(ts))))
        in_week_five = ts >= ms(START) + 4 * WEEK_MS
        raw_alarms += in_week_five and raw.score_one(x) >= 1.0
        seasonal_alarms += in_week_five and seasonal.score_one(x) >= 1.0
        raw.learn_one(x)
        seasonal.learn_one(x)
    # On the raw level every weekday's rush hours ramp up fast enough to fire, many times; on
    # the residual only the CUSUM's own noise rate is left (about one per 1,000 observations,
    # and a week is 2,016 here).
    assert raw_alarms >= 30
    assert seasonal_alarms <= 4
    surge_at = ms(START + timedelta(weeks=5, days=1, hours=3))  # Tuesday 03:00, usually 20
    scores = []
    for i in range(6):
        x = Observation(surge_at + i * 5 * MINUTE_MS, 80.0)
        scores.append(seasonal.score_one(x))
        seasonal.learn_one(x)
    assert max(scores) >= 1.0


# --- AlertEpisodes ----------------------------------------------------------------------------


def test_episodes_group_flickering_strong_scores() -> None:
    hour = 60 * MINUTE_MS
    episodes = AlertEpisodes(refractory_ms=3 * hour)
    strong_hours = {10, 11, 13, 14, 20}  # a dip at 12: one episode; 20 is 6 h later: another
    opened = [h for h in range(24) if episodes.update(h * hour, h in strong_hours)]
    assert opened == [10, 20]
    assert episodes.episodes == 2
    assert episodes.active  # 23:00 is within 3 h of 20:00
    episodes.update(24 * hour, False)
    assert not episodes.active
