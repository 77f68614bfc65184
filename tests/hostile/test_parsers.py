"""Hypothesis-generated hostile batches for every parser: good records mixed with garbage.

Whatever the garbage, parsing never raises, every good record is kept and every other row is
rejected once, with a reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdwatch.batches import RawBatch, TimeBounds
from crowdwatch.calls.categories import load_categories
from crowdwatch.calls.records import CallDirectory, CallZones, parse_calls
from crowdwatch.gates.records import GateDirectory, parse_batch
from crowdwatch.settings import DEFAULT_CATEGORIES_FILE, DEFAULT_SITE_FILE
from crowdwatch.site import load_site
from crowdwatch.video.messages import CameraDirectory, parse_video

SITE = load_site(DEFAULT_SITE_FILE)
BOUNDS = TimeBounds(skew_ms=300_000, pad_ms=86_400_000)
NOW_MS = int(datetime(2026, 5, 5, tzinfo=UTC).timestamp() * 1000)
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)

# Garbage: any text, JSON of the wrong shapes, huge and negative numbers, odd times.
GARBAGE = st.one_of(
    st.text(max_size=40),
    st.from_regex(r'\{"[a-z_]{1,9}": ?-?[0-9]{1,25}\}', fullmatch=True),
    st.sampled_from(
        [
            "",
            "{}",
            "[]",
            "null",
            '{"ts": "2199-12-31T23:59:00+08:00", "gate_id": "RVS-G01", "direction": "in"}',
            '{"ts": "1970-01-01T00:00:00Z", "gate_id": "RVS-G01", "direction": "sideways"}',
            '{"camera_id": "CTR-CAM01", "frame": 99999999999999999999999, "ts": "x", "rois": []}',
            '{"call_id": "1", "received_at": "2026-05-04T08:00:00Z", "lat": "1", "lon": "e"}',
        ]
    ),
)


def mixed(good: list[str], garbage: list[str], where: list[int]) -> tuple[list[str], set[int]]:
    """Garbage lines put among good ones; the positions of the good lines."""
    lines = list(good)
    for text, at in zip(garbage, where, strict=False):
        lines.insert(at % (len(lines) + 1), text)
    positions = {i for i, line in enumerate(lines) if line in good}
    return lines, positions


def rejected_rows(rejected: pl.DataFrame) -> list[int]:
    return sorted(int(p.removeprefix("row ")) for p in rejected["position"])


@settings(max_examples=60, deadline=None)
@given(st.lists(GARBAGE, max_size=8), st.lists(st.integers(0, 99), min_size=8, max_size=8))
def test_gate_passages(garbage: list[str], where: list[int]) -> None:
    good = [
        json.dumps(
            {"ts": (T0 + timedelta(seconds=i)).isoformat(), "gate_id": "RVS-G01", "direction": "in"}
        )
        for i in range(10)
    ]
    lines, positions = mixed(good, garbage, where)
    directory = GateDirectory.from_site(SITE, BOUNDS)
    batch = RawBatch(
        "h", "passage", pl.DataFrame({"payload": lines}, schema={"payload": pl.String}), 0
    )
    parsed = parse_batch(batch, directory, 60_000, NOW_MS)
    assert parsed.flows["entries"].sum() == len(good)
    assert rejected_rows(parsed.rejected) == sorted(set(range(len(lines))) - positions)
    assert parsed.rejected["reason"].null_count() == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(GARBAGE, max_size=8), st.lists(st.integers(0, 99), min_size=8, max_size=8))
def test_camera_messages(garbage: list[str], where: list[int]) -> None:
    good = [
        json.dumps(
            {
                "camera_id": "CTR-CAM01",
                "frame": i,
                "ts": (T0 + timedelta(seconds=i)).isoformat(),
                "persons": 2,
                "rois": [{"id": "platform-L1", "persons": 2}],
            }
        )
        for i in range(10)
    ]
    lines, positions = mixed(good, garbage, where)
    directory = CameraDirectory.from_site(SITE, BOUNDS)
    batch = RawBatch(
        "h", "video", pl.DataFrame({"payload": lines}, schema={"payload": pl.String}), 0
    )
    parsed = parse_video(batch, directory, NOW_MS)
    assert sorted(parsed.messages["frame"].to_list()) == list(range(10))
    assert rejected_rows(parsed.rejected) == sorted(set(range(len(lines))) - positions)
    assert parsed.rejected["reason"].null_count() == 0


def test_a_camera_line_of_json_null_is_rejected_not_a_crash() -> None:
    """Hypothesis found it: ``null`` lines among messages crashed Arrow's JSON reader."""
    message = {"camera_id": "CTR-CAM01", "ts": T0.isoformat(), "persons": 2, "rois": []}
    lines = ["null", *(json.dumps({**message, "frame": i}) for i in range(3)), "null", " null"]
    batch = RawBatch(
        "h", "video", pl.DataFrame({"payload": lines}, schema={"payload": pl.String}), 0
    )
    parsed = parse_video(batch, CameraDirectory.from_site(SITE, BOUNDS), NOW_MS)
    assert sorted(parsed.messages["frame"].to_list()) == [0, 1, 2]
    assert rejected_rows(parsed.rejected) == [0, 4, 5]


@settings(max_examples=40, deadline=None)
@given(st.lists(GARBAGE, max_size=8), st.lists(st.integers(0, 99), min_size=8, max_size=8))
def test_calls(garbage: list[str], where: list[int]) -> None:
    good = [
        json.dumps(
            {
                "call_id": f"C{i}",
                "received_at": (T0 + timedelta(minutes=i)).isoformat(),
                "lat": "30.2310",
                "lon": "120.2310",
            }
        )
        for i in range(10)
    ]
    lines, positions = mixed(good, garbage, where)
    directory = CallDirectory(
        CallZones(SITE), load_categories(DEFAULT_CATEGORIES_FILE), None, "UTC", BOUNDS
    )
    batch = RawBatch(
        "h", "call", pl.DataFrame({"payload": lines}, schema={"payload": pl.String}), 0
    )
    calls, rejected = parse_calls(batch, directory, NOW_MS)
    assert sorted(calls["call_id"].to_list()) == sorted(f"C{i}" for i in range(10))
    assert rejected_rows(rejected) == sorted(set(range(len(lines))) - positions)
    assert rejected["reason"].null_count() == 0
