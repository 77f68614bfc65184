-- The site as dimension tables, written from the site file by `crowdwatch site sync` (and by
-- every replay and run): names, capacities and places of stations, zones, gates and cameras
-- for dashboards and joins. One row per id, the newest version.
CREATE TABLE IF NOT EXISTS site_stations
(
    station_id LowCardinality(String),
    name String,
    lines Array(String),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY station_id;

CREATE TABLE IF NOT EXISTS site_zones
(
    zone_id LowCardinality(String),
    station_id LowCardinality(String),
    name String,
    kind LowCardinality(String),
    area_m2 Float64,
    capacity UInt32,
    lat Nullable(Float64) COMMENT 'centre of the zone',
    lon Nullable(Float64),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY zone_id;

CREATE TABLE IF NOT EXISTS site_gates
(
    gate_id LowCardinality(String),
    station_id LowCardinality(String),
    zone_id LowCardinality(String),
    direction LowCardinality(String),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY gate_id;

CREATE TABLE IF NOT EXISTS site_cameras
(
    camera_id LowCardinality(String),
    station_id LowCardinality(String),
    fps Float32,
    offline_after_s Float32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY camera_id;
