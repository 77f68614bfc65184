"""The demo's early warning: history before the event day, forecasts of it, alerts ahead."""

from __future__ import annotations

import json
from datetime import datetime, time
from pathlib import Path

from app.demo_forecast import HISTORY_WEEKS, MATCH_WEEKS, early_warning
from app.simulate import default_surge
from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.warehouse.client import Warehouse
from dashboards.macros import expand
from tests.conftest import EXAMPLE_SITE
from tests.dashboards.test_dashboards import sql_of
from tests.demo_day import DAY, ZONE


def test_the_demo_forecasts_its_event_day_and_warns_before_the_crowd(engine_dir: Path) -> None:
    # CROWDWATCH_NOTIFY=on: the warnings of a simulated day still page nobody
    settings = Settings(data_dir=engine_dir, clickhouse_database="demo_forecast", notify="on")
    site = load_site(EXAMPLE_SITE)
    surge = default_surge()
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        result = early_warning(settings, warehouse, site, DAY, surge)
        assert result.history_days == HISTORY_WEEKS * 7
        assert len(result.match_days) == len(MATCH_WEEKS)
        fitted = {t.zone_id for t in result.trained if t.method == "prophet"}
        assert fitted == set(site.gate_fed_zones)  # every gate-fed zone, with the blend
        # the stadium's model kept what the past matches did there, for the warning to read
        meta = settings.data_dir / "models" / "demo_forecast" / "headcount" / f"{ZONE}.meta.json"
        assert json.loads(meta.read_text(encoding="utf-8"))["effects"]["match"] > 0
        # the forecast tables are filled: 24 hours of the event day per zone, with a band
        stored = warehouse.query(
            "SELECT zone_id, count() AS n, min(ts) AS first, countIf(yhat_lower <= yhat "
            "AND yhat <= yhat_upper) AS ordered FROM forecasts FINAL GROUP BY zone_id"
        )
        assert sorted(stored["zone_id"].to_list()) == sorted(fitted)
        assert stored["n"].to_list() == [24] * len(fitted)
        assert stored["ordered"].to_list() == [24] * len(fitted)
        midnight = datetime.combine(DAY, time(0), tzinfo=site.tz)
        assert {t.astimezone(site.tz) for t in stored["first"]} == {midnight}
        # the zone dashboard's band panel reads them
        band = warehouse.query(
            expand(
                sql_of("crowdwatch-zone", "Headcount against capacity and forecast", "B"),
                start=midnight,
                end=datetime.combine(DAY, time(23, 59), tzinfo=site.tz),
                variables={"station": "STD", "zone": ZONE},
            )
        )
        assert band.height == 24
        # a predicted-big-crowd alert at the stadium before the crowd (from 21:30), and none
        # elsewhere: the other zones stay below 80 % of their capacity all day
        surge_at = datetime.combine(DAY, surge.start, tzinfo=site.tz)
        alerts = result.alerts
        assert set(alerts["zone_id"]) == {ZONE}
        first = alerts.row(0, named=True)  # in time order
        assert first["level"] in ("yellow", "orange", "red")
        lead_min = (surge_at - first["ts"]).total_seconds() / 60
        assert 60 <= lead_min <= 180  # warned 1-3 h ahead (the warning looks 2 h ahead)
        # one warning for the crowd: while it stands, the next hours' forecast of the same
        # crowd at its level or below raises no second one
        assert alerts.height == 1 or alerts["level"].n_unique() == alerts.height
        stored_alerts = warehouse.query(
            "SELECT count() AS n FROM alerts FINAL WHERE kind = 'predicted_big_crowd' "
            "AND event = 'opened'"
        )
        assert stored_alerts["n"][0] == alerts.height
        sent = warehouse.query("SELECT count() AS n FROM alert_deliveries")
        assert sent["n"][0] == 0
        # run again on the same day: nothing raised anew, the day's warnings shown as before
        again = early_warning(settings, warehouse, site, DAY, surge)
        assert again.alerts.equals(alerts)
        assert not [t for t in again.trained if t.method]  # the models were up to date
