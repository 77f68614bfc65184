"""The workflow store's migrations, from empty, on a SQLite file and on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from crowdwatch.store import Store, StoreError, current_revision, head_revision
from crowdwatch.store.tables import audit_table, metadata
from tests.stores import BACKENDS, store_url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as found:
        yield found


def test_migrations_apply_from_empty_and_match_the_tables_the_code_uses(url: str) -> None:
    store = Store(url)
    try:
        assert store.applied == ["0001", "0002"]
        assert current_revision(store.engine) == head_revision() == "0002"
        with store.engine.connect() as db:
            diff = compare_metadata(MigrationContext.configure(db), metadata)
        # comments and server defaults aside, the migrated schema is the one in tables.py
        assert [d for d in diff if d[0] not in ("modify_comment", "modify_default")] == []
        again = Store(url)  # a second open finds it up to date
        again.close()
        assert again.applied == []
    finally:
        store.close()


def test_an_outbox_file_from_before_migrations_is_stamped_and_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    old = sa.create_engine(url)
    with old.begin() as db:  # the outbox's two tables, as create_all made them before
        db.exec_driver_sql(
            "CREATE TABLE alert_outbox (key VARCHAR(64), channel VARCHAR(16), seq BIGINT, "
            "alert_id VARCHAR(200), event VARCHAR(16), kind VARCHAR(64), zone_id VARCHAR(200), "
            "station_id VARCHAR(200), level VARCHAR(16), ts_ms BIGINT, role VARCHAR(32), "
            "recipient VARCHAR(200), target TEXT, body BLOB, status VARCHAR(16), attempts INT, "
            "enqueued_ms BIGINT, next_attempt_ms BIGINT, done_ms BIGINT, last_error TEXT, "
            "http_status INT, claimed_by VARCHAR(200), claimed_until_ms BIGINT, "
            "PRIMARY KEY (key, channel))"
        )
        db.exec_driver_sql(
            "INSERT INTO alert_outbox VALUES ('k', 'webhook', 1, 'a', 'opened', 'k', 'z', 's', "
            "'red', 1, 'station_master', 'n', 'http://x', x'7b7d', 'pending', 0, 1, 1, NULL, "
            "NULL, NULL, NULL, NULL)"
        )
    old.dispose()
    store = Store(url)
    try:
        assert store.applied == ["0002"]
        with store.engine.connect() as db:
            assert db.exec_driver_sql("SELECT key, context FROM alert_outbox").all() == [
                ("k", None)
            ]
    finally:
        store.close()


def test_the_audit_log_refuses_updates_and_deletes(url: str) -> None:
    store = Store(url)
    try:
        with store.write() as db:
            db.execute(
                sa.insert(audit_table).values(
                    ts_ms=1,
                    incident_id="i",
                    alert_id="a",
                    zone_id="z",
                    station_id="s",
                    level="red",
                    action="raised",
                    actor="crowdwatch",
                    role="",
                    channel="system",
                    note="",
                    measure="",
                    tier=0,
                    drill=False,
                )
            )
        for statement in (sa.update(audit_table).values(note="changed"), sa.delete(audit_table)):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.write() as db:
                db.execute(statement)
        with store.engine.connect() as db:
            assert db.execute(sa.select(audit_table.c.note)).scalars().all() == [""]
    finally:
        store.close()


def test_a_bad_url_or_an_unwritable_folder_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a SQLAlchemy URL"):
        Store("no url")
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="CROWDWATCH_OUTBOX_URL"):
        Store(f"sqlite:///{tmp_path / 'file' / 'store.sqlite3'}")
