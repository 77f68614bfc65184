from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from crowdwatch.settings import REPO_ROOT
from crowdwatch.site import Camera, CameraRoi, CountingLine, load_site
from crowdwatch.video.messages import CameraGeometry, CameraMessage
from detectors.cpu_hog import (
    CentroidTracker,
    HogParams,
    VideoSourceError,
    _encloses_a_better_box,
    detect,
    main,
    require_cv2,
)

VTEST = REPO_ROOT.parent / "shared" / "data" / "video" / "vtest.avi"
EXAMPLE_SITE = REPO_ROOT / "infra" / "sites" / "example_interchange.yaml"
START_MS = 1_795_132_800_000  # 2026-11-20T08:00:00+08:00
WIDTH, HEIGHT = 768, 576


@pytest.fixture(scope="module")
def vtest() -> Path:
    if not VTEST.exists():
        pytest.skip(f"real data missing: {VTEST} (the shared data folder sits beside the repo)")
    return VTEST


def lakeside_camera() -> Camera:
    """WLK-CAM01 with a second ROI (the left half) and a vertical counting line."""
    return Camera(
        id="WLK-CAM01",
        station="WLK",
        resolution=(WIDTH, HEIGHT),
        fps=10,
        rois=[
            CameraRoi(id="whole", zone="WLK-lakeside"),
            CameraRoi(
                id="left-half",
                zone="WLK-lakeside",
                polygon_px=[(0, 0), (WIDTH / 2, 0), (WIDTH / 2, HEIGHT), (0, HEIGHT)],
            ),
        ],
        lines=[
            CountingLine(
                id="middle",
                zone="WLK-lakeside",
                line_px=(WIDTH / 2, 0, WIDTH / 2, HEIGHT),
                in_direction="right",
            )
        ],
    )


@pytest.fixture(scope="module")
def messages(vtest: Path) -> list[CameraMessage]:
    return list(detect(vtest, lakeside_camera(), start_ms=START_MS, max_frames=30))


# --- on the real video -------------------------------------------------------------------


def test_one_message_per_frame_with_frame_times(messages: list[CameraMessage]) -> None:
    assert [m.frame for m in messages] == list(range(30))
    assert [m.ts_ms for m in messages] == [START_MS + 100 * i for i in range(30)]
    assert {m.camera_id for m in messages} == {"WLK-CAM01"}


def test_people_are_found_in_most_frames(messages: list[CameraMessage]) -> None:
    # Three people walk through the first 30 frames; HOG misses some of them now and then.
    with_people = sum(m.persons >= 1 for m in messages)
    assert with_people >= 0.8 * len(messages)
    assert max(m.persons for m in messages) <= 6


def test_roi_counts_follow_the_boxes(messages: list[CameraMessage]) -> None:
    for m in messages:
        counts = {r.roi_id: r.persons for r in m.rois}
        assert counts["whole"] == m.persons == len(m.boxes)
        left = sum(b.left + b.width / 2 <= WIDTH / 2 for b in m.boxes)
        assert counts["left-half"] == left <= m.persons
    # both halves are used: the ROI split is not trivially all or nothing
    assert any(0 < m.rois[1].persons < m.persons for m in messages)


def test_boxes_are_inside_the_image_and_tracked(messages: list[CameraMessage]) -> None:
    for m in messages:
        for b in m.boxes:
            assert b.left >= 0 and b.left + b.width <= WIDTH
            assert b.top >= 0 and b.top + b.height <= HEIGHT
            assert b.width > 0 and b.height > b.width  # people stand upright
            assert b.confidence >= HogParams().min_confidence
        ids = [b.track_id for b in m.boxes]
        assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    # the same people are followed from frame to frame, not renumbered every frame
    all_ids = [b.track_id for m in messages for b in m.boxes]
    assert len(set(all_ids)) <= len(all_ids) / 3


def test_first_frame_finds_the_people_a_person_sees(messages: list[CameraMessage]) -> None:
    # Frame 0, looked at by eye: people stand at about (272, 305) and (662, 318) (feet),
    # a third, further away and smaller, at (515, 230).
    feet = [(b.left + b.width / 2, b.top + b.height) for b in messages[0].boxes]
    for x, y in [(272, 305), (662, 318)]:
        assert any(abs(fx - x) < 25 and abs(fy - y) < 30 for fx, fy in feet), feet


