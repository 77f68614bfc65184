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

import json
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import shapely

from crowdwatch.site import Camera, CountingLine

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
        whole = [(0.0, 0.0), (float(width), 0.0), (float(width), float(height)), (0.0, float(height))]
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
        return np.stack(
            [shapely.intersects_xy(polygon, x, y) for polygon in self.polygons], axis=1
        )

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


def line_crossings(line: CountingLine, before: Floats, after: Floats) -> tuple[int, int]:
    """How many of the moves ``before[i] → after[i]`` cross ``line`` inwards and outwards.

    A move crosses when its start and end are strictly on opposite sides of the line and the
    crossing point lies within the line segment. Inwards is the side ``in_direction`` points to.
    """
    if before.size == 0:
        return 0, 0
    x1, y1, x2, y2 = line.line_px
    d = np.array([x2 - x1, y2 - y1])
    side_before = d[0] * (before[:, 1] - y1) - d[1] * (before[:, 0] - x1)
    side_after = d[0] * (after[:, 1] - y1) - d[1] * (after[:, 0] - x1)
    crossed = side_before * side_after < 0
    # where along the line the move crosses it: t in [0, 1] means within the segment
    move = after - before
    denominator = move[:, 0] * d[1] - move[:, 1] * d[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((before[:, 0] - x1) * move[:, 1] - (before[:, 1] - y1) * move[:, 0]) / -denominator
    crossed &= (t >= 0) & (t <= 1)
    inward = np.array(IN_VECTORS[line.in_direction])
    going_in = move @ inward > 0
    return int((crossed & going_in).sum()), int((crossed & ~going_in).sum())
