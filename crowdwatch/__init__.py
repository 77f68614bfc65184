"""crowdwatch: crowd-safety analytics over gate, video and emergency-call streams — the core.

What every pipeline, detector, forecast and dashboard shares. At the root: `settings` (the one
typed settings object), `site` (the validated site model), `isotime` (fast ISO 8601),
`batches` (raw micro-batches, record kinds and row checks) and `flow` (the dataflow helpers
that pick a source and a sink). The wings, one per concern:

* `gates`, `video`, `calls` — one per signal: parse its records and keep its window state.
  The signal wings never import each other.
* `risk` — warning levels, zone state, the alert lifecycle and notification.
* `sources` — records as streams: file replay, Redis Streams, Kafka, partitioning.
* `warehouse` — ClickHouse: client and migrations, the sink and its outage buffer, cluster DDL,
  users, site sync. Neither `sources` nor `warehouse` imports the risk engine.

The core imports none of the floors above it (`pipelines`, `dashboards`, `forecasts`,
`detectors`, `app`); `lint-imports` checks these rules in `make test`.
"""
