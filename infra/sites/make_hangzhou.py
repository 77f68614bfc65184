"""Generate the Hangzhou Metro site file from the transdim 10-minute gate counts.

Usage (from the repository root)::

    python infra/sites/make_hangzhou.py [--data DIR] [--output FILE]

The data set has no station names, coordinates, gates or capacities. Each station gets one
concourse zone whose capacity and area are estimated from its own counts (see ``HEADER``). The
output depends only on the data, so running the script again gives the same file byte for byte;
``tests/crowdwatch/test_hangzhou_site.py`` checks that the committed file is not stale.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import holidays  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import polars as pl
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "hangzhou_metro"
DEFAULT_OUTPUT = REPO_ROOT / "infra" / "sites" / "hangzhou_metro.yaml"
COUNTS_FILE = "hangzhou_metro_10min_inout.csv"
GRAPH_FILE = "graph.csv"

BIN_MINUTES = 10
FIRST_DAY = date(2019, 1, 1)  # the counts start at midnight on 1 January 2019 (checked on read)
ENTRY_MINUTES = 8
EXIT_MINUTES = 3
WORKDAY_PEAK_QUANTILE = 0.9  # the ordinary busy day: 90th percentile of the working-day peaks
# capacity = that peak x 1.6: it sits at 62.5 % of capacity (blue), and a day-ahead forecast
# must be 28 % above it to reach yellow (80 %), where predicted-big-crowd alerts start (the
# site declares no event windows, so the forecast itself decides, not its upper bound).
HEADROOM = 1.6
PLANNING_DENSITY = 1.25  # persons/m2 in a standing area, Fruin level of service C/D
CAPACITY_STEP = 50
MIN_CAPACITY = 200

# The adjacency matrix is indexed by the contest's stationID 0..80. StationID 54 has no gate
# records for the whole period, and the 80-station counts were numbered without it, so
# station_idx k is stationID k below 54 and stationID k + 1 from 54 on.
MISSING_STATION_ID = 54

HEADER = """\
# Hangzhou Metro, 80 stations, built from real gate counts. GENERATED: do not edit by hand, run
#   python infra/sites/make_hangzhou.py
# (tests/crowdwatch/test_hangzhou_site.py fails when this file differs from what the script writes).
#
# Source: Hangzhou Metro automatic-fare-collection records of 1-25 January 2019 (Tianchi 2019
# "Global City AI Challenge" metro passenger-flow contest), aggregated to entries and exits per
# station per 10 minutes by the transdim project (Xinyu Chen, https://github.com/xinychen/transdim),
# MIT licence; files in ../shared/data/hangzhou_metro (hangzhou_metro_10min_inout.csv, graph.csv,
# LICENSE_transdim). Timestamps are China local time, hence the Asia/Shanghai time zone.
#
# Stations: station_idx k of the counts is station HZkk. The data set has no names, coordinates
# or per-gate counts, so stations are named by number, zones have no geometry and there are no
# gates (station-level counts go to the station's entry_zone).
#
# Neighbours come from graph.csv, an 81x81 matrix indexed by the contest's stationID 0..80 (three
# lines: stationID 0-33 line A, 34-66 line B, 67-80 line C). The counts have 80 stations because
# stationID 54 (line B, between 53 and 55) has no gate records for the whole period (transdim
# notes this) and was left out, the others renumbered: station_idx k is stationID k for k < 54
# and k + 1 from 54 on. So matrix index 80 is a real station, stationID 80 = HZ79, on line C
# between stationID 79 (HZ78) and stationID 15 (HZ15, the busiest station); matrix index 54 is
# the one without data: trains run through it, so its neighbours HZ53 and HZ54 are linked to
# each other across it. Check of the renumbering:
# line B's outer stations have exits until midnight, line C almost none after 23:30; station_idx
# 65 has line B's pattern and station_idx 66 line C's, which fits stationID 66 and 67 only.
#
# Capacity and area are ESTIMATES from the counts (the data set has none), for development and
# tests, not official figures. Per station: the occupancy the replay computes from the data's own
# 10-minute windows (the zone's dwell model, 8 minutes after an entry and 3 before an exit, both
# round up to one window: entries + exits of the window); each working day's peak of it (China's
# calendar: no weekends, no New Year's Day); the 90th percentile of those peaks (numpy's linear
# interpolation), shown above each zone, is an ordinary busy working day. capacity = that x 1.6,
# rounded up to a multiple of 50, at least 200, so that an ordinary working-day peak is at about
# 62 % of capacity (blue) and its forecast is no predicted big crowd (yellow, 80 %) unless the
# forecast is 28 % above it; area_m2 = capacity / 1.25 persons/m2 (a planning density for standing
# areas, Fruin level of service C/D).
"""


class DataError(ValueError):
    """The data files do not have the expected shape."""


def read_counts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the 10-minute counts as two ``(stations, bins)`` integer arrays: inflow, outflow.

    Raises:
        DataError: a station or a 10-minute bin is missing or repeated, or a count is missing
            or negative.
    """
    frame = pl.read_csv(
        path,
        schema={
            "timestamp": pl.String,
            "station_idx": pl.Int64,
            "inflow": pl.Int64,
            "outflow": pl.Int64,
        },
    ).with_columns(pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S"))
    if frame.null_count().sum_horizontal().item() > 0:
        raise DataError(f"{path}: empty cells; expected a count in every row")
    if frame.select((pl.col("inflow") < 0) | (pl.col("outflow") < 0)).to_series().any():
        raise DataError(f"{path}: negative counts")
    stations = frame["station_idx"].unique().sort().to_list()
    if stations != list(range(len(stations))):
        raise DataError(f"{path}: expected station_idx 0..n-1, found {stations}")
    first, last = str(frame["timestamp"].min()), str(frame["timestamp"].max())
    minutes = (pl.col("timestamp") - pl.col("timestamp").min()).dt.total_minutes()
    n_bins = frame.select(minutes.max() // BIN_MINUTES + 1).item()
    on_grid = frame.select((minutes % BIN_MINUTES == 0).all()).item()
    unique_keys = frame.select(pl.struct("station_idx", "timestamp").n_unique()).item()
    if not on_grid or unique_keys != frame.height or frame.height != len(stations) * n_bins:
        raise DataError(
            f"{path}: expected one row per station per {BIN_MINUTES} minutes from {first} to "
            f"{last} ({len(stations)} x {n_bins} rows), found {frame.height} rows"
            f" ({unique_keys} distinct station/time pairs)"
        )
    if not first.startswith(f"{FIRST_DAY.isoformat()} 00:00"):
        raise DataError(f"{path}: expected the counts to start at {FIRST_DAY} 00:00, found {first}")
    frame = frame.sort("station_idx", "timestamp")
    shape = (len(stations), n_bins)
    return (
        frame["inflow"].to_numpy().reshape(shape),
        frame["outflow"].to_numpy().reshape(shape),
    )


def read_graph(path: Path) -> np.ndarray:
    """Read the adjacency matrix (header row, index column) as a square boolean array.

    Raises:
        DataError: the matrix is not square, not 0/1, not symmetric, or has self-links.
    """
    frame = pl.read_csv(path)
    matrix = frame.drop(frame.columns[0]).to_numpy()
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DataError(f"{path}: expected a square matrix, found shape {matrix.shape}")
    if not np.isin(matrix, (0, 1)).all():
        raise DataError(f"{path}: expected only 0 and 1")
    adjacency = matrix.astype(bool)
    if not (adjacency == adjacency.T).all() or adjacency.diagonal().any():
        raise DataError(f"{path}: expected a symmetric matrix with an empty diagonal")
    return adjacency


def station_ids_of_counts(n_stations: int) -> np.ndarray:
    """The contest stationID (the adjacency matrix index) of each station_idx of the counts."""
    idx = np.arange(n_stations)
    return np.where(idx < MISSING_STATION_ID, idx, idx + 1)


def neighbours(adjacency: np.ndarray, n_stations: int) -> list[list[int]]:
    """Each station_idx's neighbours as station_idx.

    Trains run through the station without counts, so its two neighbours are linked to each
    other across it.

    Raises:
        DataError: the matrix does not have one row per station plus the missing one.
    """
    if adjacency.shape[0] != n_stations + 1:
        raise DataError(
            f"expected a {n_stations + 1}x{n_stations + 1} adjacency matrix (the counts' "
            f"{n_stations} stations and stationID {MISSING_STATION_ID}), "
            f"found {adjacency.shape}"
        )
    ids = station_ids_of_counts(n_stations)
    bridged = adjacency.copy()
    around = np.flatnonzero(adjacency[MISSING_STATION_ID])
    bridged[np.ix_(around, around)] = 1
    np.fill_diagonal(bridged, 0)
    linked = bridged[np.ix_(ids, ids)]  # (station_idx, station_idx)
    return [np.flatnonzero(row).tolist() for row in linked]


def workday_peaks(inflow: np.ndarray, outflow: np.ndarray, first_day: date) -> np.ndarray:
    """Each station's peak occupancy of each working day, ``(stations, working days)``.

    Occupancy per 10-minute window is its entries + exits: the zone's dwell model (8 and 3
    minutes) at the replay's window of the data's own 10 minutes. Working days follow China's
    calendar (weekends and public holidays off, adjusted working days on).
    """
    per_day = 24 * 60 // BIN_MINUTES
    days = inflow.shape[1] // per_day
    occupancy = (inflow + outflow)[:, : days * per_day].reshape(inflow.shape[0], days, per_day)
    calendar = holidays.country_holidays("CN", years=[first_day.year, first_day.year + 1])
    working = [calendar.is_working_day(first_day + timedelta(days=d)) for d in range(days)]
    peaks: np.ndarray = occupancy.max(axis=2)[:, np.asarray(working, dtype=bool)]
    return peaks


def capacity_for(peak: float) -> int:
    """Capacity for an observed peak occupancy: peak x headroom, rounded up to the step."""
    steps = math.ceil(peak * HEADROOM / CAPACITY_STEP)
    return max(MIN_CAPACITY, steps * CAPACITY_STEP)


def station_id(idx: int) -> str:
    """The site id of a station_idx."""
    return f"HZ{idx:02d}"


def build_site(
    peaks: np.ndarray, links: list[list[int]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The site's ``site`` and ``stations`` sections, and its zones."""
    head: dict[str, Any] = {
        "site": {
            "name": "Hangzhou Metro (Tianchi 2019 AFC, 80 stations)",
            "timezone": "Asia/Shanghai",
        },
        "stations": [
            {
                "id": station_id(idx),
                "name": f"Hangzhou station {idx:02d}",
                "neighbours": [station_id(n) for n in links[idx]],
                "entry_zone": f"{station_id(idx)}-station",
            }
            for idx in range(len(peaks))
        ],
    }
    zones: list[dict[str, Any]] = []
    for idx, peak in enumerate(peaks.tolist()):
        capacity = capacity_for(peak)
        zones.append(
            {
                "id": f"{station_id(idx)}-station",
                "name": f"Hangzhou station {idx:02d} concourse",
                "kind": "concourse",
                "station": station_id(idx),
                "area_m2": round(capacity / PLANNING_DENSITY),
                "capacity": capacity,
                "occupancy": {
                    "model": "dwell",
                    "entry_minutes": ENTRY_MINUTES,
                    "exit_minutes": EXIT_MINUTES,
                },
            }
        )
    return head, zones


def render(head: dict[str, Any], zones: list[dict[str, Any]], peaks: np.ndarray) -> str:
    """The site file's text: the header comment, then YAML with each zone's peak as a comment."""

    def item(data: dict[str, Any]) -> list[str]:
        text = yaml.safe_dump([data], sort_keys=False, default_flow_style=None, width=100)
        return [f"  {line}\n" for line in text.splitlines()]

    parts = [HEADER, "\n", yaml.safe_dump({"site": head["site"]}, sort_keys=False)]
    parts.append("\nstations:\n")
    for station in head["stations"]:
        parts.extend(item(station))
    parts.append("\nzones:\n")
    for zone, peak in zip(zones, peaks.tolist(), strict=True):
        parts.append(
            f"  # {zone['station']}: working-day peak (90th percentile) {peak:.0f} persons\n"
        )
        parts.extend(item(zone))
    return "".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the site file and print a one-line summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help=f"folder with {COUNTS_FILE} and {GRAPH_FILE} (default: {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"site file to write (default: {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    data: Path = args.data
    output: Path = args.output
    for name in (COUNTS_FILE, GRAPH_FILE):
        if not (data / name).is_file():
            parser.error(f"{data / name} not found; pass --data with the hangzhou_metro folder")

    inflow, outflow = read_counts(data / COUNTS_FILE)
    links = neighbours(read_graph(data / GRAPH_FILE), inflow.shape[0])
    peaks = np.quantile(workday_peaks(inflow, outflow, FIRST_DAY), WORKDAY_PEAK_QUANTILE, axis=1)
    head, zones = build_site(peaks, links)
    output.write_text(render(head, zones, peaks), encoding="utf-8")

    capacities = [zone["capacity"] for zone in zones]
    busiest = int(np.argmax(peaks))
    print(
        f"wrote {output}: {len(zones)} stations, capacity {min(capacities)}..{max(capacities)}"
        f" (busiest {station_id(busiest)}, peak occupancy {peaks[busiest]:.0f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
