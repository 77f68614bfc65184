"""Site files: the shipped ones load, and a wrong field is named with its file."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from crowdwatch.site import BalanceModel, DwellModel, SiteError, load_site
from tests.conftest import EXAMPLE_SITE


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def match(start: str, end: str) -> dict[str, str]:
    """An event window of the site file, kind ``match``."""
    return {"name": "match", "start": start, "end": end, "kind": "match"}


def example() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))


def test_example_site_loads_with_its_models() -> None:
    site = load_site(EXAMPLE_SITE)
    assert {s.id for s in site.stations} == {"CTR", "RVS", "NPK", "STD", "WLK"}
    assert isinstance(site.zone_by_id["WLK-lakeside"].occupancy, BalanceModel)
    assert isinstance(site.zone_by_id["CTR-concourse"].occupancy, DwellModel)
    assert site.entry_zone_of("RVS") == "RVS-concourse"  # the only zone
    assert site.entry_zone_of("CTR") == "CTR-concourse"  # set explicitly among four
    assert site.gate_by_id["WLK-G03"].direction == "out"
    kinds = {z.kind.value for z in site.zones}
    assert {"platform", "concourse", "entrance", "plaza", "scenic_area"} <= kinds


def test_the_site_calendar(tmp_path: Path) -> None:
    data = example()
    data["site"].update(country="NZ", subdivision="AUK", event_days=["2026-11-21"])
    site = load_site(write(tmp_path, data)).site
    assert date(2026, 2, 6).toordinal() in site.days_off()  # Waitangi Day
    assert date(2026, 1, 26).toordinal() in site.days_off()  # Auckland Anniversary Day
    assert date(2026, 2, 5).toordinal() not in site.days_off()
    assert site.event_ordinals() == frozenset({date(2026, 11, 21).toordinal()})
    assert date(2026, 10, 1).toordinal() in load_site(EXAMPLE_SITE).site.days_off()  # CN
    data["site"].pop("country")
    data["site"].pop("subdivision")
    assert load_site(write(tmp_path, data)).site.days_off() == frozenset()  # no country: none


def test_event_windows_add_their_days_to_the_event_days(tmp_path: Path) -> None:
    data = example()
    data["site"]["events"] = [
        {
            "name": "New Year's Eve",
            "start": "2026-12-31T20:00",
            "end": "2027-01-01T02:00",
            "kind": "new_year",
            "attendance": 50_000,
        },
        match("2026-11-21T19:00", "2026-11-21T22:00"),
    ]
    site = load_site(write(tmp_path, data)).site
    assert site.events[0].attendance == 50_000
    assert site.event_ordinals() == {
        date(2026, 12, 31).toordinal(),
        date(2027, 1, 1).toordinal(),
        date(2026, 11, 21).toordinal(),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["zones"][0].update(capacity=0),
            "zones.0.capacity: Input should be greater than 0",
        ),
        (lambda d: d["zones"][0].update(kind="ballroom"), "zones.0.kind"),
        (
            lambda d: d["zones"][1].update(station="NOWHERE"),
            "zones.1.station: unknown station 'NOWHERE'",
        ),
        (
            lambda d: d["gates"][0].update(zone="RVS-concourse"),
            "gates.0.zone: 'RVS-concourse' is not a zone of station 'CTR'",
        ),
        (lambda d: d["gates"].append(dict(d["gates"][0])), "gates: duplicate ids ['CTR-G01']"),
        (
            lambda d: d["site"].update(timezone="Mars/Olympus"),
            "site.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (lambda d: d["stations"][0].update(entry_zone="RVS-concourse"), "stations.0.entry_zone"),
        (
            lambda d: d["cameras"][0]["rois"][0].update(zone="nope"),
            "cameras.0.rois.0.zone: unknown zone 'nope'",
        ),
        (lambda d: d["zones"][0].update(occupancy={"model": "magic"}), "zones.0.occupancy"),
        (
            lambda d: d["zones"][0].update(colour="red"),
            "zones.0.colour: Extra inputs are not permitted",
        ),
        (lambda d: d["zones"][0].update(id="CTR"), "ids ['CTR'] are also station ids"),
        (lambda d: d["site"].update(country="XX"), "site: unknown country or subdivision 'XX'"),
        (lambda d: d["site"].update(event_days=["2026-13-01"]), "site.event_days.0"),
        (
            lambda d: d["site"].update(events=[match("2026-11-21T22:00", "2026-11-21T19:00")]),
            "site.events.0: end 2026-11-21 19:00:00 is not after start",
        ),
        (
            lambda d: d["site"].update(
                events=[match("2026-11-21T19:00+08:00", "2026-11-21T22:00+08:00")]
            ),
            "site.events.0: start and end are local times",
        ),
        (
            lambda d: d["site"].update(events=[match("2199-11-21T19:00", "2199-11-21T22:00")]),
            "site.events.0: 2199-11-21 is outside the years the site calendar covers",
        ),
        (
            lambda d: d["site"].update(events=[match("2026-11-21T19:00", "2027-11-21T22:00")]),
            "site.events.0: 2026-11-21 19:00:00 to 2027-11-21 22:00:00 is longer than 31 days",
        ),
        (
            lambda d: d["site"].update(
                events=[{**match("2026-11-21T19:00", "2026-11-21T22:00"), "attendance": 10**15}]
            ),
            "site.events.0.attendance: Input should be less than or equal to 100000000",
        ),
        (lambda d: d["site"].update(event_days=["2199-11-21"]), "2199-11-21 is outside the years"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    data = example()
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(SiteError) as error:
        load_site(path)
    assert str(error.value).startswith(str(path))
    assert message in str(error.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match="site file not found"):
        load_site(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: [unclosed", encoding="utf-8")
    with pytest.raises(SiteError, match="not valid YAML"):
        load_site(bad)
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(SiteError, match="expected a mapping"):
        load_site(bad)


def test_a_copy_of_a_site_in_another_time_zone_tells_that_zones_time() -> None:
    site = load_site(EXAMPLE_SITE)
    assert str(site.tz) == "Asia/Shanghai"  # computed and cached on the original
    info = site.site.model_copy(update={"country": "AU", "timezone": "Australia/Sydney"})
    moved = site.model_copy(update={"site": info})
    # before, the copy kept the cached Shanghai clock beside its Sydney time zone
    assert str(moved.tz) == "Australia/Sydney" and moved.site.country == "AU"
    assert moved.gate_fed_zones == site.gate_fed_zones
    # and a copy is validated like a loaded file
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        site.site.model_copy(update={"timezone": "Mars/Base"})


def test_a_local_day_is_as_long_as_the_sites_clock_makes_it() -> None:
    site = load_site(EXAMPLE_SITE)
    start, end = site.day_bounds(date(2026, 4, 5))
    assert (start, end - start) == (datetime(2026, 4, 4, 16, tzinfo=UTC), timedelta(hours=24))
    sydney = site.model_copy(
        update={"site": site.site.model_copy(update={"timezone": "Australia/Sydney"})}
    )
    # the clocks go back on 5 April 2026 and forward on 4 October
    for day, hours in ((date(2026, 4, 5), 25), (date(2026, 10, 4), 23), (date(2026, 6, 1), 24)):
        start, end = sydney.day_bounds(day)
        assert end - start == timedelta(hours=hours), day
        assert end == sydney.day_bounds(day + timedelta(days=1))[0]
