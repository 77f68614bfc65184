"""110 calls: scrubbed call records, rolling counts per zone and group, and burst scores.

Input is micro-batches of call records from the dispatch (CAD) feed, in any order and with repeats
and updates. A batch is validated, scrubbed of personal data, categorised and placed on the site's
zones at once (`crowdwatch.calls.records`); bad rows go to ``rejected_events``. The calls are
written to ``calls`` (one row per call, its newest version). One state holds every call of the
baseline period and writes the rolling counts over 5, 15 and 60 minutes per zone, station and
district and group (``call_counts``), and the Poisson burst scores of crowd-relevant calls
(``call_bursts``; `crowdwatch.calls.counts`). 110 feeds carry thousands of calls a day, not
millions, so one state for the whole site is enough.

Run: ``crowdwatch replay calls.jsonl --pipeline calls`` (also the Seattle 911 CSV) or
``CROWDWATCH_INPUT_PATH=calls.csv python -m bytewax.run "pipelines.calls:build()"``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.outputs import Sink

from crowdwatch.batches import RawBatch
from crowdwatch.calls.categories import load_categories
from crowdwatch.calls.counts import BurstParams, CallWindows
from crowdwatch.calls.records import CallDirectory, CallZones, parse_calls
from crowdwatch.flow import now_ms, one_source_flow
from crowdwatch.settings import Settings
from crowdwatch.site import Site
from crowdwatch.warehouse.client import TableRows

Parsed = tuple[pl.DataFrame, pl.DataFrame]
"""Calls and rejected rows of one batch."""


def table_rows(parsed: Parsed) -> Iterable[TableRows]:
    """The scrubbed calls and the rejected rows, for the warehouse."""
    calls, rejected = parsed
    return [
        (t, rows) for t, rows in (("calls", calls), ("rejected_events", rejected)) if rows.height
    ]


@operator
def call_rows(
    step_id: str, up: Stream[RawBatch], site: Site, settings: Settings
) -> Stream[TableRows]:
    """Call records → ``calls``, ``call_counts``, ``call_bursts`` and ``rejected_events`` rows."""
    key = settings.caller_hash_key.get_secret_value().encode() if settings.caller_hash_key else None
    directory = CallDirectory(
        zones=CallZones(site),
        categories=load_categories(settings.call_categories_file),
        hash_key=key,
        timezone=site.site.timezone,
        bounds=settings.time_bounds(),
    )
    params = BurstParams.from_settings(settings)

    def count(
        state: CallWindows | None, calls: pl.DataFrame
    ) -> tuple[CallWindows, list[TableRows]]:
        state = state or CallWindows(site.site.timezone, params)
        tables = state.update(calls, time.time_ns())
        return state, [(t, rows) for t, rows in tables.items() if rows.height]

    parsed = op.map("parse", up, lambda b: parse_calls(b, directory, now_ms()))
    # (calls, rejected)
    stored = op.flat_map("stored_rows", parsed, table_rows)
    # ("calls" | "rejected_events", frame)
    keyed = op.key_on("one_state", op.map("calls_only", parsed, lambda p: p[0]), lambda _: "site")
    # ("site", calls)
    counted = op.stateful_map("call_windows", keyed, count)
    # ("site", [(table, frame)])
    counts = op.flat_map("count_rows", counted, lambda kv: kv[1])
    # ("call_counts" | "call_bursts", frame)
    return op.merge("rows", stored, counts)


def build(
    settings: Settings | None = None,
    *,
    source: Source[RawBatch] | None = None,
    sink: Sink[TableRows] | None = None,
) -> Dataflow:
    """Build the calls dataflow.

    Args:
        settings: defaults to ``Settings()`` from the environment.
        source: `RawBatch` items of call records; defaults to replaying ``settings.input_path``.
        sink: ``(table, frame)`` items; defaults to the warehouse of ``settings``.
    """
    return one_source_flow("calls", call_rows, settings, source, sink, kinds=("call",))
