"""Benchmark: gate_flow scaled out from 1 to N processes on input partitioned by station.

Every stateful step is keyed by station, so records split by `station_partition` need no
exchange between processes (Bytewax's keyed exchange pickles every item and made a 2-process
cluster slower than one process). The bench simulates a day of passages on a network of copies
of the example site's stations (five stations cannot be split evenly: the interchange has 45 %
of the passages), writes them once whole and once as N partition files, and runs ``python -m
bytewax.run "pipelines.gate_flow:build()"`` as 1 process on the whole file, then as N
independent processes on one partition each; both again with every process pinned to one core.
Each process writes to its own embedded warehouse (chDB allows one process per path); with a
ClickHouse server all of them write to one database.

Wall time runs from starting the processes to the last one finishing, *including* interpreter
and import start-up; the start-up alone is measured by a run on an empty file and reported too.
Every run is checked: the warehouses together count every passage once. The last line is the
speedup of N processes over one.

    .venv/bin/python bench/scale_out.py [--records 2000000] [--copies 8] [--repeat 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

from app.simulate import default_surge, simulate_day, write_records
from crowdwatch.settings import DEFAULT_SITE_FILE, REPO_ROOT
from crowdwatch.site import load_site
from crowdwatch.sources.partition import split_frame

FLOW = "pipelines.gate_flow:build()"
COUNT_SQL = (
    "SELECT toInt64(sum(entries) + sum(exits)) AS n FROM zone_metrics FINAL WHERE scope = 'zone'"
)


@dataclass(frozen=True)
class Run:
    """N processes started together: wall time to the last exit, each one's time, CPU used."""

    wall_s: float
    process_s: list[float]
    cpu_s: float


def network_site(copies: int, out: Path) -> Path:
    """A site of ``copies`` copies of the example site's stations (``CTR0``, ``CTR1``, …).

    Five stations cannot be split evenly (the interchange alone has 45 % of the passages), so
    the bench runs on a network of copies, as a metro operator's would be.
    """
    base = yaml.safe_load(DEFAULT_SITE_FILE.read_text(encoding="utf-8"))
    codes = "|".join(re.escape(s["id"]) for s in base["stations"])
    station = re.compile(rf"\b({codes})\b")
    network: dict[str, object] = {"site": base["site"]}
    for section in ("stations", "zones", "gates", "cameras"):
        text = json.dumps(base.get(section, []))
        network[section] = [
            item
            for k in range(copies)
            for item in json.loads(station.sub(lambda m, k=k: f"{m[1]}{k}", text))
        ]
    out.write_text(yaml.safe_dump(network, sort_keys=False), encoding="utf-8")
    return out


def _env(site_file: Path, data_dir: Path, input_path: Path, batch_rows: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CROWDWATCH_DATA_DIR=str(data_dir),
        CROWDWATCH_INPUT_PATH=str(input_path),
        CROWDWATCH_BATCH_ROWS=str(batch_rows),
        CROWDWATCH_SITE_FILE=str(site_file),
    )
    return env


def _cli(data_dir: Path, *args: str) -> str:
    """Run the crowdwatch command line in its own process (chDB: one process per path)."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args, "--data-dir", str(data_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"crowdwatch {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def run_processes(
    site_file: Path, jobs: list[tuple[Path, Path]], batch_rows: int, *, pin: bool
) -> Run:
    """Start one gate_flow process per (data_dir, input file) at once; wait for all.

    With ``pin``, process i may run on core i only (its threads too).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = []
    for i, (data_dir, path) in enumerate(jobs):
        cores = {i % (os.cpu_count() or 1)}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", FLOW],
                cwd=REPO_ROOT,
                env=_env(site_file, data_dir, path, batch_rows),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=(lambda cores=cores: os.sched_setaffinity(0, cores)) if pin else None,
            )
        )
    finished: dict[int, float] = {}
    while len(finished) < len(procs):
        for i, proc in enumerate(procs):
            if i not in finished and proc.poll() is not None:
                finished[i] = time.perf_counter() - start
                if proc.returncode != 0:
                    stderr = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"process {i} failed ({proc.returncode}):\n{stderr[-2000:]}")
        time.sleep(0.005)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for proc in procs:
        if proc.stderr:
            proc.stderr.close()
    return Run(wall, [finished[i] for i in range(len(procs))], cpu)


def _count(csv: str) -> int:
    """The number in ``crowdwatch query --format csv`` output (header, then one value)."""
    lines = csv.splitlines()
    return int(lines[1]) if len(lines) > 1 and lines[1] else 0


