"""Provisioning files: committed and current, in the shapes Grafana's provisioning reads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from crowdwatch.settings import DEFAULT_SITE_FILE, REPO_ROOT
from crowdwatch.site import Contact, Site, load_site
from dashboards.alerting import OPERATIONS, rule_specs
from dashboards.build import FOLDER as DASHBOARDS_FOLDER
from dashboards.provisioning import FOLDER, ClickHouseSource, contact_points_file, files

NAMES = [
    "datasources/clickhouse.yaml",
    "dashboards/crowdwatch.yaml",
    "alerting/rules.yaml",
    "alerting/contact_points.yaml",
    "alerting/policies.yaml",
]
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((FOLDER / name).read_text(encoding="utf-8"))
    assert data["apiVersion"] == 1, name
    return data


def test_committed_files_are_current() -> None:
    expected = files(load_site(DEFAULT_SITE_FILE), DEFAULT_SITE_FILE)
    assert sorted(str(p) for p in expected) == sorted(NAMES)
    for path, text in expected.items():
        target = FOLDER / path
        assert target.exists(), f"{target} is missing: run `python -m dashboards.provisioning`"
        assert target.read_text(encoding="utf-8") == text, (
            f"{target} is stale: run `python -m dashboards.provisioning` and commit the result"
        )
    on_disk = {str(p.relative_to(FOLDER)) for p in FOLDER.rglob("*") if p.is_file()}
    assert on_disk == set(NAMES), f"files no code writes: {sorted(on_disk - set(NAMES))}"


def test_main_writes_the_same_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dashboards.provisioning", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    )
    assert len(done.stdout.splitlines()) == len(NAMES)
    for name in NAMES:
        assert (tmp_path / name).read_text(encoding="utf-8") == (FOLDER / name).read_text(
            encoding="utf-8"
        )


def test_datasource_is_the_clickhouse_plugin_with_the_password_from_the_environment() -> None:
    (ds,) = load("datasources/clickhouse.yaml")["datasources"]
    assert (ds["type"], ds["uid"], ds["access"]) == (
        "grafana-clickhouse-datasource",
        "crowdwatch-clickhouse",
        "proxy",
    )
    assert set(ds["jsonData"]) >= {"host", "port", "protocol", "username", "defaultDatabase"}
    assert ds["jsonData"]["protocol"] in ("http", "native")
    assert ds["secureJsonData"] == {"password": "$CLICKHOUSE_PASSWORD"}


def test_dashboard_provider_reads_the_dashboards_folder() -> None:
    (provider,) = load("dashboards/crowdwatch.yaml")["providers"]
    assert (provider["type"], provider["folder"]) == ("file", "crowdwatch")
    assert provider["options"]["path"].startswith("/")
    assert any(DASHBOARDS_FOLDER.glob("*.json")), "no dashboards to provision"


def test_rules_file_has_grafanas_rule_group_shape() -> None:
    groups = load("alerting/rules.yaml")["groups"]
    uids = []
    for group in groups:
        assert set(group) == {"orgId", "name", "folder", "interval", "rules"}
        assert group["folder"] == "crowdwatch" and DURATION.match(group["interval"])
        for rule in group["rules"]:
            uids.append(rule["uid"])
            assert rule["title"] and rule["condition"] in [q["refId"] for q in rule["data"]]
            assert DURATION.match(rule["for"]), rule["for"]
            assert rule["noDataState"] in ("OK", "NoData", "Alerting")
            assert rule["execErrState"] in ("OK", "Error", "Alerting")
            for query in rule["data"]:
                assert query["model"]["refId"] == query["refId"]
                assert set(query["relativeTimeRange"]) == {"from", "to"}
                assert query["datasourceUid"] in ("crowdwatch-clickhouse", "__expr__")
            # the SQL keeps the plugin's macros: Grafana does not interpolate a rule's model
            sql = rule["data"][0]["model"]["rawSql"]
            assert "FROM" in sql
    assert uids == [s.uid for s in rule_specs(load_site(DEFAULT_SITE_FILE))]


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("routes", []) for n in walk(child))]


def test_a_contact_point_holds_an_integration_per_channel() -> None:
    base = load_site(DEFAULT_SITE_FILE)
    contact = Contact.model_validate(
        {
            "name": "王站长",
            "webhook": "https://hooks.example/sm",
            "channels": [{"type": "wecom", "url": "https://wecom.example/send?key=k"}],
        }
    )
    stations = [
        s.model_copy(update={"contacts": {"station_master": contact}}) if s.id == "CTR" else s
        for s in base.stations
    ]
    site = Site.model_validate(base.model_copy(update={"stations": stations}).model_dump())

    points = {p["name"]: p for p in contact_points_file(site)["contactPoints"]}

    receivers = points["crowdwatch-CTR-station_master"]["receivers"]
    assert [(r["uid"], r["type"]) for r in receivers] == [
        ("crowdwatch-CTR-station_master", "webhook"),
        ("crowdwatch-CTR-station_master-wecom", "wecom"),
    ]


def test_contact_points_and_policies_fit_together() -> None:
    points = load("alerting/contact_points.yaml")["contactPoints"]
    names = {p["name"] for p in points}
    for point in points:
        (receiver,) = point["receivers"]
        assert receiver["type"] == "webhook"
        assert receiver["settings"]["url"].startswith(("http://", "https://"))
        assert "$" not in receiver["settings"]["url"]  # Grafana would interpolate it
    (policy,) = load("alerting/policies.yaml")["policies"]
    assert policy["receiver"] == OPERATIONS
    nodes = walk(policy)
    used = {n["receiver"] for n in nodes if "receiver" in n}
    assert used == names, "every contact point is used and every receiver exists"
    for node in nodes:
        for matcher in node.get("object_matchers", []):
            assert len(matcher) == 3 and matcher[1] == "="


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://reader:s%40cret@ch.internal:8123/crowdwatch",
            ClickHouseSource("ch.internal", 8123, "http", False, "reader", "crowdwatch", "s@cret"),
        ),
        ("https://ch.example", ClickHouseSource("ch.example", 8443, "http", True, "default")),
        (
            "clickhouse://u@ch:9000/other",
            ClickHouseSource("ch", 9000, "native", False, "u", "other", None),
        ),
        # no user in the URL: ClickHouse's own default user, as a client would use
        ("clickhouses://ch", ClickHouseSource("ch", 9440, "native", True, "default")),
    ],
)
def test_clickhouse_url_becomes_the_plugin_settings(url: str, expected: ClickHouseSource) -> None:
    assert ClickHouseSource.from_url(url) == expected


def test_a_bad_clickhouse_url_is_named_without_its_password() -> None:
    with pytest.raises(ValueError, match="expected http") as raised:
        ClickHouseSource.from_url("chdb://u:hunter2@x/y")
    assert "hunter2" not in str(raised.value)
