"""Write the site file's stations, zones, gates and cameras to the warehouse's site tables."""

from __future__ import annotations

import time

import polars as pl

from crowdwatch.site import Site
from crowdwatch.warehouse.client import Warehouse


def site_tables(site: Site, version: int) -> dict[str, pl.DataFrame]:
    """The site tables' rows."""
    centres = [z.centre or (None, None) for z in site.zones]
    return {
        "site_stations": pl.DataFrame(
            {
                "station_id": [s.id for s in site.stations],
                "name": [s.name for s in site.stations],
                "lines": [s.lines for s in site.stations],
                "version": version,
            },
            schema_overrides={"lines": pl.List(pl.String), "version": pl.UInt64},
        ),
        "site_zones": pl.DataFrame(
            {
                "zone_id": [z.id for z in site.zones],
                "station_id": [z.station for z in site.zones],
                "name": [z.name for z in site.zones],
                "kind": [z.kind.value for z in site.zones],
                "area_m2": [z.area_m2 for z in site.zones],
                "capacity": [z.capacity for z in site.zones],
                "lat": [c[0] for c in centres],
                "lon": [c[1] for c in centres],
                "version": version,
            },
            schema_overrides={
                "capacity": pl.UInt32,
                "lat": pl.Float64,
                "lon": pl.Float64,
                "version": pl.UInt64,
            },
        ),
        "site_gates": pl.DataFrame(
            {
                "gate_id": [g.id for g in site.gates],
                "station_id": [g.station for g in site.gates],
                "zone_id": [g.zone for g in site.gates],
                "direction": [g.direction for g in site.gates],
                "version": version,
            },
            schema_overrides={
                "gate_id": pl.String,
                "station_id": pl.String,
                "zone_id": pl.String,
                "direction": pl.String,
                "version": pl.UInt64,
            },
        ),
        "site_cameras": pl.DataFrame(
            {
                "camera_id": [c.id for c in site.cameras],
                "station_id": [c.station for c in site.cameras],
                "fps": [c.fps for c in site.cameras],
                "offline_after_s": [c.offline_after_s for c in site.cameras],
                "version": version,
            },
            schema_overrides={
                "camera_id": pl.String,
                "station_id": pl.String,
                "fps": pl.Float32,
                "offline_after_s": pl.Float32,
                "version": pl.UInt64,
            },
        ),
    }


def sync_site(warehouse: Warehouse, site: Site) -> dict[str, int]:
    """Replace the site tables' contents with the site file's; return rows per table.

    Ids no longer in the file are removed, so the tables always mirror the file.
    """
    counts = {}
    for table, rows in site_tables(site, time.time_ns()).items():
        warehouse.command(f"TRUNCATE TABLE {table}")
        warehouse.insert(table, rows)
        counts[table] = rows.height
    return counts
