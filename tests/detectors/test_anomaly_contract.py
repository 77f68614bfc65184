"""The contract every anomaly detector in `detectors.anomaly` keeps.

Detectors are found by scanning the module (classes with ``learn_one`` and ``score_one``), so a
new detector is checked without editing this file. Each is built with its defaults.
"""

from __future__ import annotations

import copy
import inspect
import math
import pickle
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import anomaly
from detectors.anomaly import Detector, Observation

START_MS = 1_794_758_400_000  # Monday 2026-11-16 00:00 Asia/Shanghai
# Coarser than the real 10 s so a stream spans weeks in a few thousand observations; still
# finer than the seasonal baseline's 15-minute slots, so every slot is seen every week.
STEP_MS = 600_000
N_STREAM = 4_000  # 27.8 days: enough for three weeks of history per slot


def _find_detectors() -> list[type[Any]]:
    found = []
    for _, cls in inspect.getmembers(anomaly, inspect.isclass):
        if cls.__module__ != anomaly.__name__ or Protocol in cls.__bases__:
            continue
        if callable(getattr(cls, "learn_one", None)) and callable(getattr(cls, "score_one", None)):
            found.append(cls)
    return found


DETECTORS = _find_detectors()


def level(ts_ms: int) -> float:
    """Expected headcount: morning and evening peaks on weekdays, a flatter weekend."""
    days = (ts_ms - START_MS) / 86_400_000
    hour = (days % 1.0) * 24.0
    weekend = int(days) % 7 >= 5
    morning = math.exp(-(((hour - 8.0) / 1.2) ** 2))
    evening = math.exp(-(((hour - 18.0) / 1.5) ** 2))
    if weekend:
        return 20.0 + 80.0 * math.exp(-(((hour - 14.0) / 3.0) ** 2))
    return 20.0 + 200.0 * morning + 150.0 * evening


def observation(ts_ms: int, value: float, with_forecast: bool = True) -> Observation:
    if not with_forecast:
        return Observation(ts_ms, value)
    # A forecast that runs a little low, so its upper bound is crossed now and then.
    yhat = 0.9 * level(ts_ms)
    return Observation(
        ts_ms, value, yhat, yhat - 2.0 * math.sqrt(yhat), yhat + 2.0 * math.sqrt(yhat)
    )


def stream(n: int, seed: int = 0) -> Iterator[Observation]:
    """Poisson counts around `level`; three in four observations carry a forecast."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        ts = START_MS + i * STEP_MS
        yield observation(ts, float(rng.poisson(level(ts))), with_forecast=i % 4 != 3)


def run(detector: Detector, observations: Iterator[Observation]) -> list[float]:
    """Score, then learn, each observation; return the scores."""
    scores = []
    for x in observations:
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    return scores


def test_the_known_detectors_are_found() -> None:
    names = {cls.__name__ for cls in DETECTORS}
    assert {"SeasonalRobustBaseline", "EwmaCusum", "ForecastResidual"} <= names
    assert "Detector" not in names and "Observation" not in names


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_implements_the_protocol(cls: type[Any]) -> None:
    assert isinstance(cls(), Detector)


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_scores_are_finite_non_negative_floats(cls: type[Any]) -> None:
    scores = run(cls(), stream(N_STREAM))
    assert all(type(s) is float and math.isfinite(s) and s >= 0.0 for s in scores)
    assert max(scores) > 0.0  # the stream is long enough for every detector to speak


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_warm_up(cls: type[Any]) -> None:
    detector = cls()
    flipped_at: int | None = None
    for i, x in enumerate(stream(N_STREAM)):
        if not detector.warmed_up:
            spike = observation(x.ts_ms, 10.0 * level(x.ts_ms) + 100.0)
            assert detector.score_one(x) == 0.0
            assert detector.score_one(spike) == 0.0
        elif flipped_at is None:
            flipped_at = i
        detector.learn_one(x)
        if flipped_at is not None:
            assert detector.warmed_up  # never flips back
    assert detector.warmed_up
    assert flipped_at is not None


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_deterministic(cls: type[Any]) -> None:
    first = run(cls(), stream(N_STREAM, seed=3))
    second = run(cls(), stream(N_STREAM, seed=3))
    assert first == second
    assert first != run(cls(), stream(N_STREAM, seed=4))  # the scores depend on the data


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_pickle_round_trip_mid_stream(cls: type[Any]) -> None:
    observations = list(stream(N_STREAM))
    half = N_STREAM // 2 + 500  # past the seasonal baseline's first warm slots
    original = cls()
    run(original, iter(observations[:half]))
    restored = pickle.loads(pickle.dumps(original))
    assert type(restored) is cls
    tail_original = run(original, iter(observations[half:]))
    tail_restored = run(restored, iter(observations[half:]))
    assert tail_restored == tail_original
    assert max(tail_original) > 0.0
    assert vars(restored) == vars(original)


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_score_one_does_not_learn(cls: type[Any]) -> None:
    detector = cls()
    run(detector, stream(N_STREAM))
    before = copy.deepcopy(vars(detector))
    for x in stream(200, seed=9):
        detector.score_one(x)
    assert vars(detector) == before


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_memory_is_bounded(cls: type[Any]) -> None:
    # 20,000 observations 10 minutes apart span 19.8 weeks; by 10,000 (9.9 weeks) every
    # per-slot history (8 weeks by default) is full, so the state must stop growing.
    detector = cls()
    sizes = {}
    for i, x in enumerate(stream(20_000), start=1):
        detector.learn_one(x)
        if i in (5_000, 10_000, 20_000):
            sizes[i] = len(pickle.dumps(detector))
    # A few bytes of slack for counters and sums whose pickled integers grow by a byte or two.
    assert sizes[20_000] <= sizes[10_000] + 64, sizes
    assert sizes[20_000] < 2 * sizes[5_000] + 1_000, sizes  # linear growth would be 4x


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_a_tenfold_spike_scores_higher_than_normal_data(cls: type[Any]) -> None:
    detector = cls()
    scores = run(detector, stream(N_STREAM))
    ts = START_MS + N_STREAM * STEP_MS
    spike = observation(ts, 10.0 * level(ts))
    assert detector.score_one(spike) > max(scores[-1_000:])


@pytest.fixture(scope="module")
def trained() -> dict[str, bytes]:
    states = {}
    for cls in DETECTORS:
        detector = cls()
        run(detector, stream(N_STREAM))
        states[cls.__name__] = pickle.dumps(detector)
    return states


finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
@settings(max_examples=200, deadline=None)
@given(
    ts_ms=st.integers(min_value=START_MS - 10**11, max_value=START_MS + 10**11),
    value=finite,
    forecast=st.none() | st.tuples(finite, finite, finite),
)
def test_any_observation_scores_finite_and_non_negative(
    cls: type[Any],
    trained: dict[str, bytes],
    ts_ms: int,
    value: float,
    forecast: tuple[float, float, float] | None,
) -> None:
    detector = pickle.loads(trained[cls.__name__])
    x = Observation(ts_ms, value) if forecast is None else Observation(ts_ms, value, *forecast)
    score = detector.score_one(x)
    assert type(score) is float and math.isfinite(score) and score >= 0.0
    detector.learn_one(x)
    after = detector.score_one(x)
    assert math.isfinite(after) and after >= 0.0
