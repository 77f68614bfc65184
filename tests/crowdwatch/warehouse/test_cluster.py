"""The cluster DDL: generated from the migration files, well-formed, covering every table."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import polars as pl
import pytest

from crowdwatch.settings import Settings
from crowdwatch.warehouse.client import Migration, Warehouse, load_migrations
from crowdwatch.warehouse.cluster import (
    ClusterDDLError,
    cluster_ddl,
    cluster_script,
    statement_for_cluster,
)

CLUSTER = "crowd"


def migration_objects() -> tuple[set[str], set[str], set[str]]:
    """Tables, views and materialized views that the migration files create."""
    tables, views, mvs = set(), set(), set()
    for migration in load_migrations():
        for statement in migration.statements():
            if m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", statement):
                tables.add(m[1])
            elif m := re.match(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)", statement):
                mvs.add(m[1])
            elif m := re.match(r"CREATE VIEW IF NOT EXISTS (\w+)", statement):
                views.add(m[1])
    return tables, views, mvs


def test_every_statement_parses_as_clickhouse_sql(warehouse: Warehouse) -> None:
    statements = cluster_ddl(CLUSTER, warehouse.database)
    for statement in statements:
        formatted = warehouse.query("SELECT formatQuery({q:String}) AS f", {"q": statement})
        assert formatted["f"][0].split()[0] in ("CREATE", "ALTER", "USE")
    # and a broken statement does not: the check can fail
    with pytest.raises(Exception, match="Syntax error"):
        warehouse.query("SELECT formatQuery({q:String})", {"q": statements[2] + " ENGINE ="})


def test_every_table_is_replicated_and_distributed_and_everything_is_on_the_cluster() -> None:
    tables, views, mvs = migration_objects()
    assert {"zone_metrics", "calls", "alerts", "forecasts"} <= tables
    statements = cluster_ddl(CLUSTER, "crowdwatch")
    created: dict[str, str] = {}
    for statement in statements[2:]:
        assert f" ON CLUSTER '{CLUSTER}'" in statement.splitlines()[0]
        if m := re.match(r"CREATE (?:MATERIALIZED )?(?:TABLE|VIEW) IF NOT EXISTS (\w+)", statement):
            created[m[1]] = statement
    assert set(created) == tables | {f"{t}_local" for t in tables} | views | mvs
    for table in tables:
        local = created[f"{table}_local"]
        engine = re.search(r"ENGINE = (\w+)\('([^']*)', '([^']*)'", local)
        assert engine is not None, local
        assert engine[1].startswith("Replicated") and engine[1].endswith("MergeTree")
        assert (engine[2], engine[3]) == (
            "/clickhouse/tables/{shard}/{database}/{table}",
            "{replica}",
        )
        assert created[table].endswith(
            f"ENGINE = Distributed('{CLUSTER}', 'crowdwatch', '{table}_local', "
            + re.search(r"cityHash64\(\w+\)\)$", created[table])[0]  # type: ignore[index]
        )
    # no table is left on a single host's non-replicated engine
    assert not [s for s in statements if re.search(r"ENGINE = (?!Replicated|Distributed)", s)]
    for mv in mvs:
        assert re.search(r" TO \w+_local AS", created[mv])


def test_replacing_version_and_sharding_key_follow_the_source_table() -> None:
    migration = Migration(
        1,
        "001_t",
        "CREATE TABLE IF NOT EXISTS t\n(\n    k String,\n    ts DateTime,\n    v UInt64\n)\n"
        "ENGINE = ReplacingMergeTree(v)\nPARTITION BY toYYYYMMDD(ts)\nORDER BY (k, ts);\n"
        "CREATE VIEW IF NOT EXISTS w AS SELECT k FROM t FINAL;\n"
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS x UInt8;\n",
    )
    assert cluster_ddl("c", "db", [migration])[2:] == [
        "CREATE TABLE IF NOT EXISTS t_local ON CLUSTER 'c'\n(\n    k String,\n    ts DateTime,\n"
        "    v UInt64\n)\nENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/"
        "{database}/{table}', '{replica}', v)\nPARTITION BY toYYYYMMDD(ts)\nORDER BY (k, ts)",
        "CREATE TABLE IF NOT EXISTS t ON CLUSTER 'c' AS t_local\n"
        "ENGINE = Distributed('c', 'db', 't_local', cityHash64(k))",
        "CREATE VIEW IF NOT EXISTS w ON CLUSTER 'c' AS SELECT k FROM t FINAL",
        "ALTER TABLE t_local ON CLUSTER 'c' ADD COLUMN IF NOT EXISTS x UInt8",
        "ALTER TABLE t ON CLUSTER 'c' ADD COLUMN IF NOT EXISTS x UInt8",
    ]


def test_unknown_statements_and_bad_names_are_refused() -> None:
    with pytest.raises(ClusterDDLError, match="expected ENGINE"):
        statement_for_cluster(
            "CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = Log", set(), "c", "d"
        )
    with pytest.raises(ClusterDDLError, match="cannot rewrite"):
        statement_for_cluster("DROP TABLE t", set(), "c", "d")
    with pytest.raises(ClusterDDLError, match="cluster name"):
        cluster_ddl("c; DROP DATABASE x", "crowdwatch")
    assert cluster_script("c", "crowdwatch").startswith("-- crowdwatch warehouse on cluster c")


def single_host(statement: str, database: str) -> str:
    """The cluster statement as one host would run it, Merge standing in for Distributed."""
    statement = statement.replace(f" ON CLUSTER '{CLUSTER}'", "")
    statement = re.sub(r"Replicated(\w*MergeTree)\('[^']*', '[^']*'(?:, )?", r"\1(", statement)
    return re.sub(
        rf"ENGINE = Distributed\('{CLUSTER}', '{database}', '(\w+)', .*\)$",
        rf"ENGINE = Merge('{database}', '^\1$')",
        statement,
    )


def test_on_one_host_the_views_read_the_local_tables_through_the_distributed_names(
    settings: Settings,
) -> None:
    """Run the cluster DDL on one host (chDB has no Keeper or clusters) and use it."""
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as wh:
        for statement in cluster_ddl(CLUSTER, wh.database)[2:]:
            wh.command(single_host(statement, wh.database))
        ts = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
        rows = pl.DataFrame(
            {
                "zone_id": ["CTR-concourse"],
                "station_id": ["CTR"],
                "scope": ["zone"],
                "ts": [ts],
                "window_s": [60],
                "entries": [7],
                "exits": [2],
                "inflow_per_min": [7.0],
                "outflow_per_min": [2.0],
                "occupancy": [5],
                "capacity": [3000],
                "capacity_use": [5 / 3000],
                "density": [0.01],
                "version": [1],
            },
            schema_overrides={"ts": pl.Datetime("ms", "UTC")},
        )
        wh.insert("zone_metrics_local", rows)
        minute = wh.query("SELECT zone_id, gate_entries, gate_exits FROM zone_minute")
        assert minute.rows() == [("CTR-concourse", 7, 2)]
        assert wh.query("SELECT count() AS n FROM zone_metrics FINAL")["n"][0] == 1
        # a materialized view fires on the local table and fills the local rollup
        wh.command(
            "INSERT INTO zone_state_local (zone_id, station_id, ts, source, anomaly_score, "
            "surge_score, burst_score, level, version) VALUES ('CTR-concourse', 'CTR', "
            "'2026-11-20 08:00:10', 'gates', 0, 0, 0, 'red', 1)"
        )
        hourly = wh.query(
            "SELECT zone_id, max(level_rank_max) AS rank FROM zone_hourly GROUP BY zone_id"
        )
        assert hourly.rows() == [("CTR-concourse", 4)]
