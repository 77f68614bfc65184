"""Camera messages and the image geometry every video source shares.

Every video source — the DeepStream probe, the CPU fallback detector, replays of recorded
detections, stock DeepStream messages — ends in the same compact `CameraMessage`: one per camera
and frame (or per publishing interval), with people per region of interest (ROI) and counting
line crossings since the previous message. Its JSON form is what travels over a broker::

    {"camera_id": "CTR-CAM01", "frame": 1234, "ts": "2026-11-20T08:00:00.040+08:00",
     "persons": 14, "rois": [{"id": "platform-L1", "persons": 12}],
     "lines": [{"id": "gate-line", "in": 1, "out": 0}]}

``boxes`` (``[left, top, width, height, confidence, track_id]``) is optional.

A person is inside an ROI when the bottom centre of their box — where they stand — is inside
the ROI polygon. A tracked person crosses a line when that point moves from one side of the
line to the other between two frames, within the line's extent; the direction decides in or out.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json
import shapely

from crowdwatch.batches import Check, RawBatch, TimeBounds, payload_lines, split_rows
from crowdwatch.isotime import epoch_ms
from crowdwatch.site import Camera, CountingLine, Site

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

IN_VECTORS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0)}


@dataclass(frozen=True)
class RoiCount:
    """People in one region of interest."""

    roi_id: str
    persons: int


@dataclass(frozen=True)
class LineCount:
    """Crossings of one counting line since the previous message."""

    line_id: str
    entered: int
    exited: int


@dataclass(frozen=True)
class Box:
    """A detected person: box in pixels, confidence, track id when tracked."""

    left: float
    top: float
    width: float
    height: float
    confidence: float
    track_id: int | None = None


@dataclass(frozen=True)
class CameraMessage:
    """What a camera reports about one frame."""

    camera_id: str
    frame: int
    ts_ms: int
    persons: int
    rois: tuple[RoiCount, ...]
    lines: tuple[LineCount, ...] = ()
    boxes: tuple[Box, ...] = field(default=())

    def to_dict(self, timezone: ZoneInfo) -> dict[str, object]:
        """The JSON-ready form, with the capture time in ``timezone``."""
        ts = datetime.fromtimestamp(self.ts_ms / 1000, timezone).isoformat(timespec="milliseconds")
        out: dict[str, object] = {
            "camera_id": self.camera_id,
            "frame": self.frame,
            "ts": ts,
            "persons": self.persons,
            "rois": [{"id": r.roi_id, "persons": r.persons} for r in self.rois],
            "lines": [{"id": c.line_id, "in": c.entered, "out": c.exited} for c in self.lines],
        }
        if self.boxes:
            out["boxes"] = [
                [b.left, b.top, b.width, b.height, b.confidence, b.track_id] for b in self.boxes
            ]
        return out

    def to_json(self, timezone: ZoneInfo) -> str:
        """One JSON line."""
        return json.dumps(self.to_dict(timezone), separators=(",", ":"))


def foot_points(boxes: Floats) -> tuple[Floats, Floats]:
    """Bottom-centre points of ``(n, 4)`` boxes given as left, top, width, height."""
    return boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3]


class CameraGeometry:
    """A camera's ROI polygons and counting lines, ready for vectorised tests."""

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        width, height = camera.resolution
        whole = [
            (0.0, 0.0),
            (float(width), 0.0),
            (float(width), float(height)),
            (0.0, float(height)),
        ]
        self.roi_ids = [roi.id for roi in camera.rois]
        self.polygons = [
            shapely.Polygon(roi.polygon_px if roi.polygon_px is not None else whole)
            for roi in camera.rois
        ]
        for polygon in self.polygons:
            shapely.prepare(polygon)
        self.line_ids = [line.id for line in camera.lines]

    def roi_members(self, x: Floats, y: Floats) -> npt.NDArray[np.bool_]:
        """``(n_points, n_rois)``: whether each point is inside each ROI (edges count)."""
        if x.size == 0:
            return np.zeros((0, len(self.polygons)), dtype=bool)
        return np.stack([shapely.intersects_xy(polygon, x, y) for polygon in self.polygons], axis=1)

    def roi_counts(self, boxes: Floats) -> list[RoiCount]:
        """People per ROI for one frame's ``(n, 4)`` boxes."""
        members = self.roi_members(*foot_points(boxes))
        counts = members.sum(axis=0)
        return [RoiCount(roi, int(n)) for roi, n in zip(self.roi_ids, counts, strict=True)]

    def crossings(self, before: Floats, after: Floats) -> list[LineCount]:
        """Line crossings of tracked points that moved from ``before`` to ``after`` (``(n, 2)``)."""
        return [
            LineCount(line.id, *line_crossings(line, before, after)) for line in self.camera.lines
        ]


