-- Every input that could not be used: the source, where in it, the raw payload and why.
-- Raw data, so it expires after 30 days. One row per (source, position): the same record
-- delivered again (a restart, a second replay of a file) replaces its row instead of adding one,
-- while identical bad records at different positions all count. Not partitioned by day on
-- purpose: ReplacingMergeTree only merges rows within a partition, and a record delivered
-- again on another day must still meet its first copy. The TTL removes old rows in merges.
CREATE TABLE IF NOT EXISTS rejected_events
(
    received_at DateTime64(3, 'UTC'),
    source LowCardinality(String) COMMENT 'file:<name>, a topic or stream, or a pipeline',
    position String COMMENT 'where in the source: row N of a file, an offset, a late window',
    reason String,
    payload String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY (source, position)
TTL toDateTime(received_at) + INTERVAL 30 DAY DELETE;
