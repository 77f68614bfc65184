-- The days `crowdwatch demo` simulated into this database. The demo writes only into a
-- database that holds no data yet or holds its own days: a deployment's database, with real
-- data and none of these rows, is refused, so that a simulated day (a red alert among it)
-- never mixes with real data that dashboards, alert rules and response KPIs read.

CREATE TABLE IF NOT EXISTS demo_days
(
    day Date COMMENT 'the simulated day, local to the site',
    site String COMMENT 'the site file''s name of the site',
    written_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(written_at)
ORDER BY (day, site);
