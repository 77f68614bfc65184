"""Recorded MOT detections as camera messages: counts per frame and line crossings."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from crowdwatch.site import load_site
from crowdwatch.video.mot import MotError, mot_messages, read_mot
from tests.conftest import EXAMPLE_SITE, SHARED_DATA

MOT17 = SHARED_DATA / "video_detections" / "mot17_yolov8n_bytetrack"
SEQUENCES = [("MOT17-09", "CTR-CAM03"), ("MOT17-02", "STD-CAM01")]
SITE = load_site(EXAMPLE_SITE)


def sequence(name: str) -> Path:
    path = MOT17 / name / "tracking.txt"
    if not path.exists():
        pytest.skip(f"real data missing: {path}")
    return path


@pytest.mark.parametrize(("name", "camera"), SEQUENCES)
def test_per_frame_counts_equal_the_file(name: str, camera: str) -> None:
    detections = read_mot(sequence(name))
    for threshold in (0.0, 0.5):
        messages = mot_messages(
            detections, SITE.camera_by_id[camera], start_ms=0, min_confidence=threshold
        )
        expected = (
            pl.read_csv(sequence(name), has_header=False)
            .select(pl.nth(0).alias("frame"), pl.nth(6).alias("confidence"))
            .filter(pl.col("confidence") >= threshold)
            .group_by("frame")
            .len()
        )
        per_frame = dict(expected.iter_rows())
        assert [m.persons for m in messages] == [
            per_frame.get(f, 0) for f in range(1, len(messages) + 1)
        ]
        # the whole image is the ROI: everyone in the frame is in it
        assert [m.rois[0].persons for m in messages] == [m.persons for m in messages]


@pytest.mark.parametrize(("name", "camera"), SEQUENCES)
def test_line_crossings_match_the_recorded_events_within_one(name: str, camera: str) -> None:
    messages = mot_messages(read_mot(sequence(name)), SITE.camera_by_id[camera], start_ms=0)
    events = pl.read_csv(MOT17 / name / "events.csv")
    entries = int((events["event_type"] == "entry").sum())
    exits = int((events["event_type"] == "exit").sum())
    assert abs(sum(m.lines[0].entered for m in messages) - entries) <= 1
    assert abs(sum(m.lines[0].exited for m in messages) - exits) <= 1


def test_frames_are_spaced_by_the_camera_rate_and_empty_frames_still_report(tmp_path: Path) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text("1,1,10,10,5,5,0.9,-1,-1,-1\n3,1,12,10,5,5,0.9,-1,-1,-1\n", encoding="utf-8")
    messages = mot_messages(read_mot(path), SITE.camera_by_id["CTR-CAM03"], start_ms=1000)
    assert [(m.frame, m.ts_ms, m.persons) for m in messages] == [
        (1, 1000, 1),
        (2, 1033, 0),
        (3, 1067, 1),
    ]


def test_a_broken_file_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("1,1,10,10\n", encoding="utf-8")
    with pytest.raises(MotError, match="expected at least 7"):
        read_mot(path)
    path.write_text("1,1,10,10,5,x,0.9\n", encoding="utf-8")
    with pytest.raises(MotError, match="1 rows with missing or non-numeric"):
        read_mot(path)
