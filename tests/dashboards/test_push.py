"""Pushing to Grafana: the diff, the summary, errors as one line, and a real Grafana when given.

Grafana does not run here: the push itself is tested against one when
``CROWDWATCH_TEST_GRAFANA_URL`` (and ``CROWDWATCH_TEST_GRAFANA_TOKEN``) point at it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from grafana_client.client import GrafanaClientError

from crowdwatch.site import Site, load_site
from dashboards.alerting import contact_points, rule_groups
from dashboards.build import dashboards
from dashboards.provisioning import ClickHouseSource
from dashboards.push import (
    GrafanaPushError,
    PushSummary,
    _grafana,
    connect,
    covers,
    desired,
    push,
)
from tests.commands import crowdwatch, user_env
from tests.conftest import EXAMPLE_SITE

GRAFANA_URL = os.environ.get("CROWDWATCH_TEST_GRAFANA_URL")
GRAFANA_TOKEN = os.environ.get("CROWDWATCH_TEST_GRAFANA_TOKEN")


@pytest.fixture
def site() -> Site:
    return load_site(EXAMPLE_SITE)


def closed_port() -> int:
    """A localhost port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_covers_ignores_what_grafana_adds_and_sees_what_differs() -> None:
    want = {"title": "x", "panels": [{"id": 1, "gridPos": {"h": 4}}], "editable": True}
    have = {
        "id": 7,
        "version": 3,
        "title": "x",
        "panels": [{"id": 1, "gridPos": {"h": 4.0}, "pluginVersion": "11"}],
        "editable": True,
    }
    assert covers(have, want)
    assert not covers(have | {"title": "y"}, want)
    assert not covers(have | {"panels": [*have["panels"], {"id": 2}]}, want)
    assert not covers({k: v for k, v in have.items() if k != "editable"}, want)
    assert not covers(have | {"editable": 1}, want)  # a bool is not a number
    assert not covers({"n": 0}, {"n": False})
    assert covers({"settings": {"url": "[REDACTED]"}}, {"settings": {"url": "https://x"}})
    assert not covers({"a": None}, {"a": "x"})
    assert covers([["level", "=", "red"]], [["level", "=", "red"]])
    assert not covers([["level", "=", "red"]], [["level", "=", "orange"]])


def test_summary_counts_and_lines() -> None:
    summary = PushSummary()
    assert not summary.changed()
    summary.record("dashboard", "a", "created")
    summary.record("dashboard", "b", "unchanged")
    summary.record("policy_tree", "root", "updated")
    assert summary.changed()
    assert (summary.count("created"), summary.count("updated"), summary.count("unchanged")) == (
        1,
        1,
        1,
    )
    assert "dashboard: 1 created, 0 updated, 1 unchanged" in summary.lines()
    assert len(summary.lines()) == 6


def test_desired_puts_everything_in_the_folder(site: Site) -> None:
    want = desired(site, folder="ops", clickhouse=ClickHouseSource(password="pw"))
    assert want.folder == {"uid": "ops", "title": "ops"}
    assert want.datasource["uid"] == "crowdwatch-clickhouse"
    assert want.datasource["secureJsonData"] == {"password": "pw"}
    assert "secureJsonData" not in desired(site).datasource
    assert set(want.dashboards) == set(dashboards())
    assert all("id" not in b and "version" not in b for b in want.dashboards.values())
    assert [g["title"] for g in want.rule_groups] == [g.build().title for g in rule_groups(site)]
    for group in want.rule_groups:
        assert group["folderUid"] == "ops"
        assert all(r["folderUID"] == "ops" and "orgID" not in r for r in group["rules"])
    assert [p["uid"] for p in want.contact_points] == [p.build().uid for p in contact_points(site)]
    assert want.policy_tree["receiver"] == "crowdwatch-operations"


def test_grafana_errors_become_one_line_naming_the_object() -> None:
    api = connect("http://127.0.0.1:3000", "t")
    with pytest.raises(GrafanaPushError) as raised, _grafana("alert rule group 'g'", api):
        raise GrafanaClientError(
            403, {"message": "You'll need additional permissions"}, "Client Error 403"
        )
    assert str(raised.value) == (
        "alert rule group 'g': Grafana said HTTP 403: You'll need additional permissions"
    )
    with pytest.raises(GrafanaPushError, match="expected http"):
        connect("localhost:3000", "t")


def test_push_to_a_closed_port_names_what_it_was_doing(site: Site) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(GrafanaPushError) as raised:
        push(url, "token", site=site)
    assert (
        str(raised.value)
        == f"folder 'crowdwatch': cannot reach Grafana at {url} (Connection refused)"
    )


def test_cli_grafana_push_help() -> None:
    done = crowdwatch("grafana", "push", "--help", env=user_env(), check=False)
    assert done.returncode == 0
    assert "usage: crowdwatch grafana push" in done.stdout
    assert "CROWDWATCH_GRAFANA_TOKEN" in done.stdout


def test_cli_grafana_push_to_a_closed_port_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = crowdwatch(
        "grafana",
        "push",
        "--url",
        url,
        env=user_env(CROWDWATCH_GRAFANA_TOKEN="secret-token"),
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: folder 'crowdwatch': cannot reach Grafana at {url} (Connection refused)"
    ]
    assert "secret-token" not in done.stderr
    missing = crowdwatch("grafana", "push", "--url", url, env=user_env(), check=False)
    assert missing.returncode == 2
    assert "CROWDWATCH_GRAFANA_TOKEN" in missing.stderr


@pytest.mark.skipif(
    not (GRAFANA_URL and GRAFANA_TOKEN),
    reason="no Grafana here: set CROWDWATCH_TEST_GRAFANA_URL and CROWDWATCH_TEST_GRAFANA_TOKEN",
)
def test_push_twice_to_a_real_grafana_changes_nothing_the_second_time(site: Site) -> None:
    assert GRAFANA_URL and GRAFANA_TOKEN
    source = ClickHouseSource.from_url(
        os.environ.get("CROWDWATCH_TEST_GRAFANA_CLICKHOUSE_URL", "http://default@clickhouse:8123")
    )
    first = push(GRAFANA_URL, GRAFANA_TOKEN, site=site, folder="crowdwatch-test", clickhouse=source)
    second = push(
        GRAFANA_URL, GRAFANA_TOKEN, site=site, folder="crowdwatch-test", clickhouse=source
    )
    total = sum(len(v) for by in first.results.values() for v in by.values())
    assert not second.changed(), second.lines()
    assert second.count("unchanged") == total
    want: Any = desired(site, folder="crowdwatch-test", clickhouse=source)
    assert second.results["dashboard"]["unchanged"] == list(want.dashboards)
    assert second.results["rule_group"]["unchanged"] == [g["title"] for g in want.rule_groups]
