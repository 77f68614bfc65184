"""Benchmark: fit N Hangzhou station forecasters (hourly inflow, 3 weeks) with `fit_many`.

Each fit is the default model serialised to JSON, in 2 spawned processes: two Prophet fits (one
on the history before the last week, whose out-of-sample errors calibrate the 80 % band, and one
on all of it), the event effects and the baseline. The wall time includes starting the
processes. The last line is the headline figure.

    .venv/bin/python bench/forecast_fit.py [--series 80] [--processes 2] [--weeks 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from forecasts.backtest import DEFAULT_DATA, hangzhou_series
from forecasts.model import ForecastConfig, fit_many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--series", type=int, default=80, help="stations (at most 80)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--weeks", type=int, default=3)
    args = parser.parse_args()

    series = hangzhou_series(args.data, stations=list(range(args.series)))
    first = min(frame["ds"].min() for frame in series.values())
    end = first + pd.Timedelta(weeks=args.weeks)
    series = {key: frame[frame["ds"] < end] for key, frame in series.items()}
    hours = max(len(frame) for frame in series.values())

    start = time.perf_counter()
    results = fit_many(series, ForecastConfig(), processes=args.processes)
    elapsed = time.perf_counter() - start

    seconds = [r.seconds for r in results.values()]
    methods = Counter(str(r.method) for r in results.values())
    errors = sum(r.error is not None for r in results.values())
    print(f"series: {len(series)} x {hours} hours, processes: {args.processes}")
    print(f"methods: {dict(methods)}, errors: {errors}")
    print(f"per series (in its worker): median {statistics.median(seconds):.3f} s, ", end="")
    print(f"max {max(seconds):.3f} s")
    print(f"elapsed: {elapsed:.1f} s (with process start-up)")
    print(f"fit rate: {len(series) / elapsed * 60:.0f} series/min")


if __name__ == "__main__":
    main()
