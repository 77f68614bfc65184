"""Forecasts against the warehouse: train on simulated history, write rows, warn ahead."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
import polars as pl
from bytewax.testing import TestingSink, TestingSource, run_main

from app.demo_forecast import history_rows
from app.simulate import default_surge, simulate_day
from crowdwatch.batches import RawBatch
from crowdwatch.risk.notify import AlertEvent, AlertReceiver
from crowdwatch.settings import Settings
from crowdwatch.site import Contact, load_site
from crowdwatch.warehouse.client import Warehouse
from crowdwatch.workflow.loop import Responder
from dashboards.macros import expand
from forecasts import service
from forecasts.model import EventWindow, Forecaster
from pipelines import zone_risk
from tests.conftest import EXAMPLE_SITE
from tests.crowdwatch.risk.test_notify import ALL_ROLES as ROLES
from tests.crowdwatch.risk.test_notify import site_with
from tests.dashboards.test_dashboards import sql_of

SITE = load_site(EXAMPLE_SITE)
SYDNEY = SITE.model_copy(
    update={"site": SITE.site.model_copy(update={"country": "AU", "timezone": "Australia/Sydney"})}
)
"""The example site moved to Sydney: Australia's calendar, clocks that change twice a year."""
LAST = date(2026, 11, 19)


def history(days: int) -> list[RawBatch]:
    frames = [
        simulate_day(SITE, LAST - timedelta(days=d), seed=d, scale=0.25)
        for d in range(days - 1, -1, -1)
    ]
    records = pl.concat(frames)
    return [
        RawBatch("history", "passage", records.slice(i, 50_000), i)
        for i in range(0, records.height, 50_000)
    ]


def stored_range(warehouse: Warehouse) -> tuple[datetime, datetime]:
    row = warehouse.query("SELECT min(ts) AS lo, max(ts) AS hi FROM forecasts FINAL")
    return row["lo"][0].replace(tzinfo=UTC), row["hi"][0].replace(tzinfo=UTC)


def test_forecast_rows_land_for_every_zone_with_history_and_training_is_incremental(
    engine_dir: Path,
) -> None:
    settings = Settings(data_dir=engine_dir, clickhouse_database="forecast_history")
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(
            zone_risk.build(settings, source=TestingSource(history(15)), alert_sink=TestingSink([]))
        )
        series = service.history(warehouse, SITE, "headcount")
        assert set(series) == {
            "CTR-concourse",
            "RVS-concourse",
            "NPK-concourse",
            "STD-concourse",
            "WLK-lakeside",
        }
        trained = service.train(settings, warehouse, SITE, "headcount")
        assert sorted(t.zone_id for t in trained) == sorted(series)
        assert all(t.error is None for t in trained)
        assert [(t.method, t.fallback_reason) for t in trained] == [("prophet", None)] * 5
        rows = service.predict(settings, warehouse, SITE, "headcount", horizon_h=24)
        stored = warehouse.query(
            "SELECT zone_id, count() AS n, min(yhat_lower) AS low FROM forecasts FINAL "
            "GROUP BY zone_id ORDER BY zone_id"
        )
        assert stored["zone_id"].to_list() == sorted(series)
        assert stored["n"].to_list() == [24] * len(series)
        assert stored["low"].min() >= 0  # never a negative crowd
        assert rows.height == 24 * len(series)
        # the zone dashboard's forecast band reads exactly these rows
        start, end = stored_range(warehouse)
        band = warehouse.query(
            expand(
                sql_of("crowdwatch-zone", "Headcount against capacity and forecast", "B"),
                start=start,
                end=end,
                variables={"station": "STD", "zone": "STD-concourse"},
            )
        )
        assert band.columns == ["time", "forecast", "forecast_lower", "forecast_upper"]
        assert band.height == 24
        assert (band["forecast_lower"] <= band["forecast"]).all()
        assert (band["forecast"] <= band["forecast_upper"]).all()
        # nothing new since: nothing to refit
        assert service.train(settings, warehouse, SITE, "headcount") == []
        # a meta file without the event effects the warning reads (an older one): refit
        meta_file = (
            engine_dir / "models" / "forecast_history" / "headcount" / "CTR-concourse.meta.json"
        )
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        assert meta["effects"] == {}  # the site has no events
        meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "effects"}))
        refit = service.train(settings, warehouse, SITE, "headcount")
        assert [t.zone_id for t in refit] == ["CTR-concourse"]
        assert "effects" in json.loads(meta_file.read_text(encoding="utf-8"))
        # an event window over all the history (a mistyped site file): every zone falls back
        # to the seasonal-naive forecast, and training says why
        forever = EventWindow(datetime(2000, 1, 1), datetime(2199, 1, 1), "expo")  # noqa: DTZ001
        config = replace(service.forecast_config(SITE), events=(forever,))
        naive = service.train(settings, warehouse, SITE, "headcount", config=config)
        assert {t.method for t in naive} == {"seasonal_naive"}
        assert all("ordinary steps" in (t.fallback_reason or "") for t in naive)


