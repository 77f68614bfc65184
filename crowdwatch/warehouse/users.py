"""Least-privilege users and roles on a ClickHouse server (`crowdwatch db users`).

Three roles, from ``infra/clickhouse/users/roles.sql`` plus per-table column grants:

* ``crowdwatch_writer`` (user ``crowdwatch_pipelines``): SELECT and INSERT on the warehouse
  database, TRUNCATE on the site tables; the pipelines and the forecast scheduler.
* ``crowdwatch_reader`` (user ``crowdwatch_grafana``): SELECT only; Grafana.
* ``crowdwatch_restricted_reader`` (user ``crowdwatch_analyst``, optional): SELECT on every
  table and view, but on ``calls`` only the columns without free text (`HIDDEN_COLUMNS`).

Passwords never travel in clear text: a user is created ``IDENTIFIED WITH sha256_hash`` of its
password. Run it after `crowdwatch db migrate` (and again after later migrations: the
restricted reader's grants name the tables that exist). The embedded engine (chDB) has no
access control, so there it does nothing and says so.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from crowdwatch.settings import REPO_ROOT
from crowdwatch.warehouse.client import Migration, Warehouse, WarehouseError

ROLES_FILE = REPO_ROOT / "infra" / "clickhouse" / "users" / "roles.sql"
WRITER_ROLE = "crowdwatch_writer"
READER_ROLE = "crowdwatch_reader"
RESTRICTED_ROLE = "crowdwatch_restricted_reader"
WRITER_USER = "crowdwatch_pipelines"
READER_USER = "crowdwatch_grafana"
RESTRICTED_USER = "crowdwatch_analyst"

HIDDEN_COLUMNS: dict[str, frozenset[str]] = {
    # Free text typed by call takers (scrubbed, but it can still name people or places) and
    # the keyed caller hash, which links one person's calls.
    "calls": frozenset({"address", "category_text", "description", "caller_hash"}),
}
"""Columns the restricted reader may not read, per table."""

CHDB_NOTE = (
    "the embedded engine (chDB) has no users or grants: it runs inside the pipeline process; "
    "create users on a ClickHouse server (CROWDWATCH_CLICKHOUSE_DSN=http://...)"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class UsersResult:
    """What `create_users` did: the users made, or why nothing was done."""

    users: dict[str, str] = field(default_factory=dict)
    """User name → role."""
    skipped: str | None = None


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise WarehouseError(f"{name!r} is not a plain identifier (letters, digits, _)")
    return f"`{name}`"


def role_statements(database: str, roles_file: Path = ROLES_FILE) -> list[str]:
    """The roles and their database-wide grants, for ``database``."""
    text = roles_file.read_text(encoding="utf-8").replace("{database}", _identifier(database))
    return Migration(0, roles_file.stem, text).statements()


def restricted_grants(database: str, columns: dict[str, list[str]]) -> list[str]:
    """SELECT grants for the restricted reader: whole tables, or the allowed columns.

    Args:
        database: the warehouse database.
        columns: every table and view of it and its columns.
    """
    db = _identifier(database)
    grants = []
    for table, names in sorted(columns.items()):
        hidden = HIDDEN_COLUMNS.get(table, frozenset())
        if hidden:
            allowed = ", ".join(_identifier(c) for c in names if c not in hidden)
            what = f"SELECT({allowed})"
        else:
            what = "SELECT"
        grants.append(f"GRANT {what} ON {db}.{_identifier(table)} TO {RESTRICTED_ROLE}")
    return grants


def password_hash(password: str) -> str:
    """The SHA-256 hex digest ClickHouse's ``sha256_hash`` identification compares with."""
    if not password:
        raise WarehouseError("a user needs a non-empty password")
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def user_statements(user: str, role: str, password: str, database: str) -> list[str]:
    """Create or update one user with one role as its default and the warehouse as its DB."""
    name = _identifier(user)
    return [
        f"CREATE USER IF NOT EXISTS {name} IDENTIFIED WITH sha256_hash BY "
        f"'{password_hash(password)}' DEFAULT DATABASE {_identifier(database)}",
        f"ALTER USER {name} IDENTIFIED WITH sha256_hash BY '{password_hash(password)}'",
        f"GRANT {_identifier(role)} TO {name}",
        f"ALTER USER {name} DEFAULT ROLE {_identifier(role)}",
    ]


def table_columns(warehouse: Warehouse) -> dict[str, list[str]]:
    """Every table and view of the warehouse database and its columns, in table order."""
    rows = warehouse.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String} "
        "ORDER BY table, position",
        {"db": warehouse.database},
    )
    columns: dict[str, list[str]] = {}
    for table, name in rows.iter_rows():
        columns.setdefault(str(table), []).append(str(name))
    return columns


def create_users(
    warehouse: Warehouse,
    *,
    writer_password: str,
    reader_password: str,
    restricted_password: str | None = None,
) -> UsersResult:
    """Create the roles, their grants and the users on a server; idempotent.

    Raises:
        WarehouseError: the warehouse is not migrated, or a password is empty.
    """
    if warehouse.dsn.startswith("chdb:"):
        return UsersResult(skipped=CHDB_NOTE)
    warehouse.check_tables("schema_migrations", "calls")
    database = warehouse.database
    statements = role_statements(database)
    statements += restricted_grants(database, table_columns(warehouse))
    users = {
        WRITER_USER: (WRITER_ROLE, writer_password),
        READER_USER: (READER_ROLE, reader_password),
    }
    if restricted_password is not None:
        users[RESTRICTED_USER] = (RESTRICTED_ROLE, restricted_password)
    for user, (role, password) in users.items():
        statements += user_statements(user, role, password, database)
    for statement in statements:
        warehouse.command(statement)
    return UsersResult(users={user: role for user, (role, _) in users.items()})
