"""The warehouse: ClickHouse through clickhouse-connect (a server, or chDB in process).

`client` connects, applies the migrations in ``infra/clickhouse`` and holds the Bytewax sink;
`buffer` keeps batches on disk through an outage; `cluster` writes the replicated DDL; `users`
creates roles and users on a server; `sitesync` writes the site tables. It stores what it is
given and never imports the risk engine.
"""
