"""Readers that never lose a file (issue 15, cases 5 and 6), through the real pipelines.

A NUL byte, invalid UTF-8 or an unclosed quote costs only the line it is on: that line is a
reject with its line number, every other line is read. The kind of a JSON record is decided
per record. No Rust panic text reaches the user.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from bytewax.testing import run_main

from app.cli import main as cli
from crowdwatch.settings import Settings
from crowdwatch.sources.files import ReplayError, read_records
from crowdwatch.warehouse.client import Warehouse
from pipelines import gate_flow, zone_risk

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
GOOD = [(T0 + timedelta(seconds=10 * i)).isoformat() for i in range(12)]


def replay(settings: Settings, path: Path, build=gate_flow.build) -> None:  # type: ignore[no-untyped-def]
    run_main(build(settings.model_copy(update={"input_path": path})))


def entries(warehouse: Warehouse) -> int:
    return int(
        warehouse.query(
            "SELECT toInt64(sum(entries)) AS n FROM zone_metrics FINAL WHERE scope = 'zone'"
        )["n"][0]
    )


def rejects(warehouse: Warehouse) -> list[tuple[str, str]]:
    rows = warehouse.query("SELECT position, reason FROM rejected_events FINAL ORDER BY position")
    return rows.rows()


def csv_lines(bad: bytes) -> bytes:
    rows = [f"{ts},RVS-G01,in".encode() for ts in GOOD]
    rows.insert(5, bad)
    return b"ts,gate_id,direction\n" + b"\n".join(rows) + b"\n"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"2026-05-04T08:00:55+00:00,RVS\x00-G01,in", "line 7: NUL byte"),
        (b"2026-05-04T08:00:55+00:00,RVS-G01,in\xff\xfe", "line 7: invalid UTF-8 at byte 36"),
        (b'2026-05-04T08:00:55+00:00,"RVS-G01,in', "line 7: unclosed quote"),
    ],
)
def test_case_5_a_bad_line_in_csv_costs_only_itself(
    settings: Settings, warehouse: Warehouse, tmp_path: Path, bad: bytes, reason: str
) -> None:
    path = tmp_path / "passages.csv"
    path.write_bytes(csv_lines(bad))
    replay(settings, path)
    assert entries(warehouse) == len(GOOD)
    assert rejects(warehouse) == [("row 5", reason)]


def jsonl(records: list[dict[str, str]]) -> list[bytes]:
    return [json.dumps(r, ensure_ascii=False).encode() for r in records]


def passage(ts: str) -> dict[str, str]:
    return {"ts": ts, "gate_id": "RVS-G01", "direction": "in"}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            b'{"ts": "2026-05-04T08:00:55+00:00", "gate_id": "RVS\x00-G01", "direction": "in"}',
            "line 6: NUL byte",
        ),
        (
            b'{"ts": "2026-05-04T08:00:55+00:00", "gate_id": "RVS-G01\xc3", "direction": "in"}',
            "line 6: invalid UTF-8 at byte 55",
        ),
    ],
)
def test_case_5_a_bad_line_in_json_lines_costs_only_itself(
    settings: Settings, warehouse: Warehouse, tmp_path: Path, bad: bytes, reason: str
) -> None:
    lines = jsonl([passage(ts) for ts in GOOD])
    lines.insert(5, bad)
    path = tmp_path / "passages.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    replay(settings, path)
    assert entries(warehouse) == len(GOOD)
    assert rejects(warehouse) == [("row 5", reason)]


def test_case_5_a_first_record_without_kind_fields_costs_only_itself(
    settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    lines = [b'{"hello": "world"}', *jsonl([passage(ts) for ts in GOOD])]
    path = tmp_path / "passages.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    replay(settings, path)
    assert entries(warehouse) == len(GOOD)
    assert rejects(warehouse) == [("row 0", "ts missing")]


def call(i: int) -> dict[str, str]:
    return {
        "call_id": f"C{i}",
        "received_at": (T0 + timedelta(minutes=i)).isoformat(),
        "lat": "30.2310",
        "lon": "120.2310",
        "caller_phone": "13812345678",
        "caller_name": "欧阳娜娜",
        "description": "欧阳 娜娜: crowd at gate 3, call 138 1234 5678",
    }


def test_case_6_the_kind_is_decided_per_json_record(
    settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    # a calls file whose first line looks like a passage
    lines = jsonl([passage(GOOD[0]), *(call(i) for i in range(6))])
    path = tmp_path / "calls.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    kind, _ = read_records(path)
    assert kind == "call"  # the file's kind is its most common one
    replay(settings, path, zone_risk.build)
    assert warehouse.query("SELECT count() AS n FROM calls FINAL")["n"][0] == 6
    assert entries(warehouse) == 1
    stored = warehouse.query("SELECT * FROM rejected_events")
    assert stored.is_empty()


def test_case_6_calls_pipeline_on_a_file_of_passages_rejects_them_without_a_crash(
    settings: Settings, warehouse: Warehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "passages.csv"
    pl.DataFrame([passage(ts) for ts in GOOD]).write_csv(path)
    from pipelines import calls

    replay(settings, path, calls.build)
    reasons = {reason for _, reason in rejects(warehouse)}
    assert reasons == {"a passage record, not a call record"}
    assert len(rejects(warehouse)) == len(GOOD)


def test_case_5_a_file_no_record_kind_fits_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nothing.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\x00\n')
    with pytest.raises(ReplayError, match="cannot tell the record kind"):
        read_records(path)
    assert cli(["replay", str(path), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert "panicked" not in err and "Traceback" not in err
