"""DeepStream frames → compact `CameraMessage`s, at most one per camera per interval.

Pure Python: it reads the `FrameAnalytics` dataclasses of `detectors.deepstream.adapter`, so it
runs (and is tested) without DeepStream.

- People per ROI are nvdsanalytics' ``objInROIcnt`` of the latest frame, whose keys are the ROI
  ids (the config writes ``roi-<ROI id>``; nvdsanalytics reports the label after ``roi-``; a key
  that still carries the ``roi-`` prefix is accepted too). An ROI that nvdsanalytics did not
  report is left out of the message rather than reported as empty.
- Line crossings are the sums of ``objLCCurrCnt`` (crossings in that frame) over every frame
  since the previous published message, labels ``<line id>-in`` / ``<line id>-out`` →
  `LineCount` entered / exited. Per-frame counts are used rather than the cumulative ones, so
  nothing is lost or counted twice between published messages.
- Persons are the objects of the person class in the latest frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from crowdwatch.site import Camera, Site
from crowdwatch.video.messages import Box, CameraMessage, LineCount, RoiCount
from detectors.deepstream.adapter import UNTRACKED_OBJECT_ID, FrameAnalytics
from detectors.deepstream.analytics_config import IN_SUFFIX, OUT_SUFFIX

ROI_PREFIX = "roi-"
LINE_PREFIX = "line-crossing-"


def capture_time_ms(frame: FrameAnalytics, clock_ms: int) -> int:
    """When the frame was captured, in ms since the Unix epoch.

    ``ntp_timestamp`` is ns since the Unix epoch whenever a time was attached to the frame
    (nvstreammux's host time with ``attach-sys-ts``, or the RTSP source's NTP time from RTCP
    sender reports); it is 0 otherwise, and then `clock_ms` (the caller's wall clock) is used.
    """
    if frame.ntp_timestamp_ns > 0:
        return frame.ntp_timestamp_ns // 1_000_000
    return clock_ms


@dataclass
class _CameraState:
    """What one camera has seen since its last published message."""

    camera: Camera
    line_labels: dict[str, tuple[str, bool]]  # label → (line id, entered?)
    crossings: dict[str, list[int]] = field(default_factory=dict)  # line id → [in, out]
    last_published_ms: int | None = None

    def reset_crossings(self) -> None:
        self.crossings = {line.id: [0, 0] for line in self.camera.lines}


class MessageBuilder:
    """Turns a stream of `FrameAnalytics` into `CameraMessage`s.

    Args:
        site: the site whose cameras the streams show.
        stream_map: stream index (``source_id``) → camera id, as
            `detectors.deepstream.analytics_config.stream_map` returns it.
        interval_ms: at most one message per camera per this many ms of capture time.
        person_class_id: the detector's person class (PeopleNet: 0).
        include_boxes: add the person boxes to each message.
        muxer_size: nvstreammux's output width and height, where DeepStream's boxes live; boxes
            are scaled to each camera's resolution. None: the boxes are camera pixels already.
    """

    def __init__(
        self,
        site: Site,
        stream_map: Mapping[int, str],
        *,
        interval_ms: int = 200,
        person_class_id: int = 0,
        include_boxes: bool = False,
        muxer_size: tuple[int, int] | None = None,
    ) -> None:
        if interval_ms < 0:
            raise ValueError(f"interval_ms must be >= 0, got {interval_ms}")
        unknown = sorted(set(stream_map.values()) - set(site.camera_by_id))
        if unknown:
            raise ValueError(f"stream_map names cameras that are not in the site: {unknown}")
        self.interval_ms = interval_ms
        self.person_class_id = person_class_id
        self.include_boxes = include_boxes
        self.muxer_size = muxer_size
        self._states: dict[int, _CameraState] = {}
        for source_id, camera_id in stream_map.items():
            camera = site.camera_by_id[camera_id]
            labels: dict[str, tuple[str, bool]] = {}
            for line in camera.lines:
                labels[f"{line.id}{IN_SUFFIX}"] = (line.id, True)
                labels[f"{line.id}{OUT_SUFFIX}"] = (line.id, False)
            state = _CameraState(camera=camera, line_labels=labels)
            state.reset_crossings()
            self._states[source_id] = state

    def add(self, frame: FrameAnalytics, capture_ms: int) -> CameraMessage | None:
        """Take one frame; return a message when its camera's interval has passed, else None.

        The first frame of a camera is always published, and so is a frame whose capture time
        is before the last published one. Crossings of frames that are not published are kept
        and added to the next message.

        Raises:
            ValueError: the frame's ``source_id`` is not in the stream map.
        """
        state = self._states.get(frame.source_id)
        if state is None:
            raise ValueError(
                f"frame from stream {frame.source_id}, which the stream map does not name "
                f"(it has {sorted(self._states)}); the app's sources and cameras disagree"
            )
        for label, count in frame.line_current.items():
            target = state.line_labels.get(label.removeprefix(LINE_PREFIX))
            if target is not None and count > 0:
                line_id, entered = target
                state.crossings[line_id][0 if entered else 1] += count
        last = state.last_published_ms
        # a clock that steps back (an NTP correction) must not silence the camera until it
        # catches up again
        due = last is None or capture_ms < last or capture_ms - last >= self.interval_ms
        if not due:
            return None
        state.last_published_ms = capture_ms
        message = self._message(state, frame, capture_ms)
        state.reset_crossings()
        return message

    def _message(
        self, state: _CameraState, frame: FrameAnalytics, capture_ms: int
    ) -> CameraMessage:
        camera = state.camera
        counts = {label.removeprefix(ROI_PREFIX): n for label, n in frame.roi_counts.items()}
        rois = tuple(RoiCount(roi.id, counts[roi.id]) for roi in camera.rois if roi.id in counts)
        lines = tuple(
            LineCount(line.id, state.crossings[line.id][0], state.crossings[line.id][1])
            for line in camera.lines
        )
        people = [obj for obj in frame.objects if obj.class_id == self.person_class_id]
        boxes: tuple[Box, ...] = ()
        if self.include_boxes:
            sx, sy = 1.0, 1.0
            if self.muxer_size is not None:
                sx = camera.resolution[0] / self.muxer_size[0]
                sy = camera.resolution[1] / self.muxer_size[1]
            boxes = tuple(
                Box(
                    left=obj.left * sx,
                    top=obj.top * sy,
                    width=obj.width * sx,
                    height=obj.height * sy,
                    confidence=obj.confidence,
                    track_id=None if obj.object_id == UNTRACKED_OBJECT_ID else obj.object_id,
                )
                for obj in people
            )
        return CameraMessage(
            camera_id=camera.id,
            frame=frame.frame_num,
            ts_ms=capture_ms,
            persons=len(people),
            rois=rois,
            lines=lines,
            boxes=boxes,
        )
