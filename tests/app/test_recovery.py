"""Recovery: a replay killed with SIGKILL at several points and restarted ends as an unbroken run.

Every run is a real ``crowdwatch replay`` in a subprocess on its own embedded engine (chDB allows
one engine path per process). Progress is read from the run's recovery partitions (SQLite, WAL
mode, readable while the run writes them): the input step's snapshot is the next file row.
"""

from __future__ import annotations

import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from app.runner import RecoveryError, recovery_config
from crowdwatch.settings import REPO_ROOT, Settings
from tests.commands import crowdwatch, user_env
from tests.conftest import EXAMPLE_SITE, SHARED_DATA

DAY = "2026-11-18"
BATCH_ROWS = 2000
SNAPSHOT_S = 0.2
SEATTLE = SHARED_DATA / "emergency_calls" / "seattle_fire_911_mva.csv"


def env_for(data_dir: Path, recovery_dir: Path | None) -> dict[str, str]:
    env = user_env(
        data_dir,
        CROWDWATCH_SITE_FILE=str(EXAMPLE_SITE),
        CROWDWATCH_SNAPSHOT_INTERVAL_S=str(SNAPSHOT_S),
    )
    if recovery_dir is not None:
        env["CROWDWATCH_RECOVERY_DIR"] = str(recovery_dir)
    return env


def query(sql: str, env: dict[str, str]) -> pl.DataFrame:
    out = crowdwatch("query", sql, "--format", "json", env=env).stdout
    return pl.read_ndjson(out.encode()) if out.strip() else pl.DataFrame()


def snapshot_position(part: Path, step_id: str) -> int:
    """The newest snapshot of an input step: the next row of the file (0 before any)."""
    if not part.exists():
        return 0
    db = sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute(
            "SELECT ser_change FROM snaps WHERE step_id = ? ORDER BY snap_epoch DESC LIMIT 1",
            (step_id,),
        ).fetchone()
    except sqlite3.OperationalError:
        return 0  # the run has not created its tables yet
    finally:
        db.close()
    return int(pickle.loads(row[0])) if row and row[0] is not None else 0


@dataclass
class Kill:
    """A run killed once its snapshot passed ``at_row``; where it was when it died."""

    at_row: int
    snapshot_row: int
    returncode: int


def replay_with_kills(
    data: Path,
    data_dir: Path,
    pipeline: str,
    fractions: list[float],
    rows: int,
    batch_rows: int = BATCH_ROWS,
) -> tuple[list[Kill], subprocess.CompletedProcess[str]]:
    """Replay with recovery, SIGKILL at each fraction of the file, then run to the end."""
    recovery = data_dir / "recovery"
    env = env_for(data_dir, recovery)
    part = recovery / pipeline / "part-0.sqlite3"
    step = f"{pipeline}.records"
    args = [
        sys.executable, "-m", "app.cli", "replay", str(data),
        "--pipeline", pipeline, "--batch-rows", str(batch_rows),
    ]  # fmt: skip
    kills = []
    for fraction in fractions:
        target = max(1, int(rows * fraction))
        with (data_dir / "run.log").open("a") as log:
            proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
            while proc.poll() is None and snapshot_position(part, step) < target:
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        kills.append(Kill(target, snapshot_position(part, step), proc.returncode))
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    return kills, done


def executions(part: Path) -> list[tuple[int, int]]:
    """``(execution, resume epoch)`` of every run recorded in a recovery partition."""
    db = sqlite3.connect(f"file:{part}?mode=ro", uri=True)
    try:
        return [(int(a), int(b)) for a, b in db.execute("SELECT ex_num, resume_epoch FROM exs")]
    finally:
        db.close()


