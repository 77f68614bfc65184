"""Anomaly detectors over one zone's metric series (headcount, inflow per minute).

Every detector has the same small, River-style interface (`Detector`): ``learn_one(x)`` updates
the state, ``score_one(x)`` says how unusual ``x`` is without changing anything, higher means
more anomalous, and ``0.0`` means "nothing to say" (also during warm-up). Turning scores into
warning levels is a separate step (the zone risk engine), so the detectors do not hold
thresholds beyond what their own algorithm needs. The usual order per observation is
score, then learn::

    detector = SeasonalRobustBaseline()
    for x in observations:  # one zone, one series
        score = detector.score_one(x)
        detector.learn_one(x)

State is plain Python values (numbers, lists, dicts), so Bytewax can snapshot a detector with
pickle, and memory is bounded whatever the length of the stream.

The three detectors see different things and are meant to be combined:

- `SeasonalRobustBaseline`: "unusual for this time of the week" (slow, robust, no forecast).
- `EwmaCusum`: "a sudden rise just now" (fast, blind to slow drifts and to the time of day).
- `ForecastResidual`: "above what the forecast allowed" (only when a forecast is attached).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Scale factor that makes the MAD a consistent estimate of the standard deviation for normal data.
_MAD_TO_SIGMA = 1.4826
_MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True, slots=True)
class Observation:
    """One observation of one zone's series, with the forecast for the same time if there is one.

    Attributes:
        ts_ms: Time of the observation, epoch milliseconds (UTC).
        value: The measured series: headcount, inflow per minute, ...
        yhat: Forecast for ``ts_ms`` (Prophet's ``yhat``), or None without a forecast.
        lower: Lower end of the forecast's uncertainty interval (``yhat_lower``), or None.
        upper: Upper end of the forecast's uncertainty interval (``yhat_upper``), or None.

    Raises:
        ValueError: If a value is NaN or infinite. One NaN would poison a detector's running
            state for good, so it is refused here; the parse step rejects such rows as data.
    """

    ts_ms: int
    value: float
    yhat: float | None = None
    lower: float | None = None
    upper: float | None = None

    def __post_init__(self) -> None:
        for name in ("value", "yhat", "lower", "upper"):
            number = getattr(self, name)
            if number is not None and not math.isfinite(number):
                raise ValueError(
                    f"Observation.{name} must be a finite number, found {number!r} "
                    f"(ts_ms={self.ts_ms}); reject the row before it reaches a detector"
                )


@runtime_checkable
class Detector(Protocol):
    """The interface every anomaly detector in this module implements.

    A detector is a plain class: picklable state, bounded memory, no clock, no randomness.
    """

    @property
    def warmed_up(self) -> bool:
        """Whether the detector has seen enough data to give non-zero scores."""
        ...

    def learn_one(self, x: Observation) -> None:
        """Update the state with one observation."""
        ...

    def score_one(self, x: Observation) -> float:
        """Score one observation (finite, >= 0, higher is more anomalous) without learning it."""
        ...


class SeasonalRobustBaseline:
    """Robust z-score of a value against the same time-of-week slot in past weeks.

    The period (a week by default) is cut into slots of ``slot_minutes`` in local time. While a
    slot is running, its observations are summarised by their mean and standard deviation;
    when the stream moves on to the next slot, that pair goes into the slot's ring of the last
    ``history`` pairs (one per past week). ``score_one(x)`` is the robust z-score::

        |x.value - median(means)| / scale
        scale = max(sqrt((1.4826 * MAD(means))**2 + median(sds)**2),
                    min_scale, min_relative_scale * |median(means)|)

    ``1.4826 * MAD(means)`` is how much the slot's level varies from week to week;
    ``median(sds)`` is how much single observations vary around the slot's level (noise and
    the ramp within the slot). Both are needed because one observation is scored against slot
    means. Measured on four weeks of simulated Poisson counts at 60 s, scoring the fifth:
    median 0.7, 99th percentile 2.7, maximum 6.4 (with the week-to-week spread alone: median
    2.2, maximum 24). Median and MAD ignore unusual weeks as long as they are fewer than half
    of the ring (3 of 8, 1 of 3), so a past surge (an event, an incident) neither raises the
    baseline nor hides the next surge. The score is two-sided: an empty concourse at rush hour
    (closed gate, dead camera) is unusual too.

    The floor on the scale, explained: the spread can be tiny or zero (a closed zone at 0
    people every night, a gate capped at its throughput), and then any deviation would score
    without bound. ``min_scale`` (in the series' unit, default one person) and
    ``min_relative_scale`` (default 5 % of the median, about how well the same slot agrees from
    week to week at a busy station) keep the score finite and meaningful.

    Assumes:
        The series repeats with the period (weekly by default: weekday and hour matter) and
        changes slowly from one period to the next. Public holidays, timetable changes and
        events break that assumption; pair it with a forecast (`ForecastResidual`) for them.
    Cannot see:
        Anything until ``min_history`` periods of data exist for a slot (three weeks by
        default); a slow change that lasts for weeks, which becomes the new normal; how a
        value moves within the current slot (each observation is judged on its own; the fast
        `EwmaCusum` looks at that). Observations older than the slot being summarised (late
        data) are ignored when learning. Sampling gaps just leave slots out.

    Memory: at most ``slots per period x history`` pairs of floats (672 x 8 for the defaults).
    """

    def __init__(
        self,
        period: Literal["week", "day"] = "week",
        slot_minutes: int = 15,
        history: int = 8,
        min_history: int = 3,
        timezone: str = "Asia/Shanghai",
        min_scale: float = 1.0,
        min_relative_scale: float = 0.05,
    ) -> None:
        """Create an empty baseline.

        Args:
            period: Length of the season: ``"week"`` (weekday and time of day) or ``"day"``.
            slot_minutes: Slot width in minutes; must divide a day (1440). 15 minutes is the
                resolution at which station flows are usually planned and reported.
            history: Number of past slot means kept per slot (8 weeks: two months, long enough
                to outvote a few unusual weeks, short enough to follow seasonal drift).
            min_history: Slot means needed before a slot is scored (3 is the least for which
                a median ignores one outlier).
            timezone: IANA time zone of the site; slots follow local wall-clock time.
            min_scale: Floor on the scale, in the unit of the series (> 0).
            min_relative_scale: Floor on the scale as a fraction of the median (>= 0).

        Raises:
            ValueError: If an argument is out of range or the time zone is unknown.
        """
        if period not in ("week", "day"):
            raise ValueError(f"period must be 'week' or 'day', found {period!r}")
        if slot_minutes < 1 or _MINUTES_PER_DAY % slot_minutes != 0:
            raise ValueError(
                f"slot_minutes must divide a day (1440 minutes), found {slot_minutes}; "
                "use 5, 10, 15, 30 or 60"
            )
        if not 1 <= min_history <= history:
            raise ValueError(
                f"need 1 <= min_history <= history, found min_history={min_history}, "
                f"history={history}"
            )
        if not min_scale > 0 or not min_relative_scale >= 0:
            raise ValueError(
                f"need min_scale > 0 and min_relative_scale >= 0, found {min_scale} and "
                f"{min_relative_scale}"
            )
        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown timezone {timezone!r}: expected an IANA name such as 'Asia/Shanghai'"
            ) from exc
        self.period = period
        self.slot_minutes = slot_minutes
        self.history = history
        self.min_history = min_history
        self.timezone = timezone
        self.min_scale = min_scale
        self.min_relative_scale = min_relative_scale
        self._tz = tz
        self._slots_per_day = _MINUTES_PER_DAY // slot_minutes
        # Slot index within the period -> (mean, SD) of the last `history` occurrences, oldest
        # first.
        self._rings: dict[int, list[tuple[float, float]]] = {}
        # The slot occurrence being summarised (local day number * slots per day + slot of day)
        # and Welford's running count, mean and sum of squared deviations of its values.
        self._open_occurrence: int | None = None
        self._open_count = 0
        self._open_mean = 0.0
        self._open_m2 = 0.0
        self._warmed_up = False

    @property
    def warmed_up(self) -> bool:
        """True once some slot has ``min_history`` means; other slots may still score 0.0."""
        return self._warmed_up

    def learn_one(self, x: Observation) -> None:
        """Add ``x`` to the mean of its slot; close the previous slot when a new one starts."""
        occurrence = self._occurrence(x.ts_ms)
        if self._open_occurrence is None or occurrence > self._open_occurrence:
            self._close_open_slot()
            self._open_occurrence = occurrence
            self._open_count = 0
            self._open_mean = 0.0
            self._open_m2 = 0.0
        elif occurrence < self._open_occurrence:
            return  # Late data for a slot already closed: its summary is final.
        self._open_count += 1
        delta = x.value - self._open_mean
        self._open_mean += delta / self._open_count
        self._open_m2 += delta * (x.value - self._open_mean)

    def score_one(self, x: Observation) -> float:
        """Robust z-score of ``x.value`` against past weeks of its slot; 0.0 during warm-up."""
        baseline = self.baseline(x.ts_ms)
        if baseline is None:
            return 0.0
        median, scale = baseline
        return abs(x.value - median) / scale

    def baseline(self, ts_ms: int) -> tuple[float, float] | None:
        """Return the expected value and scale for ``ts_ms``, or None while the slot warms up.

        Useful to explain a score ("expected about 120 people at this time").
        """
        ring = self._rings.get(self._slot_of_period(self._occurrence(ts_ms)))
        if ring is None or len(ring) < self.min_history:
            return None
        means = [mean for mean, _ in ring]
        median = statistics.median(means)
        between = _MAD_TO_SIGMA * statistics.median(abs(m - median) for m in means)
        within = statistics.median(sd for _, sd in ring)
        scale = max(
            math.hypot(between, within), self.min_scale, self.min_relative_scale * abs(median)
        )
        return median, scale

    def _occurrence(self, ts_ms: int) -> int:
        local = datetime.fromtimestamp(ts_ms // 1000, tz=self._tz)
        slot_of_day = (local.hour * 60 + local.minute) // self.slot_minutes
        return local.toordinal() * self._slots_per_day + slot_of_day

    def _slot_of_period(self, occurrence: int) -> int:
        if self.period == "day":
            return occurrence % self._slots_per_day
        # date.toordinal() is 1 for Monday 0001-01-01, so (ordinal - 1) % 7 is the weekday.
        day, slot_of_day = divmod(occurrence, self._slots_per_day)
        return ((day - 1) % 7) * self._slots_per_day + slot_of_day

    def _close_open_slot(self) -> None:
        if self._open_occurrence is None or self._open_count == 0:
            return
        ring = self._rings.setdefault(self._slot_of_period(self._open_occurrence), [])
        ring.append((self._open_mean, math.sqrt(max(self._open_m2, 0.0) / self._open_count)))
        if len(ring) > self.history:
            del ring[0]
        if len(ring) >= self.min_history:
            self._warmed_up = True


class EwmaCusum:
    """One-sided upper CUSUM on residuals standardised by an exponentially weighted mean and SD.

    For each observation after warm-up, ``z = (value - mean) / max(sd, min_std)`` with the
    mean and SD from before the observation, and the CUSUM statistic is
    ``S = max(0, S + z - k)``. ``score_one(x)`` is the ``S`` that ``x`` would produce, divided
    by ``h``: a score >= 1 means "change detected". ``k = 0.5`` and ``h = 5`` are the textbook
    pair. Measured with the defaults on simulated noise: a false alarm every 900 (Poisson
    counts, mean 30) to 1,300 (normal) observations, i.e. every 2.5 to 3.7 hours at 10 s; a step
    of 3 SD is detected after 3 observations (median; 90 % within 4), 2 SD after 5 (97 % of the
    time), 1.5 SD only 3 times in 4; a step of 1 SD is mostly absorbed by the EWMA before the
    CUSUM builds up. It is a detector of sudden surges, not of small shifts.

    Reset rule: when learning an observation brings ``S`` to ``h`` or above, the alarm is
    counted (``detections``) and ``S`` restarts from 0 (Page's restart). The mean and SD keep
    learning, with each residual clipped to ``clip`` SDs, so one extreme value does not blind
    the detector by inflating the SD; a sustained new level therefore alarms again every few
    observations until the mean has caught up (after roughly ``1 / alpha`` observations and
    more), and then becomes the new normal. The risk engine should hold a warning for a
    minimum time instead of relying on the score staying high.

    Assumes:
        Regular sampling (it ignores ``ts_ms``; a gap is just the next observation) and a
        series that is locally stationary over about ``1 / alpha`` observations: noise around
        a slowly moving level.
    Cannot see:
        Drops (it is one-sided, surges only); slow rises that the EWMA follows; whether a
        level is unusual for the time of day (a rush hour that builds up quickly may alarm
        every day; the seasonal and forecast detectors judge levels). Autocorrelated noise
        raises the false-alarm rate above the figure above.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        k: float = 0.5,
        h: float = 5.0,
        warmup: int = 20,
        min_std: float = 1.0,
        clip: float = 3.0,
    ) -> None:
        """Create a detector with no history.

        Args:
            alpha: EWMA weight of the newest observation (0 < alpha <= 1); 0.1 remembers about
                the last 10-20 observations (2-3 minutes at 10 s): fast, yet smooth.
            k: CUSUM allowance in SDs (>= 0); about half the smallest shift worth detecting.
            h: CUSUM decision threshold in SDs (> 0); the score is ``S / h``.
            warmup: Observations learned before scoring starts (>= 2). During warm-up the
                EWMA weight is ``max(alpha, 1 / n)``, so mean and variance start as plain
                averages instead of being biased towards the first value.
            min_std: Floor on the SD, in the unit of the series (> 0); without it a constant
                series (a closed gate: 0 per minute) would make any change infinitely surprising.
            clip: Residuals are clipped to this many SDs when updating mean and variance (> 0).

        Raises:
            ValueError: If an argument is out of range.
        """
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], found {alpha}")
        if not k >= 0 or not h > 0:
            raise ValueError(f"need k >= 0 and h > 0, found k={k}, h={h}")
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2 observations, found {warmup}")
        if not min_std > 0 or not clip > 0:
            raise ValueError(f"need min_std > 0 and clip > 0, found {min_std} and {clip}")
        self.alpha = alpha
        self.k = k
        self.h = h
        self.warmup = warmup
        self.min_std = min_std
        self.clip = clip
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self.cusum = 0.0
        self.detections = 0

    @property
    def warmed_up(self) -> bool:
        """True once ``warmup`` observations have been learned."""
        return self.n >= self.warmup

    def learn_one(self, x: Observation) -> None:
        """Advance the CUSUM (restarting it after an alarm) and update the EWMA mean and SD."""
        if self.warmed_up:
            cusum = self._next_cusum(x.value)
            if cusum >= self.h:
                self.detections += 1
                cusum = 0.0
            self.cusum = cusum
        self.n += 1
        weight = max(self.alpha, 1.0 / self.n)
        diff = x.value - self.mean
        if self.n > self.warmup:
            limit = self.clip * self._std()
            diff = min(max(diff, -limit), limit)
        self.mean += weight * diff
        self.var = (1.0 - weight) * (self.var + weight * diff * diff)

    def score_one(self, x: Observation) -> float:
        """The CUSUM statistic ``x`` would produce, divided by ``h``; 0.0 during warm-up."""
        if not self.warmed_up:
            return 0.0
        return self._next_cusum(x.value) / self.h

    def _std(self) -> float:
        return max(math.sqrt(self.var), self.min_std)

    def _next_cusum(self, value: float) -> float:
        z = (value - self.mean) / self._std()
        return max(0.0, self.cusum + z - self.k)


