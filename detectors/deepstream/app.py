"""The DeepStream app: cameras → PeopleNet → tracker → nvdsanalytics → `CameraMessage` lines.

Pipeline (one batch, stream N = the N-th camera)::

    nvurisrcbin ×N → nvstreammux → nvinfer (PeopleNet) → nvtracker → nvdsanalytics → fakesink
                                                           probe on its src pad ┘

The probe reads each batch with `detectors.deepstream.adapter.frames_from_buffer`, feeds
`MessageBuilder` and hands its messages to ``publish``. Written for NVIDIA's DeepStream 7.1
container (GStreamer 1.20, ``pyds`` 1.2.0); it cannot run without DeepStream and an NVIDIA GPU.
Run it as ``python -m detectors.deepstream.app --help`` (see README.md beside this file).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from crowdwatch.site import load_site
from crowdwatch.video.messages import CameraMessage
from detectors.deepstream import adapter
from detectors.deepstream.analytics_config import config_size, stream_map, write_config
from detectors.deepstream.messages import MessageBuilder, capture_time_ms

TRACKER_LIB = "/opt/nvidia/deepstream/deepstream/lib/libnvds_nvmultiobjecttracker.so"
MUXER_BATCH_TIMEOUT_US = 40_000
TRACKER_SIZE = (640, 384)


def _gst() -> Any:
    """GStreamer, initialised; imported here so that this module imports anywhere."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as exc:
        raise ImportError(
            f"GStreamer's Python bindings are missing ({exc}): run the app inside NVIDIA's "
            "DeepStream container, where python3-gi and gst-python are installed"
        ) from exc
    Gst.init(None)
    return Gst


def _make(gst: Any, factory: str, name: str) -> Any:
    element = gst.ElementFactory.make(factory, name)
    if element is None:
        raise RuntimeError(
            f"cannot create the GStreamer element {factory!r}: DeepStream's plugins are not "
            "installed here (run inside the DeepStream container; `gst-inspect-1.0 "
            f"{factory}` must work)"
        )
    return element


def _add_source(gst: Any, pipeline: Any, mux: Any, index: int, uri: str) -> None:
    """A decoding source for `uri`, linked to the muxer's ``sink_<index>`` once it has a pad."""
    source = gst.ElementFactory.make("nvurisrcbin", f"source-{index}")
    if source is None:  # older DeepStream: NVIDIA's decoder is picked by uridecodebin
        source = _make(gst, "uridecodebin", f"source-{index}")
    source.set_property("uri", uri)
    sink_pad = mux.request_pad_simple(f"sink_{index}")

    def on_pad_added(_element: Any, pad: Any) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        if not caps.get_structure(0).get_name().startswith("video") or sink_pad.is_linked():
            return
        if not caps.get_features(0).contains("memory:NVMM"):
            print(f"source {index}: the decoder is not NVIDIA's (no NVMM memory)", file=sys.stderr)
            return
        pad.link(sink_pad)

    source.connect("pad-added", on_pad_added)
    pipeline.add(source)


