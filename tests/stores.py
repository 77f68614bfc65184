"""The workflow store's databases for tests: a SQLite file, and a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

POSTGRES = os.environ.get(
    "CROWDWATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
"""A PostgreSQL server the tests may create throwaway databases on."""

BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def postgres_database(prefix: str = "crowdwatch") -> Iterator[str]:
    """A fresh database on `POSTGRES` (a unique name), dropped afterwards; skips without one."""
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as db:
            db.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL at {POSTGRES} (set CROWDWATCH_TEST_POSTGRES_URL): {exc}")
    try:
        yield sa.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as db:
            db.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@contextmanager
def store_url(backend: str, folder: Path) -> Iterator[str]:
    """An empty database of ``backend``: a SQLite file in ``folder``, or one on PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'store' / 'workflow.sqlite3'}"
    else:
        with postgres_database() as url:
            yield url
