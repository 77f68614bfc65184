"""Drills (演练): marked messages, the report, and never in the real statistics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from crowdwatch.warehouse.client import Warehouse
from crowdwatch.workflow import kpis
from crowdwatch.workflow.drill import drill_event, drill_report, write_drill_report
from crowdwatch.workflow.service import Workflow
from tests.crowdwatch.workflow.helpers import Clock


def test_a_drill_is_marked_reported_and_left_out_of_the_kpis(
    workflow: Workflow, clock: Clock, warehouse: Warehouse, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not a zone"):
        drill_event(workflow.site, "nowhere", "red", clock.now)
    event = drill_event(workflow.site, "CTR-concourse", "red", clock.now)
    notices = workflow.record([event], mode="on", max_age_s=600, drill=True)
    assert notices(event, "station_master").drill is True
    assert event.kind == "drill" and event.reason.startswith("【演练】")
    clock.advance(42)
    workflow.acknowledge(event.alert_id, "station_master", actor="Wang", channel="cli")
    report = drill_report(workflow, event.alert_id)
    assert report.acknowledged == 1 and len(report.roles) == 4
    assert {r.role: r.seconds for r in report.roles}["station_master"] == 42
    text = write_drill_report(report, workflow.site, tmp_path / "drill.md").read_text()
    assert "【演练】" in text and "| 42 | Wang | cli |" in text
    warehouse.insert("alert_actions", workflow.unexported_actions())
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    assert kpis.ack_times(warehouse, start, end).height == 0  # drills never count
    assert kpis.unacknowledged(warehouse).height == 0
    drills = warehouse.query(
        "SELECT role, elapsed_ms FROM alert_actions FINAL "
        "WHERE drill = 1 AND action = 'acknowledged'"
    )
    assert drills.rows() == [("station_master", 42_000)]
