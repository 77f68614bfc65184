"""Benchmark: 1 M gate passage records, CSV file → gate_flow (Bytewax) → embedded ClickHouse.

End to end: reading the file, parsing and validating, windowing, occupancy, and the inserts
into chDB. Prints events/s, per-batch latency percentiles and peak memory; the last line is the
headline figure.

    .venv/bin/python bench/gate_flow.py [--records 1000000] [--batch-rows 100000]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import date
from pathlib import Path

from _harness import timed_replay

from app.simulate import default_surge, simulate_day, write_records
from crowdwatch.settings import DEFAULT_SITE_FILE
from crowdwatch.site import load_site
from pipelines.gate_flow import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument(
        "--workers", type=int, default=1, help="Bytewax workers; the file is split in as many parts"
    )
    args = parser.parse_args()

    site = load_site(DEFAULT_SITE_FILE)
    day = date(2026, 11, 20)
    per_day = simulate_day(site, day, seed=0, surge=default_surge()).height
    records = simulate_day(
        site, day, seed=1, scale=args.records / per_day, surge=default_surge()
    ).head(args.records)

    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        size = -(-records.height // args.workers)
        for i in range(args.workers):
            parts.append(Path(tmp) / f"passages_{i}.csv")
            write_records(records.slice(i * size, size), parts[-1])
        run = timed_replay(
            build,
            parts,
            data_dir=Path(tmp),
            timezone=site.site.timezone,
            batch_rows=args.batch_rows,
            workers=args.workers,
            result_sql="SELECT toInt64(sum(entries) + sum(exits)) AS n FROM zone_metrics FINAL "
            "WHERE scope = 'zone'",
        )
    stored = run.result["n"][0]
    if stored != records.height:
        raise SystemExit(f"counted {stored} of {records.height} records")
    print(
        f"records: {records.height:,} passages, batches of {args.batch_rows:,}, "
        f"{args.workers} worker(s)"
    )
    run.report("file read, parse, windows, occupancy, chDB inserts")
    print(f"throughput: {records.height / run.elapsed_s:.0f} events/s")


if __name__ == "__main__":
    main()
