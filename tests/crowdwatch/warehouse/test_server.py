"""A real ClickHouse server: migrations, least-privilege users, async inserts.

Runs only when ``CROWDWATCH_TEST_CLICKHOUSE_DSN`` points at a throwaway server as an admin
user that may create users and roles (``http://admin:pw@localhost:8123/``; the server image's
``CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT=1``). It creates a database of its own and the crowdwatch
users and roles, and drops them all afterwards. The embedded engine has no access control, so
the same checks cannot run on it (the chDB case is tested: users are skipped with a note).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlparse, urlunparse

import polars as pl
import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError

from crowdwatch.warehouse.client import SERVER_INSERT_SETTINGS, Warehouse, WarehouseError
from crowdwatch.warehouse.users import (
    CHDB_NOTE,
    HIDDEN_COLUMNS,
    READER_ROLE,
    READER_USER,
    RESTRICTED_ROLE,
    RESTRICTED_USER,
    WRITER_ROLE,
    WRITER_USER,
    create_users,
    restricted_grants,
    role_statements,
)

DENIED = r"ACCESS_DENIED|Not enough privileges"
SERVER_DSN = os.environ.get("CROWDWATCH_TEST_CLICKHOUSE_DSN")
needs_server = pytest.mark.skipif(
    not SERVER_DSN,
    reason="no ClickHouse server: set CROWDWATCH_TEST_CLICKHOUSE_DSN=http://admin:pw@host:8123/ "
    "(a throwaway server; the test creates and drops users, roles and a database)",
)


def test_the_embedded_engine_skips_users_with_a_note(warehouse: Warehouse) -> None:
    result = create_users(warehouse, writer_password="w", reader_password="r")
    assert result.skipped == CHDB_NOTE
    assert result.users == {}


def test_role_and_grant_statements_name_the_database_and_hide_the_free_text() -> None:
    statements = role_statements("crowd_db")
    assert "GRANT SELECT, INSERT ON `crowd_db`.* TO crowdwatch_writer" in statements
    assert "GRANT SELECT ON `crowd_db`.* TO crowdwatch_reader" in statements
    assert not [s for s in statements if "{database}" in s or ("INSERT" in s and "reader" in s)]
    grants = restricted_grants(
        "crowd_db",
        {"calls": ["call_id", "description", "group", "address"], "zone_metrics": ["zone_id"]},
    )
    assert grants == [
        f"GRANT SELECT(`call_id`, `group`) ON `crowd_db`.`calls` TO {RESTRICTED_ROLE}",
        f"GRANT SELECT ON `crowd_db`.`zone_metrics` TO {RESTRICTED_ROLE}",
    ]
    with pytest.raises(WarehouseError, match="identifier"):
        role_statements("x`; DROP DATABASE y; --")


def _as(user: str, password: str, database: str) -> Warehouse:
    assert SERVER_DSN is not None
    parsed = urlparse(SERVER_DSN)
    netloc = f"{user}:{password}@{parsed.hostname}:{parsed.port or 8123}"
    return Warehouse.connect(urlunparse(parsed._replace(netloc=netloc, path="/")), database)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Warehouse, dict[str, str]]]:
    assert SERVER_DSN is not None
    database = f"crowdwatch_test_{secrets.token_hex(4)}"
    passwords = {u: secrets.token_urlsafe(16) for u in (WRITER_USER, READER_USER, RESTRICTED_USER)}
    admin = Warehouse.connect(SERVER_DSN, database)
    try:
        admin.migrate()
        create_users(
            admin,
            writer_password=passwords[WRITER_USER],
            reader_password=passwords[READER_USER],
            restricted_password=passwords[RESTRICTED_USER],
        )
        yield admin, passwords
    finally:
        for user in passwords:
            admin.command(f"DROP USER IF EXISTS {user}")
        for role in (WRITER_ROLE, READER_ROLE, RESTRICTED_ROLE):
            admin.command(f"DROP ROLE IF EXISTS {role}")
        admin.command(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()


def _zone_metrics_row() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "zone_id": ["CTR-concourse"],
            "station_id": ["CTR"],
            "scope": ["zone"],
            "ts": [datetime(2026, 11, 20, 8, 0, tzinfo=UTC)],
            "window_s": [60],
            "entries": [3],
            "exits": [1],
            "inflow_per_min": [3.0],
            "outflow_per_min": [1.0],
            "occupancy": [2],
            "capacity": [3000],
            "capacity_use": [2 / 3000],
            "density": [0.001],
            "version": [1],
        },
        schema_overrides={"ts": pl.Datetime("ms", "UTC")},
    )


@needs_server
def test_migrated_server_uses_async_inserts(server: tuple[Warehouse, dict[str, str]]) -> None:
    admin, _ = server
    admin.check_tables("zone_metrics", "calls", "alerts", "forecasts")
    for name, value in SERVER_INSERT_SETTINGS.items():
        got = admin.query(f"SELECT toInt64(getSetting('{name}')) AS v")["v"][0]
        assert got == value


@needs_server
def test_writer_inserts_and_reads_but_cannot_change_the_schema(
    server: tuple[Warehouse, dict[str, str]],
) -> None:
    admin, passwords = server
    with _as(WRITER_USER, passwords[WRITER_USER], admin.database) as writer:
        writer.insert("zone_metrics", _zone_metrics_row())
        assert writer.query("SELECT sum(entries) AS n FROM zone_metrics")["n"][0] == 3
        with pytest.raises(ClickHouseError, match=DENIED):
            writer.command("DROP TABLE zone_metrics")


@needs_server
def test_reader_cannot_insert(server: tuple[Warehouse, dict[str, str]]) -> None:
    admin, passwords = server
    with _as(READER_USER, passwords[READER_USER], admin.database) as reader:
        reader.query("SELECT count() FROM zone_metrics")
        with pytest.raises(ClickHouseError, match=DENIED):
            reader.insert("zone_metrics", _zone_metrics_row())


@needs_server
def test_restricted_reader_cannot_read_the_free_text_of_calls(
    server: tuple[Warehouse, dict[str, str]],
) -> None:
    admin, passwords = server
    with _as(RESTRICTED_USER, passwords[RESTRICTED_USER], admin.database) as analyst:
        analyst.query("SELECT call_id, received_at, `group`, zones FROM calls")
        analyst.query("SELECT count() FROM zone_state")
        for column in sorted(HIDDEN_COLUMNS["calls"]):
            with pytest.raises(ClickHouseError, match=DENIED):
                analyst.query(f"SELECT `{column}` FROM calls")
        with pytest.raises(ClickHouseError, match=DENIED):
            analyst.query("SELECT * FROM calls")
