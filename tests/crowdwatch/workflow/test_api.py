"""The alert API and the acknowledge links over real HTTP on localhost, on both store backends."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from crowdwatch.workflow.api import ApiServer
from crowdwatch.workflow.service import Workflow
from tests.crowdwatch.workflow.helpers import T0, Clock, alert


def request(
    url: str,
    *,
    method: str = "GET",
    token: str | None = None,
    body: Any = None,
    form: str | None = None,
) -> tuple[int, str, bytes]:
    headers = {}
    data = None
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if form is not None:
        data = form.encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


@pytest.fixture
def server(workflow: Workflow) -> Iterator[ApiServer]:
    with ApiServer(workflow) as api:
        yield api


def link_on(server: ApiServer, ack_url: str | None) -> str:
    """The link of a message, pointed at the test's server (same path and token)."""
    assert ack_url is not None
    parts = urlsplit(ack_url)
    return f"{server.url}{parts.path}?{parts.query}"


def test_the_api_refuses_requests_without_a_valid_token(
    server: ApiServer, workflow: Workflow
) -> None:
    workflow.record([alert()], mode="on", max_age_s=600)
    for token in (None, "not-a-token", ""):
        status, _, body = request(f"{server.url}/api/alerts", token=token)
        assert status == 401, token
        assert b"valid API token" in body
    status, _, _ = request(f"{server.url}/api/alerts/x/ack", method="POST", token="forged", body={})
    assert status == 401
    token = workflow.issue_token("station_master", "Wang")
    status, _, body = request(f"{server.url}/api/alerts", token=token)
    assert status == 200
    assert [a["zone_id"] for a in json.loads(body)] == ["CTR-concourse"]


def test_links_acknowledge_once_and_forged_expired_replayed_or_foreign_ones_get_403(
    server: ApiServer, workflow: Workflow, clock: Clock
) -> None:
    red = alert()
    notices = workflow.record([red], mode="on", max_age_s=600)
    master = link_on(server, notices(red, "station_master").ack_url)
    police = link_on(server, notices(red, "transit_police").ack_url)
    # opening the link only asks to confirm: a chat app's preview acknowledges nothing
    status, kind, page = request(master)
    assert (status, kind.split(";")[0]) == (200, "text/html")
    assert "确认收到" in page.decode() and 'method="post"' in page.decode()
    assert len(workflow.unacknowledged()) == 4
    # the police chief's link used on the station master's address
    swapped = police.replace("/transit_police?", "/station_master?")
    status, _, body = request(swapped, method="POST")
    assert (status, json.loads(body)["reason"]) == (403, "wrong_role")
    status, _, body = request(master, method="POST")
    assert (status, json.loads(body)["status"]) == (200, "acknowledged")
    status, _, body = request(master, method="POST")
    assert (status, json.loads(body)["reason"]) == (403, "replayed")
    forged = master[:-3] + ("abc" if not master.endswith("abc") else "xyz")
    status, _, body = request(forged, method="POST")
    assert (status, json.loads(body)["reason"]) == (403, "forged")
    # a form post from the confirmation page answers with a page
    clock.advance(24 * 3600 + 1)
    token = police.split("?t=")[1]
    status, kind, page = request(police.split("?")[0], method="POST", form=f"t={token}")
    assert (status, kind.split(";")[0]) == (403, "text/html")
    assert "已过期" in page.decode()
    assert [r["reason"] for r in workflow.refusals()] == [
        "wrong_role",
        "replayed",
        "forged",
        "expired",
    ]
    assert all(r["remote"] == "127.0.0.1" for r in workflow.refusals())
    waiting = {w["role"] for w in workflow.unacknowledged()}
    assert waiting == {"transit_police", "local_police", "street_office"}


def test_handling_through_the_api_to_sign_off(server: ApiServer, workflow: Workflow) -> None:
    red = alert()
    workflow.record([red], mode="on", max_age_s=600)
    police = workflow.issue_token("transit_police", "Li")
    master = workflow.issue_token("station_master", "Wang")
    base = f"{server.url}/api/alerts/{red.alert_id.replace('@', '%40')}"
    assert request(f"{base}/ack", method="POST", token=police, body={})[0] == 200
    status, _, body = request(f"{base}/ack", method="POST", token=police, body={})
    assert json.loads(body)["status"] == "already"
    assert (
        request(f"{base}/notes", method="POST", token=police, body={"note": "警力到位"})[0] == 200
    )
    status, _, body = request(
        f"{base}/measures", method="POST", token=master, body={"measure": "fly"}
    )
    assert status == 400 and b"not in the plan" in body
    assert (
        request(f"{base}/measures", method="POST", token=master, body={"measure": "hold_trains"})[0]
        == 200
    )
    status, _, body = request(
        f"{base}/sign-off", method="POST", token=police, body={"outcome": "done"}
    )
    assert status == 403 and b"may not sign off" in body
    status, _, _ = request(
        f"{base}/sign-off", method="POST", token=master, body={"outcome": "客流已疏散"}
    )
    assert status == 200
    status, _, body = request(f"{server.url}/api/alerts/nope", token=master)
    assert status == 404
    status, kind, csv = request(f"{server.url}/api/audit.csv", token=master)
    assert kind.startswith("text/csv")
    lines = csv.decode().splitlines()
    assert lines[0].startswith("action_id,ts,incident_id,alert_id")
    assert [line.split(",")[7] for line in lines[-4:]] == [
        "acknowledged",
        "note",
        "measure",
        "signed_off",
    ]
    assert ",Li,transit_police,api," in lines[-4] and ",Wang,station_master,api," in lines[-1]
    assert T0  # the clock did not move: every step at 2026-05-01 00:00
