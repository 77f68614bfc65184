"""The pyds adapter and the app's pure parts.

Tests that need NVIDIA's DeepStream runtime run only when CROWDWATCH_TEST_DEEPSTREAM=1 and
``pyds`` imports (inside the DeepStream 7.1 container); they skip with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from crowdwatch.site import load_site
from crowdwatch.video.messages import CameraMessage, RoiCount
from detectors.deepstream import adapter
from detectors.deepstream.adapter import DeepStreamUnavailable, load_pyds
from detectors.deepstream.app import main, publisher
from tests.conftest import EXAMPLE_SITE


def test_unavailable_names_nvidias_bindings_and_warns_about_pypi() -> None:
    message = str(DeepStreamUnavailable())
    assert isinstance(DeepStreamUnavailable(), ImportError)
    assert "NVIDIA" in message
    assert "deepstream_python_apps" in message
    assert "DeepStream container" in message
    assert "PyPI package named `pyds` is an unrelated project" in message


def test_missing_pyds_raises_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyds", None)  # makes `import pyds` fail
    with pytest.raises(DeepStreamUnavailable, match="deepstream_python_apps") as caught:
        adapter.frames_from_buffer(object())
    assert "import failed" in str(caught.value)


def test_the_unrelated_pypi_pyds_is_not_taken_for_nvidias(monkeypatch: pytest.MonkeyPatch) -> None:
    impostor = types.ModuleType("pyds")
    monkeypatch.setitem(sys.modules, "pyds", impostor)
    with pytest.raises(DeepStreamUnavailable, match="not NVIDIA's bindings"):
        load_pyds()


def test_publisher_writes_one_json_line_per_message(tmp_path: Path) -> None:
    site = load_site(EXAMPLE_SITE)
    target = tmp_path / "out.jsonl"
    message = CameraMessage("CTR-CAM01", 4, 1_763_596_800_000, 2, (RoiCount("platform-L1", 2),))
    with publisher(f"jsonl:{target}", site.tz) as publish:
        publish(message)
        publish(message)
    lines = target.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["persons"] for line in lines] == [2, 2]
    with pytest.raises(ValueError, match="jsonl:PATH"), publisher("kafka:topic", site.tz):
        pass


def test_main_wants_one_uri_per_camera(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--site", str(EXAMPLE_SITE), "--camera", "CTR-CAM01", "--camera", "CTR-CAM03"]
    argv += ["--uri", "file:///a.mp4", "--pgie-config", "p.txt", "--tracker-config", "t.yml"]
    with pytest.raises(SystemExit):
        main(argv)
    assert "2 --camera but 1 --uri" in capsys.readouterr().err


def _deepstream() -> types.ModuleType:
    if os.environ.get("CROWDWATCH_TEST_DEEPSTREAM") != "1":
        pytest.skip("set CROWDWATCH_TEST_DEEPSTREAM=1 inside the DeepStream container to run")
    try:
        return load_pyds()  # type: ignore[no-any-return]
    except DeepStreamUnavailable as exc:
        pytest.skip(f"NVIDIA's pyds does not import here: {exc}")


def test_pyds_has_the_api_the_adapter_reads() -> None:
    pyds = _deepstream()
    for name in (
        "gst_buffer_get_nvds_batch_meta",
        "nvds_get_user_meta_type",
        "NvDsFrameMeta",
        "NvDsObjectMeta",
        "NvDsUserMeta",
        "NvDsAnalyticsFrameMeta",
    ):
        assert hasattr(pyds, name), name
    assert pyds.nvds_get_user_meta_type(adapter.ANALYTICS_FRAME_META) is not None


def test_a_buffer_without_batch_meta_has_no_frames() -> None:
    _deepstream()
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)
    assert adapter.frames_from_buffer(Gst.Buffer.new()) == []
