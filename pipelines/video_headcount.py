"""Video headcounts: people per camera ROI and zone over short windows, and camera health.

Input is micro-batches of camera messages (JSON lines: see `crowdwatch.video.messages`) from the
DeepStream probe, the CPU detector or recorded detections, or of stock DeepStream nvmsgconv
payloads (full or minimal schema), which are counted into the same messages. A batch
is decoded and validated at once; bad messages go to ``rejected_events``. Per station, a state
keeps the last two minutes of per-frame ROI counts and writes, for every window the batch
touched: per camera ROI the frames, mean, max and p90 of the per-frame counts
(``video_roi_windows``); per zone the cameras combined — summed for disjoint ROIs, max for
overlapping ones, as the zone says — with line crossings and rates (``video_zone_metrics``);
each camera's frame rate and state, online, offline or stuck (``camera_health``,
``camera_status``). Raw per-frame counts go to ``video_frames``.

Run: ``crowdwatch replay messages.jsonl --pipeline video_headcount`` or
``CROWDWATCH_INPUT_PATH=messages.jsonl python -m bytewax.run "pipelines.video_headcount:build()"``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from crowdwatch.batches import Check, RawBatch, read_errors, split_rows
from crowdwatch.flow import now_ms, one_source_flow
from crowdwatch.settings import Settings
from crowdwatch.site import Site
from crowdwatch.video.headcount import StationVideo
from crowdwatch.video.messages import CameraDirectory, VideoParsed, parse_video
from crowdwatch.warehouse.client import TableRows
from detectors.deepstream import stock

StationBatch = tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]
"""A station's messages, ROI rows and line rows from one batch."""


def by_station(parsed: VideoParsed) -> Iterable[tuple[str, StationBatch]]:
    """Split a batch per station, the key of the window state."""
    if parsed.messages.height == 0:
        return []
    rois = parsed.rois.partition_by("station_id", as_dict=True)
    lines = parsed.lines.partition_by("station_id", as_dict=True)
    return [
        (
            str(key[0]),
            (
                messages,
                rois.get(key, parsed.rois.clear()),
                lines.get(key, parsed.lines.clear()),
            ),
        )
        for key, messages in parsed.messages.partition_by("station_id", as_dict=True).items()
    ]


STOCK_PARSERS = {"deepstream_full": stock.parse_full, "deepstream_minimal": stock.parse_minimal}
STOCK_SENSOR = {"deepstream_full": "$.sensor.id", "deepstream_minimal": "$.sensorId"}


def parse_stock(
    batch: RawBatch, site: Site, directory: CameraDirectory, received_at_ms: int
) -> VideoParsed:
    """Stock DeepStream payloads → people per camera and frame → the camera message path.

    Payloads that do not parse, and those of cameras the site does not know, are rejected with
    the reason. A full-schema frame (one message per object) must arrive within one batch.
    """
    payloads = batch.frame["payload"].cast(pl.String).fill_null("")
    unread = batch.frame.with_columns(read_errors(batch.frame).alias("_unread"))["_unread"]
    # a line that could not be read is rejected as such, whatever its readable part says
    parsed = STOCK_PARSERS[batch.kind](payloads.set(unread.is_not_null(), "").to_list())
    messages, unknown = stock.to_messages(parsed.detections, site, frames=parsed.frames)
    lines = pl.DataFrame(
        {"payload": [m.to_json(site.tz) for m in messages]}, schema={"payload": pl.String}
    )
    video = parse_video(
        RawBatch(batch.source, "video", lines, span_ms=batch.span_ms), directory, received_at_ms
    )
    reasons = {payload: reason for payload, reason in parsed.rejected}
    sensors = payloads.str.json_path_match(STOCK_SENSOR[batch.kind])
    rows = pl.DataFrame(
        {"_row": range(payloads.len()), "payload": payloads, "sensor": sensors, "unread": unread}
    )
    checks: list[Check] = [
        (pl.col("unread").is_not_null(), pl.col("unread")),
        (
            pl.col("payload").is_in(list(reasons)),
            pl.col("payload").replace_strict(reasons, default=None),
        ),
        (pl.col("sensor").is_in(unknown), pl.format("unknown camera '{}'", "sensor")),
    ]
    _, rejected = split_rows(rows, checks, pl.col("payload"), batch, received_at_ms)
    return VideoParsed(
        video.messages, video.rois, video.lines, pl.concat([rejected, video.rejected])
    )


