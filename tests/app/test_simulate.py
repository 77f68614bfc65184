from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest

from app.simulate import (
    COLUMNS,
    TICKET_TYPES,
    CallCluster,
    CameraFault,
    Surge,
    camera_payloads,
    default_call_cluster,
    default_camera_faults,
    default_surge,
    simulate_calls,
    simulate_cameras,
    simulate_day,
    write_records,
    zone_occupancy,
)
from crowdwatch.batches import CALL_FIELDS, VIDEO_FIELDS, RawBatch
from crowdwatch.calls.categories import load_categories
from crowdwatch.calls.counts import CallWindows
from crowdwatch.calls.records import CallDirectory, CallZones, parse_calls
from crowdwatch.settings import DEFAULT_CATEGORIES_FILE
from crowdwatch.site import BalanceModel, DwellModel, Site, load_site
from crowdwatch.video.messages import CameraDirectory, parse_video

SITE_FILE = Path(__file__).resolve().parents[2] / "infra" / "sites" / "example_interchange.yaml"
WEEKDAY = date(2026, 11, 20)  # a Friday
SATURDAY = date(2026, 11, 21)
METRO_STATIONS = ("CTR", "RVS", "NPK", "STD")
RESIDENTIAL_STATIONS = ("RVS", "NPK")


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(SITE_FILE)


@pytest.fixture(scope="module")
def weekday(site: Site) -> pl.DataFrame:
    return simulate_day(site, WEEKDAY, seed=1)


@pytest.fixture(scope="module")
def surged(site: Site) -> pl.DataFrame:
    return simulate_day(site, WEEKDAY, seed=1, surge=default_surge())


def local_minutes(frame: pl.DataFrame, timezone: str) -> pl.Series:
    """Local minute of the day of every record."""
    local = (
        frame["ts"]
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.3f%:z", time_unit="ms")
        .dt.convert_time_zone(timezone)
    )
    return local.dt.hour().cast(pl.Int64) * 60 + local.dt.minute().cast(pl.Int64)


def occupancy_per_minute(frame: pl.DataFrame, site: Site, zone_id: str) -> npt.NDArray[np.int64]:
    """Occupancy of a gate-fed zone at the end of every local minute of a day (no DST).

    Dwell: entries over the last ``entry_minutes`` + exits over the last ``exit_minutes``.
    Balance: cumulative entries - exits, never below 0, restarting at ``reset_at``.
    """
    gates = [g.id for g in site.gates if g.zone == zone_id]
    rows = frame.filter(pl.col("gate_id").is_in(gates))
    minute = local_minutes(rows, site.site.timezone).to_numpy()
    inbound = (rows["direction"] == "in").to_numpy()
    entries = np.bincount(minute[inbound], minlength=1440).astype(np.int64)
    exits = np.bincount(minute[~inbound], minlength=1440).astype(np.int64)
    model = site.zone_by_id[zone_id].occupancy

    def window_sums(x: npt.NDArray[np.int64], length: int) -> npt.NDArray[np.int64]:
        c = np.concatenate(([0], np.cumsum(x)))
        idx = np.arange(1, x.size + 1)
        return c[idx] - c[np.maximum(idx - length, 0)]

    if isinstance(model, DwellModel):
        return window_sums(entries, model.entry_minutes) + window_sums(exits, model.exit_minutes)
    reset = model.reset_at.hour * 60 + model.reset_at.minute
    occupancy = np.empty(1440, dtype=np.int64)
    for segment in (slice(0, reset), slice(reset, 1440)):
        # Lindley: a walk reflected at 0 is the walk minus its running minimum (when below 0).
        walk = np.cumsum(entries[segment] - exits[segment])
        occupancy[segment] = walk - np.minimum(np.minimum.accumulate(walk), 0)
    return occupancy


def metro_concourse_shares(frame: pl.DataFrame, site: Site) -> dict[str, float]:
    """Peak occupancy / capacity of every gate-fed dwell zone."""
    zones = {g.zone for g in site.gates}
    return {
        z.id: float(occupancy_per_minute(frame, site, z.id).max()) / z.capacity
        for z in site.zones
        if z.id in zones and isinstance(z.occupancy, DwellModel)
    }


