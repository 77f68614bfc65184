"""Hostile input and privacy: no personal number reaches any table, whatever path it takes.

Issue 15, cases 6 and 7: calls sent to the wrong pipeline, rejected calls, fields that were
never scrubbed, numbers written in every way Hypothesis can think of. Every table of the
warehouse is scanned afterwards.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime, timedelta

import polars as pl
from bytewax.testing import TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crowdwatch.batches import RawBatch
from crowdwatch.settings import Settings
from crowdwatch.warehouse.client import Warehouse
from pipelines import calls, gate_flow, video_headcount
from tests.crowdwatch.test_privacy import id_numbers, landlines, mobiles

_fresh = itertools.count()
NAME = "欧阳娜娜"
T0 = datetime(2026, 11, 20, 13, 40, tzinfo=UTC)


def digits(number: str) -> str:
    return re.sub(r"\D", "", number.translate({0xFF10 + i: str(i) for i in range(10)}))


def call_record(i: int, number: str, other: str) -> dict[str, str]:
    """A call carrying personal numbers in every field that may hold one."""
    return {
        "call_id": number if i % 3 == 0 else f"C{i}",
        "received_at": (T0 + timedelta(seconds=i)).isoformat(),
        "lat": "30.2310",
        "lon": "120.2310" if i % 4 else "east",  # every fourth is rejected
        "district": f"district {other}",
        "address": f"gate 3, call back {number}",
        "category_code": other,
        "category_text": "拥挤踩踏",
        "priority": "1",
        "status": f"callback {other}",
        "caller_phone": number,
        "caller_name": NAME,
        "caller_id_number": other,
        "description": f"欧阳 娜娜 says {number}, ID {other}",
    }


def every_table(warehouse: Warehouse) -> dict[str, str]:
    """Every table's rows, as one text per table."""
    tables = warehouse.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    texts = {}
    for table in tables["name"]:
        rows = warehouse.query(f"SELECT formatRow('TSV', *) AS row FROM `{table}`")
        texts[table] = "\n".join(rows["row"].to_list())
    return texts


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    numbers=st.lists(mobiles() | landlines(), min_size=12, max_size=12, unique=True),
    ids=st.lists(id_numbers(), min_size=12, max_size=12, unique=True),
)
def test_cases_6_and_7_no_personal_number_in_any_table(
    settings: Settings, numbers: list[str], ids: list[str]
) -> None:
    config = settings.model_copy(
        update={"clickhouse_database": f"{settings.clickhouse_database}_p{next(_fresh)}"}
    )
    records = [call_record(i, n, o) for i, (n, o) in enumerate(zip(numbers, ids, strict=True))]
    lines = pl.DataFrame({"payload": [json.dumps(r, ensure_ascii=False) for r in records]})
    frame = pl.DataFrame(records)
    with Warehouse.connect(config.dsn(), config.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(calls.build(config, source=TestingSource([RawBatch("cad", "call", frame, 0)])))
        # a call published to the wrong stream, and a calls file read as the wrong kind
        run_main(gate_flow.build(config, source=TestingSource([RawBatch("r", "passage", lines)])))
        run_main(calls.build(config, source=TestingSource([RawBatch("f", "passage", lines, 0)])))
        run_main(
            video_headcount.build(config, source=TestingSource([RawBatch("v", "video", lines)]))
        )
        stored = warehouse.query("SELECT count() AS n FROM calls FINAL")["n"][0]
        rejected = warehouse.query("SELECT count() AS n FROM rejected_events FINAL")["n"][0]
        texts = every_table(warehouse)
    assert stored == 9  # good calls kept
    assert rejected == 3 + 3 * 12  # bad calls, and every misrouted record
    for table, text in texts.items():
        flat = re.sub(r"[\s\-./_()+]", "", text)
        for number in [*numbers, *ids]:
            assert digits(number)[-8:] not in flat, (table, number)
        assert NAME not in text and "欧阳 娜娜" not in text, table