def test_messages_survive_a_json_round_trip(messages: list[CameraMessage]) -> None:
    site = load_site(EXAMPLE_SITE)
    for m in messages[:5]:
        data = json.loads(m.to_json(site.tz))
        assert data["frame"] == m.frame
        assert round(datetime.fromisoformat(data["ts"]).timestamp() * 1000) == m.ts_ms
        assert data["persons"] == m.persons
        assert data["rois"] == [{"id": r.roi_id, "persons": r.persons} for r in m.rois]
        assert data["lines"] == [
            {"id": "middle", "in": c.entered, "out": c.exited} for c in m.lines
        ]
        assert [b[5] for b in data.get("boxes", [])] == [b.track_id for b in m.boxes]


def test_every_nth_frame_keeps_source_frame_numbers_and_times(vtest: Path) -> None:
    got = list(detect(vtest, lakeside_camera(), start_ms=START_MS, max_frames=10, every_nth=3))
    assert [m.frame for m in got] == [0, 3, 6, 9]
    assert [m.ts_ms - START_MS for m in got] == [0, 300, 600, 900]


def test_without_a_start_frames_get_the_clock_time(vtest: Path) -> None:
    ticks = iter(range(5_000, 6_000, 7))
    got = list(detect(vtest, lakeside_camera(), max_frames=3, clock_ms=lambda: next(ticks)))
    assert [m.ts_ms for m in got] == [5_000, 5_007, 5_014]


def test_downscaled_frames_give_boxes_in_camera_pixels(vtest: Path) -> None:
    full = next(detect(vtest, lakeside_camera(), start_ms=0, max_frames=1))
    small = next(
        detect(
            vtest, lakeside_camera(), start_ms=0, max_frames=1, params=HogParams(resize_width=1024)
        )
    )
    # a larger working image finds at least the same people, at the same places in the camera
    assert small.persons >= 1 and full.persons >= 1
    for b in full.boxes:
        centre = np.array([b.left + b.width / 2, b.top + b.height / 2])
        nearest = min(
            np.linalg.norm(centre - [s.left + s.width / 2, s.top + s.height / 2])
            for s in small.boxes
        )
        assert nearest < 30


def test_frames_of_another_aspect_ratio_are_refused(vtest: Path) -> None:
    wide = lakeside_camera().model_copy(update={"resolution": (1920, 1080)})
    with pytest.raises(VideoSourceError, match=r"768x576.*1920x1080"):
        next(detect(vtest, wide, start_ms=0, max_frames=1))


# --- errors ------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.avi"
    with pytest.raises(VideoSourceError, match=re.escape(f"{missing}: video file not found")):
        detect(missing, lakeside_camera())


def test_a_file_that_is_not_a_video_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.avi"
    text.write_text("not a video\n")
    with pytest.raises(VideoSourceError, match=re.escape(f"{text}: OpenCV cannot open")):
        detect(text, lakeside_camera())


def test_missing_opencv_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"pip install 'crowdwatch\[video\]'"):
        require_cv2()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every_nth"):
        detect(tmp_path / "x.avi", lakeside_camera(), every_nth=0)
    with pytest.raises(ValueError, match="scale"):
        HogParams(scale=1.0)


def test_a_window_around_a_better_box_is_dropped() -> None:
    # frame 600 of vtest.avi at 768 px: a window around a person and the building behind them
    boxes = np.array([[527.0, 68, 110, 222], [557, 195, 46, 98], [100, 100, 50, 100]])
    assert _encloses_a_better_box(boxes, np.array([0.5, 4.3, 1.0])).tolist() == [1, 0, 0]
    # the big window scores higher: it may be a near person in front of a far one; kept
    assert _encloses_a_better_box(boxes, np.array([5.0, 4.3, 1.0])).tolist() == [0, 0, 0]
    # two people of about the same size side by side: both kept
    pair = np.array([[100.0, 100, 50, 100], [120, 100, 50, 100]])
    assert _encloses_a_better_box(pair, np.array([1.0, 2.0])).tolist() == [0, 0]


# --- the tracker on synthetic boxes ------------------------------------------------------


def box(x: float, y: float = 100.0) -> list[float]:
    """A 40x100 person box whose foot point is at (x + 20, y + 100)."""
    return [x, y, 40.0, 100.0]


def crossings_of(xs: list[float], direction: str) -> tuple[int, int, list[int]]:
    camera = lakeside_camera().model_copy(
        update={
            "lines": [
                CountingLine(
                    id="l", zone="z", line_px=(400, 0, 400, HEIGHT), in_direction=direction
                )
            ]
        }
    )
    geometry = CameraGeometry(camera)
    tracker = CentroidTracker(max_age=3)
    entered = exited = 0
    ids: list[int] = []
    for x in xs:
        step = tracker.update(np.array([box(x)]))
        ids.extend(step.ids.tolist())
        (count,) = geometry.crossings(step.before, step.after)
        entered += count.entered
        exited += count.exited
    return entered, exited, ids


