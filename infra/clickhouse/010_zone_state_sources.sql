-- Event time across sources: which of a station's sources (gates, video, calls) were stale at a
-- tick, idle too long to hold the station's watermark back.

ALTER TABLE zone_state ADD COLUMN IF NOT EXISTS stale_sources Array(LowCardinality(String))
    DEFAULT [] COMMENT 'sources idle past source_idle_s (live) or input ended (replay)'
    AFTER level;
