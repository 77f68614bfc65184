"""The generated Hangzhou Metro site file: valid, consistent, and never stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from crowdwatch.site import DwellModel, Site, ZoneKind, load_site

REPO_ROOT = Path(__file__).resolve().parents[2]
SITE_FILE = REPO_ROOT / "infra" / "sites" / "hangzhou_metro.yaml"
SCRIPT = REPO_ROOT / "infra" / "sites" / "make_hangzhou.py"
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "hangzhou_metro"

needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir(),
    reason=f"Hangzhou Metro data not found at {DATA_DIR} (../shared/data/hangzhou_metro)",
)


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(SITE_FILE)


def test_loads_with_80_stations_each_with_one_concourse(site: Site) -> None:
    assert site.site.timezone == "Asia/Shanghai"
    assert [s.id for s in site.stations] == [f"HZ{i:02d}" for i in range(80)]
    assert [z.id for z in site.zones] == [f"HZ{i:02d}-station" for i in range(80)]
    assert site.gates == []
    for zone in site.zones:
        assert zone.kind is ZoneKind.CONCOURSE
        assert zone.geometry is None
        assert zone.occupancy == DwellModel(entry_minutes=8, exit_minutes=3)


def test_capacity_and_area_follow_the_stated_rule(site: Site) -> None:
    for zone in site.zones:
        assert zone.capacity >= 200
        assert zone.capacity % 50 == 0
        assert zone.area_m2 == round(zone.capacity / 1.25)


def test_each_station_counts_go_to_its_own_zone(site: Site) -> None:
    for station in site.stations:
        assert station.entry_zone == f"{station.id}-station"
        assert site.entry_zone_of(station.id) == station.entry_zone
        assert site.zone_by_id[f"{station.id}-station"].station == station.id


def test_neighbours_are_symmetric(site: Site) -> None:
    for station in site.stations:
        assert station.neighbours, f"{station.id} has no neighbours"
        assert station.id not in station.neighbours
        for neighbour in station.neighbours:
            assert station.id in site.station_by_id[neighbour].neighbours, (station.id, neighbour)


def test_neighbours_skip_the_contest_station_without_data(site: Site) -> None:
    # station_idx k is the contest's stationID k below 54 and k + 1 above (54 has no data), so
    # matrix index 80 is HZ79, next to HZ15; HZ65 (stationID 66) ends line B, HZ66 starts line C.
    neighbours = {s.id: set(s.neighbours) for s in site.stations}
    assert neighbours["HZ79"] == {"HZ78", "HZ15"}
    assert neighbours["HZ15"] == {"HZ14", "HZ16", "HZ79"}
    assert neighbours["HZ65"] == {"HZ64"}
    assert neighbours["HZ66"] == {"HZ67"}
    # linked across the station without data
    assert neighbours["HZ53"] == {"HZ52", "HZ54"}
    assert neighbours["HZ54"] == {"HZ53", "HZ55"}


@needs_data
def test_committed_file_is_what_the_script_writes(tmp_path: Path) -> None:
    output = tmp_path / "hangzhou_metro.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            str(SCRIPT),
            "--data",
            str(DATA_DIR),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(result.stdout.splitlines()) == 1
    assert output.read_text(encoding="utf-8") == SITE_FILE.read_text(encoding="utf-8"), (
        "infra/sites/hangzhou_metro.yaml is stale: run python infra/sites/make_hangzhou.py"
    )


@needs_data
def test_busiest_station_has_more_capacity_than_quietest(site: Site) -> None:
    totals = (
        pl.read_csv(DATA_DIR / "hangzhou_metro_10min_inout.csv")
        .group_by("station_idx")
        .agg((pl.col("inflow") + pl.col("outflow")).sum().alias("trips"))
        .sort("trips")
    )
    quietest, busiest = totals["station_idx"][0], totals["station_idx"][-1]
    capacity = {z.station: z.capacity for z in site.zones}
    assert capacity[f"HZ{busiest:02d}"] > capacity[f"HZ{quietest:02d}"]
