"""The ClickHouse warehouse: one client over one DSN, migrations, inserts and queries.

``chdb:///path`` opens the embedded engine (chDB, real ClickHouse in this process) and
``http(s)://user:pw@host:8123/db`` a server; both go through clickhouse-connect, so there is one
code path. Frames go in and out as Arrow.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
import polars as pl
import pyarrow as pa
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from clickhouse_connect.driver.exceptions import ClickHouseError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from crowdwatch.batches import REJECTED_SCHEMA
from crowdwatch.privacy import scrub_record
from crowdwatch.settings import REPO_ROOT, Settings
from crowdwatch.warehouse.buffer import DiskBuffer, OutageBuffer

log = logging.getLogger(__name__)

MIGRATIONS_DIR = REPO_ROOT / "infra" / "clickhouse"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

SERVER_INSERT_SETTINGS: dict[str, int] = {"async_insert": 1, "wait_for_async_insert": 1}
"""Settings of every request to a ClickHouse server (not chDB, which runs in this process).

With ``async_insert`` the server gathers the many small inserts of several pipeline processes
into fewer parts (fewer merges, no "too many parts"); ``wait_for_async_insert`` makes an insert
return only once its rows are written, so an error still reaches the sink. The server's
deduplication of repeated inserts is off for async inserts; the tables do not rely on it
(ReplacingMergeTree keeps one row per key).
"""

CHDB_BUSY_WAIT_S = 15.0
"""How long opening an embedded warehouse waits while another process has it open.

