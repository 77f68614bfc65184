"""The calls pipeline end to end: dedup, privacy in every table, burst detection."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from bytewax.testing import TestingSource, run_main

from crowdwatch.batches import RawBatch
from crowdwatch.settings import Settings
from crowdwatch.sources.files import FileSource, ReplayFile
from crowdwatch.warehouse.client import Warehouse
from pipelines.calls import build
from tests.conftest import SHARED_DATA

SEATTLE = SHARED_DATA / "emergency_calls" / "seattle_fire_911_mva.csv"
PLAZA = (30.2310, 120.2310)  # the stadium plaza, radius 90 m
DAY = datetime(2026, 11, 20, tzinfo=UTC)


def calls_frame(rows: list[dict[str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={k: pl.String for k in rows[0]})


def test_seattle_replayed_with_repeats_and_updates_counts_each_incident_once(
    engine_dir: Path,
) -> None:
    if not SEATTLE.exists():
        pytest.skip(f"real data missing: {SEATTLE}")
    settings = Settings(data_dir=engine_dir, clickhouse_database="seattle")
    raw = pl.read_csv(SEATTLE, infer_schema=False)
    # the dispatch feed repeats records and sends updates: replay the file, then a repeat of
    # a thousand records with their type changed and a later update time
    repeats = raw.head(1000).with_columns(pl.lit("Motor Vehicle Incident").alias("Type"))
    repeats.write_csv(Path(engine_dir) / "repeats.csv")
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        source = FileSource(
            [
                ReplayFile(SEATTLE, "America/Los_Angeles", 5000),
                ReplayFile(Path(engine_dir) / "repeats.csv", "America/Los_Angeles", 5000),
            ]
        )
        run_main(build(settings, source=source))
        stored = warehouse.query(
            "SELECT count() AS n, uniqExact(call_id) AS u FROM calls FINAL"
        ).row(0)
        ids = raw["Incident Number"].str.strip_chars()
        blank = int((ids.is_null() | (ids == "")).sum())
        incidents = ids.filter(ids != "").drop_nulls().n_unique()
        assert stored == (incidents, incidents)
        districts = warehouse.query(
            "SELECT toInt64(max(calls_60m)) AS peak FROM call_counts FINAL WHERE level = 'district'"
        )
        assert districts["peak"][0] >= 1
        # one record of the feed has no incident number: rejected, once, though sent twice
        rejected = warehouse.query(
            "SELECT reason, count() AS n FROM rejected_events FINAL GROUP BY reason"
        )
        reasons = dict(rejected.iter_rows())
        assert reasons.pop("call_id missing") == blank == 1
        # the export is not in time order (2011 first, 2010 to 2015 after): a call more than
        # the baseline's 8 weeks behind the newest one seen cannot be counted, and is rejected
        # for that reason (it is still stored in `calls`), never a crash
        assert list(reasons) == [
            "older than the 8-week baseline behind the newest call: not counted"
        ]
        too_old = warehouse.query(
            "SELECT count() AS n FROM calls FINAL WHERE call_id IN (SELECT extract(position, "
            "'^call (.*) v') FROM rejected_events FINAL WHERE reason LIKE 'older%')"
        )["n"][0]
        assert 0 < too_old < incidents


SECRETS = ["13912345678", "13987654321", "330106199001011234", "0571-88776655", "Li Na"]


def test_no_phone_or_id_number_reaches_any_table(settings: Settings, warehouse: Warehouse) -> None:
    rows = []
    for i, secret in enumerate(SECRETS):
        rows.append(
            {
                "call_id": f"P{i}",
                "received_at": "2026-11-20T21:40:00+08:00" if i % 2 else "not a time",
                "lat": str(PLAZA[0]),
                "lon": str(PLAZA[1]),
                "category_text": "fight 打架",
                "caller_phone": SECRETS[0],
                "caller_name": "Li Na",
                "caller_id_number": SECRETS[2],
                "address": f"gate 2, tel {SECRETS[1]}",
                "description": f"caller {secret} says people are fighting; ID {SECRETS[2]}",
            }
        )
    batch = RawBatch("cad", "call", calls_frame(rows), 0)
    json_batch = RawBatch(
        "cad-json",
        "call",
        pl.DataFrame({"payload": [pl.DataFrame([r]).write_ndjson().strip() for r in rows]}),
        0,
    )
    run_main(build(settings, source=TestingSource([batch, json_batch])))
    assert warehouse.query("SELECT count() AS n FROM calls FINAL")["n"][0] == 2
    assert warehouse.query("SELECT count() AS n FROM rejected_events FINAL")["n"][0] == 6
    for table in warehouse.query("SHOW TABLES")["name"]:
        text = warehouse.query(f"SELECT * FROM `{table}`").write_ndjson()
        digits = text.replace("-", "").replace(" ", "")
        for secret in SECRETS:
            assert secret.replace("-", "").replace(" ", "") not in digits, (table, secret)


def background(days: int, rate_per_hour: float, seed: int) -> list[dict[str, str | None]]:
    """Crowd-relevant calls around the plaza at a Poisson rate, for ``days`` days."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate_per_hour * 24 * days)
    minutes = np.sort(rng.uniform(0, days * 1440, n))
    start = DAY - timedelta(days=days)
    return [
        {
            "call_id": f"B{seed}-{i}",
            "received_at": (start + timedelta(minutes=float(m))).isoformat(),
            "lat": f"{PLAZA[0] + rng.normal(0, 0.0002):.6f}",
            "lon": f"{PLAZA[1] + rng.normal(0, 0.0002):.6f}",
            "category_text": ["crowding", "fight", "person fainted"][i % 3],
        }
        for i, m in enumerate(minutes)
    ]


