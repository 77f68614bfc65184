"""110 call records: geo-assignment, strict parsing, privacy, the Seattle layout."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from crowdwatch.batches import RawBatch
from crowdwatch.calls.categories import load_categories
from crowdwatch.calls.records import CallDirectory, CallZones, parse_calls
from crowdwatch.settings import DEFAULT_CATEGORIES_FILE
from crowdwatch.site import load_site
from crowdwatch.sources.files import read_records
from tests.conftest import EXAMPLE_SITE, SHARED_DATA

SITE = load_site(EXAMPLE_SITE)
ZONES = CallZones(SITE)
SEATTLE = SHARED_DATA / "emergency_calls" / "seattle_fire_911_mva.csv"


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / 110_540, lon + east_m / (111_320 * math.cos(math.radians(lat)))


def directory(key: bytes | None = b"test-key") -> CallDirectory:
    return CallDirectory(ZONES, load_categories(DEFAULT_CATEGORIES_FILE), key, SITE.site.timezone)


def parse(
    rows: list[dict[str, str | None]], key: bytes | None = b"test-key"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = pl.DataFrame(rows, schema={k: pl.String for k in rows[0]})
    return parse_calls(RawBatch("test", "call", frame, 0), directory(key), 0)


def test_inside_a_polygon_within_a_radius_and_outside_everything() -> None:
    platform = offset(
        30.2585, 120.1647, 0, 0
    )  # in the L1 platform polygon, 87 m from the concourse
    near_rvs = offset(30.2450, 120.1700, 20, 25)  # 32 m from Riverside's centre, radius 40 m
    past_rvs = offset(30.2450, 120.1700, 0, 46)  # 46 m: just outside
    far = (31.0, 121.0)
    lat = np.array([p[0] for p in (platform, near_rvs, past_rvs, far)])
    lon = np.array([p[1] for p in (platform, near_rvs, past_rvs, far)])
    placed = ZONES.assign(lat, lon)
    assert placed.rows() == [(0, ["CTR-L1-platform"], ["CTR"]), (1, ["RVS-concourse"], ["RVS"])]


def test_overlapping_zones_all_get_the_call() -> None:
    # the Central concourse (60 m around its centre) lies over the L1 platform
    lat, lon = offset(30.2585, 120.1640, 0, 0)
    placed = ZONES.assign(np.array([lat]), np.array([lon]))
    assert placed.rows() == [(0, ["CTR-L1-platform", "CTR-concourse"], ["CTR"])]


def call(**change: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = {
        "call_id": "C1",
        "received_at": "2026-11-20T21:40:00+08:00",
        "updated_at": None,
        "lat": "30.2310",
        "lon": "120.2310",
        "district": "Binjiang",
        "address": "Stadium gate 3, call back 13812345678",
        "category_code": None,
        "category_text": "拥挤踩踏",
        "priority": "1",
        "status": "new",
        "caller_phone": "138-1234-5678",
        "caller_name": "Zhang Wei",
        "caller_id_number": "11010519491231002X",
        "description": "crowd pushing at gate, my ID 11010519491231002X, phone +86 138 1234 5678",
    }
    return {**base, **change}


def test_a_good_call_is_placed_categorised_and_scrubbed() -> None:
    calls, rejected = parse([call()])
    assert rejected.height == 0
    row = calls.row(0, named=True)
    assert row["zones"] == ["STD-plaza"] and row["stations"] == ["STD"]
    assert row["group"] == "crowding" and row["weight"] == 1.0
    assert "13812345678" not in row["address"] and "1234" not in row["description"]
    assert "11010519491231002X" not in row["description"]
    assert row["caller_hash"] is not None and "1381234" not in row["caller_hash"]
    assert "caller_name" not in calls.columns and "caller_id_number" not in calls.columns


def test_without_a_key_the_phone_is_dropped() -> None:
    calls, _ = parse([call()], key=None)
    assert calls["caller_hash"].to_list() == [None]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"call_id": None}, "call_id missing"),
        ({"received_at": "yesterday"}, "received_at is not an ISO 8601 time"),
        ({"lon": None}, "lat and lon must come together"),
        ({"lat": "95.1"}, "lat/lon are not coordinates"),
        ({"priority": "high"}, "priority is not an integer"),
    ],
)
def test_bad_calls_are_rejected_with_a_scrubbed_payload(
    change: dict[str, str | None], reason: str
) -> None:
    calls, rejected = parse([call(call_id="OK"), call(**change)])
    assert calls["call_id"].to_list() == ["OK"]
    assert rejected["reason"].to_list() == [reason]
    payload = rejected["payload"][0]
    for secret in ("Zhang Wei", "13812345678", "1234 5678", "11010519491231002X"):
        assert secret not in payload


def test_the_newest_update_is_the_version() -> None:
    calls, _ = parse([call(updated_at="2026-11-20T21:45:00+08:00")])
    assert calls["version"][0] > calls["received_at"].dt.epoch("ms")[0]


def test_seattle_records_read_as_calls() -> None:
    if not SEATTLE.exists():
        pytest.skip(f"real data missing: {SEATTLE}")
    kind, frame = read_records(SEATTLE)
    assert kind == "call"
    first = frame.row(0, named=True)
    assert first["call_id"] == "F110104134"
    assert first["received_at"] == "2011-11-09T22:04:00.000Z"
    assert first["category_text"] == "Motor Vehicle Accident"
    calls, rejected = parse_calls(RawBatch("s", "call", frame, 0), directory(), 0)
    # one record of the real feed has no incident number
    assert rejected["reason"].to_list() == ["call_id missing"]
    assert calls.height == frame.height - 1
    assert set(calls["group"]) == {"traffic"}
    assert calls["district"].unique().to_list() == ["unknown"]