def test_warnings_are_stored_sent_once_and_not_repeated(engine_dir: Path) -> None:
    settings = Settings(
        data_dir=engine_dir,
        clickhouse_database="forecast_warn",
        notify_max_age_s=1e9,  # the forecasts are of 2026-11-20
    )
    with (
        AlertReceiver() as receiver,
        Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse,
    ):
        site = site_with(
            {role: Contact(name=role, webhook=receiver.url(f"/{role}")) for role in ROLES},
            station="STD",
        )
        warehouse.migrate()
        now = pl.datetime(2026, 11, 20, 13, 0, time_zone="UTC")
        ahead = pl.select(
            pl.lit("STD-concourse").alias("zone_id"),
            pl.lit("headcount").alias("target"),
            pl.datetime_range(
                now + pl.duration(minutes=15),
                now + pl.duration(hours=2),
                "15m",
                time_unit="ms",
                time_zone="UTC",
            ).alias("ts"),
        ).with_columns(
            pl.when(pl.int_range(pl.len()) >= 2)
            .then(1600.0)
            .otherwise(1000.0)
            .cast(pl.Float32)
            .alias("yhat"),
            pl.lit(800.0, pl.Float32).alias("yhat_lower"),
            pl.lit(1700.0, pl.Float32).alias("yhat_upper"),  # no event window: yhat counts
            pl.lit("prophet").alias("method"),
            pl.lit(None, pl.String).alias("fallback_reason"),
            pl.lit("test").alias("model_version"),
            pl.lit(0).cast(pl.Datetime("ms", "UTC")).alias("trained_at"),
            pl.lit(1, pl.UInt64).alias("version"),
        )
        warehouse.insert("forecasts", ahead)
        now_ms = int(ahead["ts"][0].timestamp() * 1000) - 15 * 60_000
        warned = service.warn(settings, warehouse, site, now_ms)
        sent: list[AlertEvent] = warned.raised
        assert [(e.kind, e.level, e.lead_time_s) for e in sent] == [
            ("predicted_big_crowd", "orange", 45 * 60)
        ]
        assert warned.ended == []
        assert service.warn(settings, warehouse, site, now_ms + 60_000) == service.Warned([], [])
        # through the workflow and the outbox to the roles of orange, once each, in Chinese,
        # with a link to acknowledge (CROWDWATCH_NOTIFY unset: on)
        got = {role: receiver.received(f"/{role}") for role in ROLES}
        assert [e["kind"] for e in got["station_master"]] == ["predicted_big_crowd"]
        assert [e["level"] for e in got["transit_police"]] == ["orange"]
        assert got["local_police"] == got["street_office"] == []
        text = got["station_master"][0]["message"]["text"]
        assert "预计45分钟后橙色预警" in text and "/ack/" in text
        with Responder(settings, site, start=False) as responder:
            [alert] = responder.workflow.alerts()
            assert alert["kind"] == "predicted_big_crowd" and alert["status"] == "open"
            waiting = {k["role"] for k in alert["acks"] if k["status"] == "waiting"}
            assert waiting == {"station_master", "transit_police"}
        stored = warehouse.query("SELECT kind, level FROM alerts FINAL")
        assert stored.rows() == [("predicted_big_crowd", "orange")]

        # an hour after the predicted point (13:45) the warning ends: lifted for those told,
        # nobody asked or reminded any more; once (the later points raise alerts of their own)
        first = sent[0].alert_id
        over = now_ms + 105 * 60_000
        assert service.warn(settings, warehouse, site, over - 60_000).ended == []
        [ended] = service.warn(settings, warehouse, site, over).ended
        assert (ended.alert_id, ended.event) == (first, "resolved")
        assert service.warn(settings, warehouse, site, over + 60_000).ended == []
        told = [e for e in receiver.received("/transit_police") if e["alert_id"] == first]
        assert [e["event"] for e in told] == ["opened", "resolved"]
        assert "预测橙色预警解除" in told[1]["message"]["text"]
        with Responder(settings, site, start=False) as responder:
            alert = responder.workflow.show(first)
            assert alert["status"] == "resolved"
            assert {k["status"] for k in alert["acks"]} == {"lapsed"}
        events = warehouse.query(
            "SELECT event FROM alerts WHERE alert_id = {id:String} ORDER BY ts", {"id": first}
        )
        assert events["event"].to_list() == ["opened", "resolved"]


