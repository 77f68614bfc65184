"""Zone risk: fused headcount, state per tick, and the alert lifecycle of a surge."""

from __future__ import annotations

import numpy as np

from crowdwatch.risk.engine import StationRisk, headcount_rule
from crowdwatch.site import load_site
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
TICK_MS = 10_000


def test_headcount_rules_follow_the_cameras() -> None:
    rules = {z.id: headcount_rule(z, SITE) for z in SITE.zones}
    assert rules["CTR-L1-platform"] == "video"  # a camera watches it
    assert rules["STD-concourse"] == "gates"  # only gates count it
    assert rules["STD-plaza"] == "video"


def test_state_fuses_sources_and_reports_density_and_service_level() -> None:
    risk = StationRisk("STD", SITE)
    risk.observe("STD-concourse", 0, gate_occupancy=1400.0, inflow_per_min=20.0)
    risk.observe("STD-concourse", 60_000, inflow_per_min=80.0)
    risk.observe("STD-plaza", 60_000, video_headcount=600.0, gate_occupancy=9000.0)
    states, events = risk.tick(60_000)
    by_zone = {s.zone_id: s for s in states}
    concourse = by_zone["STD-concourse"]
    assert concourse.headcount == 1400.0 and concourse.source == "gates"
    assert concourse.capacity_share == 1400 / 1750 and concourse.level == "yellow"
    assert concourse.density == 1400 / 1400 and concourse.level_of_service == "D"
    assert concourse.inflow_trend_per_min2 == 60.0  # 20 → 80 per minute over a minute
    plaza = by_zone["STD-plaza"]
    assert plaza.headcount == 600.0 and plaza.level is None  # video rules the plaza
    assert [(e.zone_id, e.event, e.level) for e in events] == [
        ("STD-concourse", "opened", "yellow")
    ]


def test_a_surge_opens_escalates_and_resolves_one_alert() -> None:
    risk = StationRisk("STD", SITE)
    shares = list(np.linspace(0.5, 1.1, 40)) + [1.1] * 30 + [0.3] * 120
    events = []
    for i, share in enumerate(shares):
        risk.observe("STD-concourse", i * TICK_MS, gate_occupancy=share * 1750)
        events += risk.tick(i * TICK_MS)[1]
    lifecycle = [(e.event, e.level, e.previous_level) for e in events]
    assert lifecycle == [
        ("opened", "blue", None),
        ("escalated", "yellow", "blue"),
        ("escalated", "orange", "yellow"),
        ("escalated", "red", "orange"),
        ("resolved", "red", "red"),
    ]
    assert len({e.alert_id for e in events}) == 1
    assert "of capacity ≥ 100%" in events[3].reason
    assert events[3].values["capacity"] == 1750.0
    assert events[-1].reason.startswith("calm:")
    # a new surge later is a new alert
    for j in range(40):
        risk.observe("STD-concourse", (len(shares) + j) * TICK_MS, gate_occupancy=1.2 * 1750)
        events += risk.tick((len(shares) + j) * TICK_MS)[1]
    assert events[-1].event == "opened" and events[-1].alert_id != events[0].alert_id


def test_a_call_burst_raises_the_level_one_step() -> None:
    risk = StationRisk("STD", SITE)
    risk.observe("STD-concourse", 0, gate_occupancy=0.85 * 1750)
    assert risk.tick(0)[1][0].level == "yellow"
    risk.observe("STD-concourse", TICK_MS, burst_alert=True, burst_score=5.2)
    event = risk.tick(TICK_MS)[1][0]
    assert (event.event, event.level) == ("escalated", "orange")
    assert "110 calls" in event.reason
