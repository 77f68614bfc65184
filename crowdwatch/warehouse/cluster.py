"""The warehouse DDL for a ClickHouse cluster, generated from the same migration files.

One server runs ``infra/clickhouse/NNN_*.sql`` as they are (`crowdwatch db migrate`). A cluster
(shards × replicas, with ClickHouse Keeper) gets the same tables rewritten by `cluster_ddl`:

* every ``CREATE TABLE t … ENGINE = XMergeTree(args)`` becomes ``t_local`` on every host,
  ``ON CLUSTER``, with ``ENGINE = ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/
  {table}', '{replica}', args)`` (``ReplacingMergeTree(version)`` →
  ``ReplicatedReplacingMergeTree(…, version)``), and ``t`` becomes a ``Distributed`` table over
  the ``t_local`` tables: queries, views and dashboards keep using the names they use today;
* the sharding key is ``cityHash64`` of the table's first ``ORDER BY`` column. Replacing and
  aggregating engines fold rows only within one shard, so every version of a row must reach
  the same shard; the leading sort column is part of every row's key, so it always does;
* views are created ``ON CLUSTER`` and read the ``Distributed`` tables (the whole cluster);
* a materialized view fires on the inserts of one host, so it reads ``source_local`` and writes
  ``TO target_local``; its rows stay on the shard of the rows they come from;
* ``ALTER TABLE t …`` is applied to ``t_local`` and to the ``Distributed`` table ``t``.

Unqualified names in view bodies resolve in the session's database: apply the output with that
database selected, e.g. ``clickhouse-client --database crowdwatch --multiquery < cluster.sql``
(the script starts with ``CREATE DATABASE … ON CLUSTER`` and ``USE``).
"""

from __future__ import annotations

import re

from crowdwatch.warehouse.client import Migration, load_migrations

REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA_NAME = "{replica}"
LOCAL_SUFFIX = "_local"

_NAME = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*|\{[a-z_]+\})$")
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\s*(?=\()", re.IGNORECASE)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*MergeTree)\b(?:\(([^()]*)\))?", re.IGNORECASE)
_ORDER_BY = re.compile(r"\bORDER BY\s+(?:\(\s*)?(\w+)", re.IGNORECASE)
_CREATE_VIEW = re.compile(r"^CREATE VIEW IF NOT EXISTS (\w+)\s+AS\b", re.IGNORECASE)
_CREATE_MV = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\s+TO\s+(\w+)\s+AS\b", re.IGNORECASE
)
_ALTER = re.compile(r"^ALTER TABLE (\w+)\s+(.*)$", re.IGNORECASE | re.DOTALL)
_FROM_JOIN = re.compile(r"\b(FROM|JOIN)\s+(\w+)\b", re.IGNORECASE)


class ClusterDDLError(ValueError):
    """A migration statement has a shape the cluster rewrite does not know."""


def _quoted(name: str) -> str:
    return f"'{name}'"


def _local_table(name: str, statement: str, on_cluster: str) -> tuple[str, str]:
    """The replicated ``name_local`` statement and the table's sharding column."""
    engine = _ENGINE.search(statement)
    if engine is None:
        raise ClusterDDLError(
            f"table {name}: expected ENGINE = <X>MergeTree(...) to replicate, found none; "
            "give the table a MergeTree-family engine or teach crowdwatch.warehouse.cluster "
            "the new engine"
        )
    order = _ORDER_BY.search(statement, engine.end())
    if order is None:
        raise ClusterDDLError(f"table {name}: expected ORDER BY after the engine to shard by")
    args = [_quoted(REPLICA_PATH), _quoted(REPLICA_NAME)]
    if engine[2] and engine[2].strip():
        args.append(engine[2].strip())
    replicated = f"ENGINE = Replicated{engine[1]}({', '.join(args)})"
    body = statement[: engine.start()] + replicated + statement[engine.end() :]
    head = _CREATE_TABLE.match(body)
    assert head is not None  # matched by the caller
    local = f"CREATE TABLE IF NOT EXISTS {name}{LOCAL_SUFFIX}{on_cluster}\n" + body[head.end() :]
    return local, order[1]


