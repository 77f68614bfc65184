"""Alert webhooks: routing, payloads, retries and idempotency against a real localhost receiver.

Each event goes through the outbox (`crowdwatch.risk.outbox`) as the pipelines send it: written
down, delivered by a `Dispatcher`, and read back as one `Delivery` per routed role.
"""

from __future__ import annotations

import itertools
import json
import random
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from crowdwatch.risk.notify import AlertEvent, AlertReceiver, EventType
from crowdwatch.risk.outbox import Delivery, Dispatcher, Outbox
from crowdwatch.site import Contact, Level, Role, Site, load_site
from tests.conftest import EXAMPLE_SITE

ALL_ROLES: tuple[Role, ...] = ("station_master", "transit_police", "local_police", "street_office")


@pytest.fixture
def receiver() -> Iterator[AlertReceiver]:
    with AlertReceiver() as r:
        yield r


def path(role: Role) -> str:
    return f"/CTR/{role}"


def site_with(contacts: dict[Role, Contact], station: str = "CTR") -> Site:
    """The example site with ``contacts`` at ``station``, validated like a site file."""
    base = load_site(EXAMPLE_SITE)
    stations = [
        s.model_copy(update={"contacts": contacts}) if s.id == station else s for s in base.stations
    ]
    return Site.model_validate(base.model_copy(update={"stations": stations}).model_dump())


def full_site(receiver: AlertReceiver) -> Site:
    """Every role at CTR has a webhook on the receiver, at /CTR/<role>."""
    return site_with(
        {role: Contact(name=f"CTR {role}", webhook=receiver.url(path(role))) for role in ALL_ROLES}
    )


def event(
    level: Level = "orange",
    kind: EventType = "opened",
    previous: Level | None = None,
    ts_ms: int = 1_777_593_600_000,
) -> AlertEvent:
    return AlertEvent(
        alert_id="CTR-concourse:big_crowd:1777593000000",
        event=kind,
        kind="big_crowd",
        zone_id="CTR-concourse",
        station_id="CTR",
        level=level,
        previous_level=previous,
        ts_ms=ts_ms,
        reason="occupancy 2550 of capacity 3000 (85%)",
        values={"occupancy": 2550.0, "capacity": 3000.0, "ratio": 0.85},
    )


def send(
    alert: AlertEvent, site: Site, tmp_path: Path, drain_s: float = 10.0, **kwargs: float
) -> list[Delivery]:
    """Write ``alert`` to a fresh outbox, deliver it for up to ``drain_s`` and say how it went."""
    box = Outbox(f"sqlite:///{tmp_path / f'outbox-{next(_outboxes)}.sqlite3'}")
    try:
        sender = Dispatcher(
            box,
            backoff_s=0.01,
            backoff_max_s=0.05,
            rng=random.Random(7),
            **kwargs,  # type: ignore[arg-type]
        ).start()
        sender.wake(box.enqueue([alert], site, mode="on", max_age_s=1e12))
        sender.close(drain_s)
        return box.deliveries(alert, site)
    finally:
        box.close()


_outboxes = itertools.count()


def called(receiver: AlertReceiver) -> dict[Role, int]:
    return {role: len(receiver.received(path(role))) for role in ALL_ROLES}


def test_orange_reaches_station_master_and_transit_police_once_with_payload_and_key(
    receiver: AlertReceiver, tmp_path: Path
) -> None:
    alert = event("orange")
    deliveries = send(alert, full_site(receiver), tmp_path)

    assert deliveries == [
        Delivery("station_master", receiver.url(path("station_master")), "delivered", 1, None, 200),
        Delivery("transit_police", receiver.url(path("transit_police")), "delivered", 1, None, 200),
    ]
    assert called(receiver) == {
        "station_master": 1,
        "transit_police": 1,
        "local_police": 0,
        "street_office": 0,
    }
    for role in ("station_master", "transit_police"):
        [got] = receiver.received(path(role))
        assert got["recipient"] == {"role": role, "name": f"CTR {role}"}
        assert got["idempotency_key"] == alert.idempotency_key(role)
        assert receiver.keys(path(role)) == [alert.idempotency_key(role)]
        assert got["alert_id"] == alert.alert_id
        assert (got["event"], got["kind"], got["level"], got["previous_level"]) == (
            "opened",
            "big_crowd",
            "orange",
            None,
        )
        assert (got["zone_id"], got["station_id"]) == ("CTR-concourse", "CTR")
        assert got["ts_ms"] == 1_777_593_600_000
        assert got["ts"] == "2026-05-01T00:00:00.000+00:00"
        assert got["values"] == {"occupancy": 2550.0, "capacity": 3000.0, "ratio": 0.85}
        assert got["reason"] == alert.reason
        assert got["lead_time_s"] is None
    sm = receiver.received(path("station_master"))[0]["idempotency_key"]
    tp = receiver.received(path("transit_police"))[0]["idempotency_key"]
    assert sm != tp  # the key names the recipient


