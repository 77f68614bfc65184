"""Site tables in the warehouse, and the views that join them."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml
from bytewax.testing import TestingSource, run_main

from crowdwatch.batches import RawBatch
from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.video.messages import CameraMessage, RoiCount
from crowdwatch.warehouse.client import Warehouse
from crowdwatch.warehouse.sitesync import sync_site
from pipelines import gate_flow, video_headcount
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
T0_MS = 1_795_132_800_000  # 2026-11-20 08:00 in Shanghai


def test_sync_mirrors_the_file_and_drops_what_left_it(warehouse: Warehouse) -> None:
    assert sync_site(warehouse, SITE) == {
        "site_stations": 5,
        "site_zones": 9,
        "site_gates": 20,
        "site_cameras": 5,
    }
    smaller = SITE.model_copy(update={"cameras": SITE.cameras[:2]})
    sync_site(warehouse, smaller)
    cameras = warehouse.query("SELECT camera_id FROM site_cameras FINAL ORDER BY camera_id")
    assert cameras["camera_id"].to_list() == ["CTR-CAM01", "CTR-CAM02"]
    zone = warehouse.query(
        "SELECT lat, lon, capacity FROM site_zones FINAL WHERE zone_id = 'RVS-concourse'"
    )
    assert zone.rows() == [(30.245, 120.17, 1375)]


def test_network_rates_count_silent_cameras_as_offline(
    settings: Settings, warehouse: Warehouse
) -> None:
    sync_site(warehouse, SITE)
    assert warehouse.query("SELECT * FROM camera_network").rows() == [(5, 0, 0, 0.0, 0.0)]
    messages = [
        CameraMessage("CTR-CAM01", i, T0_MS + i * 40, 2, (RoiCount("platform-L1", 2),))
        for i in range(25)
    ]
    lines = [m.to_json(SITE.tz) for m in messages]
    run_main(
        video_headcount.build(
            settings,
            source=TestingSource([RawBatch("t", "video", pl.DataFrame({"payload": lines}), 0)]),
        )
    )
    assert warehouse.query("SELECT * FROM camera_network").rows() == [(5, 1, 1, 0.2, 0.2)]


def test_one_series_per_zone_from_gates_and_video(
    tmp_path: Path, engine_dir: Path, settings: Settings
) -> None:
    # a camera over the Riverside concourse, which gates also count
    data = SITE.model_dump(mode="json")
    data["cameras"][0]["station"] = "RVS"
    data["cameras"][0]["rois"][0]["zone"] = "RVS-concourse"
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    settings = Settings(
        data_dir=engine_dir,
        site_file=path,
        clickhouse_database=settings.clickhouse_database + "_mixed",
    )
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as wh:
        wh.migrate()
        passages = pl.DataFrame(
            {
                "ts": ["2026-11-20T08:00:10+08:00", "2026-11-20T08:00:20+08:00"],
                "gate_id": ["RVS-G01"] * 2,
                "direction": ["in", "in"],
            }
        )
        run_main(
            gate_flow.build(settings, source=TestingSource([RawBatch("g", "passage", passages)]))
        )
        video = [
            CameraMessage(
                "CTR-CAM01", i, T0_MS + i * 1000, 3, (RoiCount("platform-L1", 3),)
            ).to_json(SITE.tz)
            for i in range(30)
        ]
        run_main(
            video_headcount.build(
                settings,
                source=TestingSource([RawBatch("v", "video", pl.DataFrame({"payload": video}))]),
            )
        )
        row = wh.query(
            "SELECT gate_entries, gate_occupancy, video_headcount, capacity FROM zone_minute "
            "WHERE zone_id = 'RVS-concourse'"
        ).rows()
    assert row == [(2, 2.0, 3.0, 1375)]