def test_a_site_in_australia_trains_with_its_calendar_from_gate_history_alone(
    engine_dir: Path,
) -> None:
    """Gate counts only (no zone state, as gate_flow writes): headcount from occupancy."""
    site = SYDNEY
    settings = Settings(data_dir=engine_dir, clickhouse_database="forecast_au")
    australia_day = date(2026, 1, 26)  # a Monday; a public holiday in every state
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        warehouse.insert("zone_metrics", history_rows(site, australia_day, default_surge()))
        # from the Sunday before: Sunday, Australia Day, Tuesday
        midnight = datetime.combine(australia_day - timedelta(days=1), time(0), tzinfo=site.tz)
        trained = service.train(settings, warehouse, site, "headcount", until=midnight)
        assert {t.zone_id for t in trained if t.method == "prophet"} == set(site.gate_fed_zones)
        model_file = settings.data_dir / "models" / "forecast_au" / "headcount"
        model = Forecaster.from_json((model_file / "CTR-concourse.json").read_text("utf-8"))
        assert (model.config.country, model.config.subdivision) == ("AU", None)
        rows = service.predict(settings, warehouse, site, "headcount", horizon_h=72)
        ctr = rows.filter(pl.col("zone_id") == "CTR-concourse").sort("ts")
        sunday, monday, tuesday = (ctr["yhat"][k : k + 24].sum() for k in (0, 24, 48))
        # Australia Day is a day off: forecast like the Sunday, not like the Tuesday after
        # (without the calendar it is a working Monday: 13,099 against 10,032 and 13,032)
        assert abs(monday - sunday) < 0.5 * abs(monday - tuesday)
        assert ctr["ts"][0] == midnight


def test_a_site_whose_clocks_change_trains_and_forecasts_across_the_change(
    engine_dir: Path,
) -> None:
    """Sydney's clocks go back on 5 April 2026 (02:00 twice) and forward on 4 October (none)."""
    site = SYDNEY
    settings = Settings(data_dir=engine_dir, clickhouse_database="forecast_dst")
    zone = "CTR-concourse"
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        rows = pl.concat(
            history_rows(site, day, default_surge())
            for day in (date(2026, 4, 20), date(2026, 10, 3))
        )
        # the second 02:00 of 5 April (16:00 UTC), as a pipeline writes every hour
        first = rows.filter((pl.col("zone_id") == zone) & (pl.col("ts").dt.hour() == 15))
        first = first.filter(pl.col("ts").dt.date() == date(2026, 4, 4))
        second = first.with_columns(
            pl.col("ts").dt.offset_by("1h"), pl.lit(999, pl.UInt32).alias("occupancy")
        )
        warehouse.insert("zone_metrics", pl.concat([rows, second]))
        series = service.history(warehouse, site, "headcount")[zone]
        # before: 02:00 of 5 April twice, and every later training failed ("duplicate ds")
        assert series["ds"].is_unique
        assert series.set_index("ds")["y"][pd.Timestamp("2026-04-05 02:00")] == 999
        for until in (date(2026, 4, 4), date(2026, 4, 20), date(2026, 10, 3)):
            midnight = datetime.combine(until, time(0), tzinfo=site.tz)
            trained = service.train(settings, warehouse, site, "headcount", until=midnight)
            assert {t.method for t in trained if t.zone_id == zone} == {"prophet"}
            rows = service.predict(settings, warehouse, site, "headcount", horizon_h=48)
            ts = rows.filter(pl.col("zone_id") == zone).sort("ts")["ts"]
            # 48 hours on the clock of the world, none skipped or doubled, from midnight
            assert ts[0] == midnight and ts.diff().drop_nulls().unique().to_list() == [
                timedelta(hours=1)
            ]
            assert len(ts) == 48
