-- Pipeline health and rollups for long ranges.
--
-- 1. inserted_at on the tables the pipelines write: when a row reached the warehouse (wall
--    clock), beside its event time. Filled by the server on insert (the pipelines never send
--    it), so old rows read the time of this migration's ALTER.
-- 2. pipeline_writes: rows written per table and second, the newest event time written and the
--    smallest lag (inserted_at - event time) — filled by materialized views on every insert,
--    before any merge folds replaced versions away, so it counts every row written, rewrites
--    included. Throughput and lag panels read it instead of the tables.
-- 3. camera_status_log: every camera state episode (camera, state, since); camera_status keeps
--    only the newest state of each camera.
-- 4. zone_hourly: per zone and hour the highest headcount, share of capacity and level rank, for
--    panels over days or weeks. Only maxima, so a row written twice (a replay, a restart)
--    changes nothing; a tick rewritten with lower values keeps the higher one (the safe side).

ALTER TABLE zone_metrics ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE video_zone_metrics ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE video_roi_windows ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE camera_health ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE camera_status ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE calls ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE call_counts ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE call_bursts ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE zone_state ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE forecasts ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);

CREATE TABLE IF NOT EXISTS pipeline_writes
(
    table LowCardinality(String),
    second DateTime64(3, 'UTC') COMMENT 'inserted_at, to the second',
    rows SimpleAggregateFunction(sum, UInt64),
    newest_event SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    lag_ms SimpleAggregateFunction(min, Int64) COMMENT 'inserted_at - event time of the newest row'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(second)
ORDER BY (table, second)
TTL toDateTime(second) + INTERVAL 90 DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS pipeline_writes_zone_metrics TO pipeline_writes AS
SELECT 'zone_metrics' AS table, toStartOfSecond(inserted_at) AS second, count() AS rows,
    max(ts) AS newest_event, min(dateDiff('millisecond', ts, inserted_at)) AS lag_ms
FROM zone_metrics GROUP BY second;

CREATE MATERIALIZED VIEW IF NOT EXISTS pipeline_writes_video_zone_metrics TO pipeline_writes AS
SELECT 'video_zone_metrics' AS table, toStartOfSecond(inserted_at) AS second, count() AS rows,
    max(ts) AS newest_event, min(dateDiff('millisecond', ts, inserted_at)) AS lag_ms
FROM video_zone_metrics GROUP BY second;

CREATE MATERIALIZED VIEW IF NOT EXISTS pipeline_writes_camera_health TO pipeline_writes AS
SELECT 'camera_health' AS table, toStartOfSecond(inserted_at) AS second, count() AS rows,
    max(ts) AS newest_event, min(dateDiff('millisecond', ts, inserted_at)) AS lag_ms
FROM camera_health GROUP BY second;

CREATE MATERIALIZED VIEW IF NOT EXISTS pipeline_writes_calls TO pipeline_writes AS
SELECT 'calls' AS table, toStartOfSecond(inserted_at) AS second, count() AS rows,
    max(received_at) AS newest_event,
    min(dateDiff('millisecond', received_at, inserted_at)) AS lag_ms
FROM calls GROUP BY second;

CREATE MATERIALIZED VIEW IF NOT EXISTS pipeline_writes_call_bursts TO pipeline_writes AS
SELECT 'call_bursts' AS table, toStartOfSecond(inserted_at) AS second, count() AS rows,
    max(ts) AS newest_event, min(dateDiff('millisecond', ts, inserted_at)) AS lag_ms
FROM call_bursts GROUP BY second;

CREATE MATERIALIZED VIEW IF NOT EXISTS pipeline_writes_zone_state TO pipeline_writes AS
SELECT 'zone_state' AS table, toStartOfSecond(inserted_at) AS second, count() AS rows,
    max(ts) AS newest_event, min(dateDiff('millisecond', ts, inserted_at)) AS lag_ms
FROM zone_state GROUP BY second;

CREATE MATERIALIZED VIEW IF NOT EXISTS pipeline_writes_alerts TO pipeline_writes AS
SELECT 'alerts' AS table, toStartOfSecond(inserted_at) AS second, count() AS rows,
    max(ts) AS newest_event, min(dateDiff('millisecond', ts, inserted_at)) AS lag_ms
FROM alerts GROUP BY second;

-- Rejected records have no trusted event time: their lag is 0 by definition.
CREATE MATERIALIZED VIEW IF NOT EXISTS pipeline_writes_rejected_events TO pipeline_writes AS
SELECT 'rejected_events' AS table, toStartOfSecond(now64(3, 'UTC')) AS second, count() AS rows,
    max(received_at) AS newest_event, toInt64(0) AS lag_ms
FROM rejected_events GROUP BY second;

CREATE TABLE IF NOT EXISTS camera_status_log
(
    camera_id LowCardinality(String),
    station_id LowCardinality(String),
    status LowCardinality(String) COMMENT 'online, offline or stuck',
    since DateTime64(3, 'UTC'),
    last_seen Nullable(DateTime64(3, 'UTC')),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(since)
ORDER BY (camera_id, since, status);

CREATE MATERIALIZED VIEW IF NOT EXISTS camera_status_log_mv TO camera_status_log AS
SELECT camera_id, station_id, status, since, last_seen, version FROM camera_status;

CREATE TABLE IF NOT EXISTS zone_hourly
(
    zone_id LowCardinality(String),
    station_id LowCardinality(String),
    hour DateTime64(3, 'UTC'),
    headcount_max SimpleAggregateFunction(max, Nullable(Float32)),
    capacity_share_max SimpleAggregateFunction(max, Nullable(Float32)),
    level_rank_max SimpleAggregateFunction(max, UInt8) COMMENT '0 none, 1-4 blue to red'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (zone_id, station_id, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS zone_hourly_mv TO zone_hourly AS
SELECT
    zone_id,
    station_id,
    toStartOfHour(ts) AS hour,
    max(headcount) AS headcount_max,
    max(capacity_share) AS capacity_share_max,
    max(toUInt8(multiIf(level = 'red', 4, level = 'orange', 3, level = 'yellow', 2,
        level = 'blue', 1, 0))) AS level_rank_max
FROM zone_state
GROUP BY zone_id, station_id, hour;
