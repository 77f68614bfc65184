"""The durable alert outbox against a real SQLite file and real localhost receivers."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import polars as pl
import pytest

from crowdwatch.risk.notify import AlertReceiver
from crowdwatch.risk.outbox import Dispatcher, Outbox, OutboxError, wall_ms
from crowdwatch.site import Contact, Role, Site
from crowdwatch.warehouse.client import WarehouseError
from tests.crowdwatch.risk.test_notify import ALL_ROLES, event, full_site, path, site_with
from tests.stores import store_url

AGE_S = 1e9
"""The age limit in most tests: their events are from 2026-05-01, sent however old."""


class Log:
    """A delivery log that keeps what it is given."""

    def __init__(self) -> None:
        self.frames: list[pl.DataFrame] = []

    def write(self, frame: pl.DataFrame) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass

    def rows(self) -> pl.DataFrame:
        return pl.concat(self.frames) if self.frames else pl.DataFrame()


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    """The outbox on a SQLite file (the default) and on PostgreSQL (the workflow store)."""
    with ExitStack() as stack:
        box = Outbox(stack.enter_context(store_url(request.param, tmp_path)))
        stack.callback(box.close)
        yield box


def dispatcher(outbox: Outbox, log: Log | None = None, **kwargs: float) -> Dispatcher:
    return Dispatcher(
        outbox,
        delivery_log=log,
        backoff_s=0.01,
        backoff_max_s=0.05,
        rng=random.Random(3),
        export_every_s=0.05,
        **kwargs,  # type: ignore[arg-type]
    ).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_on(port: int) -> Site:
    """Every role at CTR has a webhook at http://127.0.0.1:<port>/CTR/<role>."""
    return site_with(
        {
            role: Contact(name=f"CTR {role}", webhook=f"http://127.0.0.1:{port}{path(role)}")
            for role in ALL_ROLES
        }
    )


def test_an_event_waits_in_the_outbox_while_receivers_are_down_and_goes_out_once_after_restart(
    outbox: Outbox,
) -> None:
    port = free_port()  # nothing listens on it until the receiver starts
    site = site_on(port)
    red = event("red", "escalated", previous="orange")
    log = Log()
    first = dispatcher(outbox, log, timeout_s=0.5)
    first.wake(outbox.enqueue([red], site, mode="on", max_age_s=AGE_S))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(log.rows()) < 8:  # two failed tries per role
        time.sleep(0.05)
    first.close(drain_s=0)
    assert outbox.statuses() == {"pending": 4}
    assert set(log.rows()["status"]) == {"retry"}

    with AlertReceiver(port) as up:
        second = dispatcher(outbox, log)
        assert all(up.wait_received(path(role)) for role in ALL_ROLES)
        second.close()
        # sent again by a third run: nothing is pending, nothing goes out
        dispatcher(outbox).close()
        keys = {role: up.keys(path(role)) for role in ALL_ROLES}
    assert outbox.statuses() == {"delivered": 4}
    assert all(ks == [red.idempotency_key(role)] for role, ks in keys.items())
    delivered = log.rows().filter(pl.col("status") == "delivered")
    assert sorted(delivered["role"]) == sorted(ALL_ROLES)
    assert (delivered["attempt"] >= 3).all() and (delivered["http_status"] == 200).all()


class HeldLog(Log):
    """A delivery log whose warehouse another process has open: every write fails."""

    def write(self, frame: pl.DataFrame) -> None:
        raise WarehouseError("the embedded engine is in use by process 1")


def test_attempts_a_closing_dispatcher_cannot_export_are_exported_by_the_next(
    outbox: Outbox,
) -> None:
    with AlertReceiver() as receiver:
        site = full_site(receiver)
        sender = dispatcher(outbox, HeldLog())
        sender.wake(outbox.enqueue([event("orange")], site, mode="on", max_age_s=AGE_S))
        assert receiver.wait_received(path("transit_police"))
        sender.close()  # the export fails: a warning, not a crash of `crowdwatch drill`
    assert outbox.statuses() == {"delivered": 2}
    assert outbox.unexported().height == 2
    log = Log()
    dispatcher(outbox, log).close()
    assert sorted(log.rows()["status"]) == ["delivered", "delivered"]
    assert outbox.unexported().height == 0


def test_a_repeated_event_is_written_once_and_sent_once(outbox: Outbox) -> None:
    with AlertReceiver() as receiver:
        site = full_site(receiver)
        orange = event("orange")
        sender = dispatcher(outbox)
        sender.wake(outbox.enqueue([orange], site, mode="on", max_age_s=AGE_S))
        assert receiver.wait_received(path("transit_police"))
        # a resume replays the events since the last snapshot
        assert outbox.enqueue([orange], site, mode="on", max_age_s=AGE_S) == set()
        sender.close()
        assert receiver.keys(path("station_master")) == [orange.idempotency_key("station_master")]
    assert outbox.statuses() == {"delivered": 2}


def test_retries_go_on_past_five_attempts_while_the_alert_is_open(outbox: Outbox) -> None:
    with AlertReceiver() as receiver:
        receiver.fail(path("station_master"), times=9)
        sender = dispatcher(outbox)
        sender.wake(
            outbox.enqueue([event("yellow")], full_site(receiver), mode="on", max_age_s=AGE_S)
        )
        assert receiver.wait_received(path("station_master"))
        sender.close()
        assert len(receiver.keys(path("station_master"))) == 10


