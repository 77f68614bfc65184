"""infra/compose.yaml: valid by the Compose Specification schema, and consistent with the repo."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from app.cli import build_parser
from crowdwatch.settings import REPO_ROOT, Settings

INFRA = REPO_ROOT / "infra"
COMPOSE_FILE = INFRA / "compose.yaml"
SCHEMA_FILE = Path(__file__).parent / "compose_schema" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # the file says draft-07 as "https://json-schema.org/draft-07/schema", an address that
    # jsonschema does not map to its draft-07 validator by itself
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_is_valid_by_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert errors == []


def test_the_schema_rejects_what_compose_would_reject(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    typo = copy.deepcopy(compose)
    typo["services"]["grafana"]["volume"] = typo["services"]["grafana"].pop("volumes")
    assert not validator.is_valid(typo)
    bad_condition = copy.deepcopy(compose)
    bad_condition["services"]["migrate"]["depends_on"]["clickhouse"]["condition"] = "healthy"
    assert not validator.is_valid(bad_condition)


def _host_paths(service: dict[str, Any]) -> list[str]:
    paths = []
    for volume in service.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/")):
            paths.append(source)
    return paths


def test_every_dependency_is_a_service_and_every_mounted_path_is_in_the_repo(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    named_volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named_volumes, f"{name}: volume {source} is not declared"
        for path in _host_paths(service):
            assert (INFRA / path).resolve().exists(), f"{name} mounts {path}: not in the repo"
        if "build" in service:
            context = (INFRA / service["build"]["context"]).resolve()
            assert context == REPO_ROOT
            assert (context / service["build"]["dockerfile"]).is_file()


def test_grafana_gets_the_plugin_the_provisioning_and_the_dashboards(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"]
    # the dashboards provider reads the folder the dashboards are mounted at
    for provider_file in (INFRA / "grafana" / "provisioning" / "dashboards").glob("*.yaml"):
        for provider in yaml.safe_load(provider_file.read_text(encoding="utf-8"))["providers"]:
            assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert list((INFRA / "grafana" / "dashboards").glob("*.json"))


def test_crowdwatch_settings_in_the_environment_exist(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    seen = set()
    for name, service in compose["services"].items():
        for key in service.get("environment", {}):
            if key.startswith("CROWDWATCH_") and key not in (
                "CROWDWATCH_WRITER_PASSWORD",
                "CROWDWATCH_READER_PASSWORD",
            ):
                field = key.removeprefix("CROWDWATCH_").lower()
                assert field in fields, f"{name}: {key} is not a crowdwatch setting"
                seen.add(field)
    assert {"clickhouse_dsn", "source", "kafka_brokers", "recovery_dir"} <= seen


def _crowdwatch_commands(command: str | list[str]) -> list[list[str]]:
    text = command if isinstance(command, str) else shlex.join(command)
    if isinstance(command, list) and command[:2] == ["sh", "-c"]:
        text = command[2]
    parts = re.split(r"&&|;|\bdo\b|\bdone\b", text)
    return [shlex.split(p.strip())[1:] for p in parts if p.strip().startswith("crowdwatch ")]


def test_every_crowdwatch_command_in_the_file_parses(compose: dict[str, Any]) -> None:
    parser = build_parser()
    parsed = []
    for service in compose["services"].values():
        if "command" in service:
            for argv in _crowdwatch_commands(service["command"]):
                args = parser.parse_args(argv)
                parsed.append(args.func.__name__)
    assert {"cmd_db_migrate", "cmd_db_users", "cmd_run", "cmd_forecast"} <= set(parsed)