def build_pipeline(
    sources: list[str],
    *,
    pgie_config: Path | str,
    tracker_config: Path | str,
    analytics_config: Path | str,
    publish: Callable[[CameraMessage], None],
    builder: MessageBuilder,
    muxer_size: tuple[int, int] = (1920, 1080),
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> Any:
    """The ``Gst.Pipeline`` for `sources` (URIs; source N is stream N of `builder`).

    Args:
        sources: ``rtsp://`` or ``file://`` URIs, in stream order.
        pgie_config: nvinfer config of the person detector (PeopleNet).
        tracker_config: NvMultiObjectTracker YAML (e.g. ``config_tracker_NvDCF_perf.yml``).
        analytics_config: the nvdsanalytics config `write_config` wrote for these sources.
        publish: called with every message, on GStreamer's streaming thread.
        builder: turns frames into messages; its stream map must match `sources`.
        muxer_size: nvstreammux output size; use the analytics config size.
        clock_ms: wall clock for frames that carry no NTP time.
    """
    gst = _gst()
    pipeline = gst.Pipeline.new("crowdwatch-deepstream")
    mux = _make(gst, "nvstreammux", "mux")
    mux.set_property("batch-size", len(sources))
    mux.set_property("width", muxer_size[0])
    mux.set_property("height", muxer_size[1])
    mux.set_property("batched-push-timeout", MUXER_BATCH_TIMEOUT_US)
    mux.set_property("live-source", any(uri.startswith("rtsp://") for uri in sources))
    # the host's time at muxing becomes frame_meta.ntp_timestamp (keep the host on NTP)
    mux.set_property("attach-sys-ts", True)
    pgie = _make(gst, "nvinfer", "pgie")
    pgie.set_property("config-file-path", str(pgie_config))
    pgie.set_property("batch-size", len(sources))
    tracker = _make(gst, "nvtracker", "tracker")
    tracker.set_property("ll-lib-file", TRACKER_LIB)
    tracker.set_property("ll-config-file", str(tracker_config))
    tracker.set_property("tracker-width", TRACKER_SIZE[0])
    tracker.set_property("tracker-height", TRACKER_SIZE[1])
    analytics = _make(gst, "nvdsanalytics", "analytics")
    analytics.set_property("config-file", str(analytics_config))
    sink = _make(gst, "fakesink", "sink")
    sink.set_property("sync", False)

    chain = [mux, pgie, tracker, analytics, sink]
    for element in chain:
        pipeline.add(element)
    for upstream, downstream in itertools.pairwise(chain):
        if not upstream.link(downstream):
            raise RuntimeError(f"cannot link {upstream.get_name()} to {downstream.get_name()}")
    for index, uri in enumerate(sources):
        _add_source(gst, pipeline, mux, index, uri)

    def on_batch(_pad: Any, info: Any) -> Any:
        buffer = info.get_buffer()
        if buffer is not None:
            now = clock_ms()
            for frame in adapter.frames_from_buffer(buffer):
                message = builder.add(frame, capture_time_ms(frame, now))
                if message is not None:
                    publish(message)
        return gst.PadProbeReturn.OK

    analytics.get_static_pad("src").add_probe(gst.PadProbeType.BUFFER, on_batch)
    return pipeline


def run(pipeline: Any) -> int:
    """Play `pipeline` until end of stream (0), an error (1) or Ctrl-C (130)."""
    gst = _gst()
    from gi.repository import GLib

    loop = GLib.MainLoop()
    status = {"code": 0}

    def on_message(_bus: Any, message: Any) -> None:
        if message.type == gst.MessageType.EOS:
            loop.quit()
        elif message.type == gst.MessageType.ERROR:
            error, debug = message.parse_error()
            print(f"pipeline error: {error.message}\n{debug}", file=sys.stderr)
            status["code"] = 1
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(gst.State.PLAYING)
    try:
        loop.run()
    except KeyboardInterrupt:
        status["code"] = 130
    finally:
        pipeline.set_state(gst.State.NULL)
    return status["code"]


@contextlib.contextmanager
def publisher(target: str, timezone: ZoneInfo) -> Iterator[Callable[[CameraMessage], None]]:
    """``stdout`` or ``jsonl:PATH`` (appended): one JSON line per message."""
    if target == "stdout":
        stream = sys.stdout
        close = False
    elif target.startswith("jsonl:") and len(target) > len("jsonl:"):
        stream = Path(target.removeprefix("jsonl:")).open("a", encoding="utf-8")  # noqa: SIM115
        close = True
    else:
        raise ValueError(f"--publish must be 'stdout' or 'jsonl:PATH', got {target!r}")

    def publish(message: CameraMessage) -> None:
        stream.write(message.to_json(timezone) + "\n")
        stream.flush()

    try:
        yield publish
    finally:
        if close:
            stream.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m detectors.deepstream.app",
        description="Count people per camera ROI and line with DeepStream; print CameraMessages.",
    )
    parser.add_argument("--site", required=True, type=Path, help="the site YAML file")
    parser.add_argument(
        "--camera", action="append", required=True, help="camera id, repeated; source N"
    )
    parser.add_argument("--uri", action="append", required=True, help="URI of each --camera")
    parser.add_argument("--pgie-config", required=True, type=Path, help="PeopleNet nvinfer config")
    parser.add_argument(
        "--tracker-config", required=True, type=Path, help="NvMultiObjectTracker YAML"
    )
    parser.add_argument(
        "--analytics-config",
        type=Path,
        default=Path("config_nvdsanalytics_crowdwatch.txt"),
        help="where to write the generated nvdsanalytics config",
    )
    parser.add_argument("--publish", default="stdout", help="stdout (default) or jsonl:PATH")
    parser.add_argument("--interval-ms", type=int, default=200, help="per camera (default 200)")
    parser.add_argument("--include-boxes", action="store_true", help="add person boxes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Write the analytics config for the cameras, build the pipeline and run it."""
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.camera) != len(args.uri):
        parser.error(f"{len(args.camera)} --camera but {len(args.uri)} --uri: give one URI each")
    site = load_site(args.site)
    analytics_config = write_config(site, args.analytics_config, args.camera)
    size = config_size(site, args.camera)
    builder = MessageBuilder(
        site,
        stream_map(site, args.camera),
        interval_ms=args.interval_ms,
        include_boxes=args.include_boxes,
        muxer_size=size,
    )
    with publisher(args.publish, site.tz) as publish:
        pipeline = build_pipeline(
            list(args.uri),
            pgie_config=args.pgie_config,
            tracker_config=args.tracker_config,
            analytics_config=analytics_config,
            publish=publish,
            builder=builder,
            muxer_size=size,
        )
        return run(pipeline)


if __name__ == "__main__":
    sys.exit(main())
