-- Alert delivery log: every attempt to tell someone of an alert event, and every event that
-- was decided without one (attempt 0: no contact, logged in log mode, stale, expired).
-- Exported from the alert outbox (crowdwatch/risk/outbox.py); a row exported twice after a
-- restart is stored once (keyed by the Idempotency-Key, channel and attempt number).

CREATE TABLE IF NOT EXISTS alert_deliveries
(
    alert_id String,
    event LowCardinality(String),
    kind LowCardinality(String),
    zone_id LowCardinality(String),
    station_id LowCardinality(String),
    level LowCardinality(String),
    event_ts DateTime64(3, 'UTC') COMMENT 'the alert event''s time',
    role LowCardinality(String),
    channel LowCardinality(String),
    recipient String COMMENT 'the contact''s name; empty without a contact',
    idempotency_key String,
    attempt UInt32 COMMENT '1, 2, ...; 0: decided without sending',
    status LowCardinality(String)
        COMMENT 'delivered, retry, failed, expired, no_contact, logged, stale',
    http_status Nullable(UInt16),
    latency_ms Nullable(Float32) COMMENT 'the request, from connect to the answer',
    queued_ms Int64 COMMENT 'from the event written to the outbox to this attempt',
    error String,
    attempted_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_ts)
ORDER BY (idempotency_key, channel, attempt);
