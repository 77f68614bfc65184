"""MessageBuilder on hand-made FrameAnalytics: interval, crossings, ROI labels, capture time."""

from __future__ import annotations

import pytest

from crowdwatch.site import Site, load_site
from crowdwatch.video.messages import LineCount, RoiCount
from detectors.deepstream.adapter import UNTRACKED_OBJECT_ID, DetectedObject, FrameAnalytics
from detectors.deepstream.messages import MessageBuilder, capture_time_ms
from tests.conftest import EXAMPLE_SITE

STREAMS = {0: "CTR-CAM03", 1: "CTR-CAM01", 2: "WLK-CAM01"}


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(EXAMPLE_SITE)


def person(left: float = 10.0, object_id: int = 1, class_id: int = 0) -> DetectedObject:
    return DetectedObject(class_id, object_id, 0.8, left, 20.0, 30.0, 60.0)


def frame(
    source_id: int = 0,
    frame_num: int = 0,
    *,
    objects: tuple[DetectedObject, ...] = (),
    rois: dict[str, int] | None = None,
    current: dict[str, int] | None = None,
    ntp_ns: int = 0,
) -> FrameAnalytics:
    return FrameAnalytics(
        source_id=source_id,
        frame_num=frame_num,
        ntp_timestamp_ns=ntp_ns,
        buf_pts_ns=frame_num * 40_000_000,
        objects=objects,
        roi_counts=rois or {},
        line_current=current or {},
    )


def test_at_most_one_message_per_camera_per_interval(site: Site) -> None:
    builder = MessageBuilder(site, STREAMS, interval_ms=200)
    published = []
    for i, ts in enumerate([0, 40, 80, 120, 160, 199, 200, 240, 399, 400]):
        message = builder.add(frame(0, i), ts)
        if message is not None:
            published.append((message.frame, message.ts_ms))
    assert published == [(0, 0), (6, 200), (9, 400)]
    # another camera has its own interval: its first frame is published at once
    other = builder.add(frame(1, 0), 240)
    assert other is not None and other.camera_id == "CTR-CAM01"


def test_crossings_of_unpublished_frames_go_into_the_next_message(site: Site) -> None:
    builder = MessageBuilder(site, STREAMS, interval_ms=200)
    first = builder.add(frame(0, 0, current={"line_1-in": 1}), 0)
    assert first is not None and first.lines == (LineCount("line_1", 1, 0),)
    assert builder.add(frame(0, 1, current={"line_1-in": 2, "line_1-out": 0}), 40) is None
    assert builder.add(frame(0, 2, current={"line_1-out": 1}), 80) is None
    assert builder.add(frame(0, 3), 120) is None
    second = builder.add(frame(0, 5, current={"line_1-in": 1}), 200)
    assert second is not None and second.lines == (LineCount("line_1", 3, 1),)
    third = builder.add(frame(0, 10), 400)
    assert third is not None and third.lines == (LineCount("line_1", 0, 0),)


def test_roi_labels_map_to_roi_ids_and_unknown_labels_are_ignored(site: Site) -> None:
    builder = MessageBuilder(site, STREAMS, interval_ms=0)
    plain = builder.add(frame(0, 0, rois={"entrance-A": 5, "somewhere-else": 9}), 0)
    assert plain is not None and plain.rois == (RoiCount("entrance-A", 5),)
    prefixed = builder.add(frame(1, 0, rois={"roi-platform-L1": 7}), 0)
    assert prefixed is not None and prefixed.rois == (RoiCount("platform-L1", 7),)
    # an ROI nvdsanalytics did not report is left out, not reported as empty
    missing = builder.add(frame(1, 1), 10)
    assert missing is not None and missing.rois == ()


def test_persons_are_the_person_class_of_the_latest_frame(site: Site) -> None:
    builder = MessageBuilder(site, STREAMS, interval_ms=200, person_class_id=0)
    builder.add(frame(0, 0, objects=(person(),) * 5), 0)
    assert builder.add(frame(0, 1, objects=(person(),) * 9), 100) is None
    objects = (person(1), person(2), person(3, class_id=2))
    message = builder.add(frame(0, 2, objects=objects), 200)
    assert message is not None and message.persons == 2
    assert message.boxes == ()  # not asked for


def test_boxes_are_scaled_from_the_muxer_to_the_camera(site: Site) -> None:
    builder = MessageBuilder(
        site, STREAMS, include_boxes=True, muxer_size=(1920, 1080)
    )  # WLK-CAM01 is 768x576
    objects = (
        DetectedObject(0, 7, 0.9, 100.0, 200.0, 50.0, 150.0),
        DetectedObject(0, UNTRACKED_OBJECT_ID, 0.5, 0.0, 0.0, 10.0, 10.0),
    )
    message = builder.add(frame(2, 0, objects=objects), 0)
    assert message is not None
    box = message.boxes[0]
    assert (box.left, box.width, box.height, box.confidence, box.track_id) == (40, 20, 80, 0.9, 7)
    assert box.top == pytest.approx(200 * 576 / 1080)
    assert (message.boxes[1].width, message.boxes[1].track_id) == (4.0, None)


def test_a_clock_that_steps_back_does_not_silence_a_camera(site: Site) -> None:
    builder = MessageBuilder(site, STREAMS, interval_ms=200)
    assert builder.add(frame(0, 0), 10_000) is not None
    assert builder.add(frame(0, 1), 5_000) is not None
    assert builder.add(frame(0, 2), 5_100) is None


def test_frames_from_an_unmapped_stream_are_a_fault(site: Site) -> None:
    builder = MessageBuilder(site, STREAMS)
    with pytest.raises(ValueError, match="stream 7"):
        builder.add(frame(7, 0), 0)
    with pytest.raises(ValueError, match="NOPE"):
        MessageBuilder(site, {0: "NOPE"})


def test_capture_time_uses_ntp_when_set_and_the_clock_otherwise() -> None:
    with_ntp = frame(ntp_ns=1_700_000_000_123_456_789)
    assert capture_time_ms(with_ntp, clock_ms=42) == 1_700_000_000_123
    assert capture_time_ms(frame(ntp_ns=0), clock_ms=42) == 42


def test_message_json_carries_the_counts(site: Site) -> None:
    builder = MessageBuilder(site, STREAMS)
    message = builder.add(
        frame(0, 3, objects=(person(),), rois={"entrance-A": 1}, current={"line_1-out": 2}),
        capture_time_ms(frame(ntp_ns=1_763_596_800_040_000_000), 0),
    )
    assert message is not None
    assert message.to_dict(site.tz) == {
        "camera_id": "CTR-CAM03",
        "frame": 3,
        "ts": "2025-11-20T08:00:00.040+08:00",
        "persons": 1,
        "rois": [{"id": "entrance-A", "persons": 1}],
        "lines": [{"id": "line_1", "in": 0, "out": 2}],
    }
