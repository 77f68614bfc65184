"""The video pipeline end to end on Bytewax into the embedded warehouse."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from bytewax.testing import TestingSink, TestingSource, run_main

from crowdwatch.batches import RawBatch
from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.video.messages import CameraMessage, RoiCount
from crowdwatch.video.mot import mot_messages, read_mot
from crowdwatch.warehouse.client import TableRows, Warehouse
from pipelines.video_headcount import build
from tests.conftest import EXAMPLE_SITE, SHARED_DATA

MOT17 = SHARED_DATA / "video_detections" / "mot17_yolov8n_bytetrack"
SITE = load_site(EXAMPLE_SITE)
T0_MS = 1_795_132_800_000  # 2026-11-20 08:00 in Shanghai


def batches(messages: list[CameraMessage], size: int = 200, source: str = "test") -> list[RawBatch]:
    lines = [m.to_json(SITE.tz) for m in messages]
    return [
        RawBatch(source, "video", pl.DataFrame({"payload": lines[i : i + size]}), i)
        for i in range(0, len(lines), size)
    ]


def frames(
    camera: str, roi: str, counts: list[int], *, start_ms: int = T0_MS, step_ms: int = 1000
) -> list[CameraMessage]:
    return [
        CameraMessage(camera, i, start_ms + i * step_ms, n, (RoiCount(roi, n),))
        for i, n in enumerate(counts)
    ]


def site_with(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def collected(out: list[TableRows], table: str) -> pl.DataFrame:
    return pl.concat([rows for name, rows in out if name == table])


def latest(rows: pl.DataFrame, *keys: str) -> pl.DataFrame:
    return rows.sort("version").unique(list(keys), keep="last").sort(*keys)


def mot_sequence(name: str, camera: str) -> list[CameraMessage]:
    path = MOT17 / name / "tracking.txt"
    if not path.exists():
        pytest.skip(f"real data missing: {path}")
    return mot_messages(read_mot(path), SITE.camera_by_id[camera], start_ms=T0_MS)


def test_recorded_sequences_land_frame_by_frame(settings: Settings, warehouse: Warehouse) -> None:
    nine = mot_sequence("MOT17-09", "CTR-CAM03")
    two = mot_sequence("MOT17-02", "STD-CAM01")
    run_main(
        build(settings, source=TestingSource(batches(nine, source="a") + batches(two, source="b")))
    )
    stored = warehouse.query(
        "SELECT camera_id, frame, persons FROM video_frames FINAL ORDER BY camera_id, frame"
    )
    expected = sorted((m.camera_id, m.frame, m.persons) for m in nine + two)
    assert list(stored.iter_rows()) == expected
    # line crossings: the same totals as the messages (which match events.csv within one)
    zones = warehouse.query(
        "SELECT zone_id, toInt64(sum(entered)) AS i, toInt64(sum(exited)) AS o "
        "FROM video_zone_metrics FINAL GROUP BY zone_id ORDER BY zone_id"
    )
    assert zones.rows() == [
        (
            "CTR-entrance-A",
            sum(m.lines[0].entered for m in nine),
            sum(m.lines[0].exited for m in nine),
        ),
        ("STD-plaza", sum(m.lines[0].entered for m in two), sum(m.lines[0].exited for m in two)),
    ]
    # 5 s windows: mean, max and p90 of the per-frame counts
    windows = warehouse.query(
        "SELECT frames, persons_mean, persons_max, persons_p90 FROM video_roi_windows FINAL "
        "WHERE camera_id = 'CTR-CAM03' ORDER BY ts"
    )
    counts = pl.DataFrame({"ts": [m.ts_ms for m in nine], "n": [m.persons for m in nine]})
    reference = (
        counts.group_by((pl.col("ts") // 5000).alias("w"))
        .agg(
            pl.len().alias("frames"),
            pl.col("n").mean().alias("mean"),
            pl.col("n").max().alias("max"),
            pl.col("n").quantile(0.9, "linear").alias("p90"),
        )
        .sort("w")
    )
    assert windows["frames"].to_list() == reference["frames"].to_list()
    assert windows["persons_max"].to_list() == reference["max"].to_list()
    assert windows["persons_mean"].to_numpy() == pytest.approx(
        reference["mean"].to_numpy(), rel=1e-6
    )
    assert windows["persons_p90"].to_numpy() == pytest.approx(reference["p90"].to_numpy(), rel=1e-6)
    assert warehouse.query("SELECT count() AS n FROM rejected_events")["n"][0] == 0


@pytest.mark.parametrize(("combine", "expected"), [("sum", 12.0), ("max", 8.0)])
def test_cameras_on_one_zone_are_summed_or_maxed(
    tmp_path: Path, engine_dir: Path, combine: str, expected: float
) -> None:
    def change(data: dict) -> None:  # type: ignore[type-arg]
        data["zones"][1]["video_combine"] = combine  # CTR-L1-platform
        data["cameras"][1]["rois"][0]["zone"] = "CTR-L1-platform"  # CAM02 watches it too

    settings = Settings(data_dir=engine_dir, site_file=site_with(tmp_path, change))
    out: list[TableRows] = []
    feed = frames("CTR-CAM01", "platform-L1", [4] * 5) + frames("CTR-CAM02", "platform-L2", [8] * 5)
    run_main(build(settings, source=TestingSource(batches(feed)), sink=TestingSink(out)))
    zone = latest(collected(out, "video_zone_metrics"), "zone_id", "ts")
    assert zone.filter(pl.col("zone_id") == "CTR-L1-platform")["headcount"].to_list() == [expected]
    assert zone["rois"].to_list() == [2]
    assert zone["capacity_use"].to_list() == pytest.approx([expected / 1950])


def test_a_silent_camera_goes_offline_within_twice_its_timeout(settings: Settings) -> None:
    out: list[TableRows] = []
    quiet = frames("CTR-CAM01", "platform-L1", [3] * 10)  # stops after 9 s
    busy = frames("CTR-CAM02", "platform-L2", list(range(40)))  # goes on to 39 s
    feed = batches(sorted(quiet + busy, key=lambda m: m.ts_ms), size=5)
    run_main(build(settings, source=TestingSource(feed), sink=TestingSink(out)))
    status = collected(out, "camera_status").filter(pl.col("camera_id") == "CTR-CAM01")
    offline = status.filter(pl.col("status") == "offline").sort("version")
    assert offline.height > 0
    first = offline.row(0, named=True)
    last_seen = quiet[-1].ts_ms
    detected_ms = first["since"].timestamp() * 1000
    timeout_ms = SITE.camera_by_id["CTR-CAM01"].offline_after_s * 1000
    assert timeout_ms < detected_ms - last_seen <= 2 * timeout_ms
    # before it went quiet it was online
    assert status.sort("version").row(0, named=True)["status"] == "online"


def test_a_whole_station_going_quiet_is_noticed_on_the_wall_clock(
    tmp_path: Path, engine_dir: Path
) -> None:
    def change(data: dict) -> None:  # type: ignore[type-arg]
        data["cameras"][2]["offline_after_s"] = 0.3  # CTR-CAM03

    settings = Settings(data_dir=engine_dir, site_file=site_with(tmp_path, change))
    out: list[TableRows] = []
    feed = [
        *batches(frames("CTR-CAM03", "entrance-A", [2, 2, 3])),
        TestingSource.PAUSE(timedelta(seconds=1.5)),
    ]
    run_main(build(settings, source=TestingSource(feed), sink=TestingSink(out)))
    status = (
        collected(out, "camera_status").filter(pl.col("camera_id") == "CTR-CAM03").sort("version")
    )
    assert status["status"].to_list()[0] == "online"
    assert status["status"].to_list()[-1] == "offline"


def test_a_frozen_camera_is_stuck_while_its_neighbour_changes(settings: Settings) -> None:
    out: list[TableRows] = []
    frozen = frames("CTR-CAM01", "platform-L1", [7] * 70)
    alive = frames("CTR-CAM02", "platform-L2", [i % 9 for i in range(70)])
    feed = batches(sorted(frozen + alive, key=lambda m: m.ts_ms), size=20)
    run_main(build(settings, source=TestingSource(feed), sink=TestingSink(out)))
    final = latest(collected(out, "camera_status"), "camera_id")
    states = dict(zip(final["camera_id"], final["status"], strict=True))
    assert states["CTR-CAM01"] == "stuck"
    assert states["CTR-CAM02"] == "online"
    assert states["CTR-CAM03"] == "offline"  # never reported


def test_a_camera_flooding_garbage_costs_no_good_message(
    settings: Settings, warehouse: Warehouse
) -> None:
    good = [m.to_json(SITE.tz) for m in frames("CTR-CAM01", "platform-L1", [5] * 300, step_ms=100)]
    garbage = [f'{{"camera_id": "CTR-CAM02", "frame": "{i}", "rois": 1}}' for i in range(3000)]
    mixed = [
        line for i, g in enumerate(garbage) for line in ([good[i // 10], g] if i % 10 == 0 else [g])
    ]
    assert len(mixed) == 3300
    feed = [
        RawBatch("flood", "video", pl.DataFrame({"payload": mixed[i : i + 500]}), i)
        for i in range(0, len(mixed), 500)
    ]
    run_main(build(settings, source=TestingSource(feed)))
    assert warehouse.query("SELECT count() AS n FROM video_frames FINAL")["n"][0] == 300
    reasons = warehouse.query("SELECT reason FROM rejected_events FINAL")["reason"]
    assert reasons.len() == 3000
    assert (reasons == "frame must be a 64-bit integer").all()


def test_messages_later_than_the_horizon_are_rejected(
    settings: Settings, warehouse: Warehouse
) -> None:
    recent = frames("CTR-CAM01", "platform-L1", [1] * 5, start_ms=T0_MS + 600_000)
    old = frames("CTR-CAM01", "platform-L1", [9] * 3)  # ten minutes earlier
    run_main(build(settings, source=TestingSource(batches(recent) + batches(old))))
    assert warehouse.query("SELECT count() AS n FROM video_frames FINAL")["n"][0] == 5
    rejected = warehouse.query("SELECT reason FROM rejected_events FINAL")
    assert rejected.height == 3
    assert rejected["reason"].unique().to_list() == [
        "later than the video horizon of 120 s behind the station's newest"
    ]


def test_the_cpu_detector_on_real_video_lands_in_the_warehouse(
    settings: Settings, warehouse: Warehouse
) -> None:
    from detectors.cpu_hog import detect

    video = SHARED_DATA / "video" / "vtest.avi"
    if not video.exists():
        pytest.skip(f"real data missing: {video}")
    messages = list(detect(video, SITE.camera_by_id["WLK-CAM01"], start_ms=T0_MS, max_frames=20))
    assert len(messages) == 20
    run_main(build(settings, source=TestingSource(batches(messages, size=7))))
    stored = warehouse.query(
        "SELECT frame, persons FROM video_frames FINAL WHERE camera_id = 'WLK-CAM01' ORDER BY frame"
    )
    assert stored.rows() == [(m.frame, m.rois[0].persons) for m in messages]
    assert stored["persons"].sum() > 0  # the video shows people walking
    zone = warehouse.query(
        "SELECT sum(headcount * rois) > 0 AS seen, max(window_s) AS w "
        "FROM video_zone_metrics FINAL WHERE zone_id = 'WLK-lakeside'"
    )
    assert zone.rows() == [(True, 5)]


SAMPLES = Path(__file__).parent.parent / "detectors" / "samples"


def stock_payload(name: str, camera: str, timestamp: str) -> str:
    doc = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    doc["@timestamp"] = timestamp
    if "sensorId" in doc:
        doc["sensorId"] = camera
    else:
        doc["sensor"]["id"] = camera
    return json.dumps(doc)


def test_stock_deepstream_payloads_count_people_and_reject_the_rest(
    settings: Settings, warehouse: Warehouse
) -> None:
    minimal = [
        stock_payload("minimal_person_frame.json", "CTR-CAM03", "2026-11-20T00:00:00.000Z"),
        stock_payload("minimal_person_frame.json", "CAM-NOWHERE", "2026-11-20T00:00:00.040Z"),
        '{"version": "4.0", "sensorId": "CTR-CAM03"}',
    ]
    full = [
        stock_payload("full_deepstream_test4_person.json", "STD-CAM01", "2026-11-20T00:00:01.000Z")
    ]
    feed = [
        RawBatch("ds-min", "deepstream_minimal", pl.DataFrame({"payload": minimal}), 0),
        RawBatch("ds-full", "deepstream_full", pl.DataFrame({"payload": full}), 0),
    ]
    run_main(build(settings, source=TestingSource(feed)))
    stored = warehouse.query("SELECT camera_id, persons FROM video_frames FINAL ORDER BY camera_id")
    # the minimal frame holds two people and a bag; the full message one person
    assert stored.rows() == [("CTR-CAM03", 2), ("STD-CAM01", 1)]
    rejected = warehouse.query(
        "SELECT source, position, reason FROM rejected_events FINAL ORDER BY position"
    )
    assert rejected.rows()[0] == ("ds-min", "row 1", "unknown camera 'CAM-NOWHERE'")
    assert rejected.rows()[1] == ("ds-min", "row 2", "missing key '@timestamp'")
