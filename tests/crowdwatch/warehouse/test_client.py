"""The warehouse on the embedded engine: migrations, idempotent writes, clear errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from crowdwatch.gates.occupancy import METRIC_SCHEMA
from crowdwatch.settings import REPO_ROOT, Settings
from crowdwatch.warehouse.client import (
    Migration,
    Warehouse,
    WarehouseError,
    describe_dsn,
    load_migrations,
)


def metric_rows(entries: int, version: int) -> pl.DataFrame:
    row = {
        "zone_id": "Z",
        "station_id": "S",
        "scope": "zone",
        "ts": datetime(2026, 5, 4, 8, 0, tzinfo=UTC),
        "window_s": 60,
        "entries": entries,
        "exits": 0,
        "inflow_per_min": 0.0,
        "outflow_per_min": 0.0,
        "occupancy": entries,
        "capacity": 10,
        "capacity_use": entries / 10,
        "density": 0.0,
        "version": version,
    }
    return pl.DataFrame([row], schema=METRIC_SCHEMA)


def test_migrate_applies_each_file_once_and_records_it(warehouse: Warehouse) -> None:
    files = load_migrations()
    assert [m.version for m in files] == sorted(m.version for m in files)
    assert warehouse.applied_versions() == {m.version: m.checksum for m in files}
    assert warehouse.migrate() == []
    tables = set(warehouse.query("SHOW TABLES")["name"])
    assert {"zone_metrics", "rejected_events", "schema_migrations"} <= tables


def test_an_edited_applied_migration_is_refused(warehouse: Warehouse) -> None:
    edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in load_migrations()]
    with pytest.raises(WarehouseError, match="was changed after it was applied"):
        warehouse.migrate(edited)


def test_newer_versions_replace_and_the_same_write_twice_does_not_add(warehouse: Warehouse) -> None:
    warehouse.insert("zone_metrics", metric_rows(5, version=1))
    warehouse.insert("zone_metrics", metric_rows(5, version=1))
    warehouse.insert("zone_metrics", metric_rows(7, version=2))
    warehouse.insert("zone_metrics", metric_rows(6, version=1))  # an older correction arrives late
    got = warehouse.query("SELECT entries, occupancy FROM zone_metrics FINAL")
    assert got.to_dicts() == [{"entries": 7, "occupancy": 7}]


def test_time_columns_round_trip_in_utc(warehouse: Warehouse) -> None:
    warehouse.insert("zone_metrics", metric_rows(1, version=1))
    ts = warehouse.query(
        "SELECT ts FROM zone_metrics WHERE ts = {ts:DateTime64(3, 'UTC')}",
        {"ts": datetime(2026, 5, 4, 8, 0, tzinfo=UTC)},
    )["ts"]
    assert ts.dtype == pl.Datetime("ms", "UTC")
    assert ts.to_list() == [datetime(2026, 5, 4, 8, 0, tzinfo=UTC)]


def test_missing_tables_and_bad_dsns_say_what_to_do(settings: Settings) -> None:
    empty = Warehouse.connect(settings.dsn(), settings.clickhouse_database + "_empty")
    with empty, pytest.raises(WarehouseError, match="run `crowdwatch db migrate` first"):
        empty.check_tables("zone_metrics")
    with pytest.raises(WarehouseError, match="unsupported ClickHouse DSN 'ftp://x'"):
        Warehouse.connect("ftp://x", "crowdwatch")


def test_dsn_passwords_are_not_printed() -> None:
    assert (
        describe_dsn("http://writer:s3cret@ch:8123/crowdwatch")
        == "http://writer:***@ch:8123/crowdwatch"
    )


def test_settings_default_to_the_embedded_engine(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.dsn() == f"chdb://{(tmp_path / 'warehouse').resolve()}"
    server = Settings(clickhouse_dsn="http://u:p@h:8123/db")  # type: ignore[arg-type]
    assert server.dsn() == "http://u:p@h:8123/db"
    assert "p@h" not in repr(server)


# chDB opens one engine path per process, and this test process has the shared one: both the
# holder and the waiter are processes of their own.
HOLDER = """
import sys, time
from crowdwatch.warehouse.client import Warehouse
with Warehouse.connect(sys.argv[1], "crowdwatch"):
    print("open", flush=True)
    time.sleep(float(sys.argv[2]))
"""

WAITER = """
import sys
from crowdwatch.warehouse.client import Warehouse, WarehouseError
try:
    with Warehouse.connect(sys.argv[1], "crowdwatch", busy_wait_s=float(sys.argv[2])) as warehouse:
        print("opened", warehouse.client.command("SELECT 1"))
except WarehouseError as exc:
    print(exc)
"""


def python(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_an_embedded_warehouse_another_process_holds_briefly_is_waited_for(
    tmp_path: Path,
) -> None:
    dsn = f"chdb://{tmp_path / 'warehouse'}"
    holder = python(HOLDER, dsn, 1.5)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        said = python(WAITER, dsn, 30).communicate(timeout=60)[0]
        assert said == "opened 1\n"
        assert holder.poll() == 0  # it had let go: the waiter waited, it did not share
    finally:
        holder.kill()
        holder.communicate(timeout=30)


def test_an_embedded_warehouse_held_too_long_names_the_process(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'warehouse'}"
    holder = python(HOLDER, dsn, 60)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        said = python(WAITER, dsn, 1).communicate(timeout=60)[0]
        assert f"the embedded engine is in use by process {holder.pid} " in said
    finally:
        holder.kill()
        holder.communicate(timeout=30)