def with_bad_rows(source: Path, out: Path, every: int) -> int:
    """Copy a passages file with every ``every``-th row spoiled in one of three ways."""
    frame = pl.read_csv(source, infer_schema=False)
    idx = pl.int_range(pl.len())
    spoil = (idx % every).is_in([0, every // 3, 2 * every // 3])
    spoiled = frame.with_columns(
        pl.when(idx % every == 0)
        .then(pl.lit("NO-SUCH-GATE"))
        .otherwise("gate_id")
        .alias("gate_id"),
        pl.when(idx % every == every // 3).then(pl.lit("not a time")).otherwise("ts").alias("ts"),
        pl.when(idx % every == 2 * every // 3)
        .then(pl.lit("sideways"))
        .otherwise("direction")
        .alias("direction"),
    )
    spoiled.write_csv(out)
    return frame.filter(spoil).height


METRICS_SQL = (
    "SELECT zone_id, station_id, scope, toString(ts) AS ts, entries, exits, occupancy, "
    "inflow_per_min, outflow_per_min FROM zone_metrics FINAL ORDER BY zone_id, ts"
)
REJECTS_SQL = (
    "SELECT source, position, reason, payload FROM rejected_events FINAL ORDER BY source, position"
)
REJECT_COPIES_SQL = (
    "SELECT source, position, count() AS copies FROM rejected_events FINAL "
    "GROUP BY source, position HAVING copies > 1"
)


@pytest.fixture(scope="module")
def passages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A simulated day at the example site (about 250k passages) with bad rows in it."""
    folder = tmp_path_factory.mktemp("passages")
    clean = folder / "clean.csv"
    env = env_for(folder, None)
    crowdwatch("simulate", "--day", DAY, "--out", str(clean), "--seed", "3", env=env)
    data = folder / "day.csv"
    bad = with_bad_rows(clean, data, every=4999)
    rows = pl.read_csv(data, infer_schema=False).height
    return data, rows, bad


def test_gate_flow_killed_three_times_ends_as_an_unbroken_run(
    tmp_path: Path, passages: tuple[Path, int, int]
) -> None:
    data, rows, bad = passages
    assert rows > 200_000

    reference = tmp_path / "reference"
    ref_env = env_for(reference, None)
    crowdwatch("db", "migrate", env=ref_env)
    crowdwatch("replay", str(data), "--batch-rows", str(BATCH_ROWS), env=ref_env)
    expected = query(METRICS_SQL, ref_env)
    expected_rejects = query(REJECTS_SQL, ref_env)

    killed = tmp_path / "killed"
    env = env_for(killed, killed / "recovery")
    crowdwatch("db", "migrate", env=env)
    kills, done = replay_with_kills(data, killed, "gate_flow", [0.0, 0.5, 0.85], rows)

    # every run was killed mid-file (SIGKILL, not a clean end), later each time
    assert [k.returncode for k in kills] == [-signal.SIGKILL] * 3, (killed / "run.log").read_text()
    assert 0 < kills[0].snapshot_row < kills[1].snapshot_row < kills[2].snapshot_row < rows
    assert kills[1].snapshot_row >= rows * 0.5 and kills[2].snapshot_row >= rows * 0.85
    assert done.returncode == 0, done.stderr
    # four executions; the later restarts resumed from a committed snapshot, not from the
    # start (the first kill may come before the first commit: then the run starts over)
    runs = executions(killed / "recovery" / "gate_flow" / "part-0.sqlite3")
    assert [ex for ex, _ in runs] == [0, 1, 2, 3]
    resumes = [epoch for _, epoch in runs]
    assert resumes[0] == 1 and 1 < resumes[2] < resumes[3], resumes

    # the embedded engine opened after every SIGKILL (the restarts wrote to it), and the
    # totals per zone, station and window are those of the unbroken run
    got = query(METRICS_SQL, env)
    assert got.height == expected.height > 0
    assert got.equals(expected)
    passages_ok = got.filter(pl.col("scope") == "zone").select(pl.sum("entries") + pl.sum("exits"))
    assert passages_ok.item() == rows - bad
    # each bad record is in rejected_events once, as in the unbroken run
    rejects = query(REJECTS_SQL, env)
    assert rejects.height == bad
    assert rejects.equals(expected_rejects)
    assert query(REJECT_COPIES_SQL, env).height == 0
    # the recovery directory remembers the file was read to the end: a replay adds nothing
    again = crowdwatch("replay", str(data), "--batch-rows", str(BATCH_ROWS), env=env)
    assert "nothing left to read in day.csv" in " ".join(again.stdout.split())
    assert query(METRICS_SQL, env).equals(expected)


@pytest.mark.skipif(not SEATTLE.exists(), reason=f"real data missing: {SEATTLE}")
def test_calls_killed_twice_end_with_the_counts_of_an_unbroken_run(tmp_path: Path) -> None:
    rows = pl.read_csv(SEATTLE, infer_schema=False).height
    counts_sql = (
        "SELECT key, level, group, toString(ts) AS ts, calls_5m, calls_15m, calls_60m "
        "FROM call_counts FINAL ORDER BY key, level, group, ts"
    )
    reference = tmp_path / "reference"
    ref_env = env_for(reference, None)
    crowdwatch("db", "migrate", env=ref_env)
    crowdwatch("replay", str(SEATTLE), "--pipeline", "calls", "--batch-rows", "500", env=ref_env)
    expected = query(counts_sql, ref_env)

    killed = tmp_path / "killed"
    env = env_for(killed, killed / "recovery")
    crowdwatch("db", "migrate", env=env)
    kills, done = replay_with_kills(SEATTLE, killed, "calls", [0.3, 0.7], rows, batch_rows=500)
    assert [k.returncode for k in kills] == [-signal.SIGKILL] * 2, (killed / "run.log").read_text()
    assert done.returncode == 0, done.stderr
    got = query(counts_sql, env)
    assert got.height == expected.height > 0
    assert got.equals(expected)


def test_a_recovery_directory_is_created_on_first_use_and_checked_after(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, recovery_dir=tmp_path / "rec", workers=2)
    config = recovery_config(settings, "gate_flow")
    assert config is not None
    assert sorted(p.name for p in (tmp_path / "rec" / "gate_flow").iterdir()) == [
        "part-0.sqlite3",
        "part-1.sqlite3",
    ]
    # a second use finds the partitions and does not initialise them again
    assert recovery_config(settings, "gate_flow") is not None
    (tmp_path / "rec" / "gate_flow" / "part-1.sqlite3").unlink()
    with pytest.raises(RecoveryError, match=r"partitions \[0\] of \[2\] found"):
        recovery_config(settings, "gate_flow")
    stray = tmp_path / "rec" / "calls"
    stray.mkdir()
    (stray / "notes.txt").write_text("not bytewax", encoding="utf-8")
    with pytest.raises(RecoveryError, match="holds no recovery partitions"):
        recovery_config(settings, "calls")
    (tmp_path / "rec" / "zone_risk").mkdir()
    (tmp_path / "rec" / "zone_risk" / "part-0.sqlite3").write_text("junk", encoding="utf-8")
    with pytest.raises(RecoveryError, match="not a Bytewax recovery partition"):
        recovery_config(settings, "zone_risk")
    assert recovery_config(Settings(data_dir=tmp_path), "gate_flow") is None
