"""Stock nvmsgconv payloads → per-frame person detections → CameraMessages.

Samples in tests/detectors/samples/:

- full_deepstream_test4_vehicle.json: verbatim, the message deepstream-test4 (DeepStream 5.1)
  sent in the recorded run printed in pravega/gstreamer-pravega, deepstream/README.md; its
  sensor, place and analytics blocks come from deepstream-test4's dstest4_msgconv_config.txt.
- full_deepstream_test4_person.json: the same message for deepstream-test4's person branch:
  object.person holds the attributes deepstream_test_4.py sets (generate_person_meta: age 45,
  male, black hair, no cap, formal), place carries the "entrance" sub-object and event.type is
  "entry", as nvmsgconv's eventmsg_payload.cpp writes them for NVDS_OBJECT_TYPE_PERSON with
  NVDS_EVENT_ENTRY. The bbox is the one of a recorded deepstream-test4 person message.
- minimal_nvmsgconv_example.json: verbatim, the minimal-schema example in the comment of
  generate_event_message_minimal() / generate_dsmeta_message_minimal() in DeepStream's
  sources/libs/nvmsgconv/deepstream_schema (eventmsg_payload.cpp, dsmeta_payload.cpp).
- minimal_person_frame.json: a minimal frame with the object strings those functions build for
  a person with secondary attributes (``id|l|t|r|b|Person|#|gender|age|hair|cap|apparel|conf``,
  untracked id 2^64-1), a plain person and a bag.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdwatch.site import Site, load_site
from crowdwatch.video.messages import RoiCount
from detectors.deepstream.stock import (
    DETECTION_SCHEMA,
    parse_full,
    parse_minimal,
    to_messages,
)
from tests.conftest import EXAMPLE_SITE

SAMPLES = Path(__file__).parent / "samples"
TS_2018 = int(datetime(2018, 4, 11, 4, 59, 59, 828_000, tzinfo=UTC).timestamp() * 1000)
TS_2021 = int(datetime(2021, 3, 31, 20, 11, 7, 742_000, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(EXAMPLE_SITE)


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def minimal(sensor: str, frame_id: str, ts: str, objects: Sequence[object] | str) -> str:
    return json.dumps(
        {"version": "4.0", "id": frame_id, "@timestamp": ts, "sensorId": sensor, "objects": objects}
    )


def test_full_schema_samples_parse_to_one_detection_each() -> None:
    parsed = parse_full(
        [sample("full_deepstream_test4_person.json"), sample("full_deepstream_test4_vehicle.json")]
    )
    assert parsed.rejected == []
    assert parsed.detections.schema == pl.Schema(DETECTION_SCHEMA)
    assert parsed.detections.rows(named=True) == [
        {
            "camera_id": "CAMERA_ID",
            "ts_ms": TS_2021,
            "frame_key": "2021-03-31T20:11:07.742Z",
            "object_id": "-1",
            "label": "person",
            "left": 147.0,
            "top": 16.0,
            "width": 158.0,
            "height": 327.0,
        },
        {
            "camera_id": "CAMERA_ID",
            "ts_ms": TS_2021,
            "frame_key": "2021-03-31T20:11:07.742Z",
            "object_id": "-1",
            "label": "vehicle",
            "left": 597.0,
            "top": 481.0,
            "width": 114.0,
            "height": 88.0,
        },
    ]
    assert parsed.frames.height == 1  # both messages stamp the same frame time


def test_minimal_schema_samples_parse_with_their_field_order() -> None:
    parsed = parse_minimal(
        [sample("minimal_nvmsgconv_example.json"), sample("minimal_person_frame.json")]
    )
    assert parsed.rejected == []
    rows = parsed.detections.select("frame_key", "object_id", "label", "left", "top", "width")
    assert rows.rows() == [
        ("frame-id", "957", "Vehicle", 1834.0, 150.0, 84.0),
        ("1234", "18446744073709551615", "Person", 147.0, 16.0, 158.0),
        ("1234", "12", "Person", 957.5, 150.0, 60.75),
        ("1234", "13", "Bag", 400.0, 500.0, 20.0),
    ]
    assert parsed.detections.get_column("ts_ms").unique().to_list() == [TS_2018]
    assert parsed.detections.get_column("camera_id").unique().to_list() == ["sensor-id"]
    assert parsed.detections.get_column("height").to_list() == [65.0, 327.0, 265.0, 40.0]


def test_minimal_frames_without_objects_are_kept_as_frames() -> None:
    parsed = parse_minimal([minimal("CTR-CAM01", "7", "2018-04-11T04:59:59.828Z", [])])
    assert parsed.rejected == []
    assert parsed.detections.height == 0
    assert parsed.frames.rows() == [("CTR-CAM01", TS_2018, "7")]


def full_with(change: str, value: object) -> str:
    doc = json.loads(sample("full_deepstream_test4_person.json"))
    target = doc
    *path, last = change.split(".")
    for key in path:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("{not json", "not JSON: "),
        ("[1, 2]", "not a JSON object: found a list"),
        (full_with("sensor.id", KeyError), "missing key 'sensor.id'"),
        (full_with("sensor", None), "missing key 'sensor.id'"),
        (full_with("sensor.id", 7), "'sensor.id' must be a string, found int 7"),
        (full_with("object.bbox.topleftx", "147"), "'object.bbox.topleftx' is not a number: '147'"),
        (full_with("object.bbox.bottomrighty", True), "'object.bbox.bottomrighty' is not a number"),
        (full_with("object.bbox.bottomrightx", 100), "bottom-right corner above or left"),
        (full_with("object.person", KeyError), "'object' has no type key"),
        (full_with("@timestamp", "2021-03-31 20:11"), "'@timestamp' has no UTC offset"),
        (full_with("@timestamp", "yesterday"), "'@timestamp' is not an RFC 3339 time"),
        (full_with("object.id", KeyError), "missing key 'object.id'"),
    ],
)
def test_malformed_full_payloads_are_rejected_with_their_reason(payload: str, reason: str) -> None:
    parsed = parse_full([payload, sample("full_deepstream_test4_person.json")])
    assert len(parsed.rejected) == 1
    rejected_payload, why = parsed.rejected[0]
    assert rejected_payload == payload
    assert reason in why
    assert parsed.detections.height == 1  # the good one still counts


TS = "2018-04-11T04:59:59.828Z"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("", "not JSON: "),
        (
            json.dumps({"version": "4.0", "id": "1", "@timestamp": TS, "objects": []}),
            "missing key 'sensorId'",
        ),
        (minimal("", "1", TS, []), "'sensorId' is empty"),
        (
            minimal("CTR-CAM01", "1", TS, "1|2|3|4|5|Person"),
            "'objects' must be a list, found str",
        ),
        (
            minimal("CTR-CAM01", "1", TS, ["1|1o0|3|200|5|Person"]),
            "objects[0] left is not a number: '1o0'",
        ),
        (
            minimal("CTR-CAM01", "1", TS, ["1|10|3|200|400|Person", "2|nan|3|4|5|Person"]),
            "objects[1] left is not a number: 'nan'",
        ),
        (minimal("CTR-CAM01", "1", TS, ["1|10|3|20"]), "objects[0] has 4 fields"),
        (minimal("CTR-CAM01", "1", TS, [12]), "objects[0] must be a string, found int"),
        (minimal("CTR-CAM01", "1", TS, ["|10|3|20|40|Person"]), "empty tracking id"),
        (minimal("CTR-CAM01", "1", "2018-04-11", ["1|10|3|20|40|Person"]), "no UTC offset"),
    ],
)
def test_malformed_minimal_payloads_are_rejected_whole(payload: str, reason: str) -> None:
    parsed = parse_minimal([payload])
    assert parsed.detections.height == 0
    assert parsed.frames.height == 0
    assert parsed.rejected == [(payload, parsed.rejected[0][1])]
    assert reason in parsed.rejected[0][1]


def test_parsers_never_raise_on_non_text() -> None:
    parsed = parse_minimal([None, b"{}", 3])  # type: ignore[list-item]
    assert [why for _, why in parsed.rejected] == [
        "payload is a NoneType, not JSON text",
        "payload is a bytes, not JSON text",
        "payload is a int, not JSON text",
    ]


def test_to_messages_counts_people_per_frame_and_roi(site: Site) -> None:
    # CTR-CAM01's platform-L1 ROI: (80,300) (1840,300) (1900,1070) (20,1070); a person is in it
    # when the bottom centre of their box is
    payloads = [
        minimal(
            "CTR-CAM01",
            "100",
            "2026-11-20T00:00:00.040Z",
            [
                "1|100|400|200|800|Person",  # foot (150, 800): inside
                "2|900|50|1000|250|Person",  # foot (950, 250): above the ROI
                "3|10|600|30|1000|Person",  # foot (20, 1000): left of the slanted edge
                "4|500|500|600|900|Bag",  # inside, but not a person
            ],
        ),
        minimal("CTR-CAM01", "101", "2026-11-20T00:00:00.080Z", []),  # nobody
        minimal("CTR-CAM03", "5", "2026-11-20T00:00:00.060Z", ["9|1|1|2|2|person"]),
        minimal("CAM-X", "1", "2026-11-20T00:00:00.000Z", ["9|1|1|2|2|Person"]),
    ]
    parsed = parse_minimal(payloads)
    assert parsed.rejected == []
    messages, unknown = to_messages(parsed.detections, site, frames=parsed.frames)
    assert unknown == ["CAM-X"]
    start = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
    assert [(m.camera_id, m.frame, m.ts_ms - start, m.persons, m.rois) for m in messages] == [
        ("CTR-CAM01", 100, 40, 3, (RoiCount("platform-L1", 1),)),
        ("CTR-CAM03", 5, 60, 1, (RoiCount("entrance-A", 1),)),  # whole-frame ROI
        ("CTR-CAM01", 101, 80, 0, (RoiCount("platform-L1", 0),)),
    ]
    # without the frames table, a frame with no detections at all cannot be seen
    without, _ = to_messages(parsed.detections, site)
    assert [m.frame for m in without if m.camera_id == "CTR-CAM01"] == [100]


def test_to_messages_numbers_frames_without_numeric_ids_in_time_order(site: Site) -> None:
    full = [
        full_with("@timestamp", "2026-11-20T00:00:00.200Z"),
        full_with("@timestamp", "2026-11-20T00:00:00.100Z"),
    ]
    parsed = parse_full(full.copy())
    renamed = parsed.detections.with_columns(pl.lit("CTR-CAM03").alias("camera_id"))
    messages, unknown = to_messages(renamed, site)
    assert unknown == []
    assert [(m.frame, m.persons, m.lines) for m in messages] == [(0, 1, ()), (1, 1, ())]
    assert messages[0].ts_ms < messages[1].ts_ms


def test_to_messages_refuses_a_table_without_the_columns(site: Site) -> None:
    with pytest.raises(ValueError, match="lack columns"):
        to_messages(pl.DataFrame({"camera_id": ["CTR-CAM01"]}), site)


@given(st.lists(st.one_of(st.text(max_size=80), st.binary(max_size=20)), max_size=8))
@settings(max_examples=200, deadline=None)
def test_every_payload_is_either_used_or_rejected(payloads: list[str]) -> None:
    for parse in (parse_minimal, parse_full):
        parsed = parse(payloads)
        used = parsed.frames.height if parse is parse_minimal else parsed.detections.height
        assert used + len(parsed.rejected) == len(payloads)


box = st.integers(min_value=0, max_value=4000)


@given(st.lists(st.tuples(box, box, box, box), max_size=6))
@settings(max_examples=100, deadline=None)
def test_minimal_boxes_round_trip(corners: list[tuple[int, int, int, int]]) -> None:
    boxes = [(min(a, c), min(b, d), max(a, c), max(b, d)) for a, b, c, d in corners]
    objects = [f"{i}|{x0}|{y0}|{x1}|{y1}|Person" for i, (x0, y0, x1, y1) in enumerate(boxes)]
    parsed = parse_minimal([minimal("CTR-CAM01", "1", TS, objects)])
    assert parsed.rejected == []
    got = parsed.detections.select("left", "top", "width", "height").rows()
    assert got == [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes]
