"""What the benchmarks share: replay files through a pipeline into a fresh embedded warehouse,
time it, and report."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main

from crowdwatch.settings import Settings
from crowdwatch.sources.files import FileSource, ReplayFile
from crowdwatch.warehouse.client import Warehouse


@dataclass(frozen=True)
class Timed:
    """One timed replay: wall time, the gaps between batches, what the warehouse holds."""

    elapsed_s: float
    batch_gaps_ms: np.ndarray
    result: pl.DataFrame

    def report(self, what: str) -> None:
        """Print elapsed time, batch interval percentiles and peak memory."""
        p50, p99 = np.percentile(self.batch_gaps_ms, [50, 99])
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"elapsed: {self.elapsed_s:.2f} s ({what})")
        print(f"batch interval p50/p99: {p50:.0f} / {p99:.0f} ms")
        print(f"peak memory (RSS): {peak_mb:.0f} MB")


def timed_replay(
    build: Callable[..., Dataflow],
    paths: list[Path],
    *,
    data_dir: Path,
    timezone: str,
    batch_rows: int,
    workers: int,
    result_sql: str,
) -> Timed:
    """Replay ``paths`` (one partition each) through ``build`` into a migrated warehouse."""
    settings = Settings(data_dir=data_dir, batch_rows=batch_rows)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        emitted: list[float] = []
        source = FileSource(
            [ReplayFile(path, timezone, batch_rows) for path in paths],
            progress=lambda *_: emitted.append(time.perf_counter()),
            merge=False,
        )
        flow = build(settings, source=source)
        start = time.perf_counter()
        cli_main(flow, workers_per_process=workers)
        elapsed = time.perf_counter() - start
        result = warehouse.query(result_sql)
    return Timed(elapsed, np.diff([start, *emitted]) * 1000, result)
