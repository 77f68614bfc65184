"""Warning levels: thresholds, immediate escalation, calm and hold before de-escalation."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdwatch.risk.levels import (
    RANK,
    LevelState,
    Thresholds,
    ZoneInputs,
    level_of_service,
    step,
    target_level,
    worst,
)

T = Thresholds()
TICK_MS = 10_000


def test_level_of_service_follows_fruin() -> None:
    assert [level_of_service(d) for d in (0.1, 0.3, 0.5, 1.0, 2.0, 2.2, 5.0)] == [
        "A",
        "B",
        "C",
        "D",
        "E",
        "F",
        "F",
    ]


def test_targets_from_share_density_and_signals() -> None:
    share = lambda s: target_level(ZoneInputs(s, 0.5), T)  # noqa: E731
    assert [share(s) for s in (0.59, 0.6, 0.8, 0.9, 1.0, 1.3)] == [
        None,
        "blue",
        "yellow",
        "orange",
        "red",
        "red",
    ]
    assert target_level(ZoneInputs(0.3, 2.5), T) == "orange"  # LoS F on a big concourse
    assert target_level(ZoneInputs(0.3, 4.2), T) == "red"
    assert target_level(ZoneInputs(0.85, 0.5, strong_anomaly=True), T) == "orange"
    assert target_level(ZoneInputs(0.3, 0.5, call_burst=True), T) == "blue"
    assert target_level(ZoneInputs(1.2, 0.5, call_burst=True), T) == "red"
    assert worst(["blue", None, "orange", "yellow"]) == "orange" and worst([]) is None


def run(shares: list[float]) -> list[tuple[int, str | None]]:
    state = LevelState()
    changes = []
    for i, share in enumerate(shares):
        change = step(state, ZoneInputs(share, share * 1.5), i * TICK_MS, T)
        if change is not None:
            changes.append((i, change.level))
    return changes


def test_a_scripted_surge_gives_exactly_the_expected_levels() -> None:
    rng = np.random.default_rng(5)
    ramp = list(np.linspace(0.5, 1.05, 30))  # five minutes up to 105 %
    peak = [1.05] * 30  # five minutes over capacity
    down = list(np.linspace(1.05, 0.75, 30))  # easing to 75 %
    noisy = list(0.79 + rng.normal(0, 0.015, 60))  # ten minutes hovering at the 80 % line
    quiet = [0.4] * 90  # fifteen minutes of calm
    changes = run(ramp + peak + down + noisy + quiet)
    levels = [level for _, level in changes]
    # up one threshold at a time, down a step at a time after each calm: never back up while
    # the share hovers at 80 %
    assert levels == ["blue", "yellow", "orange", "red", "orange", "yellow", None]
    # escalation happens at the first tick over each threshold
    first_over = {
        lvl: next(i for i, s in enumerate(ramp) if s >= t)
        for lvl, t in zip(["blue", "yellow", "orange", "red"], T.share, strict=True)
    }
    assert [i for i, _ in changes[:4]] == list(first_over.values())


def test_hovering_at_a_threshold_does_not_flap() -> None:
    rng = np.random.default_rng(11)
    changes = run(list(0.8 + rng.normal(0, 0.02, 600)))
    # up to yellow (and maybe blue first), and never down while it hovers within the margin
    assert [level for _, level in changes] in (["blue", "yellow"], ["yellow"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.5), min_size=1, max_size=200))
def test_escalation_is_immediate_and_de_escalation_waits(shares: list[float]) -> None:
    state = LevelState()
    last_change_ms = 0
    for i, share in enumerate(shares):
        before = state.level
        inputs = ZoneInputs(share, 0.0)
        change = step(state, inputs, i * TICK_MS, T)
        target = target_level(inputs, T)
        if RANK[target] > RANK[before]:
            assert state.level == target
        if change is not None and not change.escalated:
            assert i * TICK_MS - last_change_ms >= T.hold_s * 1000
            assert RANK[state.level] < RANK[before]
        if change is not None:
            last_change_ms = i * TICK_MS
