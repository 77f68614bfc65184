-- Crowd-flow forecasts per zone: one row per zone, target and time; each training run writes
-- its rows with a newer version, so the newest forecast of each target time wins.
CREATE TABLE IF NOT EXISTS forecasts
(
    zone_id LowCardinality(String),
    target LowCardinality(String) COMMENT 'headcount or inflow',
    ts DateTime64(3, 'UTC') COMMENT 'the time forecast',
    yhat Float32,
    yhat_lower Float32,
    yhat_upper Float32,
    method LowCardinality(String) COMMENT 'prophet, or seasonal_naive as a fallback',
    fallback_reason Nullable(String),
    model_version String,
    trained_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (zone_id, target, ts);
