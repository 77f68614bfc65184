"""The workflow store: alert handling and the alert outbox in one relational database.

Acknowledgements, reminders, escalations, notes, measures, sign-off, the audit log and the
outbox of messages to send are transactional state: they live in one SQL database reached
through SQLAlchemy 2 — a SQLite file in the data directory by default (zero set-up), or
PostgreSQL in production — and its schema is versioned by Alembic (`migrate`, run when a
`Store` opens). The tables are in `crowdwatch.store.tables`; the migrations in
``crowdwatch/store/migrations/versions``.
"""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FIRST_REVISION = "0001"
"""The outbox's tables as they were before Alembic: a file without a version is stamped so."""


class StoreError(RuntimeError):
    """The workflow store cannot be opened; the message says what to check."""


def wall_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL: readers never block the writer; NORMAL in WAL mode loses nothing when the process
    # is killed (only an OS crash can lose the last commits).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_migrating = threading.Lock()


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration for the store's migrations (on ``connection`` if given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at; None when it has no version."""
    with engine.connect() as db:
        return MigrationContext.configure(db).get_current_revision()


def migrate(engine: sa.Engine) -> list[str]:
    """Bring the database to the newest migration; return the revisions applied.

    An outbox file made before migrations (its tables, no version) is stamped at
    `FIRST_REVISION` first. Processes take turns: a file lock beside a SQLite file, an
    advisory lock on PostgreSQL; threads of one process a lock.
    """
    with _migrating, _exclusive(engine):
        before = current_revision(engine)
        if before == head_revision():
            return []
        if before is None and sa.inspect(engine).has_table("alert_outbox"):
            with engine.begin() as db:
                command.stamp(alembic_config(db), FIRST_REVISION)
            before = FIRST_REVISION
        with engine.begin() as db:
            command.upgrade(alembic_config(db), "head")
        script = ScriptDirectory.from_config(alembic_config())
        return [
            rev.revision
            for rev in reversed(list(script.iterate_revisions("head", before or "base")))
            if rev.revision != before
        ]


@contextmanager
def _exclusive(engine: sa.Engine) -> Iterator[None]:
    """Hold the migration lock of ``engine``'s database across processes."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        with open(f"{url.database}.migrate.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    elif url.get_backend_name() == "postgresql":
        with engine.connect() as db:
            db.exec_driver_sql("SELECT pg_advisory_lock(18180518)")
            try:
                yield
            finally:
                db.exec_driver_sql("SELECT pg_advisory_unlock(18180518)")
                db.commit()
    else:
        yield


class Store:
    """The workflow store at a SQLAlchemy URL, migrated to the newest schema when opened.

    Args:
        url: ``sqlite:///path`` (the folder is created) or any SQLAlchemy URL, e.g.
            ``postgresql+psycopg://user@host/db``.
        clock: The wall clock in epoch ms (tests pass their own).

    Raises:
        StoreError: the URL is not one, its driver is missing, or the database cannot be
            opened or migrated; the message says what to check.
    """

    def __init__(self, url: str, *, clock: Callable[[], int] = wall_ms) -> None:
        try:
            parsed = make_url(url)
        except sa.exc.ArgumentError as exc:
            raise StoreError(
                "the workflow store URL is not a SQLAlchemy URL (sqlite:///path, "
                "postgresql+psycopg://user@host/db): check CROWDWATCH_OUTBOX_URL"
            ) from exc
        self.url = url
        self.clock = clock
        self.where = parsed.render_as_string(hide_password=True)
        try:
            if parsed.get_backend_name() == "sqlite":
                self.engine = sa.create_engine(url, connect_args={"timeout": 30})
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
        except ImportError as exc:
            raise StoreError(
                f"the workflow store at {self.where} needs a database driver that is not "
                f"installed ({exc.name or exc}): install crowdwatch[postgres] for PostgreSQL, "
                "or unset CROWDWATCH_OUTBOX_URL for SQLite"
            ) from exc
        try:
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (
                None,
                "",
                ":memory:",
            ):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.applied = migrate(self.engine)
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            self.engine.dispose()
            raise StoreError(
                f"cannot open the workflow store at {self.where}: "
                f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}; check "
                "CROWDWATCH_OUTBOX_URL (or that data_dir is writable)"
            ) from exc
        self._insert = _insert_ignoring_repeats(self.engine.dialect.name)
        self._writing = threading.Lock()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction; this process's writers take turns at a lock.

        SQLite lets one writer in at a time and makes the others sleep and poll; queueing
        here hands the turn over at once (the poll is left to other processes).
        """
        with self._writing, self.engine.begin() as db:
            yield db

    def insert_ignoring_repeats(self, table: sa.Table) -> Any:
        """``INSERT … ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL."""
        return self._insert(table)


def _insert_ignoring_repeats(dialect: str) -> Callable[[sa.Table], Any]:
    """``INSERT … ON CONFLICT DO NOTHING`` for SQLite and PostgreSQL, plain INSERT otherwise."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return lambda table: sqlite_insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return lambda table: pg_insert(table).on_conflict_do_nothing()
    return sa.insert
