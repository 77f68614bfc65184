"""The one module that touches NVIDIA's ``pyds``: DeepStream batch metadata → frozen dataclasses.

``pyds`` is imported lazily, so this module imports anywhere; calling `frames_from_buffer` without
the DeepStream runtime raises `DeepStreamUnavailable`. Nothing here interprets the metadata: the
dataclasses carry the fields as DeepStream wrote them, and `detectors.deepstream.messages` does
the rest.

The fields read are those of the DeepStream 7.1 Python API (``pyds``):
``gst_buffer_get_nvds_batch_meta(hash(buffer))``, ``NvDsFrameMeta`` (``source_id``,
``frame_num``, ``ntp_timestamp``, ``buf_pts``, ``obj_meta_list``, ``frame_user_meta_list``),
``NvDsObjectMeta`` (``class_id``, ``object_id``, ``confidence``, ``rect_params``) and the
``NvDsAnalyticsFrameMeta`` user meta of type
``nvds_get_user_meta_type("NVIDIA.DSANALYTICSFRAME.USER_META")`` (``objInROIcnt``,
``objLCCumCnt``, ``objLCCurrCnt``, ``ocStatus``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ANALYTICS_FRAME_META = "NVIDIA.DSANALYTICSFRAME.USER_META"

#: ``object_id`` of an object no tracker has given an id (``UNTRACKED_OBJECT_ID``).
UNTRACKED_OBJECT_ID = 0xFFFFFFFFFFFFFFFF

_PYDS_HELP = (
    "NVIDIA DeepStream's Python bindings (the `pyds` module) are not available. They come with "
    "NVIDIA's DeepStream runtime: install the bindings wheel from NVIDIA's deepstream_python_apps "
    "releases (pyds 1.2.0 for DeepStream 7.1) inside the DeepStream container or on a machine "
    "with the DeepStream SDK, e.g. with the container's user_deepstream_python_apps_install.sh. "
    "Do not `pip install pyds`: the PyPI package named `pyds` is an unrelated project. "
    "Without DeepStream, use the stock-message parsers in detectors.deepstream.stock or the CPU "
    "detector."
)


class DeepStreamUnavailable(ImportError):
    """NVIDIA's ``pyds`` cannot be imported here (or the ``pyds`` found is not NVIDIA's)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{_PYDS_HELP} ({detail})" if detail else _PYDS_HELP)


@dataclass(frozen=True)
class DetectedObject:
    """One ``NvDsObjectMeta``: class, tracker id, confidence and box in muxer pixels."""

    class_id: int
    object_id: int
    confidence: float
    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class FrameAnalytics:
    """One ``NvDsFrameMeta`` with its objects and its nvdsanalytics frame meta.

    The dictionaries are keyed by the nvdsanalytics labels (``roi-<label>`` and
    ``line-crossing-<label>`` keys in the config give ``<label>``); they are empty when the
    frame carries no nvdsanalytics meta.
    """

    source_id: int
    frame_num: int
    ntp_timestamp_ns: int
    buf_pts_ns: int
    objects: tuple[DetectedObject, ...] = ()
    roi_counts: dict[str, int] = field(default_factory=dict)
    line_cumulative: dict[str, int] = field(default_factory=dict)
    line_current: dict[str, int] = field(default_factory=dict)
    overcrowded: dict[str, bool] = field(default_factory=dict)


def load_pyds() -> Any:
    """Import NVIDIA's ``pyds``.

    Raises:
        DeepStreamUnavailable: ``pyds`` is missing, or the ``pyds`` found lacks NVIDIA's API
            (the unrelated PyPI package of that name).
    """
    try:
        pyds = importlib.import_module("pyds")
    except ImportError as exc:
        raise DeepStreamUnavailable(f"import failed: {exc}") from exc
    if not hasattr(pyds, "gst_buffer_get_nvds_batch_meta"):
        raise DeepStreamUnavailable(
            f"the `pyds` at {getattr(pyds, '__file__', '?')} has no "
            "gst_buffer_get_nvds_batch_meta, so it is not NVIDIA's bindings"
        )
    return pyds


def _glist(node: Any) -> Iterator[Any]:
    """The ``data`` of each node of a pyds ``GList`` (older bindings end with StopIteration)."""
    while node is not None:
        yield node.data
        try:
            node = node.next
        except StopIteration:
            return


def frames_from_buffer(gst_buffer: Any) -> list[FrameAnalytics]:
    """Every frame of a batched ``Gst.Buffer`` downstream of nvdsanalytics.

    Returns an empty list when the buffer carries no DeepStream batch meta.

    Raises:
        DeepStreamUnavailable: NVIDIA's ``pyds`` is not installed.
    """
    pyds = load_pyds()
    batch_meta = pyds.gst_buffer_get_nvds_batch_meta(hash(gst_buffer))
    if batch_meta is None:
        return []
    analytics_type = pyds.nvds_get_user_meta_type(ANALYTICS_FRAME_META)
    frames: list[FrameAnalytics] = []
    for frame_data in _glist(batch_meta.frame_meta_list):
        frame_meta = pyds.NvDsFrameMeta.cast(frame_data)
        objects = []
        for object_data in _glist(frame_meta.obj_meta_list):
            obj = pyds.NvDsObjectMeta.cast(object_data)
            rect = obj.rect_params
            objects.append(
                DetectedObject(
                    class_id=int(obj.class_id),
                    object_id=int(obj.object_id),
                    confidence=float(obj.confidence),
                    left=float(rect.left),
                    top=float(rect.top),
                    width=float(rect.width),
                    height=float(rect.height),
                )
            )
        roi_counts: dict[str, int] = {}
        cumulative: dict[str, int] = {}
        current: dict[str, int] = {}
        overcrowded: dict[str, bool] = {}
        for user_data in _glist(frame_meta.frame_user_meta_list):
            user_meta = pyds.NvDsUserMeta.cast(user_data)
            if user_meta.base_meta.meta_type != analytics_type:
                continue
            analytics = pyds.NvDsAnalyticsFrameMeta.cast(user_meta.user_meta_data)
            roi_counts.update({str(k): int(v) for k, v in analytics.objInROIcnt.items()})
            cumulative.update({str(k): int(v) for k, v in analytics.objLCCumCnt.items()})
            current.update({str(k): int(v) for k, v in analytics.objLCCurrCnt.items()})
            overcrowded.update({str(k): bool(v) for k, v in analytics.ocStatus.items()})
        frames.append(
            FrameAnalytics(
                source_id=int(frame_meta.source_id),
                frame_num=int(frame_meta.frame_num),
                ntp_timestamp_ns=int(frame_meta.ntp_timestamp),
                buf_pts_ns=int(frame_meta.buf_pts),
                objects=tuple(objects),
                roi_counts=roi_counts,
                line_cumulative=cumulative,
                line_current=current,
                overcrowded=overcrowded,
            )
        )
    return frames
