"""The generated Gst-nvdsanalytics config, read back with configparser.

The checks follow what nvdsanalytics' property parser (nvdsanalytics_property_parser.cpp) needs:
``;``-separated non-negative integer lists, ``roi-<label>`` keys with an even number of values,
``line-crossing-<label>`` keys with exactly eight (direction x1;y1;x2;y2 then line x1;y1;x2;y2).
"""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
import yaml

from crowdwatch.site import Site, load_site
from detectors.deepstream.analytics_config import (
    config_size,
    nvdsanalytics_config,
    stream_map,
    write_config,
)
from tests.conftest import EXAMPLE_SITE


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(EXAMPLE_SITE)


def parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep ROI ids' case
    parser.read_string(text)
    return parser


def ints(value: str) -> list[int]:
    numbers = [int(v) for v in value.split(";")]  # int() fails on anything but an integer
    assert all(n >= 0 for n in numbers), value
    return numbers


def points(value: str) -> list[tuple[int, int]]:
    numbers = ints(value)
    assert len(numbers) % 2 == 0, value
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def site_with(tmp_path: Path, change: Any) -> Site:
    raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_site(path)


def test_every_camera_gets_its_stream_sections_in_order(site: Site) -> None:
    config = parse(nvdsanalytics_config(site))
    assert config["property"]["enable"] == "1"
    assert (config["property"]["config-width"], config["property"]["config-height"]) == (
        "1920",
        "1080",
    )
    assert stream_map(site) == {i: camera.id for i, camera in enumerate(site.cameras)}
    for index, camera in enumerate(site.cameras):
        section = config[f"roi-filtering-stream-{index}"]
        assert section["enable"] == "1"
        assert section["inverse-roi"] == "0"
        assert section["class-id"] == "0"
        assert sorted(k for k in section if k.startswith("roi-")) == sorted(
            f"roi-{roi.id}" for roi in camera.rois
        )
        has_lines = config.has_section(f"line-crossing-stream-{index}")
        assert has_lines == bool(camera.lines), camera.id
    assert not config.has_section(f"roi-filtering-stream-{len(site.cameras)}")


def test_roi_polygons_match_the_site_and_default_to_the_whole_frame(site: Site) -> None:
    config = parse(nvdsanalytics_config(site))
    platform = config["roi-filtering-stream-0"]["roi-platform-L1"]
    assert points(platform) == [(80, 300), (1840, 300), (1900, 1070), (20, 1070)]
    whole = config["roi-filtering-stream-2"]["roi-entrance-A"]  # CTR-CAM03 has no polygon
    assert points(whole) == [(0, 0), (1920, 0), (1920, 1080), (0, 1080)]


def test_overcrowding_thresholds_only_where_the_site_sets_them(site: Site) -> None:
    config = parse(nvdsanalytics_config(site, class_id=2))
    for index in (0, 1):  # CTR-CAM01 and CTR-CAM02: threshold 60
        section = config[f"overcrowding-stream-{index}"]
        assert section["object-threshold"] == "60"
        assert section["class-id"] == "2"
        assert [k for k in section if k.startswith("roi-")] == [
            f"roi-{site.cameras[index].rois[0].id}"
        ]
    assert [s for s in config.sections() if s.startswith("overcrowding")] == [
        "overcrowding-stream-0",
        "overcrowding-stream-1",
    ]


def test_line_labels_have_opposite_directions_through_the_midpoint(site: Site) -> None:
    config = parse(nvdsanalytics_config(site))
    section = config["line-crossing-stream-2"]  # CTR-CAM03: line_1 x=1200, in to the right
    assert section["extended"] == "0"
    assert section["mode"] in {"loose", "balanced", "strict"}
    values_in = ints(section["line-crossing-line_1-in"])
    values_out = ints(section["line-crossing-line_1-out"])
    assert len(values_in) == len(values_out) == 8
    assert values_in[4:] == values_out[4:] == [1200, 0, 1200, 1080]  # the line itself
    (ax, ay, bx, by), (cx, cy, dx, dy) = values_in[:4], values_out[:4]
    assert ((ax + bx) / 2, (ay + by) / 2) == ((cx + dx) / 2, (cy + dy) / 2) == (1200, 540)
    assert bx > ax and ay == by  # "in" points right
    assert (dx - cx, dy - cy) == (ax - bx, ay - by)  # "out" is its opposite
    assert sorted(k for k in section if k.startswith("line-crossing-")) == [
        "line-crossing-line_1-in",
        "line-crossing-line_1-out",
    ]


def test_stream_order_follows_the_camera_list_and_scales_to_the_first_camera(
    site: Site,
) -> None:
    cameras = ["WLK-CAM01", "CTR-CAM01", "CTR-CAM03"]
    assert stream_map(site, cameras) == {0: "WLK-CAM01", 1: "CTR-CAM01", 2: "CTR-CAM03"}
    assert config_size(site, cameras) == (768, 576)
    config = parse(nvdsanalytics_config(site, cameras))
    assert config["property"]["config-width"] == "768"
    assert "roi-promenade" in config["roi-filtering-stream-0"]
    # CTR-CAM01 (1920x1080) scaled by 0.4 and 0.5333 to the 768x576 config
    assert points(config["roi-filtering-stream-1"]["roi-platform-L1"]) == [
        (32, 160),
        (736, 160),
        (760, 571),
        (8, 571),
    ]
    line = ints(config["line-crossing-stream-2"]["line-crossing-line_1-in"])
    assert line[4:] == [480, 0, 480, 576]
    assert (line[0] + line[2]) / 2 == 480
    assert not config.has_section("overcrowding-stream-0")
    assert config.has_section("overcrowding-stream-1")


def test_write_config_writes_the_same_text(site: Site, tmp_path: Path) -> None:
    path = write_config(site, tmp_path / "analytics.txt", ["CTR-CAM03"])
    assert path.read_text(encoding="utf-8") == nvdsanalytics_config(site, ["CTR-CAM03"])
    assert parse(path.read_text(encoding="utf-8")).has_section("line-crossing-stream-0")


@pytest.mark.parametrize(
    ("cameras", "message"),
    [
        (["CTR-CAM01", "NOPE"], "unknown camera ids ['NOPE']"),
        (["CTR-CAM01", "CTR-CAM01"], "listed twice"),
        ([], "no cameras"),
    ],
)
def test_bad_camera_lists_are_refused(site: Site, cameras: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        nvdsanalytics_config(site, cameras)


def test_one_camera_cannot_have_two_overcrowding_thresholds(tmp_path: Path) -> None:
    def two_rois(raw: dict[str, Any]) -> None:
        raw["cameras"][0]["rois"].append(
            {"id": "edge", "zone": "CTR-L1-platform", "overcrowding_threshold": 10}
        )

    site = site_with(tmp_path, two_rois)
    with pytest.raises(ValueError, match=r"CTR-CAM01.*edge=10"):
        nvdsanalytics_config(site)


def test_same_threshold_rois_share_one_overcrowding_group(tmp_path: Path) -> None:
    def two_rois(raw: dict[str, Any]) -> None:
        raw["cameras"][0]["rois"].append(
            {"id": "edge", "zone": "CTR-L1-platform", "overcrowding_threshold": 60}
        )

    config = parse(nvdsanalytics_config(site_with(tmp_path, two_rois)))
    section = config["overcrowding-stream-0"]
    assert [k for k in section if k.startswith("roi-")] == ["roi-platform-L1", "roi-edge"]
    assert points(section["roi-edge"]) == [(0, 0), (1920, 0), (1920, 1080), (0, 1080)]