def test_red_reaches_all_four_roles(receiver: AlertReceiver, tmp_path: Path) -> None:
    deliveries = send(event("red", "escalated", previous="orange"), full_site(receiver), tmp_path)

    assert [(d.role, d.status) for d in deliveries] == [(r, "delivered") for r in ALL_ROLES]
    assert called(receiver) == dict.fromkeys(ALL_ROLES, 1)
    for role in ALL_ROLES:
        assert receiver.received(path(role))[0]["level"] == "red"


def test_roles_without_contact_or_webhook_are_reported_as_no_contact(
    receiver: AlertReceiver, tmp_path: Path
) -> None:
    site = site_with(
        {
            "station_master": Contact(name="SM", webhook=receiver.url(path("station_master"))),
            "transit_police": Contact(name="Transit police desk"),  # phone only
        }
    )
    deliveries = send(event("red"), site, tmp_path)

    assert deliveries == [
        Delivery("station_master", receiver.url(path("station_master")), "delivered", 1, None, 200),
        Delivery("transit_police", None, "no_contact", 0),
        Delivery("local_police", None, "no_contact", 0),
        Delivery("street_office", None, "no_contact", 0),
    ]
    assert called(receiver)["station_master"] == 1


def test_a_station_without_any_contact_sends_nothing(
    receiver: AlertReceiver, tmp_path: Path
) -> None:
    deliveries = send(
        AlertEvent(**{**event("red").__dict__, "station_id": "RVS", "zone_id": "RVS-concourse"}),
        full_site(receiver),
        tmp_path,
    )
    assert [(d.role, d.status) for d in deliveries] == [(r, "no_contact") for r in ALL_ROLES]
    assert called(receiver) == dict.fromkeys(ALL_ROLES, 0)


@pytest.mark.parametrize("status", [503, 500, 429])
def test_transient_failures_are_retried_with_the_same_key_and_recorded_once(
    receiver: AlertReceiver, status: int, tmp_path: Path
) -> None:
    alert = event("yellow")
    receiver.fail(path("station_master"), 2, status=status)

    [delivery] = send(alert, full_site(receiver), tmp_path)

    assert (delivery.status, delivery.attempts, delivery.http_status) == ("delivered", 3, 200)
    assert receiver.keys(path("station_master")) == [alert.idempotency_key("station_master")] * 3
    assert len(receiver.received(path("station_master"))) == 1


def test_backoff_doubles_up_to_the_cap(tmp_path: Path) -> None:
    box = Outbox(f"sqlite:///{tmp_path / 'outbox.sqlite3'}")
    sender = Dispatcher(box, backoff_s=1.0, backoff_max_s=5.0, rng=random.Random(1))
    waits = [sender.backoff(retry) for retry in range(1, 7)]
    for wait, base in zip(waits, [1.0, 2.0, 4.0, 5.0, 5.0, 5.0], strict=True):
        assert base / 2 <= wait < base
    box.close()


@pytest.mark.parametrize("status", [400, 404, 410])
def test_other_4xx_is_a_permanent_failure_and_not_retried(
    receiver: AlertReceiver, status: int, tmp_path: Path
) -> None:
    receiver.fail(path("station_master"), 5, status=status)

    [delivery] = send(event("yellow"), full_site(receiver), tmp_path)

    assert (delivery.status, delivery.attempts, delivery.http_status) == ("failed", 1, status)
    assert delivery.last_error is not None and str(status) in delivery.last_error
    assert len(receiver.keys(path("station_master"))) == 1
    assert receiver.received(path("station_master")) == []


