"""Four-colour big-crowd warning levels with hysteresis, and pedestrian level of service.

Levels, lowest first: blue, yellow, orange, red (no warning below blue). A zone's target level
comes from, by default:

- share of capacity: 60 % blue, 80 % yellow, 90 % orange, 100 % red (Chinese scenic spots must
  announce at 80 % and stop ticket sales at 100 %);
- density: at least orange at level of service F (above 2.17 persons/m², Fruin's walkway
  scale), red from 4 persons/m²;
- one step up for a strong anomaly or a burst of crowd-related 110 calls (never above red, and
  from no warning to blue).

Escalation is immediate. De-escalation waits for a sustained calm: the level drops only after
it has been held for ``hold_s`` and the target, computed with thresholds lowered by
``hysteresis`` (a share of capacity, and the same share of the density limits), has stayed
below the current level for ``calm_s``; then it drops to the highest level seen during the
calm, so levels do not flap around a threshold. A station's level is the worst of its zones'.
"""

from __future__ import annotations

from dataclasses import dataclass

from crowdwatch.site import Level

LEVELS: tuple[Level, ...] = ("blue", "yellow", "orange", "red")
RANK: dict[Level | None, int] = {None: 0, "blue": 1, "yellow": 2, "orange": 3, "red": 4}
LOS_LIMITS = ((0.27, "A"), (0.43, "B"), (0.72, "C"), (1.08, "D"), (2.17, "E"))
"""Fruin walkway level of service: upper density (persons/m²) of A to E; above is F."""


def level_of_service(density: float) -> str:
    """Pedestrian level of service A–F for a density in persons/m² (Fruin, walkways)."""
    for limit, grade in LOS_LIMITS:
        if density <= limit:
            return grade
    return "F"


def worst(levels: list[Level | None]) -> Level | None:
    """The highest of several levels (a station's level is the worst of its zones')."""
    return max(levels, key=lambda level: RANK[level], default=None)


@dataclass(frozen=True)
class Thresholds:
    """Where the levels start; defaults from practice (see the module docstring)."""

    share: tuple[float, float, float, float] = (0.6, 0.8, 0.9, 1.0)
    los_f_density: float = 2.17
    red_density: float = 4.0
    hysteresis: float = 0.05
    hold_s: float = 300.0
    calm_s: float = 120.0


@dataclass(frozen=True)
class ZoneInputs:
    """What a zone's level is decided from, at one tick."""

    capacity_share: float
    density: float
    strong_anomaly: bool = False
    call_burst: bool = False


def target_level(inputs: ZoneInputs, thresholds: Thresholds, margin: float = 0.0) -> Level | None:
    """The level the inputs call for, with thresholds lowered by ``margin`` (for calm checks)."""
    rank = sum(inputs.capacity_share >= t - margin for t in thresholds.share)
    scale = 1 - margin
    if inputs.density > thresholds.red_density * scale:
        rank = 4
    elif inputs.density > thresholds.los_f_density * scale:
        rank = max(rank, 3)
    if inputs.strong_anomaly or inputs.call_burst:
        rank = min(4, rank + 1)
    return None if rank == 0 else LEVELS[rank - 1]


@dataclass
class LevelState:
    """One zone's current level and its de-escalation clock (plain, picklable)."""

    level: Level | None = None
    since_ms: int = 0
    calm_since_ms: int | None = None
    calm_peak: Level | None = None


@dataclass(frozen=True)
class Change:
    """A level change of one zone at one tick."""

    previous: Level | None
    level: Level | None
    ts_ms: int

    @property
    def escalated(self) -> bool:
        """Whether the level went up."""
        return RANK[self.level] > RANK[self.previous]


def step(
    state: LevelState, inputs: ZoneInputs, ts_ms: int, thresholds: Thresholds
) -> Change | None:
    """Advance a zone's level by one tick; return the change, if any."""
    target = target_level(inputs, thresholds)
    if RANK[target] > RANK[state.level]:
        change = Change(state.level, target, ts_ms)
        state.level, state.since_ms = target, ts_ms
        state.calm_since_ms, state.calm_peak = None, None
        return change
    calm_target = target_level(inputs, thresholds, margin=thresholds.hysteresis)
    if RANK[calm_target] >= RANK[state.level]:
        state.calm_since_ms, state.calm_peak = None, None
        return None
    if state.calm_since_ms is None:
        state.calm_since_ms, state.calm_peak = ts_ms, calm_target
    else:
        state.calm_peak = worst([state.calm_peak, calm_target])
    held = ts_ms - state.since_ms >= thresholds.hold_s * 1000
    calm = ts_ms - state.calm_since_ms >= thresholds.calm_s * 1000
    if not (held and calm):
        return None
    change = Change(state.level, state.calm_peak, ts_ms)
    state.level, state.since_ms = state.calm_peak, ts_ms
    state.calm_since_ms, state.calm_peak = None, None
    return change