def parse_camera_batch(
    batch: RawBatch, site: Site, directory: CameraDirectory, received_at_ms: int
) -> VideoParsed:
    """Parse our camera messages or stock DeepStream payloads."""
    if batch.kind in STOCK_PARSERS:
        return parse_stock(batch, site, directory, received_at_ms)
    return parse_video(batch, directory, received_at_ms)


def late_rejects(late: pl.DataFrame, horizon_s: int) -> pl.DataFrame:
    """Messages too late to correct their windows, as ``rejected_events`` rows."""
    return late.select(
        pl.lit(now_ms()).cast(pl.Datetime("ms", "UTC")).alias("received_at"),
        pl.lit("video_headcount").alias("source"),
        pl.format("late {} frame {} at {}", "camera_id", "frame", "ts_ms").alias("position"),
        pl.lit(f"later than the video horizon of {horizon_s} s behind the station's newest").alias(
            "reason"
        ),
        pl.struct("camera_id", "frame", "ts_ms").struct.json_encode().alias("payload"),
    )


class StationLogic(StatefulBatchLogic[StationBatch, TableRows, StationVideo | None]):
    """Feeds a station's batches to its `StationVideo`; wakes up to notice silent cameras.

    Bytewax builds the logic without its key, so the state is created on the first batch,
    from the station id in it.
    """

    def __init__(self, site: Site, settings: Settings, state: StationVideo | None) -> None:
        self.site = site
        self.settings = settings
        self.state = state

    def on_batch(self, values: list[StationBatch]) -> tuple[Iterable[TableRows], bool]:
        """Update the windows with each batch; emit the changed rows per table."""
        out: list[TableRows] = []
        for messages, rois, lines in values:
            if self.state is None:
                self.state = StationVideo(
                    str(messages["station_id"][0]),
                    self.site,
                    window_s=self.settings.video_window_s,
                    horizon_s=self.settings.video_horizon_s,
                )
            tables, late = self.state.update(messages, rois, lines, time.time_ns())
            out.extend((table, rows) for table, rows in tables.items() if rows.height)
            if late.height:
                out.append(("rejected_events", late_rejects(late, self.settings.video_horizon_s)))
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[TableRows], bool]:
        """Mark cameras offline that went quiet in wall-clock time."""
        if self.state is None:
            return [], StatefulBatchLogic.RETAIN
        rows = self.state.silence(time.time_ns())
        return ([("camera_status", rows)] if rows.height else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """When the next camera could time out."""
        at = None if self.state is None else self.state.next_silence_check_ms()
        return None if at is None else datetime.fromtimestamp(at / 1000, UTC)

    def snapshot(self) -> StationVideo | None:
        """A copy of the state (the live one keeps changing)."""
        return copy.deepcopy(self.state)


@operator
def video_rows(
    step_id: str, up: Stream[RawBatch], site: Site, settings: Settings
) -> Stream[TableRows]:
    """Camera messages → video, camera health and ``rejected_events`` rows."""
    directory = CameraDirectory.from_site(
        site, settings.time_bounds(), max_persons=settings.max_camera_persons
    )
    parsed = op.map("parse", up, lambda b: parse_camera_batch(b, site, directory, now_ms()))
    # VideoParsed(messages, rois, lines, rejected)
    rejected = op.filter_map(
        "rejected", parsed, lambda p: ("rejected_events", p.rejected) if p.rejected.height else None
    )
    # ("rejected_events", frame)
    per_station = op.flat_map("by_station", parsed, by_station)
    # (station_id, (messages, rois, lines) of that station)
    station_rows = op.stateful_batch(
        "station_video", per_station, lambda resume: StationLogic(site, settings, resume)
    )
    # (station_id, (table, frame))
    return op.merge("rows", rejected, op.key_rm("tables", station_rows))


def build(
    settings: Settings | None = None,
    *,
    source: Source[RawBatch] | None = None,
    sink: Sink[TableRows] | None = None,
) -> Dataflow:
    """Build the video headcount dataflow.

    Args:
        settings: defaults to ``Settings()`` from the environment.
        source: `RawBatch` items of camera messages; defaults to replaying
            ``settings.input_path``.
        sink: ``(table, frame)`` items; defaults to the warehouse of ``settings``.
    """
    return one_source_flow(
        "video_headcount",
        video_rows,
        settings,
        source,
        sink,
        kinds=("video", "deepstream_full", "deepstream_minimal"),
    )
