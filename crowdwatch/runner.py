"""Running pipelines in this process: replay with progress bars, and printing results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crowdwatch import registry
from crowdwatch.replay import FileSource, ReplayFile
from crowdwatch.settings import Settings
from crowdwatch.site import Site, load_site
from crowdwatch.sitesync import sync_site
from crowdwatch.warehouse import Warehouse


def prepare_warehouse(settings: Settings, site: Site) -> None:
    """Check the warehouse is migrated and mirror the site file into its site tables."""
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.check_tables("zone_metrics", "rejected_events", "site_zones", "video_frames")
        sync_site(warehouse, site)


def run_flow(flow: Dataflow, workers: int) -> None:
    """Run a dataflow in this process with ``workers`` worker threads."""
    cli_main(flow, workers_per_process=workers)  # type: ignore[no-untyped-call]


def replay_files(
    settings: Settings,
    pipeline: str,
    files: Sequence[Path],
    *,
    speed: float | None,
    console: Console,
) -> None:
    """Stream files through a pipeline into the warehouse, with a progress bar per file."""
    site = load_site(settings.site_file)
    build = registry.get(pipeline)
    prepare_warehouse(settings, site)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks = {path.name: progress.add_task(path.name, total=None) for path in files}

        def report(name: str, done: int, total: int) -> None:
            progress.update(tasks[name], completed=done, total=total)

        specs = [ReplayFile(Path(f), site.site.timezone, settings.batch_rows, speed) for f in files]
        source = FileSource(specs, progress=report)
        run_flow(build(settings, source=source), settings.workers)


def print_frame(frame: pl.DataFrame, console: Console, title: str | None = None) -> None:
    """Print a frame as a table."""
    table = Table(title=title, show_lines=False)
    for name in frame.columns:
        table.add_column(name, justify="right" if frame[name].dtype.is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