The embedded engine admits one process per directory. Commands that touch the warehouse
briefly (``crowdwatch drill``, the audit export of ``crowdwatch serve``) hold it for well under
a second, so a second command waits for it rather than failing; a long-running pipeline holds it
for its whole run, and after this wait the error names the process.
"""

TableRows = tuple[str, pl.DataFrame]
"""What pipelines hand to the warehouse sink: a table name and the rows for it."""


def by_table(items: Iterable[TableRows]) -> dict[str, pl.DataFrame]:
    """The items' rows as one frame per table, tables in the order first seen.

    Empty frames are left out, so a table whose frames are all empty has no entry.
    """
    frames: dict[str, list[pl.DataFrame]] = defaultdict(list)
    for table, frame in items:
        if frame.height:
            frames[table].append(frame)
    return {table: pl.concat(parts, how="vertical_relaxed") for table, parts in frames.items()}


class WarehouseError(RuntimeError):
    """The warehouse cannot be reached or used; the message says what to do."""


@dataclass(frozen=True)
class Migration:
    """One DDL file: ``NNN_<what>.sql``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file text, to notice a file edited after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file's statements, comments removed; a statement ends with ``;`` at a line end."""
        text = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip() for s in re.split(r";[ \t]*(?:\n|$)", text) if s.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read the migration files in version order; a malformed name or a repeat is an error."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise WarehouseError(f"{path}: migration files are named NNN_<what>.sql")
        migrations.append(Migration(int(match[1]), path.stem, path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise WarehouseError(f"{directory}: two migration files share a version number")
    return migrations


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, fit to print."""
    parsed = urlparse(dsn)
    if parsed.password:
        return dsn.replace(f":{parsed.password}@", ":***@", 1)
    return dsn


def _chdb_holder(dsn: str) -> int | None:
    """The process that holds an embedded warehouse's directory, if another one does.

    The engine keeps an exclusive ``flock`` on ``<dir>/status`` while open and writes its PID
    there; a lock we cannot take names the holder.
    """
    if not dsn.startswith("chdb:"):
        return None
    status = Path(urlparse(dsn).path) / "status"
    try:
        with status.open("rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                first = file.read(64).decode("ascii", "replace").split("\n")[0]
                pid = first.removeprefix("PID:").strip()
                return int(pid) if pid.isdigit() and int(pid) != os.getpid() else None
            fcntl.flock(file, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


class _ChdbBusy(ClickHouseError):
    """Opening the embedded engine failed while another live process holds its directory."""


@retry(
    retry=retry_if_exception_type(_ChdbBusy),
    stop=stop_after_delay(CHDB_BUSY_WAIT_S),
    wait=wait_fixed(0.2),
    reraise=True,
)
def _open_client(dsn: str, settings: dict[str, int]) -> Any:
    """A clickhouse-connect client; an embedded warehouse another process holds is waited for.

    The lock is looked at before opening (the engine cannot open a held directory, and says so
    on stderr) and again after a failure (it was taken meanwhile).
    """
    holder = _chdb_holder(dsn)
    if holder is not None:
        raise _ChdbBusy(f"the embedded warehouse is in use by process {holder}")
    try:
        return clickhouse_connect.get_client(dsn=dsn, database="default", settings=settings)
    except ClickHouseError as exc:
        if _chdb_holder(dsn) is not None:
            raise _ChdbBusy(str(exc)) from exc
        raise


class Warehouse:
    """A connection to the crowdwatch database on the embedded engine or a server."""

    def __init__(self, client: Any, database: str, dsn: str) -> None:
        self.client = client
        self.database = database
        self.dsn = dsn

    @classmethod
    def connect(
        cls, dsn: str, database: str, *, busy_wait_s: float = CHDB_BUSY_WAIT_S
    ) -> Warehouse:
        """Connect and make sure the database exists.

        An embedded warehouse that another process has open is waited for up to
        ``busy_wait_s`` (0: not at all).

        Raises:
            WarehouseError: the engine or server cannot be reached, with what to do.
        """
        where = describe_dsn(dsn)
        if dsn.startswith("chdb:"):
            path = urlparse(dsn).path
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        elif not dsn.startswith(("http://", "https://")):
            raise WarehouseError(
                f"unsupported ClickHouse DSN {where!r}: use chdb:///path for the embedded engine "
                "or http(s)://user:password@host:8123/database for a server"
            )
        settings = {} if dsn.startswith("chdb:") else dict(SERVER_INSERT_SETTINGS)
        try:
            opener = _open_client.retry_with(stop=stop_after_delay(busy_wait_s))
            client = opener(dsn, settings)
            # Only create a missing database: the writer and reader users of `crowdwatch db
            # users` may not create databases, and CREATE ... IF NOT EXISTS checks that right.
            exists = client.command(
                "SELECT count() FROM system.databases WHERE name = {database:String}",
                parameters={"database": database},
            )
            if not exists:
                client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            client.database = database
        except ClickHouseError as exc:
            holder = _chdb_holder(dsn)
            if holder is not None:
                waited = f" (waited {busy_wait_s:g} s)" if busy_wait_s else ""
                raise WarehouseError(
                    f"cannot open the warehouse at {where}: the embedded engine is in use by "
                    f"process {holder}{waited}; it admits one process per "
                    "directory. Stop that process, or give both a ClickHouse server "
                    "(CROWDWATCH_CLICKHOUSE_DSN=http://user:pw@host:8123/db)."
                ) from exc
            raise WarehouseError(
                f"cannot open the warehouse at {where}: {exc}. For chdb:// the directory must be "
                "writable and not in use by another process; for http(s):// check host, port and "
                "credentials (CROWDWATCH_CLICKHOUSE_DSN)."
            ) from exc
        return cls(client, database, dsn)

    def close(self) -> None:
        """Close the client."""
        self.client.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def applied_versions(self) -> dict[int, str]:
        """Applied migration versions and their checksums."""
        rows = self.client.query(
            "SELECT version, checksum FROM schema_migrations FINAL"
        ).result_rows
        return {int(version): str(checksum) for version, checksum in rows}

    def migrate(self, migrations: list[Migration] | None = None) -> list[Migration]:
        """Apply the migrations not yet applied, in order; return those applied now.

        Raises:
            WarehouseError: an applied migration's file has changed since.
        """
        migrations = load_migrations() if migrations is None else migrations
        self.client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree(applied_at) ORDER BY version"
        )
        applied = self.applied_versions()
        done = []
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise WarehouseError(
                        f"migration {migration.name} was changed after it was applied; "
                        "add a new migration file instead of editing an applied one"
                    )
                continue
            for statement in migration.statements():
                self.client.command(statement)
            self.client.insert(
                "schema_migrations",
                [[migration.version, migration.name, migration.checksum]],
                column_names=["version", "name", "checksum"],
            )
            done.append(migration)
        return done

    def check_tables(self, *tables: str) -> None:
        """Fail clearly when tables are missing (the warehouse was not migrated)."""
        present = {row[0] for row in self.client.query("SHOW TABLES").result_rows}
        missing = [t for t in tables if t not in present]
        if missing:
            raise WarehouseError(
                f"tables {missing} are missing in database {self.database!r} at "
                f"{describe_dsn(self.dsn)}: run `crowdwatch db migrate` first"
            )

    def insert(self, table: str, frame: pl.DataFrame) -> None:
        """Insert a frame; its columns must be named as the table's."""
        if frame.height:
            self.client.insert_arrow(table, frame.to_arrow())

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, *, readonly: bool = False
    ) -> pl.DataFrame:
        """Run a query with server-side parameters (``{name:Type}``); return a frame.

        With ``readonly`` ClickHouse itself refuses anything that would change the warehouse
        (``readonly=1``): a `WarehouseError` says so.
        """
        settings = {"readonly": 1} if readonly else {}
        try:
            table = self.client.query_arrow(sql, parameters=parameters or {}, settings=settings)
        except ClickHouseError as exc:
            if readonly and "Code: 164" in str(exc):
                raise WarehouseError(
                    "this statement would change the warehouse and the query is read-only; "
                    "add --write to run it"
                ) from exc
            raise
        return pl.from_arrow(table)  # type: ignore[return-value]

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run a statement that returns no rows (or one value)."""
        return self.client.command(sql, parameters=parameters or {})


DATA_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        252,  # TOO_MANY_PARTS: "too many partitions for single INSERT block"
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        469,  # VIOLATED_CONSTRAINT
    }
)
"""ClickHouse errors that the rows cause, not the warehouse: the batch is split, not retried."""

_ERROR_CODE = re.compile(r"Code: (\d+)")


def data_error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code when ``exc`` is caused by the rows (-1: refused before sending).

    None for everything else (a connection refused, a server away, a table missing): an
    outage, to be retried with the same rows.
    """
    if isinstance(exc, (pa.ArrowException, OverflowError)):
        return -1
    if isinstance(exc, ClickHouseError):
        match = _ERROR_CODE.search(str(exc))
        code = int(match[1]) if match else None
        return code if code in DATA_ERROR_CODES else None
    return None


def insert_splitting(
    insert: Callable[[pl.DataFrame], None], frame: pl.DataFrame
) -> list[tuple[pl.DataFrame, int]]:
    """Insert ``frame``; when its rows cause an error, insert halves until each error is one row.

    Returns the rows refused on their own, with the error code; everything else is written
    (a batch spanning too many partitions is written in smaller parts, nothing refused).
    Outage errors propagate as they are.
    """
    try:
        insert(frame)
    except Exception as exc:
        code = data_error_code(exc)
        if code is None:
            raise
        if frame.height <= 1:
            return [(frame, code)]
        half = frame.height // 2
        return [
            *insert_splitting(insert, frame.head(half)),
            *insert_splitting(insert, frame.slice(half)),
        ]
    return []


def refused_rows(table: str, refused: list[tuple[pl.DataFrame, int]], now_ms: int) -> pl.DataFrame:
    """Rows the warehouse refused, as ``rejected_events`` rows (their own key: table and row)."""
    rows = pl.concat([row for row, _ in refused], how="vertical_relaxed")
    payloads = rows.select(pl.struct(pl.all()).struct.json_encode()).to_series().to_list()
    codes = [code for row, code in refused for _ in range(row.height)]
    return pl.DataFrame(
        {
            "received_at": [now_ms] * rows.height,
            "source": f"warehouse:{table}",
            "position": [hashlib.sha256(p.encode()).hexdigest()[:16] for p in payloads],
            "reason": [
                f"the warehouse refused the row (ClickHouse error {code})"
                if code >= 0
                else "the row does not fit the table's column types"
                for code in codes
            ],
            "payload": scrub_record(pl.Series(payloads, dtype=pl.String)),
        },
        schema=REJECTED_SCHEMA,
    )


_BufferPlace = tuple[DiskBuffer, list[DiskBuffer]]
"""A worker's own disk buffer and the buffers it takes over."""


def now_ms() -> int:
    """The wall clock in epoch milliseconds (UTC), for rows the sink itself writes."""
    return time.time_ns() // 1_000_000


class _WarehouseSinkPartition(StatelessSinkPartition[TableRows]):
    def __init__(self, dsn: str, database: str, buffer: _BufferPlace | None) -> None:
        self.dsn = dsn
        self.database = database
        self.warehouse: Warehouse | None = None
        self.outage: OutageBuffer | None = None
        if buffer is None:
            self.warehouse = Warehouse.connect(dsn, database)
        else:
            own, adopted = buffer
            self.outage = OutageBuffer(
                self._insert,
                own,
                adopted=adopted,
                outage=(ClickHouseError, WarehouseError, OSError),
                where=describe_dsn(dsn),
            )

    def _insert(self, table: str, frame: pl.DataFrame) -> None:
        """Insert; rows that cause an error go to ``rejected_events``, the rest are written.

        Nothing waits behind a poison row: only an outage (the warehouse away) is retried.
        """
        if self.warehouse is None:
            self.warehouse = Warehouse.connect(self.dsn, self.database)
        warehouse = self.warehouse
        refused = insert_splitting(lambda part: warehouse.insert(table, part), frame)
        if refused:
            text = f"{sum(r.height for r, _ in refused)} row(s) of {table}"
            log.warning("the warehouse refused %s; they go to rejected_events", text)
            warehouse.insert("rejected_events", refused_rows(table, refused, now_ms()))

    def write_batch(self, items: list[TableRows]) -> None:
        tables = by_table(items)
        if self.outage is not None:
            self.outage.write(tables)
            return
        for table, frame in tables.items():
            self._insert(table, frame)

    def close(self) -> None:
        if self.outage is not None:
            self.outage.close()
        if self.warehouse is not None:
            self.warehouse.close()


class WarehouseSink(DynamicSink[TableRows]):
    """A Bytewax sink that inserts ``(table, frame)`` items, one insert per table per batch.

    With ``buffer_dir``, batches the warehouse cannot take (it is down or unreachable) are kept
    on disk, up to ``buffer_max_bytes``, and sent in order when it returns, also after a
    restart (`crowdwatch.warehouse.buffer`); when the buffer is full the dataflow waits. Without
    it an unreachable warehouse stops the dataflow.
    """

    def __init__(
        self,
        dsn: str,
        database: str,
        *,
        buffer_dir: Path | None = None,
        buffer_max_bytes: int = 1024 * 1024 * 1024,
    ) -> None:
        self.dsn = dsn
        self.database = database
        self.buffer_dir = buffer_dir
        self.buffer_max_bytes = buffer_max_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> WarehouseSink:
        """The warehouse of the settings, buffered under ``data_dir/buffer/<database>``.

        The database is part of the path so that held rows only ever go back where they came
        from, even when several databases share one data directory.
        """
        return cls(
            settings.dsn(),
            settings.clickhouse_database,
            buffer_dir=settings.data_dir / "buffer" / settings.clickhouse_database,
            buffer_max_bytes=int(settings.sink_buffer_max_mb * 1024 * 1024),
        )

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WarehouseSinkPartition:
        """Open one connection (and one disk buffer) per worker.

        A worker also takes over the buffers of workers of an earlier, larger run whose index
        maps onto it, so nothing held is left behind when the worker count shrinks.
        """
        place: _BufferPlace | None = None
        if self.buffer_dir is not None:
            root = self.buffer_dir / step_id
            own = DiskBuffer(root / f"worker-{worker_index}", self.buffer_max_bytes)
            adopted = [
                DiskBuffer(path, self.buffer_max_bytes)
                for path in sorted(root.glob("worker-*"))
                if path.name.removeprefix("worker-").isdigit()
                and (index := int(path.name.removeprefix("worker-"))) >= worker_count
                and index % worker_count == worker_index
            ]
            place = (own, adopted)
        return _WarehouseSinkPartition(self.dsn, self.database, place)
