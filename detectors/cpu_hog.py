"""CPU fallback people detector: OpenCV's HOG + linear SVM, a small tracker, camera messages.

For machines without DeepStream. Reads a video file or an RTSP/HTTP stream with
``cv2.VideoCapture``, finds people with OpenCV's built-in HOG people detector (Dalal & Triggs,
trained on INRIA persons; no model download), follows them with a greedy centroid tracker and
emits one `crowdwatch.video.messages.CameraMessage` per processed frame, with people per ROI and
counting-line crossings, like the DeepStream probe. One command (split here)::

    python -m detectors.cpu_hog ../shared/data/video/vtest.avi --camera WLK-CAM01
        --site infra/sites/example_interchange.yaml --start 2026-11-20T08:00:00
        --out messages.jsonl

Needs the ``video`` extra (``pip install 'crowdwatch[video]'``: opencv-python-headless 4.x;
OpenCV 5.0 dropped ``HOGDescriptor``).

Measured on ``../shared/data/video/vtest.avi`` (768x576, 10 fps, 795 frames). The video is
PETS 2009 S2.L1, so ``../shared/data/video_detections/mot15_frcnn/PETS09-S2L1.det.txt`` has a
Faster R-CNN detector's boxes for the same frames: not ground truth, but a much stronger
detector, 5.5 people per frame (p10/median/p90 3/6/7). The figures come from the command above
with ``--threads 1`` (``cv2.setNumThreads(1)``: one core of a shared 2-core VM, Python 3.11,
opencv-python-headless 4.14) and the default `HogParams`, without and with ``--resize-width``.
Precision and recall pair each HOG box with a Faster R-CNN box of IoU >= 0.5, one to one;
crossings are those of a vertical line through the middle of the image, with this module's
tracker on both detectors' boxes (Faster R-CNN: 19 in, 23 out)::

    working width         frames/s  people per frame            precision  recall  crossings
                          (1 core)  mean  p10/50/90  max  none                     in / out
    768 (default, as is)  5.8-6.0   2.8   2/3/4      6    0.8 %  0.82       0.42    1 / 4
    --resize-width 896    4.5-5.1   4.1   3/4/5      8    0      0.89       0.66   12 / 15
    --resize-width 1024   2.9-3.3   4.7   3/5/6      8    0      0.91       0.78   13 / 18

(frames/s: two runs each; both cores, without ``--threads``: 8.5-12 frames/s at 768.)

Accuracy, honestly. HOG's 64x128 window holds a person about 100 px tall, so smaller people are
not found at all: on vtest.avi, where people are 50-100 px tall, HOG at the native size finds
fewer than half of them, and its tracks break up so much that it sees only a tenth of the line
crossings. Enlarging the frame (``--resize-width``) is the lever: at 1024 px it finds about
four in five, at half the speed. Still missed: far people (under about 60 px), people cut by
the image border, people hidden behind others or behind the lamp post. Of the boxes, about
3 % overlap no person at all (IoU < 0.3 with every Faster R-CNN box); the rest of the 9-18 %
"false positives" above are loose boxes on real people. A by-eye check of frames 0, 200, 400
and 600 (boxes drawn, saved as PNG and looked at): 3, 7, 3 and 6 people visible; HOG found 2,
2, 3 and 4 of them at 768 px and 3, 5, 3 and 5 at 1024 px, with no false positive (before the
rule in `HogPeopleDetector` that drops windows enclosing a better box, frame 600 had one: a
window around a person and the building behind). Counts from this detector are a lower bound
of the crowd, to be calibrated per camera; counting lines need a well-tuned working size.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from crowdwatch.site import Camera, SiteError, load_site
from crowdwatch.video.messages import Box, CameraGeometry, CameraMessage, Floats, Ints, foot_points

Image = npt.NDArray[np.uint8]

_CV2_HELP = (
    "the CPU people detector needs OpenCV: pip install 'crowdwatch[video]' "
    "(opencv-python-headless 4.x; OpenCV 5.0 dropped HOGDescriptor)"
)

# How long opening or reading a network stream may block (FFmpeg backend), in milliseconds.
_STREAM_TIMEOUT_MS = 10_000


class VideoSourceError(RuntimeError):
    """A video file or stream that cannot be opened or does not fit the camera."""


def require_cv2() -> ModuleType:
    """Import OpenCV, or raise ImportError that names the extra to install."""
    try:
        cv2 = importlib.import_module("cv2")
    except ImportError as exc:
        raise ImportError(f"{_CV2_HELP} ({exc})") from exc
    if not hasattr(cv2, "HOGDescriptor"):
        raise ImportError(f"{_CV2_HELP}; found OpenCV {getattr(cv2, '__version__', '?')}")
    return cv2


# --- detection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HogParams:
    """Settings of the HOG people detector; the defaults are the ones measured above.

    The comparisons below come from trial runs on every 10th frame of vtest.avi, scored
    against the Faster R-CNN boxes like the table in the module docstring.

    Attributes:
        win_stride: step of the 64x128 detection window in pixels. (8, 8) is the HOG block
            stride, the smallest step that reuses the block features; (4, 4) raised recall by
            6 points (0.74 to 0.80 at 960 px) but ran 3.5 times slower.
        padding: pixels added around the image so that people at the border fit a window.
        scale: ratio between pyramid levels. 1.1 ran 1.7-1.9 times as fast as OpenCV's
            default 1.05 for the same recall (0.73 against 0.74 at 960 px).
        min_confidence: lowest SVM score (signed distance to the hyperplane, not a
            probability) kept as a person. Against OpenCV's default 0, 0.5 raised precision
            from 0.60 to 0.76 at 768 px (0.70 to 0.85 at 960 px) for 3-6 points of recall.
        nms_iou: non-maximum suppression: of windows overlapping by more than this IoU, only
            the highest scoring one is kept. 0.3 merges the many windows around one person and
            still keeps people walking side by side apart; 0.45 kept more duplicates
            (precision 0.84 against 0.87) for 2 points of recall.
        resize_width: width the frame is resized to before detection (aspect kept); None
            keeps the frame. Downscaling speeds detection up (cost roughly proportional to the
            pixels) but people must stay about 100 px tall to be found; upscaling finds smaller
            people at a cost in speed. Boxes always come back in frame pixels.
    """

    win_stride: tuple[int, int] = (8, 8)
    padding: tuple[int, int] = (8, 8)
    scale: float = 1.1
    min_confidence: float = 0.5
    nms_iou: float = 0.3
    resize_width: int | None = None

    def __post_init__(self) -> None:
        if self.scale <= 1.0:
            raise ValueError(f"scale must be above 1.0 (pyramid ratio), got {self.scale}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.resize_width is not None and self.resize_width < 64:
            raise ValueError(
                f"resize_width must be at least 64 (the window), got {self.resize_width}"
            )


class HogPeopleDetector:
    """OpenCV's default HOG people detector with a score threshold and NMS.

    HOG's 64x128 window holds a person about 96 px tall with a margin around them; boxes are
    shrunk to the person as OpenCV's ``samples/cpp/peopledetect.cpp`` does (10 % off each side,
    7 % off the top, 13 % off the bottom), so that the bottom centre of a box is where the
    person stands.
    """

    def __init__(self, params: HogParams | None = None) -> None:
        self.params = params if params is not None else HogParams()
        self._cv2 = require_cv2()
        self._hog = self._cv2.HOGDescriptor()
        self._hog.setSVMDetector(self._cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, image: Image) -> tuple[Floats, Floats]:
        """People in a BGR image: ``(n, 4)`` boxes (left, top, width, height) and scores."""
        cv2, params = self._cv2, self.params
        height, width = image.shape[:2]
        factor = 1.0
        if params.resize_width is not None and params.resize_width != width:
            factor = params.resize_width / width
            size = (params.resize_width, max(1, round(height * factor)))
            interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interpolation)
        rects, weights = self._hog.detectMultiScale(
            image,
            hitThreshold=params.min_confidence,
            winStride=params.win_stride,
            padding=params.padding,
            scale=params.scale,
            groupThreshold=0,  # no grouping: non-maximum suppression below does that
        )
        boxes = np.asarray(rects, dtype=np.float64).reshape(-1, 4) / factor
        scores = np.asarray(weights, dtype=np.float64).reshape(-1)
        if boxes.shape[0] > 1:
            keep = cv2.dnn.NMSBoxes(
                boxes.tolist(), scores.tolist(), params.min_confidence, params.nms_iou
            )
            keep = np.asarray(keep, dtype=np.int64).reshape(-1)
            boxes, scores = boxes[keep], scores[keep]
            keep = ~_encloses_a_better_box(boxes, scores)
            boxes, scores = boxes[keep], scores[keep]
        boxes = boxes + boxes[:, [2, 3, 2, 3]] * np.array([0.1, 0.07, -0.2, -0.2])
        return boxes, scores


def _encloses_a_better_box(boxes: Floats, scores: Floats) -> npt.NDArray[np.bool_]:
    """Which windows are at least 1.5 times as tall as a higher-scoring box they contain.

    Such a window is a person plus background, a frequent HOG false positive that IoU-based
    suppression keeps (the overlap is small relative to the big window).
    """
    right, bottom = boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    overlap_w = np.minimum(right[:, None], right) - np.maximum(boxes[:, None, 0], boxes[:, 0])
    overlap_h = np.minimum(bottom[:, None], bottom) - np.maximum(boxes[:, None, 1], boxes[:, 1])
    inside = np.clip(overlap_w, 0, None) * np.clip(overlap_h, 0, None)  # [outer, inner]
    encloses = (
        (inside >= 0.9 * boxes[:, 2] * boxes[:, 3])
        & (boxes[:, None, 3] >= 1.5 * boxes[:, 3])
        & (scores[:, None] < scores)
    )
    return np.asarray(encloses.any(axis=1), dtype=np.bool_)


# --- tracking ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackStep:
    """What one tracker update found.

    Attributes:
        ids: ``(n,)`` track id of each detection, in the order given.
        before: ``(m, 2)`` foot points of the tracks seen again, where they were last seen.
        after: ``(m, 2)`` the same tracks' foot points now.
    """

    ids: Ints
    before: Floats
    after: Floats


class CentroidTracker:
    """A plain greedy tracker: each detection joins the nearest track, or starts a new one.

    A detection may join a track whose box centre is at most ``max_move`` track heights away
    (people walking at 1.4 m/s move about 0.08 of their height per frame at 10 fps, so 0.5
    leaves room for running, skipped frames and HOG's jittery boxes). Pairs are matched nearest
    first, one to one. A track not seen for more than ``max_age`` updates is forgotten; a
    person seen again after that gets a new id. State is plain numpy arrays (picklable).
    """

    def __init__(self, *, max_age: int = 10, max_move: float = 0.5) -> None:
        if max_age < 0 or max_move <= 0:
            raise ValueError(f"need max_age >= 0 and max_move > 0, got {max_age}, {max_move}")
        self.max_age = max_age
        self.max_move = max_move
        self.next_id = 1
        self.ids = np.zeros(0, dtype=np.int64)
        self.boxes = np.zeros((0, 4), dtype=np.float64)
        self.missed = np.zeros(0, dtype=np.int64)

    def update(self, boxes: Floats) -> TrackStep:
        """Match one frame's ``(n, 4)`` boxes (left, top, width, height) to the tracks."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = boxes.shape[0]
        track_of = np.full(n, -1, dtype=np.int64)  # index into the tracks, -1: new track
        if n and self.ids.size:
            centres = boxes[:, :2] + boxes[:, 2:] / 2
            track_centres = self.boxes[:, :2] + self.boxes[:, 2:] / 2
            distance = np.linalg.norm(track_centres[:, None, :] - centres[None, :, :], axis=2)
            distance /= np.maximum(self.boxes[:, 3], 1.0)[:, None]
            taken = np.zeros(self.ids.size, dtype=bool)
            for flat in np.argsort(distance, axis=None, kind="stable"):
                track, detection = divmod(int(flat), n)
                if distance[track, detection] > self.max_move:
                    break
                if not taken[track] and track_of[detection] < 0:
                    taken[track] = True
                    track_of[detection] = track
        matched = np.flatnonzero(track_of >= 0)
        before = np.stack(foot_points(self.boxes[track_of[matched]]), axis=1)
        after = np.stack(foot_points(boxes[matched]), axis=1)

        ids = np.empty(n, dtype=np.int64)
        ids[matched] = self.ids[track_of[matched]]
        new = np.flatnonzero(track_of < 0)
        ids[new] = np.arange(self.next_id, self.next_id + new.size)
        self.next_id += int(new.size)

        seen = np.zeros(self.ids.size, dtype=bool)
        seen[track_of[matched]] = True
        missed = self.missed + 1
        kept = ~seen & (missed <= self.max_age)
        self.ids = np.concatenate([self.ids[kept], ids])
        self.boxes = np.concatenate([self.boxes[kept], boxes])
        self.missed = np.concatenate([missed[kept], np.zeros(n, dtype=np.int64)])
        return TrackStep(ids=ids, before=before, after=after)


# --- video -------------------------------------------------------------------------------


def _is_url(source: str) -> bool:
    return "://" in source


def open_source(source: str | Path) -> Any:
    """Open a video file or an RTSP/HTTP URL as a ``cv2.VideoCapture``.

    Raises:
        VideoSourceError: the file does not exist, or OpenCV cannot open or decode it.
    """
    cv2 = require_cv2()
    text = str(source)
    if _is_url(text):
        capture = cv2.VideoCapture(
            text,
            cv2.CAP_FFMPEG,
            [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                _STREAM_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                _STREAM_TIMEOUT_MS,
            ],
        )
        if not capture.isOpened():
            raise VideoSourceError(
                f"{text}: cannot open the stream within {_STREAM_TIMEOUT_MS // 1000} s "
                "(check the URL, credentials and that the camera is reachable)"
            )
        return capture
    path = Path(text)
    if not path.is_file():
        raise VideoSourceError(f"{path}: video file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoSourceError(
            f"{path}: OpenCV cannot open this video (not a video file, or a codec its FFmpeg "
            "build lacks; try converting it to H.264 MP4)"
        )
    return capture


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _to_camera_pixels(boxes: Floats, frame_size: tuple[int, int], camera: Camera) -> Floats:
    """Scale boxes from frame pixels to the camera's resolution and clip them to the image."""
    (frame_w, frame_h), (cam_w, cam_h) = frame_size, camera.resolution
    if abs(frame_w / frame_h - cam_w / cam_h) > 0.02 * cam_w / cam_h:
        raise VideoSourceError(
            f"frames are {frame_w}x{frame_h}, but camera {camera.id} is {cam_w}x{cam_h} in the "
            "site file: a different aspect ratio, so its ROIs and lines would not fit (wrong "
            "--camera, or fix the camera's resolution)"
        )
    scaled = boxes * np.array([cam_w / frame_w, cam_h / frame_h] * 2)
    left = np.clip(scaled[:, 0], 0, cam_w)
    top = np.clip(scaled[:, 1], 0, cam_h)
    right = np.clip(scaled[:, 0] + scaled[:, 2], 0, cam_w)
    bottom = np.clip(scaled[:, 1] + scaled[:, 3], 0, cam_h)
    return np.stack([left, top, right - left, bottom - top], axis=1)


def detect(
    source: str | Path,
    camera: Camera,
    *,
    start_ms: int | None = None,
    max_frames: int | None = None,
    every_nth: int = 1,
    params: HogParams | None = None,
    max_age: int = 10,
    clock_ms: Callable[[], int] = _wall_clock_ms,
) -> Iterator[CameraMessage]:
    """Detect and track people in a video; one message per processed frame.

    The source is opened here (errors surface at the call), frames are read lazily.

    Args:
        source: a video file, or an ``rtsp://`` / ``http(s)://`` URL.
        camera: the site's camera the video comes from: its ROIs, lines and resolution. Frames
            of another size with the same aspect ratio are fine (boxes are scaled).
        start_ms: capture time of frame 0 (epoch ms) for recorded files: frame ``i`` is at
            ``start_ms + i * 1000 / fps``, with the file's frame rate (the camera's when the
            file has none). None stamps each frame with ``clock_ms()`` when it is read, as a
            live stream needs.
        max_frames: stop after reading this many frames from the source (processed or
            skipped); None reads to the end of the file, or for ever from a stream.
        every_nth: process every n-th frame (0, n, 2n, …); skipped frames are not decoded.
        params: detector settings (default `HogParams()`).
        max_age: a track not seen for more than this many processed frames ends.
        clock_ms: the wall clock in epoch ms, for live streams.

    Yields:
        A `CameraMessage` per processed frame: ``frame`` is the source frame index (from 0),
        ``boxes`` the people with their track ids, ``lines`` the crossings since the previous
        message. A stream that stops delivering frames ends the iteration.

    Raises:
        VideoSourceError: the source cannot be opened, or its frames do not fit the camera.
    """
    if every_nth < 1:
        raise ValueError(f"every_nth must be 1 or more, got {every_nth}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be 0 or more, got {max_frames}")
    detector = HogPeopleDetector(params)
    capture = open_source(source)
    fps = float(capture.get(require_cv2().CAP_PROP_FPS))
    if not 0 < fps <= 1000:  # streams and some containers report 0 or nonsense
        fps = camera.fps
    return _messages(
        capture,
        detector,
        CentroidTracker(max_age=max_age),
        CameraGeometry(camera),
        start_ms=start_ms,
        fps=fps,
        max_frames=max_frames,
        every_nth=every_nth,
        clock_ms=clock_ms,
    )


def _messages(
    capture: Any,
    detector: HogPeopleDetector,
    tracker: CentroidTracker,
    geometry: CameraGeometry,
    *,
    start_ms: int | None,
    fps: float,
    max_frames: int | None,
    every_nth: int,
    clock_ms: Callable[[], int],
) -> Iterator[CameraMessage]:
    camera = geometry.camera
    index = 0
    try:
        while max_frames is None or index < max_frames:
            if index % every_nth:
                if not capture.grab():
                    return
                index += 1
                continue
            ok, frame = capture.read()
            if not ok:
                return
            ts_ms = start_ms + round(index * 1000 / fps) if start_ms is not None else clock_ms()
            found, scores = detector.detect(frame)
            height, width = frame.shape[:2]
            boxes = _to_camera_pixels(found, (width, height), camera)
            step = tracker.update(boxes)
            yield CameraMessage(
                camera_id=camera.id,
                frame=index,
                ts_ms=ts_ms,
                persons=int(boxes.shape[0]),
                rois=tuple(geometry.roi_counts(boxes)),
                lines=tuple(geometry.crossings(step.before, step.after)),
                boxes=tuple(
                    Box(
                        left=round(float(box[0]), 1),
                        top=round(float(box[1]), 1),
                        width=round(float(box[2]), 1),
                        height=round(float(box[3]), 1),
                        confidence=round(float(score), 3),
                        track_id=int(track_id),
                    )
                    for box, score, track_id in zip(boxes, scores, step.ids, strict=True)
                ),
            )
            index += 1
    finally:
        capture.release()


# --- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m detectors.cpu_hog`` options."""
    parser = argparse.ArgumentParser(
        prog="python -m detectors.cpu_hog",
        description="Count people in a video with OpenCV's HOG detector; write camera messages.",
    )
    parser.add_argument("source", help="video file, or rtsp:// / http:// stream URL")
    parser.add_argument("--site", type=Path, required=True, help="the site YAML file")
    parser.add_argument("--camera", required=True, help="the site's camera the video comes from")
    parser.add_argument("--out", type=Path, required=True, help="messages as JSON lines")
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        help="capture time of frame 0 of a recorded file (ISO 8601; the site's time zone if "
        "naive); without it, frames are stamped with the wall clock (live streams)",
    )
    parser.add_argument("--max-frames", type=int, help="stop after this many source frames")
    parser.add_argument("--every-nth", type=int, default=1, help="process every n-th frame")
    parser.add_argument(
        "--resize-width", type=int, help="resize frames to this width before detection"
    )
    parser.add_argument(
        "--min-confidence", type=float, default=HogParams.min_confidence, help="SVM score"
    )
    parser.add_argument("--threads", type=int, help="OpenCV threads (default: all cores)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the detector on a video and write its messages; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        cv2 = require_cv2()
        site = load_site(args.site)
        camera = site.camera_by_id.get(args.camera)
        if camera is None:
            raise ValueError(
                f"--camera {args.camera!r} is not in {args.site}; cameras: "
                + ", ".join(site.camera_by_id)
            )
        start_ms = None
        if args.start is not None:
            start = args.start if args.start.tzinfo else args.start.replace(tzinfo=site.tz)
            start_ms = round(start.timestamp() * 1000)
        if args.threads is not None:
            cv2.setNumThreads(args.threads)
        messages = detect(
            args.source,
            camera,
            start_ms=start_ms,
            max_frames=args.max_frames,
            every_nth=args.every_nth,
            params=HogParams(resize_width=args.resize_width, min_confidence=args.min_confidence),
        )
    except (ImportError, SiteError, VideoSourceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    args.out.parent.mkdir(parents=True, exist_ok=True)
    processed = people = 0
    began = time.perf_counter()
    last_frame = -1

    def progress(final: bool) -> None:
        elapsed = time.perf_counter() - began
        rate = processed / elapsed if elapsed > 0 else 0.0
        what = f"wrote {processed} messages to {args.out}" if final else f"{processed} frames"
        print(
            f"{what}: up to frame {last_frame}, {people / max(processed, 1):.2f} people per "
            f"frame, {rate:.2f} frames/s",
            file=sys.stderr,
        )

    try:
        with args.out.open("w", encoding="utf-8") as out:
            for message in messages:
                out.write(message.to_json(site.tz) + "\n")
                processed += 1
                people += message.persons
                last_frame = message.frame
                if processed % 100 == 0:
                    progress(final=False)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except VideoSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