def test_moving_right_across_the_line_is_one_in() -> None:
    # foot x goes 321, 341, … 481: across x = 400 once (never exactly on it)
    entered, exited, ids = crossings_of([301 + 20 * i for i in range(9)], "right")
    assert (entered, exited) == (1, 0)
    assert set(ids) == {1}


def test_moving_left_across_the_line_is_one_out() -> None:
    entered, exited, ids = crossings_of([461 - 20 * i for i in range(9)], "right")
    assert (entered, exited) == (0, 1)
    assert set(ids) == {1}


def test_crossing_while_missed_still_counts_once() -> None:
    tracker = CentroidTracker(max_age=3)
    tracker.update(np.array([box(360)]))  # foot at x = 380
    tracker.update(np.zeros((0, 4)))  # missed by the detector while crossing
    step = tracker.update(np.array([box(400)]))  # foot at x = 420
    assert step.ids.tolist() == [1]
    assert step.before.tolist() == [[380.0, 200.0]]
    assert step.after.tolist() == [[420.0, 200.0]]


def test_two_far_apart_people_keep_their_ids() -> None:
    tracker = CentroidTracker()
    first = tracker.update(np.array([box(100), box(500)]))
    assert first.ids.tolist() == [1, 2]
    assert first.before.shape == (0, 2)
    # they walk towards each other and are listed in the other order
    second = tracker.update(np.array([box(490), box(110)]))
    assert second.ids.tolist() == [2, 1]
    assert second.before.tolist() == [[520.0, 200.0], [120.0, 200.0]]
    assert second.after.tolist() == [[510.0, 200.0], [130.0, 200.0]]


def test_a_jump_beyond_max_move_is_a_new_person() -> None:
    tracker = CentroidTracker(max_move=0.5)
    tracker.update(np.array([box(100)]))
    assert tracker.update(np.array([box(100 + 49)])).ids.tolist() == [1]  # 0.49 heights
    assert tracker.update(np.array([box(149 + 60)])).ids.tolist() == [2]  # 0.6 heights


def test_a_track_gone_longer_than_max_age_gets_a_new_id() -> None:
    tracker = CentroidTracker(max_age=2)
    assert tracker.update(np.array([box(100)])).ids.tolist() == [1]
    for _ in range(2):
        tracker.update(np.zeros((0, 4)))
    back = tracker.update(np.array([box(105)]))  # gone for 2 frames: max_age, same person
    assert back.ids.tolist() == [1]
    assert back.before.shape == (1, 2)
    for _ in range(3):
        tracker.update(np.zeros((0, 4)))
    later = tracker.update(np.array([box(105)]))  # gone for 3 frames: a new track
    assert later.ids.tolist() == [2]
    assert later.before.shape == (0, 2)


# --- command line ------------------------------------------------------------------------


def test_cli_writes_json_lines(
    vtest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "messages.jsonl"
    status = main(
        [
            str(vtest),
            "--site",
            str(EXAMPLE_SITE),
            "--camera",
            "WLK-CAM01",
            "--out",
            str(out),
            "--max-frames",
            "10",
            "--start",
            "2026-11-20T08:00:00",
        ]
    )
    assert status == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(10))
    assert lines[0]["ts"] == "2026-11-20T08:00:00.000+08:00"
    assert lines[9]["ts"] == "2026-11-20T08:00:00.900+08:00"
    assert {line["camera_id"] for line in lines} == {"WLK-CAM01"}
    assert all(line["rois"][0]["id"] == "promenade" for line in lines)
    assert all(line["rois"][0]["persons"] == line["persons"] for line in lines)
    assert "wrote 10 messages" in capsys.readouterr().err


def test_cli_unknown_camera_is_one_clear_line(
    vtest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "messages.jsonl"
    status = main([str(vtest), "--site", str(EXAMPLE_SITE), "--camera", "NOPE", "--out", str(out)])
    assert status == 2
    assert "'NOPE' is not in" in capsys.readouterr().err
    assert not out.exists()


def test_cli_missing_video_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gone.avi"
    status = main(
        [str(missing), "--site", str(EXAMPLE_SITE), "--camera", "WLK-CAM01", "--out", "x.jsonl"]
    )
    assert status == 2
    assert f"{missing}: video file not found" in capsys.readouterr().err