def _distributed(name: str, shard_by: str, cluster: str, database: str, on_cluster: str) -> str:
    local = f"{name}{LOCAL_SUFFIX}"
    return (
        f"CREATE TABLE IF NOT EXISTS {name}{on_cluster} AS {local}\n"
        f"ENGINE = Distributed({_quoted(cluster)}, {_quoted(database)}, {_quoted(local)}, "
        f"cityHash64({shard_by}))"
    )


def statement_for_cluster(
    statement: str, tables: set[str], cluster: str, database: str
) -> list[str]:
    """Rewrite one migration statement for a cluster; ``tables`` are the tables made so far.

    Raises:
        ClusterDDLError: the statement is of a kind the rewrite does not handle.
    """
    on_cluster = f" ON CLUSTER {_quoted(cluster)}"
    if match := _CREATE_TABLE.match(statement):
        name = match[1]
        local, shard_by = _local_table(name, statement, on_cluster)
        tables.add(name)
        return [local, _distributed(name, shard_by, cluster, database, on_cluster)]
    if match := _CREATE_MV.match(statement):
        name, target = match[1], match[2]
        if target not in tables:
            raise ClusterDDLError(f"materialized view {name}: target {target} is not a table")
        body = _FROM_JOIN.sub(
            lambda m: f"{m[1]} {m[2]}{LOCAL_SUFFIX}" if m[2] in tables else m[0],
            statement[match.end() :],
        )
        return [
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name}{on_cluster} "
            f"TO {target}{LOCAL_SUFFIX} AS{body}"
        ]
    if match := _CREATE_VIEW.match(statement):
        return [f"CREATE VIEW IF NOT EXISTS {match[1]}{on_cluster} AS" + statement[match.end() :]]
    if match := _ALTER.match(statement):
        name, change = match[1], match[2]
        if name not in tables:
            raise ClusterDDLError(f"ALTER TABLE {name}: not a table created by the migrations")
        return [
            f"ALTER TABLE {name}{LOCAL_SUFFIX}{on_cluster} {change}",
            f"ALTER TABLE {name}{on_cluster} {change}",
        ]
    raise ClusterDDLError(
        f"cannot rewrite for a cluster: {statement.splitlines()[0][:80]!r}; expected CREATE "
        "TABLE IF NOT EXISTS, CREATE [MATERIALIZED] VIEW IF NOT EXISTS or ALTER TABLE"
    )


def cluster_ddl(
    cluster: str, database: str, migrations: list[Migration] | None = None
) -> list[str]:
    """Every statement that creates the warehouse on ``cluster``, in order.

    The first two are ``CREATE DATABASE … ON CLUSTER`` and ``USE``; then each migration's
    statements rewritten by `statement_for_cluster`.

    Raises:
        ClusterDDLError: a bad cluster or database name, or a statement the rewrite cannot do.
    """
    for what, name in (("cluster", cluster), ("database", database)):
        if not _NAME.match(name):
            raise ClusterDDLError(
                f"{what} name {name!r}: expected letters, digits and _ (or a macro like "
                "{cluster})"
            )
    tables: set[str] = set()
    out = [f"CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {_quoted(cluster)}"]
    out.append(f"USE {database}")
    for migration in load_migrations() if migrations is None else migrations:
        for statement in migration.statements():
            out.extend(statement_for_cluster(statement, tables, cluster, database))
    return out


def cluster_script(cluster: str, database: str, migrations: list[Migration] | None = None) -> str:
    """`cluster_ddl` as one SQL script, with a header that says how to apply it."""
    header = (
        f"-- crowdwatch warehouse on cluster {cluster}, database {database}: replicated "
        "<table>_local tables on every host, Distributed <table> tables over them.\n"
        "-- Generated by `crowdwatch db cluster-ddl` from infra/clickhouse/NNN_*.sql; apply "
        "with\n"
        f"--   clickhouse-client --database {database} --multiquery < this-file.sql\n"
    )
    return header + "".join(f"\n{s};\n" for s in cluster_ddl(cluster, database, migrations))
