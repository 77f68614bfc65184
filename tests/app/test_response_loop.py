"""End to end: a surge → a red alert → four roles told → acknowledged or not → escalation →
handled and signed off → every step in the audit log, the KPIs in the warehouse.

The red alert comes out of the real zone_risk dataflow (gate passages fill the West Lake scenic
area past its capacity). From there the workflow runs as a deployment runs it, on a SQLite file
and on real PostgreSQL: the outbox's dispatcher sends each chief a Chinese message on a channel
of its own — a signed DingTalk robot, a WeCom robot, a signed Feishu bot, an SMS gateway, all
local receivers that check the vendors' bodies and signatures — two chiefs acknowledge through
the link in their message (POSTed to the real API server), one with ``crowdwatch alerts ack``,
one never; the clock, moved by hand, passes the deadline and the escalator calls the duty chief
(a webhook); the station master takes a measure of the plan and signs off through the API.
"""

from __future__ import annotations

import json
import re
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
from crowdwatch.risk.receivers import RobotReceiver
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


SECRETS = {"master": "SECmaster-e2e", "local": "local-e2e-secret"}
SMS_TOKEN = "sms-e2e-token"


def site_file(folder: Path, receiver: AlertReceiver, robots: RobotReceiver | None = None) -> Path:
    """The example site: West Lake's four chiefs on four channels, the duty chief's webhook.

    The station master on a signed DingTalk robot, the transit police chief on a WeCom robot,
    the local police chief on a signed Feishu bot, the street office by SMS; without
    ``robots``, each chief on a webhook of ``receiver``.
    """
    data = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    wlk = next(s for s in data["stations"] if s["id"] == "WLK")
    if robots is None:
        wlk["contacts"] = {
            role: {"name": f"WLK {role}", "webhook": receiver.url(f"/wlk/{role}")}
            for role in CHIEFS
        }
    else:
        channels = {
            "station_master": {
                "type": "dingtalk",
                "url": robots.dingtalk_url("master"),
                "secret": SECRETS["master"],
            },
            "transit_police": {"type": "wecom", "url": robots.wecom_url("police")},
            "local_police": {
                "type": "feishu",
                "url": robots.feishu_url("local"),
                "secret": SECRETS["local"],
            },
            "street_office": {"type": "sms", "to": ["+8613800000000"]},
        }
        wlk["contacts"] = {
            role: {"name": f"WLK {role}", "channels": [channel]}
            for role, channel in channels.items()
        }
    data["response"]["contacts"] = {
        "duty_chief": {"name": "Zhou (duty chief)", "webhook": receiver.url("/duty_chief")}
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


ROBOT = {
    "station_master": "master",
    "transit_police": "police",
    "local_police": "local",
    "street_office": "gateway",
}
"""Each chief's name on the robot receiver."""

LINK = re.compile(r"http://127\.0\.0\.1:\d+/ack/[^\s)\]\"]+")


def red_robot_message(robots: RobotReceiver, role: str) -> str:
    """The text of the red alert's message to ``role`` (the lower levels' come first)."""
    name = ROBOT[role]
    for count in range(1, 5):
        assert robots.wait_received(name, count), f"no red message for {role}"
        text = json.dumps(robots.received(name)[-1].body, ensure_ascii=False)
        if "红色" in text:
            return text
    raise AssertionError(f"no red message for {role}: {robots.received(name)}")


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
    with AlertReceiver() as receiver, RobotReceiver(SECRETS, sms_token=SMS_TOKEN) as robots:
        settings = settings.model_copy(
            update={
                "site_file": site_file(tmp_path, receiver, robots),
                "outbox_url": SecretStr(store),
                "notify": "on",
                "notify_max_age_s": 1e12,  # the surge is from May: tell them anyway
                "sms_gateway": SecretStr(robots.sms_url()),
                "sms_token": SecretStr(SMS_TOKEN),
            }
        )
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
        responder = Responder(settings, load_site(settings.site_file), escalate=False, clock=clock)
        with responder, ApiServer(responder.workflow) as api:
            responder.workflow.public_url = api.url
            responder.raise_events(surge_events)
            texts = {role: red_robot_message(robots, role) for role in CHIEFS}
            # Chinese messages on four channels, each with the plan and the chief's own link
            assert robots.received("master")[-1].body["msgtype"] == "markdown"
            assert robots.received("police")[-1].body["msgtype"] == "markdown"
            assert robots.received("gateway")[-1].body["to"] == ["+8613800000000"]
            links = {}
            for role, text in texts.items():
                assert "红色预警" in text, (role, text)
                if role != "street_office":  # an SMS is one short paragraph: no measures
                    assert "停止售票" in text, (role, text)
                [links[role]] = LINK.findall(text)
                assert f"/{role}?t=" in links[role]
            assert robots.rejected("master") == robots.rejected("local") == []  # signed right

            clock.advance(35)
            for role in ("station_master", "transit_police"):  # two acknowledge by link
                status, _, body = request(links[role], method="POST")
                assert (status, json.loads(body)["status"]) == (200, "acknowledged")
            # a replayed link, and one role's link used for another: refused
            assert request(links["station_master"], method="POST")[0] == 403
            swapped = links["transit_police"].replace("/transit_police?", "/street_office?")
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
            assert "值班主任" in escalation["message"]["text"]  # the escalation, in Chinese
            # the street office hears only of red: its second SMS is the reminder, with a link
            assert robots.wait_received("gateway", 2)
            reminder = robots.received("gateway")[1].body["text"]
            assert reminder != robots.received("gateway")[0].body["text"]
            assert LINK.search(reminder)

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