def test_a_hung_receiver_does_not_delay_another_roles_delivery(outbox: Outbox) -> None:
    with AlertReceiver() as receiver:
        site = full_site(receiver)
        receiver.hold(path("street_office"), times=10)  # hangs until the receiver closes
        sender = dispatcher(outbox, timeout_s=30)
        red = event("red", "escalated", previous="orange")
        down = event("orange", "de-escalated", previous="red", ts_ms=red.ts_ms + 60_000)
        sender.wake(outbox.enqueue([red], site, mode="on", max_age_s=AGE_S))
        assert receiver.wait_received(path("local_police"))
        started = time.monotonic()
        sender.wake(outbox.enqueue([down], site, mode="on", max_age_s=AGE_S))
        assert receiver.wait_received(path("station_master"), 2, timeout_s=5)
        assert receiver.wait_received(path("local_police"), 2, timeout_s=5)
        took = time.monotonic() - started
        assert receiver.received(path("street_office")) == []
    sender.close(drain_s=0)  # the held request is released when the receiver closes
    assert took < 1.0, f"the station master waited {took:.2f} s behind a hung receiver"


def test_a_refusal_is_final_and_the_next_event_still_goes_out(outbox: Outbox) -> None:
    with AlertReceiver() as receiver:
        site = full_site(receiver)
        receiver.fail(path("station_master"), times=1, status=404)
        yellow, orange = event("yellow"), event("orange", "escalated", previous="yellow")
        sender = dispatcher(outbox)
        sender.wake(outbox.enqueue([yellow, orange], site, mode="on", max_age_s=AGE_S))
        sender.close()
        got = [e["event"] for e in receiver.received(path("station_master"))]
    assert got == ["escalated"]
    assert outbox.statuses() == {"failed": 1, "delivered": 2}


def test_log_mode_stale_events_and_missing_contacts_are_written_down_not_sent(
    outbox: Outbox,
) -> None:
    with AlertReceiver() as receiver:
        only_master: dict[Role, Contact] = {
            "station_master": Contact(name="CTR master", webhook=receiver.url("/m"))
        }
        site = site_with(only_master)
        red = event("red", "escalated", previous="orange")
        log = Log()
        sender = dispatcher(outbox, log)
        assert outbox.enqueue([red], site, mode="log", max_age_s=AGE_S) == set()
        old = event("orange", ts_ms=wall_ms() - 11 * 60_000)
        assert outbox.enqueue([old], site, mode="on", max_age_s=600) == set()
        assert outbox.enqueue([event("yellow")], site, mode="off", max_age_s=AGE_S) == set()
        sender.close()
        assert receiver.keys("/m") == []
    rows = log.rows().sort("event_ts", "role")
    assert rows.select("level", "role", "status", "attempt").rows() == [
        ("red", "local_police", "no_contact", 0),
        ("red", "station_master", "logged", 0),
        ("red", "street_office", "no_contact", 0),
        ("red", "transit_police", "no_contact", 0),
        ("orange", "station_master", "stale", 0),
        ("orange", "transit_police", "no_contact", 0),
    ]


def test_deliveries_of_an_alert_resolved_long_ago_are_given_up(outbox: Outbox) -> None:
    site = site_on(free_port())  # nothing listens there: every attempt fails
    yellow = event("yellow")
    resolved = event("blue", "resolved", previous="yellow", ts_ms=yellow.ts_ms + 1)
    log = Log()
    sender = dispatcher(outbox, log, after_close_s=0)
    sender.wake(outbox.enqueue([yellow, resolved], site, mode="on", max_age_s=AGE_S))
    sender.close(drain_s=5)
    assert outbox.statuses() == {"expired": 2}
    # each was tried once (a first attempt goes out at once), then given up
    last = log.rows().sort("attempt").group_by("idempotency_key").agg(pl.col("status"))
    assert sorted(last["status"].to_list()) == [["retry", "expired"]] * 2


def test_an_outbox_that_cannot_be_opened_says_where_and_what_to_check(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutboxError, match="CROWDWATCH_OUTBOX_URL"):
        Outbox(f"sqlite:///{blocker / 'outbox.sqlite3'}")


def test_two_dispatchers_on_one_outbox_send_each_row_once(outbox: Outbox) -> None:
    with AlertReceiver() as receiver:
        site = full_site(receiver)
        events = [event("yellow", ts_ms=1_777_593_600_000 + i * 60_000) for i in range(6)]
        first, second = dispatcher(outbox), dispatcher(outbox)  # two workers, or processes
        targets = outbox.enqueue(events, site, mode="on", max_age_s=AGE_S)
        first.wake(targets)
        second.wake(targets)
        first.close()
        second.close()
        keys = receiver.keys(path("station_master"))
    # each row was claimed by one of them for its attempt: no request twice
    assert sorted(keys) == sorted(e.idempotency_key("station_master") for e in events)


def test_a_running_dispatcher_picks_up_rows_another_process_wrote(
    outbox: Outbox, tmp_path: Path
) -> None:
    with AlertReceiver() as receiver:
        site = full_site(receiver)
        running = dispatcher(outbox)  # started before the rows exist, and never woken for them
        other = Outbox(outbox.url)
        other.enqueue([event("yellow")], site, mode="on", max_age_s=AGE_S)
        other.close()
        assert receiver.wait_received(path("station_master"), timeout_s=10)
        running.close()
