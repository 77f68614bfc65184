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

from crowdwatch.settings import Settings

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
    """Robust z-score of a count against the same time-of-week slot in past weeks.

    The period (a week by default) is cut into slots of ``slot_minutes`` in local time. While a
    slot is running, its observations are summarised by their mean and standard deviation;
    when the stream moves on to the next slot, that pair goes into the slot's ring of the last
    ``history`` pairs (one per past week). The signed deviation is::

        (x.value - median(means)) / scale
        scale = max(sqrt((1.4826 * MAD(means))**2 + median(sds)**2),
                    min_scale, min_relative_scale * |median|, poisson_scale * sqrt(|median|))

    ``1.4826 * MAD(means)`` is how much the slot's level varies from week to week;
    ``median(sds)`` is how much single observations vary around the slot's level (noise and
    the ramp within the slot). Median and MAD ignore unusual weeks as long as they are fewer
    than half of the ring, so a past surge neither raises the baseline nor hides the next one.

    Eight weeks are few to measure a spread with, and eight quiet weeks of one slot may agree
    by chance. So the week-to-week spread is at least ``time_of_day_spread`` times that of the
    same time of day, relative to its level: the median over the seven weekdays' slots of
    ``1.4826 * MAD(means) / median(means)`` (56 weeks of slots instead of 8). A slot whose
    weeks happened to agree then no longer alarms on the next ordinary week: on the shared
    footfall this removed a quarter of Dublin's false alarms and a sixth of Auckland's; every
    labelled surge was still caught, two of them an hour later.

    ``score_one`` is one-sided: rises score, drops score 0.0 — more people than usual is the
    danger; fewer (a closed street, a dead sensor, a holiday) is reported by `deviation`, which
    is negative for drops, but must not raise a level.

    Floors made for counts, explained: the spread can be tiny or zero (a closed zone at 0
    people every night, eight quiet weeks that agree by chance), and then any deviation would
    score without bound. Counts are at least Poisson-noisy, so the scale is never below
    ``poisson_scale * sqrt(median)`` (15 people against a usual 4.5 is z = 4.9, not 17); and
    the same slot of different weeks rarely agrees better than ``min_relative_scale`` (10 %)
    at a busy place. ``min_scale`` (one person) keeps an empty slot finite.

    Calendar: ``days_off`` (public holidays, as date ordinals) are scored against the Sunday
    slot — a holiday looks like a Sunday, not like the weekday it falls on — and neither they
    nor ``skip_days`` (the site's event days) are learned, so the ordinary baselines stay
    ordinary.

    Useful from day one: until a slot has ``min_history`` weeks, it is scored against the same
    slot of day over the last days (once ``min_history`` days exist), and before that against
    the median of the last ``recent_slots`` slot means; both with floors widened by
    ``young_widen`` because they know less (a weekday is not a Saturday, an hour ago is not
    now). A new zone thus scores a doubling of its counts within hours.

    Assumes:
        The series repeats with the period (weekly by default: weekday and hour matter) and
        changes slowly from one period to the next.
    Cannot see:
        A slow change that lasts for weeks, which becomes the new normal; how a value moves
        within the current slot (each observation is judged on its own; `SeasonalCusum` looks
        at that). Late data for a closed slot is ignored when learning.

    Memory: at most ``(slots per period + slots per day) x history + recent_slots`` pairs and
    one spread per slot of day.
    """

    def __init__(
        self,
        period: Literal["week", "day"] = "week",
        slot_minutes: int = 15,
        history: int = 8,
        min_history: int = 3,
        timezone: str = "Asia/Shanghai",
        min_scale: float = 1.0,
        min_relative_scale: float = 0.10,
        poisson_scale: float = 1.0,
        days_off: frozenset[int] = frozenset(),
        skip_days: frozenset[int] = frozenset(),
        recent_slots: int = 8,
        young_widen: float = 2.0,
        time_of_day_spread: float = 1.0,
    ) -> None:
        """Create an empty baseline.

        Args:
            period: Length of the season: ``"week"`` (weekday and time of day) or ``"day"``.
            slot_minutes: Slot width in minutes; must divide a day (1440). 15 minutes is the
                resolution at which station flows are usually planned and reported.
            history: Number of past slot means kept per slot (8 weeks: two months, long enough
                to outvote a few unusual weeks, short enough to follow seasonal drift).
            min_history: Slot means needed before a slot is scored against its own weeks (3 is
                the least for which a median ignores one outlier).
            timezone: IANA time zone of the site; slots follow local wall-clock time.
            min_scale: Floor on the scale, in the unit of the series (> 0).
            min_relative_scale: Floor on the scale as a fraction of the median (>= 0).
            poisson_scale: Floor on the scale in multiples of ``sqrt(median)`` (>= 0).
            days_off: Public holidays (date ordinals): scored as Sundays, not learned.
            skip_days: Other unusual days (the site's event days): not learned.
            recent_slots: Closed slot means kept for the new-zone baseline (>= 2).
            young_widen: Factor on the floors while a slot has less than ``min_history``
                weeks (>= 1).
            time_of_day_spread: Factor on the time of day's relative week-to-week spread
                that the slot's own spread is never below (>= 0; 0: the slot's own only).
                Weekly period only.

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
        if not min_scale > 0 or not min_relative_scale >= 0 or not poisson_scale >= 0:
            raise ValueError(
                f"need min_scale > 0, min_relative_scale >= 0 and poisson_scale >= 0, found "
                f"{min_scale}, {min_relative_scale} and {poisson_scale}"
            )
        if not time_of_day_spread >= 0:
            raise ValueError(f"need time_of_day_spread >= 0, found {time_of_day_spread}")
        if recent_slots < 2 or not young_widen >= 1:
            raise ValueError(
                f"need recent_slots >= 2 and young_widen >= 1, found {recent_slots} and "
                f"{young_widen}"
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
        self.poisson_scale = poisson_scale
        self.days_off = days_off
        self.skip_days = skip_days
        self.recent_slots = recent_slots
        self.young_widen = young_widen
        self.time_of_day_spread = time_of_day_spread
        self._tz = tz
        self._slots_per_day = _MINUTES_PER_DAY // slot_minutes
        # Slot index within the period -> (mean, SD) of the last `history` occurrences, oldest
        # first; the same per slot of day (the young baseline); the last closed slot means.
        self._rings: dict[int, list[tuple[float, float]]] = {}
        self._daily: dict[int, list[tuple[float, float]]] = {}
        self._recent: list[float] = []
        # Slot of day -> the median relative week-to-week spread of its weekdays' rings.
        self._day_spread: dict[int, float] = {}
        # The slot occurrence being summarised (local day number * slots per day + slot of day)
        # and Welford's running count, mean and sum of squared deviations of its values.
        self._open_occurrence: int | None = None
        self._open_count = 0
        self._open_mean = 0.0
        self._open_m2 = 0.0
        self._warmed_up = False

    def __eq__(self, other: object) -> bool:
        """Same class and same state (composite detectors compare their parts)."""
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None  # type: ignore[assignment]  # mutable state

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore a snapshot; one taken before the time of day's spread existed gets it."""
        self.__dict__.update(state)
        if "_day_spread" not in state:
            self.time_of_day_spread = 1.0
            self._day_spread = {}
            for slot_of_day in range(self._slots_per_day):
                self._pool_spread(slot_of_day)

    @property
    def warmed_up(self) -> bool:
        """True once a baseline exists (the recent one at least); some slots may score 0.0."""
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
        """Robust z-score of a rise of ``x.value`` above its baseline; 0.0 for drops, warm-up."""
        return max(0.0, self.deviation(x))

    def deviation(self, x: Observation) -> float:
        """Signed robust z-score of ``x.value`` (negative for drops); 0.0 without a baseline."""
        return self.assess(x)[0]

    def assess(self, x: Observation) -> tuple[float, bool]:
        """The signed deviation of ``x`` and whether it was judged against its own weeks.

        A young baseline (recent days or hours) gives meaningful scores but cannot tell a
        surge from a Saturday or from the morning rush, so a level should rise only on a
        mature one.
        """
        baseline = self._baseline(x.ts_ms)
        if baseline is None:
            return 0.0, False
        median, scale, mature = baseline
        return (x.value - median) / scale, mature

    def baseline(self, ts_ms: int) -> tuple[float, float] | None:
        """Return the expected value and scale for ``ts_ms``, or None while nothing is known.

        Useful to explain a score ("expected about 120 people at this time").
        """
        baseline = self._baseline(ts_ms)
        return None if baseline is None else baseline[:2]

    def _baseline(self, ts_ms: int) -> tuple[float, float, bool] | None:
        occurrence = self._occurrence(ts_ms)
        ring = self._rings.get(self._slot_of_period(occurrence))
        widen = 1.0
        if ring is None or len(ring) < self.min_history:
            widen = self.young_widen
            ring = self._daily.get(occurrence % self._slots_per_day)
            if ring is None or len(ring) < self.min_history:
                if len(self._recent) < max(2, self.recent_slots // 2):
                    return None
                ring = [(mean, 0.0) for mean in self._recent]
        means = [mean for mean, _ in ring]
        median = statistics.median(means)
        level = abs(median)
        between = _MAD_TO_SIGMA * statistics.median(abs(m - median) for m in means)
        if widen == 1.0:
            pooled = self._day_spread.get(occurrence % self._slots_per_day, 0.0)
            between = max(between, self.time_of_day_spread * pooled * level)
        within = statistics.median(sd for _, sd in ring)
        scale = max(
            math.hypot(between, within),
            widen
            * max(
                self.min_scale,
                self.min_relative_scale * level,
                self.poisson_scale * math.sqrt(level),
            ),
        )
        return median, scale, widen == 1.0

    def _occurrence(self, ts_ms: int) -> int:
        local = datetime.fromtimestamp(ts_ms // 1000, tz=self._tz)
        slot_of_day = (local.hour * 60 + local.minute) // self.slot_minutes
        return local.toordinal() * self._slots_per_day + slot_of_day

    def _slot_of_period(self, occurrence: int) -> int:
        day, slot_of_day = divmod(occurrence, self._slots_per_day)
        if self.period == "day":
            return slot_of_day
        # date.toordinal() is 1 for Monday 0001-01-01, so (ordinal - 1) % 7 is the weekday.
        weekday = 6 if day in self.days_off else (day - 1) % 7
        return weekday * self._slots_per_day + slot_of_day

    def _close_open_slot(self) -> None:
        if self._open_occurrence is None or self._open_count == 0:
            return
        summary = (self._open_mean, math.sqrt(max(self._open_m2, 0.0) / self._open_count))
        self._recent.append(self._open_mean)
        if len(self._recent) > self.recent_slots:
            del self._recent[0]
        if len(self._recent) >= max(2, self.recent_slots // 2):
            self._warmed_up = True
        day = self._open_occurrence // self._slots_per_day
        if day in self.days_off or day in self.skip_days:
            return  # an unusual day: not part of the ordinary baselines
        for rings, slot in (
            (self._rings, self._slot_of_period(self._open_occurrence)),
            (self._daily, self._open_occurrence % self._slots_per_day),
        ):
            ring = rings.setdefault(slot, [])
            ring.append(summary)
            if len(ring) > self.history:
                del ring[0]
        if self.period == "week":
            self._pool_spread(self._open_occurrence % self._slots_per_day)

    def _pool_spread(self, slot_of_day: int) -> None:
        """Recompute the relative week-to-week spread of a time of day over its weekdays."""
        spreads = []
        for weekday in range(7):
            ring = self._rings.get(weekday * self._slots_per_day + slot_of_day)
            if ring is None or len(ring) < self.min_history:
                continue
            means = [mean for mean, _ in ring]
            median = statistics.median(means)
            if median > 0:
                deviation = statistics.median(abs(m - median) for m in means)
                spreads.append(_MAD_TO_SIGMA * deviation / median)
        if spreads:
            self._day_spread[slot_of_day] = statistics.median(spreads)


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

    def __eq__(self, other: object) -> bool:
        """Same class and same state (composite detectors compare their parts)."""
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None  # type: ignore[assignment]  # mutable state

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


class SeasonalCusum:
    """EWMA/CUSUM on the seasonal residual: "a sudden rise beyond what this hour usually does".

    Each observation is first standardised by a `SeasonalRobustBaseline` (its signed
    deviation), and the `EwmaCusum` runs on that residual instead of on the raw level. A daily
    ramp — the morning rush building up — is in the baseline, so its residual stays near 0 and
    the CUSUM stays quiet; a surge the baseline did not expect accumulates within a few
    observations. Without a baseline yet, the residual is 0 and the score too.

    Assumes and cannot see: as `SeasonalRobustBaseline` and `EwmaCusum` together; a rise that
    is slow against ``1 / alpha`` observations is absorbed by the EWMA (the seasonal score
    still sees its level).
    """

    def __init__(
        self,
        seasonal: SeasonalRobustBaseline | None = None,
        cusum: EwmaCusum | None = None,
    ) -> None:
        """Combine a seasonal baseline and a CUSUM (defaults: each with its defaults).

        The CUSUM's ``min_std`` should be about 1 here: the residual is already in SDs.
        """
        self.seasonal = seasonal or SeasonalRobustBaseline()
        self.cusum = cusum or EwmaCusum()

    @property
    def warmed_up(self) -> bool:
        """True once the baseline and the CUSUM are both warmed up."""
        return self.seasonal.warmed_up and self.cusum.warmed_up

    def _residual(self, x: Observation) -> Observation:
        return Observation(x.ts_ms, self.seasonal.deviation(x))

    def learn_one(self, x: Observation) -> None:
        """Learn the residual (against the baseline as it was), then the observation."""
        if self.seasonal.warmed_up:
            self.cusum.learn_one(self._residual(x))
        self.seasonal.learn_one(x)

    def score_one(self, x: Observation) -> float:
        """The CUSUM score of the residual of ``x``; 0.0 during warm-up."""
        if not self.seasonal.warmed_up:
            return 0.0
        return self.cusum.score_one(self._residual(x))


class AlertEpisodes:
    """Strong scores grouped into episodes: one alert per episode, with a refractory period.

    The decision step after a detector: an episode opens at a strong score and lasts while
    strong scores keep coming less than ``refractory_ms`` apart; it ends ``refractory_ms``
    after the last one. A surge that flickers above and below the line (a march passing
    sensor after sensor, an hour that dips) is one episode, so people are called once.
    Plain state, picklable.
    """

    def __init__(self, refractory_ms: int) -> None:
        """Create the step; ``refractory_ms`` >= 0."""
        if refractory_ms < 0:
            raise ValueError(f"refractory_ms must be >= 0, found {refractory_ms}")
        self.refractory_ms = refractory_ms
        self.last_strong_ms: int | None = None
        self.now_ms: int | None = None
        self.episodes = 0

    @property
    def active(self) -> bool:
        """Whether an episode is open at the newest time seen."""
        return (
            self.last_strong_ms is not None
            and self.now_ms is not None
            and self.now_ms - self.last_strong_ms <= self.refractory_ms
        )

    def update(self, ts_ms: int, strong: bool) -> bool:
        """Advance to ``ts_ms``; return True when this strong score opens a new episode."""
        self.now_ms = ts_ms if self.now_ms is None else max(self.now_ms, ts_ms)
        if not strong:
            return False
        opened = not self.active
        if opened:
            self.episodes += 1
        self.last_strong_ms = ts_ms
        return opened


def zone_detector(
    settings: Settings,
    timezone: str,
    *,
    days_off: frozenset[int] = frozenset(),
    skip_days: frozenset[int] = frozenset(),
) -> SeasonalRobustBaseline:
    """The seasonal detector of one zone, configured as every pipeline (and the harness) uses it.

    Args:
        settings: ``anomaly_*`` settings (floors, history).
        timezone: The site's time zone.
        days_off: The site's public holidays (`crowdwatch.site.SiteInfo.days_off`).
        skip_days: The site's event days (`crowdwatch.site.SiteInfo.event_ordinals`).
    """
    return SeasonalRobustBaseline(
        timezone=timezone,
        history=settings.anomaly_history_weeks,
        min_relative_scale=settings.anomaly_relative_floor,
        poisson_scale=settings.anomaly_poisson_floor,
        time_of_day_spread=settings.anomaly_time_of_day_spread,
        days_off=days_off,
        skip_days=skip_days,
    )
