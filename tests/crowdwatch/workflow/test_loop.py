"""The escalation loop as a deployment runs it: a thread on the wall clock, real receivers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from crowdwatch.risk.notify import AlertReceiver
from crowdwatch.settings import Settings
from crowdwatch.site import AckRule, Contact, Site
from crowdwatch.store import wall_ms
from crowdwatch.warehouse.client import Warehouse
from crowdwatch.workflow.loop import Responder
from tests.crowdwatch.risk.test_notify import site_with
from tests.crowdwatch.workflow.helpers import alert
from tests.stores import BACKENDS, store_url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as found:
        yield found


def quick_site(receiver: AlertReceiver) -> Site:
    """The station master at CTR must acknowledge a red alert in 0.3 s, then the duty chief."""
    base = site_with({"station_master": Contact(name="Wang", webhook=receiver.url("/master"))})
    response = base.response.model_copy(
        update={
            "contacts": {"duty_chief": Contact(name="Zhou", webhook=receiver.url("/duty"))},
            "ack": {
                "red": AckRule(within_s=0.3, escalate_to=["duty_chief"], roles=["station_master"])
            },
        }
    )
    return Site.model_validate(base.model_copy(update={"response": response}).model_dump())


def test_the_loop_escalates_a_missed_deadline_on_its_own_and_exports_the_steps(
    url: str, settings: Settings, warehouse: Warehouse
) -> None:
    with AlertReceiver() as receiver:
        live = settings.model_copy(
            update={"outbox_url": SecretStr(url), "notify": "on", "escalate_every_s": 0.2}
        )
        red = alert(ts_ms=wall_ms())
        with Responder(live, quick_site(receiver)) as responder:
            responder.raise_events([red])
            assert receiver.wait_received("/master", 1)
            # nobody acknowledges: the thread wakes at the deadline and calls the duty chief
            assert receiver.wait_received("/duty", 1)
            escalation = receiver.received("/duty")[0]["response"]
            assert (escalation["notice"], escalation["missed_by"]) == (
                "escalation",
                ["station_master"],
            )
            waiting = responder.workflow.unacknowledged()
            deadline = next(w for w in waiting if w["role"] == "station_master")
            assert deadline["escalated_ms"] >= deadline["deadline_ms"]
            responder.workflow.acknowledge(red.alert_id, "duty_chief", actor="Zhou", channel="api")
        # closing exported every step to the warehouse
        actions = warehouse.query(
            "SELECT action, role FROM alert_actions FINAL ORDER BY action_id"
        ).rows()
    assert ("escalated", "station_master") in actions
    assert actions[-1] == ("acknowledged", "duty_chief")


def test_a_notice_gives_the_renderer_its_arguments_in_a_language() -> None:
    from crowdwatch.risk.outbox import Notice

    notice = Notice(
        notice="reminder",
        measures=({"id": "m", "text": {"zh-CN": "闸机限流", "en": "restrict the gates"}},),
        ack_url="http://x/ack",
        number=2,
    )
    assert notice.render_args("zh-CN") == {
        "measures": ["闸机限流"],
        "ack_url": "http://x/ack",
        "drill": False,
        "escalated_to": None,
        "escalated_from": [],
        "reminder": 2,
    }
    escalation = Notice(
        notice="escalation", escalated_to="duty_chief", missed_by=("street_office",)
    )
    assert escalation.render_args("en")["escalated_from"] == ["street_office"]
    assert escalation.render_args("en")["reminder"] == 0