class ForecastResidual:
    """How far the value lies above the forecast's upper bound, in forecast-band widths.

    ``score = (value - upper) / max(upper - yhat, min_band)`` when ``value > upper``, else 0.0:
    a score of 1 means "as far above the upper bound as the upper bound is above the forecast".
    One-sided on purpose: crowd safety cares about more people than expected; a drop below
    ``lower`` scores 0.0 (the seasonal baseline sees drops). Observations without a forecast
    (``yhat`` or ``upper`` missing) score 0.0. Needs no history, so it is warmed up from the
    start; learning only counts observations.

    Assumes:
        The forecast (Prophet's ``yhat`` and ``yhat_upper`` for the same time) is calibrated:
        values above ``upper`` are rare in normal operation, so the score is as good as the
        forecast. ``min_band`` (in the unit of the series) keeps the score finite when the
        band is degenerate (``upper <= yhat``, a forecast of 0 at night).
    Cannot see:
        Anything the forecast already expects (a planned event in the forecast is not an
        anomaly), anything without a forecast, and a forecast that is wrong in the same way
        as the data (both stale).
    """

    def __init__(self, min_band: float = 1.0) -> None:
        """Create the detector.

        Args:
            min_band: Floor on the band width ``upper - yhat``, in the unit of the series (> 0);
                one person or one person per minute by default.

        Raises:
            ValueError: If ``min_band`` is not positive.
        """
        if not min_band > 0:
            raise ValueError(f"min_band must be > 0, found {min_band}")
        self.min_band = min_band
        self.n_seen = 0
        self.n_with_forecast = 0

    @property
    def warmed_up(self) -> bool:
        """Always True: the score depends only on the observation and its forecast."""
        return True

    def learn_one(self, x: Observation) -> None:
        """Count the observation (and whether it carried a forecast)."""
        self.n_seen += 1
        if x.yhat is not None and x.upper is not None:
            self.n_with_forecast += 1

    def score_one(self, x: Observation) -> float:
        """Distance above ``upper`` in band widths; 0.0 inside the band or without a forecast."""
        if x.yhat is None or x.upper is None or x.value <= x.upper:
            return 0.0
        return (x.value - x.upper) / max(x.upper - x.yhat, self.min_band)