def test_same_seed_same_records_and_other_seed_differs(site: Site) -> None:
    first = simulate_day(site, WEEKDAY, seed=7, scale=0.2)
    again = simulate_day(site, WEEKDAY, seed=7, scale=0.2)
    other = simulate_day(site, WEEKDAY, seed=8, scale=0.2)
    assert first.height > 10_000
    assert first.equals(again)
    assert not first.equals(other)


def test_columns_are_the_passage_fields_as_strings(weekday: pl.DataFrame) -> None:
    assert weekday.columns == list(COLUMNS)
    assert weekday.schema == pl.Schema(dict.fromkeys(COLUMNS, pl.String))
    assert weekday.null_count().sum_horizontal().item() == 0
    assert set(weekday["direction"].unique()) == {"in", "out"}
    assert set(weekday["ticket_type"].unique()) == set(TICKET_TYPES)


def test_ticket_shares_are_plausible(weekday: pl.DataFrame) -> None:
    shares = weekday["ticket_type"].value_counts(normalize=True)
    share = dict(zip(shares["ticket_type"], shares["proportion"], strict=True))
    assert share["qr"] > share["stored_value"] > share["single"] > share["senior"] > 0.02


def test_records_are_sorted_by_time(weekday: pl.DataFrame) -> None:
    instants = weekday["ts"].str.to_datetime("%Y-%m-%dT%H:%M:%S%.3f%:z", time_unit="ms")
    assert instants.is_sorted()


def test_gates_exist_and_directions_respect_the_gate(site: Site, surged: pl.DataFrame) -> None:
    gates = pl.DataFrame(
        {
            "gate_id": [g.id for g in site.gates],
            "gate_station": [g.station for g in site.gates],
            "gate_direction": [g.direction for g in site.gates],
        }
    )
    joined = surged.join(gates, on="gate_id", how="left")
    assert joined["gate_station"].null_count() == 0
    assert (joined["station_id"] == joined["gate_station"]).all()
    wrong_way = joined.filter(
        (pl.col("gate_direction") != "both") & (pl.col("gate_direction") != pl.col("direction"))
    )
    assert wrong_way.height == 0
    # Every gate is used, so the check above saw the one-way gates.
    assert set(surged["gate_id"].unique()) == {g.id for g in site.gates}


def test_no_metro_passages_during_the_night_closure(site: Site, surged: pl.DataFrame) -> None:
    metro = surged.filter(pl.col("station_id").is_in(METRO_STATIONS))
    minute = local_minutes(metro, site.site.timezone)
    closed = (minute >= 23 * 60 + 30) | (minute < 5 * 60 + 30)
    assert metro.height > 0
    assert int(closed.sum()) == 0


def test_night_surge_is_cut_at_the_closure(site: Site) -> None:
    late = Surge("STD", time(23, 0), 60, 6000)
    frame = simulate_day(site, WEEKDAY, seed=2, surge=late)
    std = frame.filter(pl.col("station_id") == "STD")
    minute = local_minutes(std, site.site.timezone)
    assert int(((minute >= 23 * 60) & (minute < 23 * 60 + 30)).sum()) > 1000
    assert int((minute >= 23 * 60 + 30).sum()) == 0


def test_weekday_morning_peak_beats_night_and_midday(site: Site, weekday: pl.DataFrame) -> None:
    minute = local_minutes(weekday, site.site.timezone)
    frame = weekday.with_columns(minute.alias("minute"))
    for station in METRO_STATIONS:
        rows = frame.filter(pl.col("station_id") == station)
        peak = rows.filter(pl.col("minute").is_between(7 * 60 + 30, 9 * 60, closed="left")).height
        night = rows.filter(pl.col("minute").is_between(3 * 60, 5 * 60, closed="left")).height
        midday = rows.filter(pl.col("minute").is_between(11 * 60, 12 * 60 + 30, closed="left"))
        assert peak > night, station
        assert peak > 2 * midday.height, station


def test_morning_direction_asymmetry(site: Site, weekday: pl.DataFrame) -> None:
    minute = local_minutes(weekday, site.site.timezone)
    morning = weekday.filter(minute.is_between(7 * 60 + 30, 9 * 60, closed="left"))

    def count(station: str, direction: str) -> int:
        return morning.filter(
            (pl.col("station_id") == station) & (pl.col("direction") == direction)
        ).height

    for station in RESIDENTIAL_STATIONS:
        assert count(station, "in") > 2 * count(station, "out"), station
    assert count("CTR", "out") > 1.5 * count("CTR", "in")


