"""Rows held per table on their way to the warehouse (`crowdwatch.flow.warehouse_output`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from crowdwatch.flow import warehouse_output
from crowdwatch.settings import Settings
from crowdwatch.warehouse.client import TableRows


def rows(table: str, *values: int) -> TableRows:
    return (table, pl.DataFrame({"v": list(values)}, schema={"v": pl.Int64}))


def flow_of(items: list[object], out: list[TableRows], hold_s: float, tmp_path: Path) -> Dataflow:
    flow = Dataflow("held")
    stream = op.input("in", flow, TestingSource(items))
    warehouse_output(stream, TestingSink(out), Settings(data_dir=tmp_path, sink_hold_s=hold_s))  # type: ignore[arg-type]
    return flow


def written(out: list[TableRows]) -> dict[str, list[list[int]]]:
    """Per table, the values of each frame the sink received."""
    frames: dict[str, list[list[int]]] = {}
    for table, frame in out:
        frames.setdefault(table, []).append(frame["v"].to_list())
    return frames


def test_rows_are_held_into_one_frame_per_table(tmp_path: Path) -> None:
    out: list[TableRows] = []
    items = [rows("a", 1), rows("b", 10), rows("a", 2, 3), rows("a"), rows("b", 11)]
    run_main(flow_of(items, out, hold_s=60, tmp_path=tmp_path))
    assert written(out) == {"a": [[1, 2, 3]], "b": [[10, 11]]}


def test_no_hold_writes_every_non_empty_frame(tmp_path: Path) -> None:
    out: list[TableRows] = []
    items = [rows("a", 1), rows("a"), rows("a", 2, 3)]
    run_main(flow_of(items, out, hold_s=0, tmp_path=tmp_path))
    assert written(out) == {"a": [[1], [2, 3]]}


def test_rows_held_at_a_crash_are_written_once_after_the_resume(tmp_path: Path) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    out: list[TableRows] = []
    items = [rows("a", 1), rows("a", 2), TestingSource.ABORT(), rows("a", 3)]
    config = RecoveryConfig(str(recovery))
    flow = flow_of(items, out, hold_s=60, tmp_path=tmp_path)
    run_main(flow, epoch_interval=timedelta(0), recovery_config=config)  # stops at ABORT
    assert out == []  # still held when the run stopped without an end of input
    run_main(flow, epoch_interval=timedelta(0), recovery_config=config)
    assert written(out) == {"a": [[1, 2, 3]]}
