-- Per-window flows and occupancy per zone (scope 'zone') and per station (scope 'station';
-- zone_id is then the station id). One row per (zone_id, ts): a corrected window (a late
-- record) is written again with a higher version, and ReplacingMergeTree keeps the newest.
-- That makes every write idempotent: replaying a file, or re-sending a batch after a restart,
-- writes rows with the same values and never adds to them. Read with FINAL (or argMax by version).
CREATE TABLE IF NOT EXISTS zone_metrics
(
    zone_id LowCardinality(String),
    station_id LowCardinality(String),
    scope LowCardinality(String),
    ts DateTime64(3, 'UTC') COMMENT 'window start',
    window_s UInt32,
    entries UInt32,
    exits UInt32,
    inflow_per_min Float32 COMMENT 'entries per minute over the rate window',
    outflow_per_min Float32,
    occupancy UInt32 COMMENT 'people inside, from the zone occupancy model',
    capacity UInt32,
    capacity_use Float32 COMMENT 'occupancy / capacity',
    density Float32 COMMENT 'persons per m2',
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (zone_id, ts);
