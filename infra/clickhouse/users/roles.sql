-- Least-privilege roles for a ClickHouse server, applied by `crowdwatch db users` after the
-- migrations (it replaces {database} with the warehouse database, a checked identifier).
-- The embedded engine (chDB) has no access control: there the step is skipped with a note.
--
-- crowdwatch_writer: the pipelines and the forecast scheduler read and insert the warehouse's
--   tables, and nothing else: no DDL, no other database. (`crowdwatch site sync` also empties
--   the site tables before writing them anew, so that one needs TRUNCATE on them.)
-- crowdwatch_reader: Grafana and analysts read every table and view, and cannot write.
-- crowdwatch_restricted_reader: reads every table and view except the free text of 110 calls
--   and the caller hash; its column-level grants are written per table by `crowdwatch db users`
--   from the tables the server has, because ClickHouse grants columns one table at a time.
CREATE ROLE IF NOT EXISTS crowdwatch_writer;
CREATE ROLE IF NOT EXISTS crowdwatch_reader;
CREATE ROLE IF NOT EXISTS crowdwatch_restricted_reader;

GRANT SELECT, INSERT ON {database}.* TO crowdwatch_writer;
GRANT TRUNCATE ON {database}.site_stations TO crowdwatch_writer;
GRANT TRUNCATE ON {database}.site_zones TO crowdwatch_writer;
GRANT TRUNCATE ON {database}.site_gates TO crowdwatch_writer;
GRANT TRUNCATE ON {database}.site_cameras TO crowdwatch_writer;

GRANT SELECT ON {database}.* TO crowdwatch_reader;
