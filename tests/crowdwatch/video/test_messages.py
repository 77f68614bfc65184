"""Camera messages: image geometry, JSON round trip, batch decoding and validation."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from crowdwatch.batches import RawBatch
from crowdwatch.site import CountingLine, load_site
from crowdwatch.video.messages import (
    CameraDirectory,
    CameraGeometry,
    CameraMessage,
    LineCount,
    RoiCount,
    crossing_directions,
    decode_messages,
    parse_video,
)
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
DIRECTORY = CameraDirectory.from_site(SITE)
T0_MS = 1_795_132_800_000  # 2026-11-20 08:00 in Shanghai


def message(**change: object) -> str:
    base = CameraMessage(
        "CTR-CAM03", 7, T0_MS, 3, (RoiCount("entrance-A", 3),), (LineCount("line_1", 1, 0),)
    ).to_dict(SITE.tz)
    return json.dumps({**base, **change})


def parse(lines: list[str]):  # type: ignore[no-untyped-def]
    return parse_video(RawBatch("test", "video", pl.DataFrame({"payload": lines}), 0), DIRECTORY, 0)


def test_crossings_need_both_sides_and_the_segment() -> None:
    line = CountingLine(id="l", zone="z", line_px=(100, 0, 100, 50), in_direction="right")
    before = np.array([[90.0, 10], [110, 10], [90, 80], [90, 10], [90, 10], [100, 10]])
    after = np.array([[110.0, 10], [90, 10], [110, 80], [95, 10], [100, 10], [110, 10]])
    # in, out, below the segment's end, not across; then a path that stops on the line and
    # goes on counts once, not twice
    assert crossing_directions(line, before, after).tolist() == [1, -1, 0, 0, 0, 1]
    upward = CountingLine(id="l", zone="z", line_px=(0, 100, 200, 100), in_direction="up")
    assert crossing_directions(
        upward, np.array([[50.0, 120]]), np.array([[60.0, 90]])
    ).tolist() == [1]


def test_rois_count_people_where_they_stand() -> None:
    geometry = CameraGeometry(SITE.camera_by_id["CTR-CAM01"])  # polygon from y=300 down
    boxes = np.array([[500.0, 100, 50, 150], [500.0, 400, 50, 150], [500.0, 0, 50, 100]])
    # feet at y=250 (outside), y=550 (inside), y=100 (outside)
    assert geometry.roi_counts(boxes) == [RoiCount("platform-L1", 1)]


def test_a_message_survives_the_round_trip() -> None:
    parsed = parse([message()])
    assert parsed.rejected.height == 0
    assert parsed.messages.to_dicts() == [
        {"camera_id": "CTR-CAM03", "station_id": "CTR", "frame": 7, "ts_ms": T0_MS, "persons": 3}
    ]
    assert parsed.rois.row(0, named=True)["zone_id"] == "CTR-entrance-A"
    assert parsed.lines.select("line_id", "entered", "exited").row(0) == ("line_1", 1, 0)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (message(camera_id="CAM-X"), "unknown camera 'CAM-X'"),
        (message(ts="noon"), "ts 'noon' is not an ISO 8601 time"),
        (message(frame=-1), "frame is negative"),
        (message(persons=None), "persons missing"),
        (
            message(rois=[{"id": "nowhere", "persons": 1}]),
            "unknown ROI 'nowhere' for camera 'CTR-CAM03'",
        ),
        (
            message(rois=[{"id": "entrance-A", "persons": -2}]),
            "ROI 'entrance-A' has a negative count",
        ),
        (
            message(lines=[{"id": "line_9", "in": 1, "out": 0}]),
            "unknown line 'line_9' for camera 'CTR-CAM03'",
        ),
        (message(frame="seven"), "frame must be a 64-bit integer"),
        (message(rois="three"), "rois must be a list of objects"),
        ("{broken", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_bad_messages_are_rejected_with_their_reason_and_good_ones_kept(
    line: str, reason: str
) -> None:
    parsed = parse([message(frame=1), line, message(frame=2)])
    assert parsed.rejected["reason"].to_list() == [reason]
    assert parsed.rejected["payload"].to_list() == [line]
    assert parsed.rejected["position"].to_list() == ["row 1"]
    assert parsed.messages["frame"].to_list() == [1, 2]


def test_decoding_falls_back_only_when_it_must() -> None:
    good = [message(frame=i) for i in range(5)]
    table, bad = decode_messages(pl.Series(good))
    assert table.num_rows == 5 and bad == []
    table, bad = decode_messages(pl.Series([*good, "{oops"]))
    assert table.num_rows == 5 and bad == [(5, "not valid JSON")]
    assert table.column("_row").to_pylist() == [0, 1, 2, 3, 4]