def in_parallel(calls: list[tuple[Path, tuple[str, ...]]]) -> list[str]:
    """Run crowdwatch commands side by side, one process each (they wait on chDB, not CPU)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: _cli(call[0], *call[1]), calls))


def best_run(
    dirs: list[list[Path]], site_file: Path, inputs: list[Path], batch_rows: int, *, pin: bool
) -> Run:
    """The fastest of one run per set of (migrated) warehouses in ``dirs``."""
    runs = [
        run_processes(site_file, list(zip(ds, inputs, strict=True)), batch_rows, pin=pin)
        for ds in dirs
    ]
    return min(runs, key=lambda run: run.wall_s)


def describe(what: str, n: int, run: Run, startup: Run) -> str:
    """One line: wall time, events/s with and without start-up, cores kept busy."""
    return (
        f"{what}: {run.wall_s:.2f} s wall, {n / run.wall_s:,.0f} events/s "
        f"(without start-up {n / max(run.wall_s - startup.wall_s, 1e-9):,.0f}); "
        f"{run.cpu_s / run.wall_s:.2f} cores busy"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--copies", type=int, default=8, help="copies of the example stations")
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per setup; the best counts")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        site_file = network_site(args.copies, root / "network.yaml")
        site = load_site(site_file)
        day = date(2026, 11, 20)
        surge = dataclasses.replace(default_surge(), station_id="STD0")
        per_day = simulate_day(site, day, seed=0, surge=surge).height
        records = simulate_day(site, day, seed=1, scale=args.records / per_day, surge=surge).head(
            args.records
        )
        parts = split_frame(records, args.processes)
        whole = root / "passages.csv"
        write_records(records, whole)
        part_files = []
        for i, part in enumerate(parts):
            part_files.append(root / f"passages_part{i}.csv")
            write_records(part, part_files[-1])
        empty = root / "empty.csv"
        write_records(records.head(0), empty)

        n = records.height
        setups = {
            "startup": ([empty], False),
            "one": ([whole], False),
            "many": (part_files, False),
            "one_pinned": ([whole], True),
            "many_pinned": (part_files, True),
        }
        dirs = {
            name: [[root / f"{name}{r}_{i}" for i in range(len(files))] for r in range(args.repeat)]
            for name, (files, _) in setups.items()
        }
        everything = [d for sets in dirs.values() for ds in sets for d in ds]
        in_parallel([(d, ("db", "migrate")) for d in everything])
        runs = {
            name: best_run(dirs[name], site_file, files, args.batch_rows, pin=pin)
            for name, (files, pin) in setups.items()
        }
        # every run counted every passage exactly once, across its warehouses
        counts = in_parallel([(d, ("query", COUNT_SQL, "--format", "csv")) for d in everything])
        by_dir = dict(zip(everything, counts, strict=True))
        for name, sets in dirs.items():
            for ds in sets:
                total = sum(_count(by_dir[d]) for d in ds)
                if total != (0 if name == "startup" else n):
                    raise SystemExit(f"{name}: counted {total:,} of {n:,} passages")
    startup, one, many = runs["startup"], runs["one"], runs["many"]
    one_pinned, many_pinned = runs["one_pinned"], runs["many_pinned"]

    largest = max(p.height for p in parts)
    print(
        f"records: {n:,} passages of one simulated day on {records['station_id'].n_unique()} "
        f"stations ({args.copies} copies of the example site), batches of "
        f"{args.batch_rows:,}; {os.cpu_count()} cores"
    )
    print(
        "partitions by station_partition: "
        + ", ".join(f"{p.height:,} ({p['station_id'].n_unique()} stations)" for p in parts)
        + f"; the largest holds {largest / n:.1%}, so at most {n / largest:.2f}x"
    )
    print(
        f"process start-up (empty input: interpreter, imports, chDB open): {startup.wall_s:.2f} s"
    )
    print("wall time from starting the processes to the last exit, start-up included:")
    print(describe("  1 process, all records", n, one, startup))
    per_process = ", ".join(
        f"{part.height / s:,.0f}" for part, s in zip(parts, many.process_s, strict=True)
    )
    print(
        describe(f"  {args.processes} processes, a partition each", n, many, startup)
        + f"; per process {per_process} events/s"
    )
    print(describe("  1 process on 1 core", n, one_pinned, startup))
    print(describe(f"  {args.processes} processes, 1 core each", n, many_pinned, startup))
    print(
        "unpinned, the processes' threads (polars, chDB) share the cores with each other and "
        "with whatever else runs; pinned to a core each, the runs show the scaling per core. "
        f"Load average at the start and end: {load_start:.1f}, {os.getloadavg()[0]:.1f} "
        f"(on {os.cpu_count()} cores; above it, other processes took CPU from these runs)"
    )
    print(
        "each process wrote to its own embedded warehouse (chDB: one process per path); with a "
        "ClickHouse server all processes write to one database"
    )
    print(
        f"speedup_{args.processes}_processes_one_core_each: "
        f"{one_pinned.wall_s / many_pinned.wall_s:.2f} x"
    )
    print(f"speedup_{args.processes}_processes: {one.wall_s / many.wall_s:.2f} x")


if __name__ == "__main__":
    main()
