"""Parsers for what an existing DeepStream deployment already sends through nvmsgconv.

Two JSON schemas come out of Gst-nvmsgconv (``payload-type`` 0 and 1), both written by
``sources/libs/nvmsgconv/deepstream_schema/`` (``eventmsg_payload.cpp`` for
``NvDsEventMsgMeta``, ``dsmeta_payload.cpp`` for ``msg2p-newapi``):

- **full** (``PAYLOAD_DEEPSTREAM``): one object per message::

    {"messageid": "…", "mdsversion": "1.0", "@timestamp": "2021-03-31T20:11:07.742Z",
     "place": {…}, "sensor": {"id": "CAMERA_ID", …}, "analyticsModule": {…},
     "object": {"id": "12", "speed": 0.0, "direction": 0.0, "orientation": 0.0,
                "person": {"age": 45, …, "confidence": 0.9},
                "bbox": {"topleftx": 147, "toplefty": 16, "bottomrightx": 305,
                         "bottomrighty": 343},
                "location": {…}, "coordinate": {…}},
     "event": {"id": "…", "type": "entry"}, "videoPath": ""}

  The object's type is the one key of ``object`` that holds the type's attributes (``person``,
  ``vehicle``, ``face``, or the label with ``msg2p-newapi``). The schema has no frame id, so a
  frame is identified by its ``@timestamp``; nvmsgconv stamps each message when it makes it, so
  this holds only when the deployment stamps every object of a frame with the frame's time.
- **minimal** (``PAYLOAD_DEEPSTREAM_MINIMAL``): one frame per message::

    {"version": "4.0", "id": "<frame id>", "@timestamp": "2018-04-11T04:59:59.828Z",
     "sensorId": "sensor-id",
     "objects": ["<trackingId>|<left>|<top>|<right>|<bottom>|<label>[|#|<attributes…>]"]}

Parsing is strict and never raises on bad input: a payload that is not JSON, lacks a key, has a
wrong type or a bad number is rejected whole, with the reason. Boxes are in the pixels of the
sending pipeline (nvstreammux's output); `to_messages` takes them as camera pixels, so the
sender's muxer should run at the camera's resolution.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from crowdwatch.site import Site
from crowdwatch.video.messages import CameraGeometry, CameraMessage, RoiCount, foot_points

DETECTION_SCHEMA: dict[str, pl.DataType] = {
    "camera_id": pl.String(),
    "ts_ms": pl.Int64(),
    "frame_key": pl.String(),
    "object_id": pl.String(),
    "label": pl.String(),
    "left": pl.Float64(),
    "top": pl.Float64(),
    "width": pl.Float64(),
    "height": pl.Float64(),
}
FRAME_SCHEMA: dict[str, pl.DataType] = {
    "camera_id": pl.String(),
    "ts_ms": pl.Int64(),
    "frame_key": pl.String(),
}

#: Keys of a full-schema ``object`` that are not its type.
_OBJECT_FIELDS = frozenset(
    {"id", "speed", "direction", "orientation", "bbox", "location", "coordinate", "signature"}
    | {"maskoutline", "embedding", "pose", "gaze", "lipActivity", "dir", "info"}
)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BBOX_KEYS = ("topleftx", "toplefty", "bottomrightx", "bottomrighty")


@dataclass(frozen=True)
class StockParse:
    """Parsed payloads.

    Attributes:
        detections: one row per detected object (`DETECTION_SCHEMA`), boxes as left, top,
            width, height.
        rejected: ``(payload, reason)`` for every payload that was not used.
        frames: one row per accepted frame (`FRAME_SCHEMA`), including frames without objects,
            so that `to_messages` can report empty frames.
    """

    detections: pl.DataFrame
    rejected: list[tuple[str, str]]
    frames: pl.DataFrame


class _Rejected(Exception):
    """A payload that cannot be used; the message is the reason."""


@dataclass
class _Columns:
    """Column lists that become the detections and frames tables."""

    rows: dict[str, list[Any]]
    frames: dict[str, list[Any]]

    @classmethod
    def empty(cls) -> _Columns:
        return cls({k: [] for k in DETECTION_SCHEMA}, {k: [] for k in FRAME_SCHEMA})

    def add_frame(self, camera_id: str, ts_ms: int, frame_key: str) -> None:
        for key, value in zip(FRAME_SCHEMA, (camera_id, ts_ms, frame_key), strict=True):
            self.frames[key].append(value)

    def add_detection(self, values: tuple[Any, ...]) -> None:
        for key, value in zip(DETECTION_SCHEMA, values, strict=True):
            self.rows[key].append(value)

    def result(self, rejected: list[tuple[str, str]]) -> StockParse:
        frames = pl.DataFrame(self.frames, schema=FRAME_SCHEMA).unique(maintain_order=True)
        return StockParse(pl.DataFrame(self.rows, schema=DETECTION_SCHEMA), rejected, frames)


def _load(payload: object) -> dict[str, Any]:
    if not isinstance(payload, str):
        raise _Rejected(f"payload is a {type(payload).__name__}, not JSON text")
    try:
        doc = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise _Rejected(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _Rejected(f"not a JSON object: found a {type(doc).__name__}")
    return doc


def _get(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    walked: list[str] = []
    for key in path.split("."):
        if not isinstance(value, dict):
            raise _Rejected(f"'{'.'.join(walked)}' is not an object")
        walked.append(key)
        if key not in value or value[key] is None:
            raise _Rejected(f"missing key '{path}'")
        value = value[key]
    return value


def _text(doc: dict[str, Any], path: str) -> str:
    value = _get(doc, path)
    if not isinstance(value, str):
        raise _Rejected(f"'{path}' must be a string, found {type(value).__name__} {value!r}")
    if not value.strip():
        raise _Rejected(f"'{path}' is empty")
    return value


def _object(doc: dict[str, Any], path: str) -> dict[str, Any]:
    value = _get(doc, path)
    if not isinstance(value, dict):
        raise _Rejected(f"'{path}' must be an object, found {type(value).__name__}")
    return value


def _json_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Rejected(f"'{path}' is not a number: {value!r}")
    return float(value)


def _text_number(text: str, what: str) -> float:
    if not _NUMBER.fullmatch(text) or not math.isfinite(float(text)):
        raise _Rejected(f"{what} is not a number: {text!r}")
    return float(text)


def _timestamp_ms(doc: dict[str, Any]) -> int:
    text = _text(doc, "@timestamp")
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise _Rejected(f"'@timestamp' is not an RFC 3339 time: {text!r}") from None
    if ts.tzinfo is None:
        raise _Rejected(f"'@timestamp' has no UTC offset: {text!r}")
    return (ts - _EPOCH) // timedelta(milliseconds=1)


def _box(corners: list[float], what: str) -> tuple[float, ...]:
    left, top, right, bottom = corners
    if right < left or bottom < top:
        raise _Rejected(f"{what} has its bottom-right corner above or left of its top-left one")
    return left, top, right - left, bottom - top


def _object_type(obj: dict[str, Any]) -> str:
    types = [
        key for key, value in obj.items() if key not in _OBJECT_FIELDS and isinstance(value, dict)
    ]
    if not types:
        raise _Rejected("'object' has no type key (such as 'person' or 'vehicle')")
    if len(types) > 1:
        raise _Rejected(f"'object' has several type keys: {sorted(types)}")
    return types[0]


def parse_full(payloads: Iterable[str]) -> StockParse:
    """Parse full-schema nvmsgconv messages: one detection per accepted message.

    The frame key is the message's ``@timestamp`` as sent; the label is the object's type key.
    """
    columns = _Columns.empty()
    rejected: list[tuple[str, str]] = []
    for payload in payloads:
        try:
            doc = _load(payload)
            ts_ms = _timestamp_ms(doc)
            frame_key = _text(doc, "@timestamp")
            camera_id = _text(doc, "sensor.id")
            obj = _object(doc, "object")
            object_id = _text(doc, "object.id")
            label = _object_type(obj)
            _object(doc, "object.bbox")
            corners = [
                _json_number(_get(doc, f"object.bbox.{k}"), f"object.bbox.{k}") for k in _BBOX_KEYS
            ]
            box = _box(corners, "'object.bbox'")
        except _Rejected as exc:
            rejected.append((str(payload), str(exc)))
            continue
        columns.add_frame(camera_id, ts_ms, frame_key)
        columns.add_detection((camera_id, ts_ms, frame_key, object_id, label, *box))
    return columns.result(rejected)


def _minimal_object(text: object, index: int) -> tuple[str, str, tuple[float, ...]]:
    where = f"objects[{index}]"
    if not isinstance(text, str):
        raise _Rejected(f"{where} must be a string, found {type(text).__name__}")
    fields = text.split("|")
    if len(fields) < 6:
        raise _Rejected(
            f"{where} has {len(fields)} fields, expected trackingId|left|top|right|bottom|label"
        )
    object_id, label = fields[0].strip(), fields[5].strip()
    if not object_id:
        raise _Rejected(f"{where} has an empty tracking id")
    if not label:
        raise _Rejected(f"{where} has an empty label")
    names = ("left", "top", "right", "bottom")
    corners = [_text_number(v, f"{where} {n}") for n, v in zip(names, fields[1:5], strict=True)]
    return object_id, label, _box(corners, where)


def parse_minimal(payloads: Iterable[str]) -> StockParse:
    """Parse minimal-schema nvmsgconv messages: one frame per accepted message.

    The frame key is the message's ``id`` (nvmsgconv writes the frame number there). A frame
    with an empty ``objects`` list is kept in `StockParse.frames`.
    """
    columns = _Columns.empty()
    rejected: list[tuple[str, str]] = []
    for payload in payloads:
        try:
            doc = _load(payload)
            _text(doc, "version")
            ts_ms = _timestamp_ms(doc)
            frame_key = _text(doc, "id")
            camera_id = _text(doc, "sensorId")
            objects = _get(doc, "objects")
            if not isinstance(objects, list):
                raise _Rejected(f"'objects' must be a list, found {type(objects).__name__}")
            parsed = [_minimal_object(item, i) for i, item in enumerate(objects)]
        except _Rejected as exc:
            rejected.append((str(payload), str(exc)))
            continue
        columns.add_frame(camera_id, ts_ms, frame_key)
        for object_id, label, box in parsed:
            columns.add_detection((camera_id, ts_ms, frame_key, object_id, label, *box))
    return columns.result(rejected)


def to_messages(
    detections: pl.DataFrame,
    site: Site,
    *,
    label: str = "Person",
    frames: pl.DataFrame | None = None,
) -> tuple[list[CameraMessage], list[str]]:
    """People per camera and frame, and per ROI, as `CameraMessage`s.

    A detection is a person when its label equals `label`, ignoring case (``person`` in the
    full schema, ``Person`` in the minimal one). Cameras are matched by ``camera_id ==`` site
    camera id. A frame is every ``(camera_id, frame_key)`` seen in `detections` or `frames`
    (pass `StockParse.frames` to report frames without people); its time is the earliest
    ``ts_ms``. The message's ``frame`` is the frame key when it is a number, else the frame's
    position in its camera's time order. Stock messages carry no line crossings.

    Returns:
        The messages in time order, and the sorted camera ids that the site does not know
        (their frames are left out; the caller rejects them).
    """
    missing = [name for name in DETECTION_SCHEMA if name not in detections.columns]
    if missing:
        raise ValueError(f"detections lack columns {missing}; expected {list(DETECTION_SCHEMA)}")
    keys = detections.select("camera_id", "frame_key", "ts_ms")
    if frames is not None:
        keys = pl.concat([keys, frames.select("camera_id", "frame_key", "ts_ms")])
    # (camera_id, frame_key, ts_ms): one row per frame
    frame_table = keys.group_by("camera_id", "frame_key").agg(pl.col("ts_ms").min())
    seen = set(frame_table.get_column("camera_id").to_list())
    unknown = sorted(seen - set(site.camera_by_id))
    people = detections.filter(pl.col("label").str.to_lowercase() == label.lower())

    messages: list[CameraMessage] = []
    for camera_id in sorted(seen - set(unknown)):
        geometry = CameraGeometry(site.camera_by_id[camera_id])
        camera_people = people.filter(pl.col("camera_id") == camera_id)
        boxes = camera_people.select("left", "top", "width", "height").to_numpy()
        members = geometry.roi_members(*foot_points(boxes.astype(np.float64).reshape(-1, 4)))
        roi_columns = [f"roi_{i}" for i in range(len(geometry.roi_ids))]
        # (frame_key, persons, roi_0 … roi_k): people per frame and ROI
        counts = (
            camera_people.select("frame_key")
            .with_columns(
                pl.Series(name, members[:, i], dtype=pl.Boolean)
                for i, name in enumerate(roi_columns)
            )
            .group_by("frame_key")
            .agg(pl.len().alias("persons"), *(pl.col(c).sum() for c in roi_columns))
        )
        # (frame_key, ts_ms, persons, roi_0 … roi_k): every frame of the camera, in time order
        camera_frames = (
            frame_table.filter(pl.col("camera_id") == camera_id)
            .join(counts, on="frame_key", how="left")
            .fill_null(0)
            .sort("ts_ms", "frame_key")
        )
        for position, row in enumerate(camera_frames.iter_rows(named=True)):
            key = row["frame_key"]
            messages.append(
                CameraMessage(
                    camera_id=camera_id,
                    frame=int(key) if key.isdecimal() else position,
                    ts_ms=int(row["ts_ms"]),
                    persons=int(row["persons"]),
                    rois=tuple(
                        RoiCount(roi_id, int(row[column]))
                        for roi_id, column in zip(geometry.roi_ids, roi_columns, strict=True)
                    ),
                )
            )
    messages.sort(key=lambda m: (m.ts_ms, m.camera_id, m.frame))
    return messages, unknown