def crossing_directions(line: CountingLine, before: Floats, after: Floats) -> Ints:
    """Per move ``before[i] → after[i]``: +1 if it crosses ``line`` inwards, -1 outwards, else 0.

    A move crosses when its start and end are on opposite sides of the line and the crossing
    point lies within the line segment; a point on the line counts as on its non-negative side.
    Inwards is the side ``in_direction`` points to.
    """
    if before.size == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = line.line_px
    d = np.array([x2 - x1, y2 - y1])
    side_before = d[0] * (before[:, 1] - y1) - d[1] * (before[:, 0] - x1)
    side_after = d[0] * (after[:, 1] - y1) - d[1] * (after[:, 0] - x1)
    # a point on the line belongs to the non-negative side, so a path that stops on the line
    # and goes on is counted once, when it leaves it
    crossed = (side_before >= 0) != (side_after >= 0)
    # where along the line the move crosses it: t in [0, 1] means within the segment
    move = after - before
    denominator = move[:, 0] * d[1] - move[:, 1] * d[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((before[:, 0] - x1) * move[:, 1] - (before[:, 1] - y1) * move[:, 0]) / -denominator
    crossed &= (t >= 0) & (t <= 1)
    going_in = move @ np.array(IN_VECTORS[line.in_direction]) > 0
    return np.where(crossed, np.where(going_in, 1, -1), 0).astype(np.int64)


def line_crossings(line: CountingLine, before: Floats, after: Floats) -> tuple[int, int]:
    """How many of the moves ``before[i] → after[i]`` cross ``line`` inwards and outwards."""
    directions = crossing_directions(line, before, after)
    return int((directions > 0).sum()), int((directions < 0).sum())


# --- decoding camera messages in batches -------------------------------------------------

MESSAGE_SCHEMA = pa.schema(
    [
        ("camera_id", pa.string()),
        ("frame", pa.int64()),
        ("ts", pa.string()),
        ("persons", pa.int64()),
        ("rois", pa.list_(pa.struct([("id", pa.string()), ("persons", pa.int64())]))),
        (
            "lines",
            pa.list_(pa.struct([("id", pa.string()), ("in", pa.int64()), ("out", pa.int64())])),
        ),
    ]
)
_PARSE = pa_json.ParseOptions(explicit_schema=MESSAGE_SCHEMA, unexpected_field_behavior="ignore")
_INTEGERS = ("frame", "persons")
_INT64_MAX = 2**63 - 1


def _is_int64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _INT64_MAX


def _type_error(message: object) -> str | None:
    """Why a decoded JSON value does not fit `MESSAGE_SCHEMA`, or None when it does."""
    if not isinstance(message, dict):
        return "not a JSON object"
    if not isinstance(message.get("camera_id", ""), str) or not isinstance(
        message.get("ts", ""), str
    ):
        return "camera_id and ts must be strings"
    for name in _INTEGERS:
        value = message.get(name, 0)
        if value is not None and not _is_int64(value):
            return f"{name} must be a 64-bit integer"
    for name, keys in (("rois", ("persons",)), ("lines", ("in", "out"))):
        items = message.get(name, [])
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return f"{name} must be a list of objects"
        for item in items:
            if not isinstance(item.get("id"), str):
                return f"every entry of {name} needs a string id"
            for key in keys:
                if not _is_int64(item.get(key)):
                    return f"{name} entry {item.get('id')!r}: {key} must be a 64-bit integer"
    return None


def decode_messages(payloads: pl.Series) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Decode JSON camera messages; return the decodable ones and ``(index, reason)`` of the rest.

    The whole batch goes through Arrow's JSON reader at once when every line opens an object.
    Only when that fails (a bad line somewhere) is each line checked on its own, so a feed of
    garbage costs its own batches time but never loses a good message. The table has a ``_row``
    column: each message's index.
    """
    rows = pa.array(range(payloads.len()), pa.int64())
    # only lines that open an object go to Arrow's reader: a line ``null`` is read as an empty
    # row, and among other rows it crashed the process (pyarrow 2026, found by Hypothesis)
    if (
        payloads.len()
        and payloads.null_count() == 0
        and payloads.str.strip_chars_start().str.starts_with("{").all()
    ):
        data = payloads.str.join("\n").item().encode()
        try:
            table = pa_json.read_json(io.BytesIO(data), parse_options=_PARSE)
            if table.num_rows == payloads.len():
                return table.append_column("_row", rows), []
        except pa.ArrowInvalid:
            pass
    good: list[dict[str, object]] = []
    kept: list[int] = []
    bad: list[tuple[int, str]] = []
    for index, line in enumerate(payloads.to_list()):
        try:
            message = json.loads(line or "")
        except json.JSONDecodeError:
            bad.append((index, "not valid JSON"))
            continue
        if (reason := _type_error(message)) is not None:
            bad.append((index, reason))
            continue
        good.append(message)
        kept.append(index)
    table = pa.Table.from_pylist(good, schema=MESSAGE_SCHEMA)
    return table.append_column("_row", pa.array(kept, pa.int64())), bad


@dataclass(frozen=True)
class CameraDirectory:
    """What parsing needs from the site about cameras, as plain mappings."""

    camera_station: dict[str, str]
    roi_zone: dict[str, str]
    line_zone: dict[str, str]
    timezone: str
    bounds: TimeBounds | None = None
    max_persons: int = 5_000

    @classmethod
    def from_site(
        cls, site: Site, bounds: TimeBounds | None = None, *, max_persons: int = 5_000
    ) -> CameraDirectory:
        """Build the mappings; ROIs and lines are keyed ``camera_id/roi_id``.

        ``bounds`` bound event times (none without), ``max_persons`` the people (and line
        crossings) one camera or ROI may report in one message.
        """
        return cls(
            camera_station={c.id: c.station for c in site.cameras},
            roi_zone={f"{c.id}/{r.id}": r.zone for c in site.cameras for r in c.rois},
            line_zone={f"{c.id}/{line.id}": line.zone for c in site.cameras for line in c.lines},
            timezone=site.site.timezone,
            bounds=bounds,
            max_persons=max_persons,
        )


@dataclass(frozen=True)
class VideoParsed:
    """One batch of camera messages, validated and flattened.

    Attributes:
        messages: ``camera_id, station_id, frame, ts_ms, persons`` per message.
        rois: ``camera_id, station_id, roi_id, zone_id, frame, ts_ms, persons`` per ROI.
        lines: ``camera_id, station_id, line_id, zone_id, ts_ms, entered, exited`` per line.
        rejected: rows for ``rejected_events``.
    """

    messages: pl.DataFrame
    rois: pl.DataFrame
    lines: pl.DataFrame
    rejected: pl.DataFrame


def _flatten(
    frame: pl.DataFrame,
    column: str,
    zones: dict[str, str],
    counts: tuple[str, ...],
    max_count: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ROI or line entries of every message, one row each, with their zone.

    Also, per message, the first problem among its entries (``_row``, ``_error``).
    """
    items = (
        frame.select("_row", "camera_id", "station_id", "frame", "ts_ms", column)
        .explode(column)
        .filter(pl.col(column).is_not_null())
        .unnest(column)
        .with_columns(
            pl.concat_str("camera_id", pl.lit("/"), "id")
            .replace_strict(zones, default=None, return_dtype=pl.String)
            .alias("zone_id")
        )
    )
    kind = "ROI" if column == "rois" else "line"
    negative = pl.any_horizontal(pl.col(c) < 0 for c in counts)
    too_many = pl.any_horizontal(pl.col(c) > max_count for c in counts)
    errors = (
        items.filter(pl.col("zone_id").is_null() | negative | too_many)
        .select(
            "_row",
            pl.when(pl.col("zone_id").is_null())
            .then(pl.format(f"unknown {kind} '{{}}' for camera '{{}}'", "id", "camera_id"))
            .when(negative)
            .then(pl.format(f"{kind} '{{}}' has a negative count", "id"))
            .otherwise(pl.format(f"{kind} '{{}}' counts more than {max_count}", "id"))
            .alias("_error"),
        )
        .group_by("_row")
        .agg(pl.col("_error").first())
    )
    return items, errors


def parse_video(batch: RawBatch, directory: CameraDirectory, received_at_ms: int) -> VideoParsed:
    """Validate a batch of JSON camera messages and flatten them per ROI and per line."""
    if not payload_lines(batch.frame):
        raise ValueError("camera messages come as JSON lines (one payload column)")
    payloads = batch.frame["payload"].cast(pl.String)
    if "_read_error" in batch.frame.columns:
        # a line that could not be read is rejected as such, whatever its readable part says
        unread = batch.frame["_read_error"]
        table, undecodable = decode_messages(payloads.set(unread.is_not_null(), None))
        undecodable = [(i, unread[i] or reason) for i, reason in undecodable]
    else:
        table, undecodable = decode_messages(payloads)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(
        epoch_ms(frame["ts"], directory.timezone).alias("ts_ms"),
        pl.col("camera_id")
        .replace_strict(directory.camera_station, default=None, return_dtype=pl.String)
        .alias("station_id"),
        pl.col("lines").fill_null(pl.lit([], dtype=frame.schema["lines"])),
    )
    most = directory.max_persons
    rois, roi_errors = _flatten(frame, "rois", directory.roi_zone, ("persons",), most)
    lines, line_errors = _flatten(frame, "lines", directory.line_zone, ("in", "out"), most)
    frame = frame.join(roi_errors.rename({"_error": "_roi_error"}), on="_row", how="left").join(
        line_errors.rename({"_error": "_line_error"}), on="_row", how="left"
    )
    checks: list[Check] = [
        (pl.col("camera_id").is_null(), "camera_id missing"),
        (pl.col("station_id").is_null(), pl.format("unknown camera '{}'", "camera_id")),
        (pl.col("ts").is_null(), "ts missing"),
        (pl.col("ts_ms").is_null(), pl.format("ts '{}' is not an ISO 8601 time", "ts")),
        *(
            []
            if directory.bounds is None
            else directory.bounds.checks(pl.col("ts_ms"), batch, received_at_ms)
        ),
        (pl.col("frame").is_null(), "frame missing"),
        (pl.col("frame") < 0, "frame is negative"),
        (pl.col("persons").is_null(), "persons missing"),
        (pl.col("persons") < 0, "persons is negative"),
        (pl.col("persons") > most, f"persons is more than {most}"),
        (pl.col("rois").is_null(), "rois missing"),
        (pl.col("_roi_error").is_not_null(), pl.col("_roi_error")),
        (pl.col("_line_error").is_not_null(), pl.col("_line_error")),
    ]
    payload_expr = pl.lit(payloads.fill_null("")).gather(pl.col("_row"))
    good, rejected = split_rows(frame, checks, payload_expr, batch, received_at_ms)
    if undecodable:
        rows, reasons = zip(*undecodable, strict=True)
        broken = pl.DataFrame({"_row": list(rows), "_reason": list(reasons)})
        _, more = split_rows(
            broken, [(pl.lit(True), pl.col("_reason"))], payload_expr, batch, received_at_ms
        )
        rejected = pl.concat([rejected, more])
    keys = ("camera_id", "station_id")
    kept = good.select("_row")
    rois = rois.join(kept, on="_row", how="semi").select(
        *keys, pl.col("id").alias("roi_id"), "zone_id", "frame", "ts_ms", "persons"
    )
    lines = lines.join(kept, on="_row", how="semi").select(
        *keys,
        pl.col("id").alias("line_id"),
        "zone_id",
        "ts_ms",
        pl.col("in").alias("entered"),
        pl.col("out").alias("exited"),
    )
    messages = good.select(*keys, "frame", "ts_ms", "persons")
    return VideoParsed(messages=messages, rois=rois, lines=lines, rejected=rejected)
