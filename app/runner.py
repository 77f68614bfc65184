"""Running pipelines in this process: replay with progress bars, and printing results.

With ``settings.recovery_dir`` a run snapshots its state and input positions every
``snapshot_interval_s`` (Bytewax recovery, one directory per pipeline) and a run killed at any
point resumes from the last snapshot. Rows written after that snapshot are written again on
resume; the warehouse tables are idempotent (ReplacingMergeTree keyed by what a row describes),
so they are replaced, not added.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import polars as pl
from bytewax.dataflow import Dataflow
from bytewax.recovery import (
    InconsistentPartitionsError,
    MissingPartitionsError,
    NoPartitionsError,
    RecoveryConfig,
    init_db_dir,
)
from bytewax.run import cli_main
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app import registry
from crowdwatch.settings import Settings
from crowdwatch.site import Site, load_site
from crowdwatch.sources.files import FileSource, ReplayFile
from crowdwatch.warehouse.client import Warehouse, WarehouseSink
from crowdwatch.warehouse.sitesync import sync_site


def prepare_warehouse(settings: Settings, site: Site) -> None:
    """Check the warehouse is migrated and mirror the site file into its site tables."""
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.check_tables("zone_metrics", "rejected_events", "site_zones", "video_frames")
        sync_site(warehouse, site)


class RecoveryError(ValueError):
    """The recovery directory cannot be used; the message says what to do."""


def _check_partitions(directory: Path, parts: list[Path]) -> None:
    """Every ``part-N.sqlite3`` opens, and together they are one complete set."""
    counts: set[int] = set()
    indices: set[int] = set()
    for part in parts:
        db = sqlite3.connect(part)
        try:
            rows = db.execute("SELECT part_index, part_count FROM parts").fetchall()
        except sqlite3.Error as exc:
            raise RecoveryError(
                f"{part}: not a Bytewax recovery partition ({exc}); delete {directory} to start "
                "this pipeline over without recovery state"
            ) from exc
        finally:
            db.close()
        for index, count in rows:
            indices.add(int(index))
            counts.add(int(count))
    if len(counts) != 1 or indices != set(range(next(iter(counts)))):
        raise RecoveryError(
            f"{directory}: recovery partitions {sorted(indices)} of {sorted(counts)} found, "
            "expected one complete set part-0 … part-(N-1); restore the missing files or delete "
            f"{directory} to start this pipeline over"
        )


def recovery_config(settings: Settings, pipeline: str) -> RecoveryConfig | None:
    """The recovery directory of a pipeline, created and initialised on first use.

    Returns None when ``settings.recovery_dir`` is not set.

    Raises:
        RecoveryError: the directory holds something other than one set of partitions.
    """
    if settings.recovery_dir is None:
        return None
    directory = settings.recovery_dir / pipeline
    parts = sorted(directory.glob("part-*.sqlite3"))
    if parts:
        _check_partitions(directory, parts)
    else:
        if directory.exists() and any(directory.iterdir()):
            raise RecoveryError(
                f"{directory} is not empty but holds no recovery partitions (part-N.sqlite3); "
                "point CROWDWATCH_RECOVERY_DIR elsewhere or empty it"
            )
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, settings.recovery_partitions or settings.workers)  # type: ignore[no-untyped-call]
    return RecoveryConfig(directory)  # type: ignore[no-untyped-call]


def run_flow(
    flow: Dataflow,
    workers: int,
    *,
    recovery: RecoveryConfig | None = None,
    snapshot_interval_s: float | None = None,
) -> None:
    """Run a dataflow in this process with ``workers`` worker threads.

    With ``recovery``, state is snapshotted every ``snapshot_interval_s`` seconds (the epoch
    length) and a run resumes from the last snapshot in that directory.
    """
    interval = None if snapshot_interval_s is None else timedelta(seconds=snapshot_interval_s)
    try:
        cli_main(  # type: ignore[no-untyped-call]
            flow, workers_per_process=workers, epoch_interval=interval, recovery_config=recovery
        )
    except (InconsistentPartitionsError, MissingPartitionsError, NoPartitionsError) as exc:
        where = recovery.db_dir if recovery is not None else "?"
        raise RecoveryError(
            f"cannot resume from {where}: {exc}; restore the partitions or delete the directory "
            "to start the pipeline over"
        ) from exc


def run_pipeline(settings: Settings, pipeline: str, **build_args: object) -> None:
    """Build a pipeline with the buffered warehouse sink and run it, with recovery if set."""
    flow = registry.get(pipeline)(
        settings, sink=WarehouseSink.from_settings(settings), **build_args
    )
    run_flow(
        flow,
        settings.workers,
        recovery=recovery_config(settings, pipeline),
        snapshot_interval_s=settings.snapshot_interval_s,
    )


def replay_files(
    settings: Settings,
    pipeline: str,
    files: Sequence[Path],
    *,
    speed: float | None,
    console: Console,
) -> None:
    """Stream files through a pipeline into the warehouse, with a progress bar per file.

    With recovery, a file this pipeline already read to the end in the recovery directory is
    not read again (Bytewax resumes at its end); the console says so.
    """
    site = load_site(settings.site_file)
    registry.get(pipeline)  # an unknown pipeline fails before the warehouse is touched
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
        read: set[str] = set()

        def report(name: str, done: int, total: int) -> None:
            read.add(name)
            progress.update(tasks[name], completed=done, total=total)

        specs = [ReplayFile(Path(f), site.site.timezone, settings.batch_rows, speed) for f in files]
        source = FileSource(specs, progress=report)
        run_pipeline(settings, pipeline, source=source)
    unread = [name for name in tasks if name not in read]
    if unread and settings.recovery_dir is not None:
        console.print(
            f"[yellow]nothing left to read in {', '.join(unread)}: the recovery directory "
            f"{settings.recovery_dir / pipeline} has them read to the end; delete it to replay "
            "them from the start[/yellow]"
        )


def print_frame(frame: pl.DataFrame, console: Console, title: str | None = None) -> None:
    """Print a frame as a table."""
    table = Table(title=title, show_lines=False)
    for name in frame.columns:
        table.add_column(name, justify="right" if frame[name].dtype.is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
