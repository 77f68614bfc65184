-- 110 calls: scrubbed records, rolling counts and burst scores.

-- One row per call: its newest version (updated_at). No caller names, ID numbers or phone
-- numbers: at most a keyed hash of the phone; free text scrubbed of phone and ID numbers.
-- Partitioned by the month the call came in (which an update never changes, so all versions
-- of a call meet in one partition). Kept a year after it was written.
CREATE TABLE IF NOT EXISTS calls
(
    call_id String,
    version UInt64,
    received_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    lat Nullable(Float64),
    lon Nullable(Float64),
    district LowCardinality(String),
    address Nullable(String),
    category_code Nullable(String),
    category_text Nullable(String),
    group LowCardinality(String) COMMENT 'crowding, disorder, medical, fire, theft, traffic, other',
    weight Float64 COMMENT 'crowd relevance of the group',
    priority Nullable(Int32),
    status Nullable(String),
    description Nullable(String),
    caller_hash Nullable(String) COMMENT 'keyed HMAC of the phone number, to link repeat callers',
    zones Array(String),
    stations Array(String),
    source LowCardinality(String),
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(received_at)
ORDER BY call_id
TTL ingested_at + INTERVAL 365 DAY DELETE;

-- Calls over the last 5, 15 and 60 minutes per zone, station or district (key, level) and group,
-- written at the minutes where a count changes.
CREATE TABLE IF NOT EXISTS call_counts
(
    key LowCardinality(String),
    level LowCardinality(String) COMMENT 'zone, station or district',
    group LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    calls_5m UInt32,
    calls_15m UInt32,
    calls_60m UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (key, level, group, ts);

-- Burst score of crowd-relevant calls: observed over 15 minutes against the hour-of-week
-- baseline, score = -log10 P(X >= observed) under a Poisson background.
CREATE TABLE IF NOT EXISTS call_bursts
(
    key LowCardinality(String),
    level LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    observed_15m UInt32,
    expected_15m Float32,
    score Float32,
    alert UInt8,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (key, level, ts);
