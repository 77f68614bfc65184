"""Alert handling in the workflow store, on a SQLite file and on real PostgreSQL, clock injected."""

from __future__ import annotations

import csv
import io

import pytest

from crowdwatch.risk.notify import AlertEvent
from crowdwatch.workflow.links import LinkRefused, LinkSigner
from crowdwatch.workflow.service import NotAllowed, Workflow, WorkflowError
from tests.crowdwatch.risk.test_notify import ALL_ROLES
from tests.crowdwatch.workflow.helpers import SECOND, T0, Clock, alert


def token_of(url: str) -> str:
    return url.split("?t=", 1)[1]


def raise_red(workflow: Workflow) -> AlertEvent:
    red = alert()
    workflow.record([red], mode="on", max_age_s=600)
    return red


def actions(workflow: Workflow, alert_id: str) -> list[tuple[str, str, str]]:
    frame = workflow.audit_frame(alert_id=alert_id)
    return list(zip(frame["action"], frame["role"], frame["actor"], strict=True))


def test_a_red_alert_asks_its_four_roles_with_links_and_the_zones_plan(workflow: Workflow) -> None:
    red = alert()
    notices = workflow.record([red], mode="on", max_age_s=600)
    for role in ALL_ROLES:
        notice = notices(red, role)
        assert notice.notice == "alert"
        assert notice.ack_url is not None
        assert notice.ack_url.startswith(f"http://duty.example/ack/CTR-concourse%40{T0}/{role}?t=")
        assert [m["id"] for m in notice.measures] == [
            "restrict_gates",
            "close_entrance",
            "hold_trains",
        ]
        assert notice.measures[0]["text"]["zh-CN"] == "一级客流控制：闸机限流"
    waiting = workflow.unacknowledged()
    assert sorted(w["role"] for w in waiting) == sorted(ALL_ROLES)
    assert {w["deadline_ms"] for w in waiting} == {T0 + 120 * SECOND}
    assert [a for a, _, _ in actions(workflow, red.alert_id)] == ["raised"] + ["asked"] * 4
    # a dataflow that resumes replays the event: nothing changes
    workflow.record([red], mode="on", max_age_s=600)
    assert len(actions(workflow, red.alert_id)) == 5


def test_replays_and_stale_events_ask_nobody(workflow: Workflow, clock: Clock) -> None:
    logged = alert(zone="RVS-concourse")
    workflow.record([logged], mode="log", max_age_s=600)
    clock.advance(3600)
    stale = alert(zone="NPK-concourse")
    workflow.record([stale], mode="on", max_age_s=600)
    assert workflow.unacknowledged() == []
    assert {a["alert_id"] for a in workflow.alerts()} == {logged.alert_id, stale.alert_id}


def test_a_link_acknowledges_once_for_its_own_role_only(workflow: Workflow, clock: Clock) -> None:
    red = alert()
    notices = workflow.record([red], mode="on", max_age_s=600)
    master = token_of(notices(red, "station_master").ack_url or "")
    police = token_of(notices(red, "transit_police").ack_url or "")
    clock.advance(40)
    # the police chief's link presented as the station master's: refused, nothing acknowledged
    with pytest.raises(LinkRefused) as wrong:
        workflow.acknowledge_link(red.alert_id, "station_master", police, remote="10.0.0.9")
    assert wrong.value.reason == "wrong_role"
    done = workflow.acknowledge_link(red.alert_id, "station_master", master)
    assert (done.status, done.actor, done.elapsed_ms) == (
        "acknowledged",
        "CTR station_master",
        40_000,
    )
    with pytest.raises(LinkRefused) as replayed:
        workflow.acknowledge_link(red.alert_id, "station_master", master)
    assert replayed.value.reason == "replayed"
    forged = master[:-4] + ("AAAA" if not master.endswith("AAAA") else "BBBB")
    with pytest.raises(LinkRefused) as bad:
        workflow.acknowledge_link(red.alert_id, "station_master", forged)
    assert bad.value.reason == "forged"
    other_key = LinkSigner(b"another site's key!!").sign(red.alert_id, "local_police", T0 + 10**9)
    with pytest.raises(LinkRefused) as foreign:
        workflow.acknowledge_link(red.alert_id, "local_police", other_key)
    assert foreign.value.reason == "forged"
    clock.advance(24 * 3600)
    with pytest.raises(LinkRefused) as late:
        workflow.acknowledge_link(red.alert_id, "transit_police", police)
    assert late.value.reason == "expired"
    assert [r["reason"] for r in workflow.refusals()] == [
        "wrong_role",
        "replayed",
        "forged",
        "forged",
        "expired",
    ]
    assert workflow.refusals()[0]["remote"] == "10.0.0.9"
    waiting = {w["role"] for w in workflow.unacknowledged()}
    assert waiting == {"transit_police", "local_police", "street_office"}


