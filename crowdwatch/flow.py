"""What every pipeline's ``build`` shares: its default source and sink, and the wall clock."""

from __future__ import annotations

import time

from bytewax.inputs import Source

from crowdwatch.events import RawBatch
from crowdwatch.replay import FileSource, ReplayFile
from crowdwatch.settings import Settings
from crowdwatch.warehouse import WarehouseSink


class PipelineConfigError(ValueError):
    """A pipeline cannot be built from these settings; the message says what to set."""


def default_source(settings: Settings, timezone: str) -> Source[RawBatch]:
    """The source a pipeline reads when none is passed: ``settings.input_path`` replayed."""
    if settings.input_path is None:
        raise PipelineConfigError(
            "no input: set CROWDWATCH_INPUT_PATH to a recorded file (CSV, JSONL or Parquet), "
            "or use `crowdwatch replay FILE`"
        )
    spec = ReplayFile(settings.input_path, timezone, settings.batch_rows, settings.replay_speed)
    return FileSource([spec])


def default_sink(settings: Settings) -> WarehouseSink:
    """The warehouse named by the settings' DSN."""
    return WarehouseSink(settings.dsn(), settings.clickhouse_database)


def now_ms() -> int:
    """The wall clock in epoch milliseconds (UTC)."""
    return time.time_ns() // 1_000_000
