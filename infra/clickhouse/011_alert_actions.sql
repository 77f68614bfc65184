-- Alert handling: every step of the workflow's audit log (crowdwatch/workflow), mirrored from
-- the workflow store for dashboards and response KPIs. A row exported twice after a restart is
-- stored once (keyed by the alert and the audit row's id). Drills (演练) are marked: real
-- statistics leave them out (drill = 0).
--   action: raised, reopened, asked, reminded, acknowledged, escalated, deadline_missed,
--           level_up, level_down, resolved, note, measure, signed_off
--   elapsed_ms: acknowledged: since the role was asked; signed_off: since the alert was raised

CREATE TABLE IF NOT EXISTS alert_actions
(
    action_id UInt64 COMMENT 'the audit row''s id in the workflow store',
    ts DateTime64(3, 'UTC'),
    incident_id String COMMENT 'alerts reopened within the window share it',
    alert_id String,
    zone_id LowCardinality(String),
    station_id LowCardinality(String),
    level LowCardinality(String),
    action LowCardinality(String),
    actor String,
    role LowCardinality(String),
    channel LowCardinality(String) COMMENT 'system, link, cli, api',
    note String,
    measure LowCardinality(String),
    tier UInt8 COMMENT '0: asked first; n: the n-th escalation tier',
    elapsed_ms Nullable(Int64),
    drill UInt8
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (alert_id, action_id);
