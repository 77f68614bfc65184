"""Benchmark: 110 call records (CSV) → calls pipeline → embedded ClickHouse.

Calls spread over the example site's zones and a city district around them for 30 days, a
tenth of them sent again as updates, with caller phone numbers and text to scrub. End to end:
reading, validation, privacy scrubbing, categories, geo-assignment, rolling counts, burst
scores and the chDB inserts. The last line is the headline figure.

    .venv/bin/python bench/calls.py [--calls 200000] [--batch-rows 50000]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from _harness import timed_replay

from crowdwatch.settings import DEFAULT_SITE_FILE
from crowdwatch.site import Circle, load_site
from pipelines.calls import build

TEXTS = ["拥挤踩踏", "打架斗殴", "有人晕倒", "火灾", "扒窃", "交通事故", "噪音扰民"]


def calls(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` call records (plus updates of a tenth of them), in time order."""
    rng = np.random.default_rng(seed)
    site = load_site(DEFAULT_SITE_FILE)
    centres = [z.geometry.centre for z in site.zones if isinstance(z.geometry, Circle)]
    where = rng.integers(0, len(centres), n)
    lat = np.array([c[0] for c in centres])[where] + rng.normal(0, 0.002, n)
    lon = np.array([c[1] for c in centres])[where] + rng.normal(0, 0.002, n)
    start = int(datetime(2026, 10, 20, tzinfo=UTC).timestamp() * 1000)
    received = np.sort(start + rng.integers(0, 30 * 86_400_000, n))
    phones = rng.integers(13_000_000_000, 13_999_999_999, n)
    frame = pl.DataFrame(
        {
            "call_id": [f"110-{i:08d}" for i in range(n)],
            "received_at": pl.Series(received)
            .cast(pl.Datetime("ms", "UTC"))
            .dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
            "updated_at": None,
            "lat": np.round(lat, 6).astype(str),
            "lon": np.round(lon, 6).astype(str),
            "district": rng.choice(["Shangcheng", "Xihu", "Binjiang"], n),
            "category_text": rng.choice(TEXTS, n),
            "caller_phone": phones.astype(str),
            "description": [f"caller {p} reports an incident" for p in phones],
        },
        schema_overrides={"updated_at": pl.String},
    )
    updates = frame.sample(n // 10, seed=seed).with_columns(
        pl.col("received_at").alias("updated_at")
    )
    return pl.concat([frame, updates])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    args = parser.parse_args()
    records = calls(args.calls)
    site = load_site(DEFAULT_SITE_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calls.csv"
        records.write_csv(path)
        run = timed_replay(
            build,
            [path],
            data_dir=Path(tmp),
            timezone=site.site.timezone,
            batch_rows=args.batch_rows,
            workers=1,
            result_sql="SELECT (SELECT count() FROM calls FINAL) AS calls, "
            "(SELECT count() FROM rejected_events) AS rejected",
        )
    stored, rejected = run.result.row(0)
    if stored != args.calls or rejected:
        raise SystemExit(f"stored {stored} of {args.calls} calls, {rejected} rejected")
    print(
        f"records: {records.height:,} ({args.calls:,} calls + updates), "
        f"batches of {args.batch_rows:,}"
    )
    run.report("read, validate, scrub, categorise, place, count, score, chDB inserts")
    print(f"throughput: {records.height / run.elapsed_s:.0f} calls/s")


if __name__ == "__main__":
    main()