def test_weekend_is_lower_and_flatter(site: Site, weekday: pl.DataFrame) -> None:
    saturday = simulate_day(site, SATURDAY, seed=1)
    weekday_metro = weekday.filter(pl.col("station_id").is_in(METRO_STATIONS)).height
    weekend_metro = saturday.filter(pl.col("station_id").is_in(METRO_STATIONS)).height
    assert weekend_metro < 0.9 * weekday_metro
    shares = metro_concourse_shares(saturday, site)
    assert max(shares.values()) < 0.35


def test_busiest_metro_concourse_peaks_at_50_to_70_percent(
    site: Site, weekday: pl.DataFrame
) -> None:
    shares = metro_concourse_shares(weekday, site)
    busiest = max(shares, key=lambda zone: shares[zone])
    assert busiest == "CTR-concourse"
    assert 0.5 <= shares[busiest] <= 0.7, shares


def test_scenic_area_fills_to_60_to_75_percent_and_empties(
    site: Site, weekday: pl.DataFrame
) -> None:
    zone = site.zone_by_id["WLK-lakeside"]
    assert isinstance(zone.occupancy, BalanceModel)
    occupancy = occupancy_per_minute(weekday, site, zone.id)
    peak_minute = int(occupancy.argmax())
    assert 0.6 <= occupancy.max() / zone.capacity <= 0.75
    assert 10 * 60 <= peak_minute <= 15 * 60
    assert occupancy[: 7 * 60].max() == 0
    assert occupancy[20 * 60 :].max() < 0.02 * zone.capacity
    assert occupancy[-1] == 0


def test_default_surge_overfills_the_stadium_concourse(site: Site, surged: pl.DataFrame) -> None:
    zone = site.zone_by_id["STD-concourse"]
    assert zone.capacity == 1750
    share = occupancy_per_minute(surged, site, zone.id) / zone.capacity
    over = np.flatnonzero(share > 1.0)
    warned = np.flatnonzero(share >= 0.8)
    assert over.size >= 3
    assert warned[0] < over[0]
    assert 21 * 60 + 30 <= warned[0] < 22 * 60 + 15


def test_stadium_concourse_stays_calm_without_the_surge(site: Site, weekday: pl.DataFrame) -> None:
    share = occupancy_per_minute(weekday, site, "STD-concourse") / 1750
    assert share.max() < 0.8


def test_scale_multiplies_the_volume(site: Site) -> None:
    small = simulate_day(site, WEEKDAY, seed=3, scale=0.5)
    large = simulate_day(site, WEEKDAY, seed=3, scale=2.0)
    assert 3.6 < large.height / small.height < 4.4


