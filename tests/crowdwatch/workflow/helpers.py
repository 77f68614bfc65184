"""What the workflow tests share: a hand-moved clock, alert events, the responding site."""

from __future__ import annotations

from crowdwatch.risk.notify import AlertEvent, EventType
from crowdwatch.site import Contact, Level, Site
from tests.crowdwatch.risk.test_notify import ALL_ROLES, site_with

T0 = 1_777_593_600_000
"""2026-05-01 00:00 UTC: the clock's start in every test."""

SECOND = 1000


class Clock:
    """A clock the test moves by hand (epoch ms)."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


def alert(
    level: Level = "red",
    kind: EventType = "opened",
    *,
    ts_ms: int = T0,
    zone: str = "CTR-concourse",
    previous: Level | None = None,
) -> AlertEvent:
    return AlertEvent(
        alert_id=f"{zone}@{ts_ms if kind == 'opened' else T0}",
        event=kind,
        kind="big_crowd",
        zone_id=zone,
        station_id="CTR",
        level=level,
        previous_level=previous,
        ts_ms=ts_ms,
        reason="107% of capacity ≥ 100%",
        values={"capacity_share": 1.07},
    )


def responding_site() -> Site:
    """The example site (its response section) with a contact per role at CTR."""
    return site_with({role: Contact(name=f"CTR {role}") for role in ALL_ROLES})
