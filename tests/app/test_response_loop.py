"""End to end: a surge → a red alert → four roles told → acknowledged or not → escalation →
handled and signed off → every step in the audit log, the KPIs in the warehouse.

The red alert comes out of the real zone_risk dataflow (gate passages fill the West Lake scenic
area past its capacity). From there the workflow runs as a deployment runs it, on a SQLite file
and on real PostgreSQL: the outbox's dispatcher posts each role's message to a real localhost
receiver, two roles acknowledge through the link in their message (POSTed to the real API
server), one with ``crowdwatch alerts ack``, one never; the clock, moved by hand, passes the
deadline and the escalator calls the duty chief; the station master takes a measure of the plan
and signs off through the API. Here every role is on the generic webhook (its JSON carries the
rendered message); `test_response_channels` runs the red alert on DingTalk, WeCom, Feishu, SMS
and e-mail.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from bytewax.testing import TestingSink, TestingSource, run_main
from pydantic import SecretStr

from app.cli import main
from crowdwatch.batches import RawBatch
from crowdwatch.risk.notify import AlertEvent, AlertReceiver
from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.store import wall_ms
from crowdwatch.warehouse.client import Warehouse
from crowdwatch.workflow import kpis
from crowdwatch.workflow.api import ApiServer
from crowdwatch.workflow.loop import Responder
from pipelines.zone_risk import build
from tests.conftest import EXAMPLE_SITE
from tests.crowdwatch.workflow.helpers import Clock
from tests.crowdwatch.workflow.test_api import request
from tests.stores import BACKENDS, store_url

CHIEFS = ("station_master", "transit_police", "local_police", "street_office")
DAY = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)  # 10:00 in Hangzhou


def site_file(folder: Path, receiver: AlertReceiver) -> Path:
    """The example site with the four chiefs of West Lake and the duty chief on the receiver."""
    data = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    wlk = next(s for s in data["stations"] if s["id"] == "WLK")
    wlk["contacts"] = {
        role: {"name": f"WLK {role}", "webhook": receiver.url(f"/wlk/{role}")} for role in CHIEFS
    }
    data["response"]["contacts"] = {
        "duty_chief": {"name": "Zhou (duty chief)", "webhook": receiver.url("/duty_chief")}
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def surge_events(tmp_path_factory: pytest.TempPathFactory, engine_dir: Path) -> list[AlertEvent]:
    """The alert events zone_risk raises when 9,000 people enter West Lake (capacity 8,000).

    On the session's embedded engine (one engine path per process), in a database of its own.
    """
    folder = tmp_path_factory.mktemp("surge")
    with AlertReceiver() as receiver:
        settings = Settings(
            data_dir=engine_dir,
            site_file=site_file(folder, receiver),
            clickhouse_database="surge",
            outbox_url=SecretStr(f"sqlite:///{folder / 'store.sqlite3'}"),
        )
    times = [DAY + timedelta(seconds=i * 0.2) for i in range(9000)]  # 30 min
    frame = pl.DataFrame(
        {
            "ts": [t.isoformat(timespec="milliseconds") for t in times],
            "gate_id": ["WLK-G01"] * 9000,
            "direction": ["in"] * 9000,
        }
    )
    span = (int(times[0].timestamp() * 1000), int(times[-1].timestamp() * 1000))
    batches = [
        RawBatch("test", "passage", frame.slice(i, 500), i, span_ms=span)
        for i in range(0, 9000, 500)
    ]
    events: list[AlertEvent] = []
    sink: TestingSink[Any] = TestingSink([])
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
    run_main(
        build(settings, source=TestingSource(batches), sink=sink, alert_sink=TestingSink(events))
    )
    return events


def red_message(receiver: AlertReceiver, path: str) -> dict[str, Any]:
    """The red alert's message on ``path``, once it arrives (the lower levels' come first)."""
    for count in range(1, 5):
        assert receiver.wait_received(path, count), f"no red message on {path}"
        received = receiver.received(path)
        if received[-1]["level"] == "red":
            return received[-1]
    raise AssertionError(f"no red message on {path}: {receiver.received(path)}")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as url:
        yield url


def test_surge_to_sign_off_with_escalation_audit_and_kpis(
    surge_events: list[AlertEvent],
    store: str,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    red = [e for e in surge_events if e.level == "red" and e.event in ("opened", "escalated")]
    assert [e.zone_id for e in red] == ["WLK-lakeside"]
    alert_id = red[0].alert_id
    clock = Clock(wall_ms())
    with AlertReceiver() as receiver:
        settings = settings.model_copy(
            update={
                "site_file": site_file(tmp_path, receiver),
                "outbox_url": SecretStr(store),
                "notify": "on",
                "notify_max_age_s": 1e12,  # the surge is from May: tell them anyway
            }
        )
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
        responder = Responder(settings, load_site(settings.site_file), escalate=False, clock=clock)
        with responder, ApiServer(responder.workflow) as api:
            responder.workflow.public_url = api.url
            responder.raise_events(surge_events)
            messages = {role: red_message(receiver, f"/wlk/{role}") for role in CHIEFS}
            # each chief's red message carries the plan and the chief's own link
            for role, message in messages.items():
                response = message["response"]
                assert [m["id"] for m in response["measures"]] == ["stop_tickets", "guide_staff"]
                assert f"/{role}?t=" in response["ack_url"]
                assert response["drill"] is False

            clock.advance(35)
            for role in ("station_master", "transit_police"):  # two acknowledge by link
                status, _, body = request(messages[role]["response"]["ack_url"], method="POST")
                assert (status, json.loads(body)["status"]) == (200, "acknowledged")
            # a replayed link, and one role's link used for another: refused
            replay = request(messages["station_master"]["response"]["ack_url"], method="POST")
            assert replay[0] == 403
            swapped = messages["transit_police"]["response"]["ack_url"].replace(
                "/transit_police?", "/street_office?"
            )
            assert request(swapped, method="POST")[0] == 403

            for name, value in {
                "CROWDWATCH_DATA_DIR": str(settings.data_dir),
                "CROWDWATCH_CLICKHOUSE_DATABASE": settings.clickhouse_database,
                "CROWDWATCH_OUTBOX_URL": store,
                "CROWDWATCH_SITE_FILE": str(settings.site_file),
            }.items():
                monkeypatch.setenv(name, value)
            # one acknowledges from the command line; the street office never does
            code = main(["alerts", "ack", alert_id, "--role", "local_police", "--name", "Zhao"])
            assert code == 0

            clock.advance(90)  # 125 s after the alert: the street office missed its deadline
            assert responder.escalator.step()
            assert receiver.wait_received("/duty_chief", 1)
            escalation = receiver.received("/duty_chief")[0]
            assert escalation["response"]["notice"] == "escalation"
            assert escalation["response"]["missed_by"] == ["street_office"]
            assert escalation["alert_id"] == alert_id
            assert receiver.wait_received("/wlk/street_office", 2)  # the red message, a reminder
            reminder = receiver.received("/wlk/street_office")[-1]
            assert reminder["response"]["notice"] == "reminder"

            master = responder.workflow.issue_token("station_master", "Wang")
            base = f"{api.url}/api/alerts/{urllib.parse.quote(alert_id, safe='')}"
            clock.advance(300)
            assert (
                request(
                    f"{base}/measures",
                    method="POST",
                    token=master,
                    body={"measure": "stop_tickets", "note": "售票处已停售"},
                )[0]
                == 200
            )
            clock.advance(600)
            status, _, _ = request(
                f"{base}/sign-off",
                method="POST",
                token=master,
                body={"outcome": "客流已回落", "note": "未发生踩踏"},
            )
            assert status == 200
            audit = responder.workflow.audit_frame(alert_id=alert_id)
            responder.escalator.export()

    steps = list(zip(audit["action"], audit["role"], audit["actor"], audit["channel"], strict=True))
    assert ("acknowledged", "station_master", "WLK station_master", "link") in steps
    assert ("acknowledged", "transit_police", "WLK transit_police", "link") in steps
    assert ("acknowledged", "local_police", "Zhao", "cli") in steps
    assert not any(a == "acknowledged" and r == "street_office" for a, r, _, _ in steps)
    assert ("escalated", "street_office", "crowdwatch", "system") in steps
    assert ("asked", "duty_chief", "crowdwatch", "system") in steps
    assert ("measure", "station_master", "Wang", "api") in steps
    assert steps[-1] == ("signed_off", "station_master", "Wang", "api")
    assert audit["note"][-1] == "客流已回落: 未发生踩踏"
    # every step says who and when (the command line's on the wall clock, the rest on the test's)
    assert audit["ts"].null_count() == 0 and audit["actor"].str.len_chars().min() > 0
    assert audit["ts"][-1] - audit["ts"][0] >= timedelta(seconds=1025)

    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        start, end = datetime(2020, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        acks = kpis.ack_times(warehouse, start, end)
        signed = kpis.sign_off_times(warehouse, start, end)
        actions = warehouse.query("SELECT count() AS n FROM alert_actions FINAL")["n"][0]
    assert actions == audit.height
    by_role = {r["role"]: r for r in acks.iter_rows(named=True)}
    assert set(by_role) == {"station_master", "transit_police", "local_police"}
    assert by_role["station_master"]["p50_s"] == pytest.approx(35, abs=1)
    assert signed.select("role", "n").row(0) == ("station_master", 1)
    assert signed["p50_s"][0] >= 1025