def test_reminders_then_escalation_through_the_tiers(workflow: Workflow, clock: Clock) -> None:
    red = raise_red(workflow)
    clock.advance(10)
    workflow.acknowledge(red.alert_id, "station_master", actor="Wang", channel="cli")
    workflow.acknowledge(red.alert_id, "transit_police", actor="Li", channel="api")
    workflow.acknowledge(red.alert_id, "local_police", actor="Zhao", channel="api")
    assert workflow.next_due_ms() == T0 + 30 * SECOND
    clock.advance(20)  # t = 30 s: the street office is reminded, with a fresh link
    due = workflow.run_due()
    assert [(r, n.notice, n.number) for _, r, n in due] == [("street_office", "reminder", 1)]
    assert due[0][2].ack_url is not None
    assert workflow.run_due() == []  # nothing more is due at the same time
    clock.advance(90)  # t = 120 s: reminders 2, 3 and 4 were due, one is sent; the deadline passed
    due = workflow.run_due()
    assert [(r, n.notice) for _, r, n in due] == [
        ("street_office", "reminder"),
        ("duty_chief", "escalation"),
    ]
    escalation = due[1][2]
    assert (escalation.escalated_to, escalation.missed_by) == ("duty_chief", ("street_office",))
    assert escalation.ack_url is not None and "/duty_chief?t=" in escalation.ack_url
    clock.advance(120)  # the duty chief misses too: the district command centre is called
    due = workflow.run_due()
    assert ("district_command", "escalation") in [(r, n.notice) for _, r, n in due]
    clock.advance(120)  # nobody above the district: written down
    workflow.run_due()
    steps = actions(workflow, red.alert_id)
    assert ("escalated", "street_office", "crowdwatch") in steps
    assert ("escalated", "duty_chief", "crowdwatch") in steps
    assert ("deadline_missed", "district_command", "crowdwatch") in steps
    # a late acknowledgement still counts, and stops that role's reminders
    workflow.acknowledge(red.alert_id, "street_office", actor="Chen", channel="cli")
    assert {w["role"] for w in workflow.unacknowledged()} == {"duty_chief", "district_command"}


def test_a_role_is_reminded_until_it_acknowledges(workflow: Workflow, clock: Clock) -> None:
    red = raise_red(workflow)
    for role in ("station_master", "transit_police", "local_police"):
        workflow.acknowledge(red.alert_id, role, actor="staff", channel="cli")
    numbers = []
    for _ in range(8):  # eight reminder periods of 30 s: no cap in the example site
        clock.advance(30)
        due = workflow.run_due()
        numbers += [n.number for _, r, n in due if r == "street_office" and n.notice == "reminder"]
    assert numbers == list(range(1, 9))
    workflow.acknowledge(red.alert_id, "street_office", actor="Chen", channel="cli")
    clock.advance(60)
    due = workflow.run_due()
    assert [r for _, r, n in due if n.notice == "reminder" and r == "street_office"] == []


