"""Gate record parsing: strict checks with reasons, exact interval spreading, time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdwatch.batches import RawBatch
from crowdwatch.gates.records import GateDirectory, parse_batch
from crowdwatch.isotime import epoch_ms
from crowdwatch.site import load_site
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
DIRECTORY = GateDirectory.from_site(SITE)
MINUTE_MS = 60_000


def parse(
    kind: str, rows: dict[str, list[str | None]], first_row: int | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = pl.DataFrame(rows, schema={k: pl.String for k in rows})
    parsed = parse_batch(RawBatch("test", kind, frame, first_row), DIRECTORY, MINUTE_MS, 0)  # type: ignore[arg-type]
    return parsed.flows, parsed.rejected


def reasons(rejected: pl.DataFrame) -> list[str]:
    return rejected["reason"].to_list()


def test_times_with_offsets_and_naive_local_times_agree() -> None:
    frame = pl.DataFrame(
        {
            "t": [
                "2026-05-01T08:00:00+08:00",
                "2026-05-01T00:00:00Z",
                "2026-05-01 08:00:00",
                "2026-05-01T08:00:00.000",
                "2026-05-01T08:00:00+0800",
                "2026-02-30 08:00:00",
                "08:00",
            ]
        }
    )
    got = epoch_ms(frame["t"], "Asia/Shanghai").to_list()
    expected = int(datetime(2026, 5, 1, tzinfo=UTC).timestamp() * 1000)
    assert got == [expected] * 5 + [None, None]


def test_passages_count_per_zone_and_window() -> None:
    flows, rejected = parse(
        "passage",
        {
            "ts": ["2026-05-01 08:00:01", "2026-05-01T08:00:59+08:00", "2026-05-01 08:01:00"],
            "gate_id": ["CTR-G01", "CTR-G02", "RVS-G01"],
            "direction": ["in", "0", "1"],
        },
    )
    assert rejected.height == 0
    assert flows.sort("zone_id").to_dicts() == [
        {
            "station_id": "CTR",
            "zone_id": "CTR-concourse",
            "window": 1777593600000,
            "entries": 1,
            "exits": 1,
        },
        {
            "station_id": "RVS",
            "zone_id": "RVS-concourse",
            "window": 1777593660000,
            "entries": 1,
            "exits": 0,
        },
    ]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            {"ts": "yesterday", "gate_id": "CTR-G01", "direction": "in"},
            "ts 'yesterday' is not an ISO 8601 time",
        ),
        ({"ts": None, "gate_id": "CTR-G01", "direction": "in"}, "ts missing"),
        (
            {"ts": "2026-05-01 08:00", "gate_id": "CTR-G01", "direction": "in"},
            "ts '2026-05-01 08:00' is not an ISO 8601 time",
        ),
        (
            {"ts": "2026-05-01 08:00:00", "gate_id": "CTR-G01", "direction": "up"},
            "direction 'up' is not in/out (or 1/0)",
        ),
        (
            {"ts": "2026-05-01 08:00:00", "gate_id": "CTR-G01", "direction": None},
            "direction missing",
        ),
        ({"ts": "2026-05-01 08:00:00", "gate_id": "X-9", "direction": "in"}, "unknown gate 'X-9'"),
        (
            {"ts": "2026-05-01 08:00:00", "gate_id": None, "direction": "in"},
            "neither gate_id nor station_id given",
        ),
        (
            {"ts": "2026-05-01 08:00:00", "gate_id": "WLK-G03", "direction": "in"},
            "gate 'WLK-G03' only lets people out, got 'in'",
        ),
    ],
)
def test_bad_passages_are_rejected_with_their_reason(
    row: dict[str, str | None], reason: str
) -> None:
    good = {"ts": "2026-05-01 08:00:00", "gate_id": "CTR-G01", "direction": "in"}
    flows, rejected = parse("passage", {k: [good[k], row[k]] for k in good}, first_row=40)
    assert reasons(rejected) == [reason]
    assert rejected["position"].to_list() == ["row 41"]
    assert flows["entries"].sum() == 1


def test_gate_at_the_wrong_station_is_rejected() -> None:
    _, rejected = parse(
        "passage",
        {
            "ts": ["2026-05-01 08:00:00"],
            "gate_id": ["CTR-G01"],
            "station_id": ["RVS"],
            "direction": ["in"],
        },
    )
    assert reasons(rejected) == ["gate 'CTR-G01' belongs to station 'CTR', not 'RVS'"]


def test_missing_columns_reject_every_row() -> None:
    _, rejected = parse("passage", {"ts": ["2026-05-01 08:00:00"], "gate_id": ["CTR-G01"]})
    assert reasons(rejected) == ["direction missing"]


def test_json_lines_are_parsed_and_garbage_rejected() -> None:
    lines = [
        '{"ts": "2026-05-01T08:00:00Z", "gate_id": "CTR-G01", "direction": "in"}',
        "{not json",
        "[1, 2]",
    ]
    flows, rejected = parse("passage", {"payload": lines})
    assert flows["entries"].sum() == 1
    assert reasons(rejected) == ["not valid JSON", "not a JSON object"]
    assert rejected["payload"].to_list() == lines[1:]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            {
                "start": "2026-05-01 08:10:00",
                "end": "2026-05-01 08:00:00",
                "entries": "1",
                "exits": "1",
            },
            "end is not after start",
        ),
        (
            {
                "start": "2026-05-01 08:00:00",
                "end": "2026-05-03 08:00:00",
                "entries": "1",
                "exits": "1",
            },
            "interval longer than 24 h",
        ),
        (
            {
                "start": "2026-05-01 08:00:00",
                "end": "2026-05-01 08:10:00",
                "entries": "-3",
                "exits": "1",
            },
            "entries '-3' is not a non-negative integer",
        ),
        (
            {
                "start": "2026-05-01 08:00:00",
                "end": "2026-05-01 08:10:00",
                "entries": "2.5",
                "exits": "1",
            },
            "entries '2.5' is not a non-negative integer",
        ),
        (
            {"start": "2026-05-01 08:00:00", "end": None, "entries": "1", "exits": "1"},
            "end missing",
        ),
    ],
)
def test_bad_counts_are_rejected_with_their_reason(row: dict[str, str | None], reason: str) -> None:
    _, rejected = parse("count", {**{k: [v] for k, v in row.items()}, "station_id": ["RVS"]})
    assert reasons(rejected) == [reason]


def test_station_counts_need_an_entry_zone() -> None:
    site = SITE.model_copy(
        update={"zones": [*SITE.zones, SITE.zones[4].model_copy(update={"id": "RVS-second"})]}
    )
    directory = GateDirectory.from_site(site)
    frame = pl.DataFrame(
        {
            "start": ["2026-05-01 08:00:00"],
            "end": ["2026-05-01 08:10:00"],
            "station_id": ["RVS"],
            "entries": ["5"],
            "exits": ["1"],
        }
    )
    parsed = parse_batch(RawBatch("t", "count", frame), directory, MINUTE_MS, 0)
    assert reasons(parsed.rejected) == [
        "station 'RVS' has several zones and no entry_zone for station-level counts"
    ]


@settings(max_examples=200, deadline=None)
@given(
    start_s=st.integers(0, 86_400 * 3),
    length_s=st.integers(1, 86_400),
    entries=st.integers(0, 1_000_000),
    exits=st.integers(0, 1_000_000),
)
def test_spreading_an_interval_keeps_its_counts_exactly(
    start_s: int, length_s: int, entries: int, exits: int
) -> None:
    t0 = datetime(2026, 5, 1, tzinfo=UTC) + timedelta(seconds=start_s)
    t1 = t0 + timedelta(seconds=length_s)
    # at most what one gate can pass (120 a minute by default)
    entries, exits = min(entries, 2 * length_s), min(exits, 2 * length_s)
    flows, rejected = parse(
        "count",
        {
            "start": [t0.isoformat()],
            "end": [t1.isoformat()],
            "gate_id": ["CTR-G01"],
            "entries": [str(entries)],
            "exits": [str(exits)],
        },
    )
    assert rejected.height == 0
    assert flows["entries"].sum() == entries and flows["exits"].sum() == exits
    windows = flows["window"].sort().to_list()
    first = int(t0.timestamp() * 1000) // MINUTE_MS * MINUTE_MS
    last = (int(t1.timestamp() * 1000) - 1) // MINUTE_MS * MINUTE_MS
    assert windows == list(range(first, last + MINUTE_MS, MINUTE_MS))
    # each window gets its share of the interval, off by less than one
    for window, got in zip(
        flows.sort("window")["window"], flows.sort("window")["entries"], strict=True
    ):
        overlap = min(t1.timestamp() * 1000, window + MINUTE_MS) - max(
            t0.timestamp() * 1000, window
        )
        assert abs(got - entries * overlap / (length_s * 1000)) < 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 7200),
            st.sampled_from(["in", "out", "garbage"]),
            st.sampled_from(["CTR-G01", "RVS-G02", "NOPE"]),
        ),
        max_size=60,
    )
)
def test_every_passage_is_counted_or_rejected(rows: list[tuple[int, str, str]]) -> None:
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    flows, rejected = parse(
        "passage",
        {
            "ts": [(t0 + timedelta(seconds=s)).isoformat() for s, _, _ in rows],
            "direction": [d for _, d, _ in rows],
            "gate_id": [g for _, _, g in rows],
        },
    )
    good = [r for r in rows if r[1] != "garbage" and r[2] != "NOPE"]
    assert flows["entries"].sum() == sum(r[1] == "in" for r in good)
    assert flows["exits"].sum() == sum(r[1] == "out" for r in good)
    assert rejected.height == len(rows) - len(good)
