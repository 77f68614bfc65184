"""Sources: records as streams of `RawBatch` items, with positions that survive restarts.

`files` replays CSV, JSON lines and Parquet (and the shared real data sets' formats);
`redis_streams` and `kafka` read brokers; `partition` splits stations among processes. A source
knows record kinds and positions, not what the records mean: it never imports the risk engine.
"""