def test_handling_to_sign_off_and_the_csv_ledger(workflow: Workflow, clock: Clock) -> None:
    red = raise_red(workflow)
    clock.advance(5)
    workflow.add_note(red.alert_id, "站厅拥挤", actor="Wang", role="station_master", channel="cli")
    workflow.take_measure(
        red.alert_id, "restrict_gates", actor="Wang", role="station_master", channel="api"
    )
    with pytest.raises(WorkflowError, match="not in the plan"):
        workflow.take_measure(
            red.alert_id, "stop_tickets", actor="Wang", role="station_master", channel="api"
        )
    with pytest.raises(NotAllowed, match="may not sign off"):
        workflow.sign_off(red.alert_id, "handled", actor="Li", role="transit_police", channel="api")
    clock.advance(600)
    workflow.sign_off(
        red.alert_id, "客流已疏散", actor="Wang", role="station_master", channel="cli", note="ok"
    )
    with pytest.raises(WorkflowError, match="already"):
        workflow.sign_off(red.alert_id, "again", actor="Wang", role="station_master", channel="cli")
    shown = workflow.show(red.alert_id)
    assert (shown["status"], shown["outcome"]) == ("closed", "客流已疏散")
    assert workflow.alerts() == []  # closed: not open any more
    assert workflow.unacknowledged() == []  # nobody is reminded about a closed alert
    rows = list(csv.DictReader(io.StringIO(workflow.audit_csv(alert_id=red.alert_id))))
    assert [r["action"] for r in rows][-3:] == ["note", "measure", "signed_off"]
    signed = rows[-1]
    assert (signed["actor"], signed["role"], signed["channel"]) == ("Wang", "station_master", "cli")
    assert signed["note"] == "客流已疏散: ok"
    assert signed["elapsed_ms"] == str(605 * SECOND)
    assert signed["ts"].startswith("2026-05-01T00:10:05")


def test_an_alert_reopened_within_the_window_joins_the_same_incident(
    workflow: Workflow, clock: Clock
) -> None:
    first = raise_red(workflow)
    clock.advance(60)
    workflow.record([alert(kind="resolved", ts_ms=T0 + 60 * SECOND)], mode="on", max_age_s=600)
    workflow.sign_off(first.alert_id, "dispersed", actor="W", role="station_master", channel="cli")
    clock.advance(600)  # 10 min later, within the 30 min window
    again = alert(ts_ms=clock.now)
    workflow.record([again], mode="on", max_age_s=600)
    clock.advance(7200)  # 2 h after that one closes: a new incident
    workflow.sign_off(again.alert_id, "dispersed", actor="W", role="station_master", channel="cli")
    clock.advance(3600)
    later = alert(ts_ms=clock.now)
    workflow.record([later], mode="on", max_age_s=600)
    incidents = {a["alert_id"]: a["incident_id"] for a in workflow.alerts(open_only=False)}
    assert incidents[again.alert_id] == incidents[first.alert_id] == first.alert_id
    assert incidents[later.alert_id] == later.alert_id
    assert ("reopened", "", "crowdwatch") in actions(workflow, again.alert_id)


def test_a_resolved_alert_stops_reminding_and_actions_export_once(
    workflow: Workflow, clock: Clock
) -> None:
    red = raise_red(workflow)
    clock.advance(20)
    workflow.record([alert(kind="resolved", ts_ms=T0 + 20 * SECOND)], mode="on", max_age_s=600)
    clock.advance(600)
    assert workflow.run_due() == []
    first = workflow.unexported_actions()
    assert first.height == len(actions(workflow, red.alert_id)) == 6
    workflow.mark_exported(first)
    assert workflow.unexported_actions().height == 0
    workflow.acknowledge(red.alert_id, "station_master", actor="Wang", channel="cli")
    late = workflow.unexported_actions()
    assert late["action"].to_list() == ["acknowledged"]
    assert late["elapsed_ms"].to_list() == [620 * SECOND]


def test_api_tokens_name_a_role_and_an_actor(workflow: Workflow) -> None:
    token = workflow.issue_token("duty_chief", "Zhou")
    assert workflow.token_identity(token) == ("duty_chief", "Zhou")
    assert workflow.token_identity(token + "x") is None
    with pytest.raises(WorkflowError, match="unknown role"):
        workflow.issue_token("mayor", "X")


def test_several_steps_up_in_one_tick_are_each_recorded_once(workflow: Workflow) -> None:
    # late readings re-decide a tick: blue, yellow, orange and red may share one event time
    steps = [
        alert("blue"),
        alert("yellow", "escalated", previous="blue"),
        alert("orange", "escalated", previous="yellow"),
        alert("red", "escalated", previous="orange"),
    ]
    workflow.record(steps, mode="on", max_age_s=600)
    workflow.record(steps, mode="on", max_age_s=600)  # replayed after a resume
    alert_id = steps[0].alert_id
    assert [a for a, _, _ in actions(workflow, alert_id)].count("level_up") == 3
    assert workflow.show(alert_id)["level"] == "red"
    assert {w["deadline_ms"] for w in workflow.unacknowledged()} == {T0 + 120 * SECOND}
    assert sorted(w["role"] for w in workflow.unacknowledged()) == sorted(ALL_ROLES)
