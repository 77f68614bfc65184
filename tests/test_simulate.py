from __future__ import annotations

from datetime import date, time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest

from crowdwatch.simulate import (
    COLUMNS,
    TICKET_TYPES,
    Surge,
    default_surge,
    simulate_day,
    write_records,
)
from crowdwatch.site import BalanceModel, DwellModel, Site, load_site

SITE_FILE = Path(__file__).resolve().parent.parent / "infra" / "sites" / "example_interchange.yaml"
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
