-- Video: raw per-frame ROI counts, ROI windows, zone windows, camera health and status.
-- Window tables are ReplacingMergeTree(version), one row per key and window, read with FINAL:
-- a window is rewritten as its frames arrive and when a late frame corrects it.

-- Raw per-frame people per camera ROI (its zone and station are in site_cameras and the
-- site file). Raw data: expires 7 days after it was written.
CREATE TABLE IF NOT EXISTS video_frames
(
    camera_id LowCardinality(String),
    roi_id LowCardinality(String),
    ts DateTime64(3, 'UTC') COMMENT 'capture time',
    frame UInt64,
    persons UInt32,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (camera_id, roi_id, ts, frame)
TTL ingested_at + INTERVAL 7 DAY DELETE;

-- Per camera ROI and window: frames seen, mean, max and p90 of the per-frame counts.
CREATE TABLE IF NOT EXISTS video_roi_windows
(
    camera_id LowCardinality(String),
    roi_id LowCardinality(String),
    zone_id LowCardinality(String),
    station_id LowCardinality(String),
    ts DateTime64(3, 'UTC') COMMENT 'window start',
    window_s UInt32,
    frames UInt32,
    persons_mean Float32,
    persons_max UInt32,
    persons_p90 Float32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (camera_id, roi_id, ts);

-- Per zone and window: cameras combined (sum for disjoint ROIs, max for overlapping ones),
-- line crossings and rates. Same zone ids as zone_metrics (gates): one series per zone.
CREATE TABLE IF NOT EXISTS video_zone_metrics
(
    zone_id LowCardinality(String),
    station_id LowCardinality(String),
    ts DateTime64(3, 'UTC') COMMENT 'window start',
    window_s UInt32,
    headcount Float32 COMMENT 'people in the zone: mean over the window',
    headcount_max UInt32,
    rois UInt16 COMMENT 'camera ROIs that reported in the window',
    entered UInt32,
    exited UInt32,
    inflow_per_min Float32,
    outflow_per_min Float32,
    capacity UInt32,
    capacity_use Float32,
    density Float32 COMMENT 'persons per m2',
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (zone_id, ts);

-- Per camera and health window: messages, frame rate, mean persons.
CREATE TABLE IF NOT EXISTS camera_health
(
    camera_id LowCardinality(String),
    station_id LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    window_s UInt32,
    messages UInt32,
    fps Nullable(Float32),
    persons_mean Float32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (camera_id, ts);

-- The current state of every camera: one row per camera (the newest version).
CREATE TABLE IF NOT EXISTS camera_status
(
    camera_id LowCardinality(String),
    station_id LowCardinality(String),
    status LowCardinality(String) COMMENT 'online, offline or stuck',
    since DateTime64(3, 'UTC'),
    last_seen Nullable(DateTime64(3, 'UTC')),
    fps Float32,
    expected_fps Float32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY camera_id;

-- Network figures over every camera of the site: public-safety targets ask for >= 90 %
-- online and >= 95 % working. online: not offline (a camera that never reported is offline);
-- working: online and not stuck.
CREATE VIEW IF NOT EXISTS camera_network AS
SELECT
    count() AS cameras,
    countIf(status IN ('online', 'stuck')) AS online,
    countIf(status = 'online') AS working,
    online / cameras AS online_rate,
    working / cameras AS working_rate
FROM
(
    SELECT c.camera_id AS camera_id, if(s.camera_id = '', 'offline', s.status) AS status
    FROM (SELECT camera_id FROM site_cameras FINAL) AS c
    LEFT JOIN (SELECT camera_id, status FROM camera_status FINAL) AS s ON s.camera_id = c.camera_id
);

-- One series per zone and minute from every source: gate flows and occupancy (zone_metrics)
-- beside video headcounts and line crossings (video_zone_metrics).
CREATE VIEW IF NOT EXISTS zone_minute AS
SELECT
    zone_id,
    ts,
    sum(gate_entries) AS gate_entries,
    sum(gate_exits) AS gate_exits,
    max(gate_occupancy) AS gate_occupancy,
    max(video_headcount) AS video_headcount,
    max(video_headcount_max) AS video_headcount_max,
    sum(video_entered) AS video_entered,
    sum(video_exited) AS video_exited,
    max(capacity) AS capacity
FROM
(
    SELECT
        zone_id,
        toDateTime64(toStartOfMinute(ts), 3, 'UTC') AS ts,
        sum(entries) AS gate_entries,
        sum(exits) AS gate_exits,
        toNullable(toFloat64(argMax(occupancy, zone_metrics.ts))) AS gate_occupancy,
        CAST(NULL, 'Nullable(Float64)') AS video_headcount,
        CAST(NULL, 'Nullable(UInt32)') AS video_headcount_max,
        toUInt64(0) AS video_entered,
        toUInt64(0) AS video_exited,
        max(capacity) AS capacity
    FROM zone_metrics FINAL
    WHERE scope = 'zone'
    GROUP BY zone_id, ts
    UNION ALL
    SELECT
        zone_id,
        toDateTime64(toStartOfMinute(ts), 3, 'UTC') AS ts,
        toUInt64(0),
        toUInt64(0),
        CAST(NULL, 'Nullable(Float64)'),
        toNullable(avg(headcount)),
        toNullable(max(headcount_max)),
        sum(entered),
        sum(exited),
        max(capacity)
    FROM video_zone_metrics FINAL
    GROUP BY zone_id, ts
)
GROUP BY zone_id, ts;