def bursts(
    settings: Settings, rows: list[dict[str, str | None]], warehouse: Warehouse
) -> pl.DataFrame:
    frame = calls_frame(rows)
    batches = [RawBatch("cad", "call", frame.slice(i, 200), i) for i in range(0, frame.height, 200)]
    run_main(build(settings, source=TestingSource(batches)))
    return warehouse.query(
        "SELECT ts, observed_15m, expected_15m, score, alert FROM call_bursts FINAL "
        "WHERE key = 'STD-plaza' AND level = 'zone' ORDER BY ts"
    )


def test_a_surge_of_crowd_calls_alerts_within_five_minutes_and_normal_days_do_not(
    settings: Settings, warehouse: Warehouse
) -> None:
    history = background(days=35, rate_per_hour=0.25, seed=3)
    surge_start = DAY + timedelta(hours=13, minutes=40)
    surge = [
        {
            "call_id": f"S{i}",
            "received_at": (surge_start + timedelta(seconds=50 * i)).isoformat(),
            "lat": f"{PLAZA[0]:.6f}",
            "lon": f"{PLAZA[1]:.6f}",
            "category_text": "stampede, people crushed at exit",
        }
        for i in range(8)
    ]
    scores = bursts(
        settings, sorted(history + surge, key=lambda r: str(r["received_at"])), warehouse
    )
    normal = scores.filter(pl.col("ts") < surge_start)
    assert normal.height > 100
    assert normal["alert"].sum() == 0
    assert normal["score"].max() < 4.0
    alerts = scores.filter((pl.col("ts") >= surge_start) & (pl.col("alert") == 1))
    assert alerts.height > 0
    first_alert = alerts["ts"].min()
    assert first_alert - surge_start <= timedelta(minutes=5)
    assert math.isfinite(alerts["score"].max())
    assert scores["observed_15m"].max() == len(surge)


def test_a_storm_of_traffic_calls_is_a_site_wide_mass_incident_not_a_crowd_burst(
    settings: Settings, warehouse: Warehouse
) -> None:
    rng = np.random.default_rng(8)
    history = background(days=35, rate_per_hour=0.25, seed=4)
    # collisions all over the city at about one an hour, then a storm: 12 an hour for 2 hours
    minutes = np.concatenate(
        [np.sort(rng.uniform(0, 35 * 1440, 35 * 24)), 35 * 1440 + np.linspace(0, 120, 24)]
    )
    start = DAY - timedelta(days=35)
    traffic = [
        {
            "call_id": f"T{i}",
            "received_at": (start + timedelta(minutes=float(m))).isoformat(),
            "lat": f"{PLAZA[0] + rng.uniform(-0.05, 0.05):.6f}",
            "lon": f"{PLAZA[1] + rng.uniform(-0.05, 0.05):.6f}",
            "category_text": "Motor Vehicle Accident",
        }
        for i, m in enumerate(minutes)
    ]
    rows = sorted(history + traffic, key=lambda r: str(r["received_at"]))
    frame = calls_frame(rows)
    batches = [RawBatch("cad", "call", frame.slice(i, 200), i) for i in range(0, frame.height, 200)]
    run_main(build(settings, source=TestingSource(batches)))
    scores = warehouse.query(
        "SELECT key, level, ts, score, alert FROM call_bursts FINAL ORDER BY ts"
    )
    mass = scores.filter(pl.col("key") == "mass_incident")
    assert set(mass["level"]) == {"site"}
    storm = mass.filter(pl.col("ts") >= DAY)
    assert storm.filter(pl.col("alert") == 1)["ts"].min() <= DAY + timedelta(hours=1)
    # five weeks of ordinary collisions score far below the storm (the site-wide line is 3, so
    # a stray alert a week is the price of catching storms early; the highest ordinary score
    # here, 5.4, is in the second week, when each hour of the week has been seen once)
    before = mass.filter(pl.col("ts") < DAY)
    assert storm["score"].max() > 2.5 * before["score"].max()
    # traffic weighs 0.2: no zone, station or district burst from it, nor a site-wide crowd one
    crowd = scores.filter((pl.col("key") != "mass_incident") & (pl.col("ts") >= DAY))
    assert crowd["alert"].sum() == 0
    assert "site" in set(scores["key"])
