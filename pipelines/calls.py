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

import copy
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from crowdwatch.batches import RawBatch
from crowdwatch.calls.categories import load_categories
from crowdwatch.calls.counts import MINUTE_MS, BurstParams, CallWindows
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


class CallLogic(StatefulBatchLogic[pl.DataFrame | int, list[TableRows], CallWindows]):
    """Folds calls, or a clock in epoch minutes, into the site's `CallWindows`.

    Calls leave their windows as time passes, so the clock moves the windows on without a call:
    any other source's event time (``zone_risk`` feeds its gates' and cameras'), and, live,
    the wall clock every minute while the calls are quiet.
    """

    def __init__(self, make: Callable[[], CallWindows], live: bool, state: CallWindows | None):
        self.state = state or make()
        self.live = live

    @staticmethod
    def _rows(tables: dict[str, pl.DataFrame]) -> list[list[TableRows]]:
        rows = [(t, frame) for t, frame in tables.items() if frame.height]
        return [rows] if rows else []

    def on_batch(self, values: list[pl.DataFrame | int]) -> tuple[Iterable[list[TableRows]], bool]:
        """Calls are counted; a clock moves the windows on."""
        out: list[list[TableRows]] = []
        for item in values:
            if isinstance(item, int):
                out += self._rows(self.state.advance(item, time.time_ns()))
            else:
                out += self._rows(self.state.update(item, time.time_ns()))
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[list[TableRows]], bool]:
        """Live: the wall clock's last whole minute moves the windows on."""
        minute = now_ms() // MINUTE_MS - 1
        return self._rows(self.state.advance(minute, time.time_ns())), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """Live: once a minute."""
        return datetime.now(UTC) + timedelta(minutes=1) if self.live else None

    def snapshot(self) -> CallWindows:
        """A copy of the state."""
        return copy.deepcopy(self.state)


@operator
def call_rows(
    step_id: str,
    up: Stream[RawBatch],
    site: Site,
    settings: Settings,
    clock: Stream[int] | None = None,
) -> Stream[TableRows]:
    """Call records → ``calls``, ``call_counts``, ``call_bursts`` and ``rejected_events`` rows.

    ``clock``: event times (epoch minutes) of other sources, which move the call windows on.
    """
    key = settings.caller_hash_key.get_secret_value().encode() if settings.caller_hash_key else None
    directory = CallDirectory(
        zones=CallZones(site),
        categories=load_categories(settings.call_categories_file),
        hash_key=key,
        timezone=site.site.timezone,
        bounds=settings.time_bounds(),
    )
    params = BurstParams.from_settings(settings)

    parsed = op.map("parse", up, lambda b: parse_calls(b, directory, now_ms()))
    # (calls, rejected)
    stored = op.flat_map("stored_rows", parsed, table_rows)
    # ("calls" | "rejected_events", frame)
    calls: Stream[pl.DataFrame | int] = op.map("calls_only", parsed, lambda p: p[0])
    if clock is not None:
        calls = op.merge("with_clock", calls, clock)
    keyed = op.key_on("one_state", calls, lambda _: "site")
    # ("site", calls or a clock minute)
    counted = op.stateful_batch(
        "call_windows",
        keyed,
        lambda resume: CallLogic(
            lambda: CallWindows(site.site.timezone, params), settings.live, resume
        ),
    )
    # ("site", [(table, frame)])
    counts = op.flat_map("count_rows", counted, lambda kv: kv[1])
    # ("call_counts" | "call_bursts" | "rejected_events", frame)
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
