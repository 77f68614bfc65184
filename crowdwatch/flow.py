"""What every pipeline's ``build`` shares: its default source and sink, and the wall clock."""

from __future__ import annotations

import time
from collections.abc import Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from crowdwatch.events import RawBatch
from crowdwatch.replay import FileSource, ReplayFile
from crowdwatch.settings import Settings
from crowdwatch.site import Site, load_site
from crowdwatch.warehouse import TableRows, WarehouseSink


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


RowsStep = Callable[[str, Stream[RawBatch], Site, Settings], Stream[TableRows]]
"""A pipeline's steps as one operator: records in, ``(table, frame)`` rows out."""


def one_source_flow(
    name: str,
    steps: RowsStep,
    settings: Settings | None,
    source: Source[RawBatch] | None,
    sink: Sink[TableRows] | None,
) -> Dataflow:
    """A dataflow that reads one source, runs ``steps`` and writes the rows to the warehouse.

    Settings default to ``Settings()`` from the environment, the source to replaying
    ``settings.input_path``, the sink to the warehouse of the settings.
    """
    config = settings or Settings()
    site = load_site(config.site_file)
    flow = Dataflow(name)
    raw = op.input("records", flow, source or default_source(config, site.site.timezone))
    # RawBatch
    rows = steps("steps", raw, site, config)
    # (table, frame)
    op.output("warehouse", rows, sink or default_sink(config))
    return flow
