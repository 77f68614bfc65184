"""Recorded detections in MOT Challenge format as a camera's message stream.

A MOT file has one row per detected person per frame: ``frame, track_id, left, top, width,
height, confidence, …`` (``track_id`` is -1 for detections without a tracker). `mot_messages`
turns it into one `CameraMessage` per frame for a camera of the site: people per ROI and, for
tracked files, counting-line crossings.

Counting rules (the same the live sources follow): a detection counts as a person from
``min_confidence`` up; a track crosses a line when its foot point moves across it between two
of its detections at most ``max_gap_s`` apart (a person briefly hidden still crossed; a longer
gap is more likely a new person with a reused id).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from crowdwatch.site import Camera
from crowdwatch.video.messages import (
    CameraGeometry,
    CameraMessage,
    LineCount,
    RoiCount,
    crossing_directions,
    foot_points,
)

MOT_COLUMNS = ["frame", "track_id", "left", "top", "width", "height", "confidence"]


class MotError(ValueError):
    """A file that is not in MOT format; the message names the file and the problem."""


def read_mot(path: Path) -> pl.DataFrame:
    """Read a MOT file: ``frame, track_id, left, top, width, height, confidence``."""
    try:
        raw = pl.read_csv(path, has_header=False, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise MotError(f"{path}: cannot read: {exc}") from exc
    if raw.width < 7:
        raise MotError(f"{path}: expected at least 7 comma-separated columns, found {raw.width}")
    frame = raw.select(
        pl.col(raw.columns[i]).str.strip_chars().cast(dtype, strict=False).alias(name)
        for i, (name, dtype) in enumerate(
            zip(MOT_COLUMNS, [pl.Int64, pl.Int64, *[pl.Float64] * 5], strict=True)
        )
    )
    bad = frame.filter(pl.any_horizontal(pl.all().is_null()) | (pl.col("frame") < 1))
    if bad.height:
        raise MotError(f"{path}: {bad.height} rows with missing or non-numeric fields")
    return frame


def mot_messages(
    detections: pl.DataFrame,
    camera: Camera,
    *,
    start_ms: int,
    frames: int | None = None,
    min_confidence: float = 0.5,
    max_gap_s: float = 1.0,
) -> list[CameraMessage]:
    """One message per frame ``1..frames`` (default: the last frame in the file).

    Frames without detections are sent too, with zero people: a camera that sees nobody
    still reports.
    """
    geometry = CameraGeometry(camera)
    people = detections.filter(pl.col("confidence") >= min_confidence)
    x, y = foot_points(people.select("left", "top", "width", "height").to_numpy())
    people = people.with_columns(pl.Series("x", x), pl.Series("y", y))
    last = frames if frames is not None else int(detections["frame"].to_numpy().max(initial=0))
    members = geometry.roi_members(x, y)
    per_roi = np.zeros((last + 1, len(geometry.roi_ids)), dtype=np.int64)
    np.add.at(per_roi, people["frame"].to_numpy(), members.astype(np.int64))
    persons = np.bincount(people["frame"].to_numpy(), minlength=last + 1)

    crossings = np.zeros((last + 1, len(camera.lines), 2), dtype=np.int64)
    tracked = people.filter(pl.col("track_id") >= 0).sort("track_id", "frame")
    moves = tracked.with_columns(
        pl.col("x").shift(1).over("track_id").alias("x0"),
        pl.col("y").shift(1).over("track_id").alias("y0"),
        pl.col("frame").shift(1).over("track_id").alias("frame0"),
    ).filter(
        pl.col("frame0").is_not_null()
        & ((pl.col("frame") - pl.col("frame0")) <= max(1, round(max_gap_s * camera.fps)))
    )
    before = moves.select("x0", "y0").to_numpy()
    after = moves.select("x", "y").to_numpy()
    at = moves["frame"].to_numpy()
    for i, line in enumerate(camera.lines):
        direction = crossing_directions(line, before, after)
        np.add.at(crossings[:, i, 0], at, direction > 0)
        np.add.at(crossings[:, i, 1], at, direction < 0)

    frame_ms = 1000 / camera.fps
    return [
        CameraMessage(
            camera_id=camera.id,
            frame=f,
            ts_ms=start_ms + round((f - 1) * frame_ms),
            persons=int(persons[f]),
            rois=tuple(RoiCount(roi, int(per_roi[f, r])) for r, roi in enumerate(geometry.roi_ids)),
            lines=tuple(
                LineCount(line.id, int(crossings[f, i, 0]), int(crossings[f, i, 1]))
                for i, line in enumerate(camera.lines)
            ),
        )
        for f in range(1, last + 1)
    ]
