"""Alert delivery survives kill -9: a real `crowdwatch replay` killed with its receivers down.

The run replays the evening of the demo's surge through zone_risk with recovery, its alert events
routed to four roles at STD on a localhost port where nothing listens yet. Once deliveries have
failed and are waiting for a retry, the process gets SIGKILL. A second run with the receivers up
resumes the replay and the outbox: every alert event in ``alerts`` reaches each role in effect,
and each exactly once (the receiver records each Idempotency-Key once, and no key is missing or
extra).
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl
import yaml

from app.simulate import default_surge, simulate_day, write_records
from crowdwatch.risk.notify import AlertEvent, AlertReceiver
from crowdwatch.settings import REPO_ROOT
from crowdwatch.site import load_site
from tests.app.test_recovery import query
from tests.commands import crowdwatch, user_env
from tests.conftest import EXAMPLE_SITE

ROLES = ("station_master", "transit_police", "local_police", "street_office")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_file(tmp_path: Path, port: int) -> Path:
    data = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    std = next(s for s in data["stations"] if s["id"] == "STD")
    std["contacts"] = {
        role: {"name": role, "webhook": f"http://127.0.0.1:{port}/std/{role}"} for role in ROLES
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def outbox_counts(path: Path) -> tuple[int, int]:
    """Pending rows and failed attempts in the outbox file (0, 0 before it exists)."""
    if not path.exists():
        return 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        pending = db.execute("SELECT count(*) FROM alert_outbox WHERE status = 'pending'")
        retries = db.execute("SELECT count(*) FROM alert_attempts WHERE status = 'retry'")
        return int(pending.fetchone()[0]), int(retries.fetchone()[0])
    except sqlite3.OperationalError:
        return 0, 0  # tables not created yet
    finally:
        db.close()


def test_kill_9_during_delivery_loses_no_alert_event_and_sends_none_twice(tmp_path: Path) -> None:
    site_path = site_file(tmp_path, port := free_port())
    site = load_site(site_path)
    day = simulate_day(site, date(2026, 11, 20), seed=0, surge=default_surge())
    evening = day.filter(pl.col("ts") >= "2026-11-20T20:30")  # the surge is at 21:30
    gates = tmp_path / "gates.csv"
    write_records(evening, gates)
    env = user_env(
        tmp_path / "data",
        CROWDWATCH_SITE_FILE=str(site_path),
        CROWDWATCH_RECOVERY_DIR=str(tmp_path / "recovery"),
        CROWDWATCH_SNAPSHOT_INTERVAL_S="0.5",
        CROWDWATCH_BATCH_ROWS="2000",
        CROWDWATCH_NOTIFY="on",  # a replay of a past evening: sent only when told to
        CROWDWATCH_NOTIFY_MAX_AGE_S="1e12",
        CROWDWATCH_NOTIFY_TIMEOUT_S="0.5",
        CROWDWATCH_NOTIFY_BACKOFF_MAX_S="0.5",
        CROWDWATCH_NOTIFY_DRAIN_S="600",  # the first run waits for receivers until killed
    )
    crowdwatch("db", "migrate", env=env)
    outbox = tmp_path / "data" / "outbox" / "crowdwatch.sqlite3"
    replay = [sys.executable, "-m", "app.cli", "replay", str(gates), "--pipeline", "zone_risk"]
    run = subprocess.Popen(
        replay, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            pending, retries = outbox_counts(outbox)
            if pending >= 2 and retries >= 4:  # deliveries under way, the receivers down
                break
            time.sleep(0.05)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert run.returncode == -signal.SIGKILL, "the first run ended before it was killed"
    assert outbox_counts(outbox)[0] >= 2

    with AlertReceiver(port) as receiver:
        crowdwatch("replay", str(gates), "--pipeline", "zone_risk", env=env)
        got = {role: receiver.received(f"/std/{role}") for role in ROLES}
        requests = {role: receiver.keys(f"/std/{role}") for role in ROLES}
    alerts = query(
        "SELECT alert_id, event, kind, zone_id, station_id, level, previous_level, "
        "toUnixTimestamp64Milli(ts) AS ts_ms FROM alerts FINAL ORDER BY ts",
        env,
    )
    expected: dict[str, set[str]] = {role: set() for role in ROLES}
    for row in alerts.iter_rows(named=True):
        event = AlertEvent(**row, reason="", values={})
        for role, contact in site.routes(event.station_id, event.routing_level):
            if contact is not None and contact.webhook is not None:
                expected[role].add(event.idempotency_key(role))
    assert alerts.height >= 8 and all(expected.values())
    for role in ROLES:
        keys = [e["idempotency_key"] for e in got[role]]
        assert sorted(keys) == sorted(expected[role]), role  # each once, none missing
        assert set(requests[role]) == expected[role]  # nothing sent that is not an alert
    assert outbox_counts(outbox)[0] == 0
