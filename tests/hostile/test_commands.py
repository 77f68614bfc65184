"""Commands that could hurt the warehouse (issue 15, case 10): query, publish."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import redis

from app.cli import main as cli
from crowdwatch.settings import Settings
from crowdwatch.warehouse.client import Warehouse
from tests.crowdwatch.sources.test_redis_streams import client, prefix

__all__ = ["client", "prefix"]  # the Redis fixtures, used here too


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CROWDWATCH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CROWDWATCH_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    return settings


def test_case_10_query_is_read_only_unless_write_is_given(
    env: Settings, warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["query", "DROP TABLE alerts"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and "--write" in error and "Traceback" not in error
    assert cli(["query", "INSERT INTO site_stations (station_id) VALUES ('X')"]) == 2
    tables = warehouse.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    assert "alerts" in tables["name"].to_list()
    assert cli(["query", "DROP TABLE alerts", "--write"]) == 0
    tables = warehouse.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    assert "alerts" not in tables["name"].to_list()


def test_case_10_csv_of_array_columns(
    env: Settings, warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = (
        "SELECT 1 AS n, ['STD-plaza', 'a,\"b'] AS zones, map('k', [1, 2]) AS m, tuple(1, 'x') AS t"
    )
    assert cli(["query", sql, "--format", "csv"]) == 0
    rows = pl.read_csv(capsys.readouterr().out.encode())
    assert json.loads(rows["zones"][0]) == ["STD-plaza", 'a,"b']
    assert json.loads(rows["m"][0]) == {"k": [1, 2]}
    assert rows["n"].to_list() == [1]


def test_case_10_publishing_a_file_twice_adds_its_records_once(
    client: redis.Redis, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "passages.jsonl"
    records = [
        {"ts": f"2026-05-04T08:00:{s:02d}+08:00", "gate_id": "RVS-G01", "direction": "in"}
        for s in range(20)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    monkeypatch.setenv("CROWDWATCH_REDIS_STREAM_PREFIX", prefix)
    for _ in range(2):
        assert cli(["publish", "redis", str(path)]) == 0
    assert client.xlen(f"{prefix}:passage") == 20
    # a changed record is a new message; the unchanged ones are still skipped
    records[3]["direction"] = "out"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert cli(["publish", "redis", str(path)]) == 0
    entries = client.xrange(f"{prefix}:passage")
    assert len(entries) == 21
    assert json.loads(entries[-1][1][b"payload"])["direction"] == "out"