def test_a_receiver_that_is_down_is_retried_and_its_delivery_stays_pending(
    tmp_path: Path,
) -> None:
    with AlertReceiver() as gone:
        site = full_site(gone)
        url = gone.url(path("station_master"))
    # The receiver is closed: its port now refuses connections.

    [delivery] = send(event("yellow"), site, tmp_path, drain_s=0.5)

    assert (delivery.role, delivery.url, delivery.status) == ("station_master", url, "pending")
    assert delivery.attempts >= 2
    assert delivery.http_status is None
    assert delivery.last_error is not None and "ConnectionRefused" in delivery.last_error


def test_a_timeout_is_retried_and_the_late_copy_is_not_recorded_twice(
    receiver: AlertReceiver, tmp_path: Path
) -> None:
    alert = event("yellow")
    release = receiver.hold(path("station_master"))  # the first request hangs
    try:
        [delivery] = send(alert, full_site(receiver), tmp_path, timeout_s=0.3)
    finally:
        release.set()

    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert receiver.keys(path("station_master")) == [alert.idempotency_key("station_master")] * 2
    assert len(receiver.received(path("station_master"))) == 1


def test_idempotency_key_changes_with_each_of_its_parts() -> None:
    base = event("orange", "opened", ts_ms=1000)
    key = base.idempotency_key("station_master")
    assert key == event("orange", "opened", ts_ms=1000).idempotency_key("station_master")
    others = [
        base.idempotency_key("transit_police"),
        event("orange", "escalated", ts_ms=1000).idempotency_key("station_master"),
        event("red", "opened", ts_ms=1000).idempotency_key("station_master"),
        event("orange", "opened", ts_ms=1001).idempotency_key("station_master"),
        AlertEvent(**{**base.__dict__, "alert_id": "other"}).idempotency_key("station_master"),
    ]
    assert len({key, *others}) == 6
    # The reason and values are not part of the key: a re-worded resend is the same event.
    reworded = AlertEvent(**{**base.__dict__, "reason": "re-worded", "values": {"x": 1.0}})
    assert reworded.idempotency_key("station_master") == key


def test_de_escalation_from_red_to_yellow_is_sent_to_reds_roles(
    receiver: AlertReceiver, tmp_path: Path
) -> None:
    down = event("yellow", "de-escalated", previous="red")
    deliveries = send(down, full_site(receiver), tmp_path)

    assert [(d.role, d.status) for d in deliveries] == [(r, "delivered") for r in ALL_ROLES]
    for role in ALL_ROLES:
        [got] = receiver.received(path(role))
        assert (got["event"], got["level"], got["previous_level"]) == (
            "de-escalated",
            "yellow",
            "red",
        )


def test_resolution_is_sent_to_the_roles_of_the_level_left(
    receiver: AlertReceiver, tmp_path: Path
) -> None:
    deliveries = send(event("blue", "resolved", previous="orange"), full_site(receiver), tmp_path)
    assert [d.role for d in deliveries] == ["station_master", "transit_police"]
    assert called(receiver) == {
        "station_master": 1,
        "transit_police": 1,
        "local_police": 0,
        "street_office": 0,
    }


def test_escalation_goes_to_the_new_levels_roles() -> None:
    assert event("red", "escalated", previous="yellow").routing_level == "red"
    assert event("yellow", "de-escalated", previous="orange").routing_level == "orange"
    assert event("yellow", "opened").routing_level == "yellow"


def test_payload_is_strict_json_with_non_finite_values_as_null() -> None:
    alert = AlertEvent(
        **{**event().__dict__, "values": {"ratio": float("nan"), "n": 3.0}, "lead_time_s": 600.0}
    )
    payload = json.loads(alert.to_json("local_police", Contact(name="LP")))
    assert payload["values"] == {"ratio": None, "n": 3.0}
    assert payload["lead_time_s"] == 600.0
    assert payload["idempotency_key"] == alert.idempotency_key("local_police")
    assert payload["recipient"] == {"role": "local_police", "name": "LP"}


def test_receiver_rejects_a_request_without_key(receiver: AlertReceiver) -> None:
    request = urllib.request.Request(receiver.url("/x"), data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    info.value.close()
    assert info.value.code == 400
    assert receiver.received("/x") == []
