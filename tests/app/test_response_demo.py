"""The demo's response loop on the demo day's red alert, in Chinese and in English."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from rich.console import Console

from app.demo import ALERTS_SQL
from app.report.queries import build_report
from app.response_demo import duty_site, run_response_loop
from crowdwatch.risk.notify import AlertReceiver
from crowdwatch.settings import Settings
from crowdwatch.site import Contact, load_site
from crowdwatch.warehouse.client import Warehouse
from dashboards.macros import expand
from tests.conftest import EXAMPLE_SITE
from tests.dashboards.test_dashboards import EXPECTED, RESPONSE, targets
from tests.demo_day import DAY, ZONE, DemoWarehouse


@pytest.mark.parametrize(
    ("lang", "escalated", "tapped"),
    [("zh-CN", "【升级】", "消息链接"), ("en", "ESCALATED", "link")],
)
def test_duty_staff_acknowledge_one_misses_and_the_duty_chief_is_called(
    demo_day: DemoWarehouse,
    settings: Settings,
    warehouse: Warehouse,
    lang: str,
    escalated: str,
    tapped: str,
) -> None:
    start, end = demo_day.site.day_bounds(DAY)
    alerts = demo_day.warehouse.query(ALERTS_SQL, {"start": start, "end": end})
    out = io.StringIO()
    summary = run_response_loop(
        settings, demo_day.site, alerts, Console(file=out, width=200), lang=lang
    )
    assert summary is not None
    assert summary.alert_id.startswith(f"{ZONE}@")
    assert summary.acknowledged == (
        "station_master",
        "transit_police",
        "local_police",
        "duty_chief",
    )
    assert summary.escalated_to == ("duty_chief",)
    assert sorted(summary.kpis["role"]) == sorted(summary.acknowledged)
    text = out.getvalue()
    assert escalated in text and tapped in text
    # the message the station master reads, rendered in the demo's language
    shown = [line.split("│ ", 1)[1] for line in text.splitlines() if "    │ " in line]
    if lang == "zh-CN":
        assert "红色预警:奥体中心站" in shown[0] and shown[1].startswith("致:站长")
        assert any(line.startswith("原因:") and "客流已达承载量的" in line for line in shown)
        assert "处置措施:" in shown
    else:
        assert "Red warning" in shown[0] and shown[1].startswith("To: station master")
        assert any(line.startswith("Reason: ") and "of its capacity" in line for line in shown)
        assert "Measures to take:" in shown
    # the actions are in the warehouse the settings name, not only in the store
    n = warehouse.query("SELECT count() AS n FROM alert_actions FINAL")["n"][0]
    assert n == summary.audit_rows
    # every panel of the response dashboard runs on them; the alert is closed: nobody waits
    actions = warehouse.query("SELECT min(ts) AS a, max(ts) AS b FROM alert_actions").row(0)
    for (uid, title, ref_id), raw in targets():
        if uid != RESPONSE:
            continue
        sql = expand(raw, start=actions[0], end=actions[1] + timedelta(seconds=1), variables={})
        frame = warehouse.query(sql)
        assert frame.columns == EXPECTED[(uid, title, ref_id)]
        if title in ("Who has not acknowledged", "Drills (演练)"):
            assert frame.height == 0, title  # signed off, and no drill: nobody, nothing
        elif title == "Unacknowledged now":
            assert frame.rows() == [(0,)]
        else:
            assert frame.height > 0 and any(v not in (None, 0) for v in frame.row(0)), title
    # the report's response section draws the same panels
    report = build_report(
        warehouse, now=actions[1], start=actions[0], end=actions[1] + timedelta(seconds=1)
    )
    assert [r.pick.title for r in report.response if r.notes] == []
    acked = next(r for r in report.response if r.pick.title == "Time to acknowledge")
    assert sorted(acked.frames["A"]["role"]) == sorted(summary.acknowledged)


def test_the_loop_reaches_simulated_contacts_only_never_the_site_files() -> None:
    site = load_site(EXAMPLE_SITE)
    real = Contact(name="a real person", webhook="https://hooks.example.org/real")
    on_duty = {"station_master": real, "district_command": real}
    with_real = site.model_copy(
        update={
            "stations": [s.model_copy(update={"contacts": on_duty}) for s in site.stations],
            "response": site.response.model_copy(
                update={"contacts": {"duty_chief": real, "district_command": real}}
            ),
        }
    )
    assert with_real.contact_for("NPK", "station_master") == real
    with AlertReceiver() as receiver:
        people = duty_site(with_real, "STD", receiver)
        contacts = [
            *(c for s in people.stations for c in s.contacts.values()),
            *people.response.contacts.values(),
        ]
        urls = [getattr(channel, "url", "") for c in contacts for channel in c.all_channels]
        assert urls and all(url.startswith(receiver.url("/")) for url in urls)
        # the roles the file reaches stay reachable, on the receiver; other stations have none
        assert people.contact_for("STD", "district_command") is not None
        assert people.contact_for("STD", "street_office") is not None
        assert people.contact_for("NPK", "station_master") is None
