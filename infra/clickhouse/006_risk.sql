-- The zone risk engine: one row per zone and tick, and every alert lifecycle event.

CREATE TABLE IF NOT EXISTS zone_state
(
    zone_id LowCardinality(String),
    station_id LowCardinality(String),
    ts DateTime64(3, 'UTC') COMMENT 'tick (event time)',
    headcount Nullable(Float32) COMMENT 'fused: video, gates or the larger, per the zone',
    source LowCardinality(String),
    density Nullable(Float32) COMMENT 'persons per m2',
    capacity_share Nullable(Float32),
    level_of_service LowCardinality(Nullable(String)) COMMENT 'Fruin A-F',
    inflow_per_min Nullable(Float32),
    inflow_trend_per_min2 Nullable(Float32),
    anomaly_score Float32 COMMENT 'seasonal robust score / 6; >= 1: strong anomaly, one level up',
    surge_score Float32 COMMENT 'EWMA/CUSUM on the inflow; >= 1: a sudden change (shown only)',
    burst_score Float32,
    level LowCardinality(Nullable(String)) COMMENT 'blue, yellow, orange, red; NULL: no warning',
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (zone_id, ts);

-- Alert lifecycle: opened, escalated, de-escalated, resolved; alert_id is stable per episode.
-- Keyed by (alert_id, event, ts): an event written again after a restart is stored once.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id String,
    event LowCardinality(String),
    kind LowCardinality(String),
    zone_id LowCardinality(String),
    station_id LowCardinality(String),
    level LowCardinality(String),
    previous_level LowCardinality(Nullable(String)),
    ts DateTime64(3, 'UTC'),
    reason String,
    values String COMMENT 'JSON: the numbers behind the decision'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (alert_id, event, ts);

-- A station's level at each tick: the worst of its zones'.
CREATE VIEW IF NOT EXISTS station_state AS
SELECT
    station_id,
    ts,
    max(zone_rank) AS level_rank,
    arrayElement(['none', 'blue', 'yellow', 'orange', 'red'], level_rank + 1) AS level,
    argMax(zone_id, zone_rank) AS worst_zone
FROM
(
    SELECT
        station_id,
        ts,
        zone_id,
        multiIf(level = 'red', 4, level = 'orange', 3, level = 'yellow', 2, level = 'blue', 1, 0)
            AS zone_rank
    FROM zone_state FINAL
)
GROUP BY station_id, ts;