def test_ts_parse_back_to_the_requested_local_day(site: Site, surged: pl.DataFrame) -> None:
    assert surged["ts"].str.contains(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00$").all()
    local = (
        surged["ts"]
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.3f%:z", time_unit="ms")
        .dt.convert_time_zone(site.site.timezone)
    )
    assert local.dt.date().unique().to_list() == [WEEKDAY]


def test_unknown_surge_station_is_an_error(site: Site) -> None:
    with pytest.raises(ValueError, match="'XYZ' is not in the site"):
        simulate_day(site, WEEKDAY, surge=Surge("XYZ", time(21, 0), 30, 100))


def test_surge_must_last_at_least_a_minute() -> None:
    with pytest.raises(ValueError, match="minutes must be at least 1"):
        Surge("STD", time(21, 0), 0, 100)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_write_records_round_trips(site: Site, tmp_path: Path, suffix: str) -> None:
    frame = simulate_day(site, WEEKDAY, seed=4, scale=0.02)
    path = tmp_path / f"records{suffix}"
    write_records(frame, path)
    schema = dict.fromkeys(COLUMNS, pl.String)
    if suffix == ".csv":
        back = pl.read_csv(path, schema=schema)
    elif suffix == ".jsonl":
        back = pl.read_ndjson(path, schema=schema)
    else:
        back = pl.read_parquet(path)
    assert frame.height > 1000
    assert back.equals(frame)


def test_write_records_rejects_other_suffixes(site: Site, tmp_path: Path) -> None:
    frame = simulate_day(site, WEEKDAY, seed=4, scale=0.01)
    with pytest.raises(ValueError, match=r"\.csv, \.jsonl or \.parquet"):
        write_records(frame, tmp_path / "records.xlsx")
    assert not (tmp_path / "records.xlsx").exists()


def test_zero_scale_gives_no_records(site: Site) -> None:
    frame = simulate_day(site, WEEKDAY, scale=0.0, surge=default_surge())
    assert frame.height == 0
    assert frame.schema == pl.Schema(dict.fromkeys(COLUMNS, pl.String))


def test_daylight_saving_day_keeps_local_hours(site: Site) -> None:
    berlin = Site.model_validate(
        {**site.model_dump(), "site": {"name": "Berlin", "timezone": "Europe/Berlin"}}
    )
    spring_forward = date(2026, 3, 29)  # 02:00 CET becomes 03:00 CEST: a 23-hour day
    frame = simulate_day(berlin, spring_forward, seed=5)
    offsets = frame["ts"].str.slice(-6)
    assert set(offsets.unique()) == {"+02:00"}  # nothing runs before 05:30
    local = frame["ts"].str.to_datetime("%Y-%m-%dT%H:%M:%S%.3f%:z", time_unit="ms")
    local = local.dt.convert_time_zone("Europe/Berlin")
    assert local.dt.date().unique().to_list() == [spring_forward]
    metro = frame.filter(pl.col("station_id").is_in(METRO_STATIONS))
    minute = local_minutes(metro, "Europe/Berlin").to_numpy()
    assert minute.min() >= 5 * 60 + 30
    assert minute.max() < 23 * 60 + 30
    # Service hours follow the local clock: an hour off either way would fail here.
    assert minute.min() < 5 * 60 + 35
    assert minute.max() >= 23 * 60 + 25


# --- camera messages ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def messages(site: Site, surged: pl.DataFrame) -> pl.DataFrame:
    return simulate_cameras(site, WEEKDAY, surged, seed=2, faults=default_camera_faults())


def instants(text: pl.Series) -> pl.Series:
    return text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.3f%:z", time_unit="ms")


def local_ms(site: Site, t: time) -> int:
    return int(datetime.combine(WEEKDAY, t, tzinfo=site.tz).timestamp() * 1000)


def test_camera_messages_parse_as_the_video_pipeline_reads_them(
    site: Site, messages: pl.DataFrame
) -> None:
    assert messages.columns == list(VIDEO_FIELDS)
    batch = RawBatch("sim", "video", camera_payloads(messages.head(5000)))
    parsed = parse_video(batch, CameraDirectory.from_site(site), 0)
    assert parsed.rejected.height == 0
    assert parsed.messages.height == 5000
    # every ROI and counting line of the site's cameras is reported
    rois = {(c.id, r.id) for c in site.cameras for r in c.rois}
    assert set(parsed.rois.select("camera_id", "roi_id").unique().iter_rows()) == rois
    lines = {(c.id, ln.id) for c in site.cameras for ln in c.lines}
    assert set(parsed.lines.select("camera_id", "line_id").unique().iter_rows()) == lines


def test_cameras_report_every_interval_at_their_frame_rate(
    site: Site, messages: pl.DataFrame
) -> None:
    ms = messages.with_columns(instants(messages["ts"]).dt.epoch("ms").alias("ms"))
    assert ms["ms"].is_sorted()
    for camera in site.cameras:
        mine = ms.filter(pl.col("camera_id") == camera.id).sort("ms")
        steps = mine["ms"].diff().drop_nulls()
        assert steps.min() == 5000  # one message every 5 s (longer only in a gap)
        fps = mine["frame"].diff().drop_nulls() / (steps / 1000)
        assert fps.min() == pytest.approx(camera.fps, rel=0.01)
        assert fps.max() == pytest.approx(camera.fps, rel=0.01)
    # modest volume: a day of five cameras is 5 * 17,280 messages less the offline half hour
    assert messages.height == 5 * 17_280 - 30 * 60 // 5


def per_minute_mean(site: Site, messages: pl.DataFrame, camera_id: str) -> npt.NDArray[np.float64]:
    mine = messages.filter(pl.col("camera_id") == camera_id)
    minute = local_minutes(mine, site.site.timezone).to_numpy()
    sums = np.bincount(minute, weights=mine["persons"].to_numpy(), minlength=1440)
    counts = np.bincount(minute, minlength=1440)
    return np.asarray(sums / np.maximum(counts, 1), dtype=np.float64)


@pytest.mark.parametrize(
    ("camera_id", "zone_id"),
    [("WLK-CAM01", "WLK-lakeside"), ("CTR-CAM01", "CTR-concourse"), ("STD-CAM01", "STD-concourse")],
)
def test_camera_counts_track_the_zone_occupancy(
    site: Site, surged: pl.DataFrame, messages: pl.DataFrame, camera_id: str, zone_id: str
) -> None:
    seen = per_minute_mean(site, messages, camera_id)
    occupancy = zone_occupancy(site, WEEKDAY, surged, zone_id)
    assert occupancy.size == 1440
    assert float(np.corrcoef(seen, occupancy)[0, 1]) > 0.9
    # a few dozen people in view at the busiest, none when the zone is empty
    assert 20 <= seen.max() <= 300
    assert seen[occupancy == 0].max() <= 1.0


def test_the_offline_camera_is_silent_in_its_gap(site: Site, messages: pl.DataFrame) -> None:
    fault = next(f for f in default_camera_faults() if f.kind == "offline")
    mine = messages.filter(pl.col("camera_id") == fault.camera_id)
    ms = instants(mine["ts"]).dt.epoch("ms").to_numpy()
    start = local_ms(site, fault.start)
    end = start + fault.minutes * 60_000
    assert not ((ms >= start) & (ms < end)).any()
    # it reports until the gap and again right after it
    assert start - 5000 <= ms[ms < start].max() and ms[ms >= end].min() < end + 5000
    # the station's other cameras keep reporting through the gap
    others = messages.filter(
        pl.col("camera_id").str.starts_with("CTR-") & (pl.col("camera_id") != fault.camera_id)
    )
    other_ms = instants(others["ts"]).dt.epoch("ms").to_numpy()
    assert ((other_ms >= start) & (other_ms < end)).sum() == 2 * fault.minutes * 12


def test_the_stuck_camera_repeats_its_counts_while_its_frames_advance(
    site: Site, messages: pl.DataFrame
) -> None:
    fault = next(f for f in default_camera_faults() if f.kind == "stuck")
    start = local_ms(site, fault.start)
    end = start + fault.minutes * 60_000
    ms = instants(messages["ts"]).dt.epoch("ms")
    during = messages.filter((ms >= start) & (ms < end))
    stuck = during.filter(pl.col("camera_id") == fault.camera_id)
    assert stuck.height == fault.minutes * 12
    assert stuck["persons"].n_unique() == 1 and stuck["persons"][0] > 0  # a busy frozen image
    assert stuck["frame"].is_sorted() and stuck["frame"].n_unique() == stuck.height
    neighbour = during.filter(pl.col("camera_id") == "CTR-CAM01")
    assert neighbour["persons"].n_unique() > 5


def test_same_seed_same_messages(site: Site, surged: pl.DataFrame) -> None:
    first = simulate_cameras(site, WEEKDAY, surged.head(50_000), seed=5)
    again = simulate_cameras(site, WEEKDAY, surged.head(50_000), seed=5)
    other = simulate_cameras(site, WEEKDAY, surged.head(50_000), seed=6)
    assert first.equals(again)
    assert not first.equals(other)


def test_a_fault_of_an_unknown_camera_is_an_error(site: Site, weekday: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="'CAM-X' is not a camera of the site"):
        simulate_cameras(
            site, WEEKDAY, weekday, faults=(CameraFault("CAM-X", "stuck", time(1), 5),)
        )


# --- 110 calls ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calls(site: Site) -> pl.DataFrame:
    return simulate_calls(site, WEEKDAY, seed=3, cluster=default_call_cluster())


def parsed_calls(site: Site, calls: pl.DataFrame) -> pl.DataFrame:
    directory = CallDirectory(
        CallZones(site), load_categories(DEFAULT_CATEGORIES_FILE), None, site.site.timezone
    )
    good, rejected = parse_calls(RawBatch("sim", "call", calls), directory, 0)
    assert rejected.height == 0
    return good


def distance_m(lat: float, lon: float, centre: tuple[float, float]) -> float:
    dy = (lat - centre[0]) * 110_540
    dx = (lon - centre[1]) * 111_320 * math.cos(math.radians(centre[0]))
    return math.hypot(dx, dy)


def test_calls_are_call_records_that_parse(site: Site, calls: pl.DataFrame) -> None:
    assert calls.columns == list(CALL_FIELDS)
    assert calls.schema == pl.Schema(dict.fromkeys(CALL_FIELDS, pl.String))
    assert calls["call_id"].n_unique() == calls.height
    assert instants(calls["received_at"]).is_sorted()
    good = parsed_calls(site, calls)
    assert good.height == calls.height
    assert {"traffic", "theft", "medical", "crowding"} <= set(good["group"])


def test_the_call_cluster_lies_in_its_window_near_the_stadium(
    site: Site, calls: pl.DataFrame
) -> None:
    cluster = default_call_cluster()
    good = parsed_calls(site, calls)
    start = datetime.combine(WEEKDAY, cluster.start, tzinfo=site.tz).astimezone(UTC)
    crowd = good.filter(pl.col("group") == "crowding")
    assert crowd.height >= cluster.calls // 2
    zone = site.zone_by_id[cluster.zone_id]
    centre = zone.geometry.centre  # type: ignore[union-attr]
    for row in crowd.iter_rows(named=True):
        minutes = (row["received_at"].replace(tzinfo=UTC) - start).total_seconds() / 60
        assert 0 <= minutes < cluster.minutes
        assert distance_m(row["lat"], row["lon"], centre) <= cluster.radius_m
        assert cluster.zone_id in row["zones"]
    # the surge's crowd calls come while the surge fills the stadium (21:30-22:15)
    assert default_surge().start <= cluster.start < time(22, 15)
    # the background rarely lands in a zone: zones are small beside the 5 km disc around them
    background = good.filter(pl.col("group") != "crowding")
    assert background.filter(pl.col("zones").list.len() > 0).height <= 3


def test_the_call_cluster_makes_a_burst_at_its_zone_only(site: Site, calls: pl.DataFrame) -> None:
    windows = CallWindows(site.site.timezone)
    tables = windows.update(parsed_calls(site, calls), 1)
    alerts = tables["call_bursts"].filter((pl.col("alert") == 1) & (pl.col("level") == "zone"))
    assert set(alerts["key"]) == {"STD-plaza"}
    cluster = default_call_cluster()
    start = datetime.combine(WEEKDAY, cluster.start, tzinfo=site.tz).astimezone(UTC)
    first = alerts["ts"].min().replace(tzinfo=UTC)  # type: ignore[union-attr]
    assert 0 <= (first - start).total_seconds() / 60 <= cluster.minutes
    # without the cluster no zone has a burst
    quiet = simulate_calls(site, WEEKDAY, seed=3)
    tables = CallWindows(site.site.timezone).update(parsed_calls(site, quiet), 1)
    zone_bursts = tables["call_bursts"].filter((pl.col("alert") == 1) & (pl.col("level") == "zone"))
    assert zone_bursts.height == 0


def test_call_volume_follows_per_day(site: Site) -> None:
    small = simulate_calls(site, WEEKDAY, seed=4, per_day=20)
    large = simulate_calls(site, WEEKDAY, seed=4, per_day=400)
    assert 10 <= small.height <= 35
    assert 340 <= large.height <= 460
    local = instants(large["received_at"]).dt.convert_time_zone(site.site.timezone)
    night = local.dt.hour().is_between(1, 4).sum()
    evening = local.dt.hour().is_between(17, 20).sum()
    assert evening > 2 * night


def test_a_cluster_in_an_unknown_zone_is_an_error(site: Site) -> None:
    with pytest.raises(ValueError, match="'NOPE' is not a zone"):
        simulate_calls(site, WEEKDAY, cluster=CallCluster("NOPE", time(21), 10, 5))
