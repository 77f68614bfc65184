"""Benchmark: from the gate record that crosses a threshold to the first delivery attempt.

A live source emits gate passages every 20 ms, stamped with the wall clock, for a site of
`--zones` halls (one each per station, balance occupancy, capacity 200). One after another,
each hall fills at 150 people/s until it is 20 % over capacity, so it crosses 60, 80, 90 and
100 % of capacity: four escalations (blue, yellow, orange, red), each routed to the station
master, whose webhook is a real HTTP server on localhost. The benchmark knows which batch
carried each crossing record and when it was emitted; the receiver records when each alert
event's first request arrives. Latency = arrival − emit time, through the whole zone_risk
dataflow (parse, windows, occupancy, readings, levels) and the durable outbox (the event
written to its SQLite file, then sent by the receiver's delivery thread), with the embedded
warehouse as the row sink. Since issue 18 every event is first recorded in the workflow store
(the alert, who must acknowledge by when, each role's signed link), then written to the outbox.

Nobody acknowledges: each red alert's station master has ``ACK_WITHIN_S`` to do so, and when
that deadline passes the escalation loop calls the duty chief (a second receiver path). The
escalation time is the duty chief's message arriving − the deadline in the workflow store.

    .venv/bin/python bench/alert_latency.py [--zones 40]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import sqlalchemy as sa
import yaml
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.run import cli_main

from crowdwatch.batches import RawBatch
from crowdwatch.risk.levels import LEVELS, Thresholds
from crowdwatch.risk.notify import AlertReceiver
from crowdwatch.settings import Settings
from crowdwatch.store.tables import acks_table
from crowdwatch.warehouse.client import Warehouse
from pipelines.zone_risk import build

CAPACITY = 200
RATE_PER_S = 150
TICK_S = 0.02
ACK_WITHIN_S = 2.0
"""The red alerts' acknowledgement deadline in the bench's site file."""
LINGER_S = ACK_WITHIN_S + 2.0
"""How long the source goes on (with no records) after the last hall filled: the deadlines pass."""
SHARES = dict(zip(LEVELS, Thresholds().share, strict=True))
"""Where each level starts: the defaults, as the bench's site file sets no thresholds."""


def site_file(path: Path, zones: int, receiver: AlertReceiver) -> Path:
    """A site of ``zones`` halls, each the only zone of its station, with one entry gate.

    Every level, blue included, calls the station master, at ``/S<i>`` on the receiver.
    """
    data = {
        "site": {"name": "latency bench", "timezone": "UTC"},
        "routing": {level: ["station_master"] for level in LEVELS},
        "response": {
            "roles": {"duty_chief": {"en": "duty chief"}},
            "contacts": {"duty_chief": {"name": "duty chief", "webhook": receiver.url("/duty")}},
            "ack": {"red": {"within_s": ACK_WITHIN_S, "escalate_to": ["duty_chief"]}},
        },
        "stations": [
            {
                "id": f"S{i:03d}",
                "name": f"station {i}",
                "contacts": {
                    "station_master": {"name": f"master {i}", "webhook": receiver.url(f"/S{i:03d}")}
                },
            }
            for i in range(zones)
        ],
        "zones": [
            {
                "id": f"Z{i:03d}",
                "name": f"hall {i}",
                "kind": "hall",
                "station": f"S{i:03d}",
                "area_m2": 200,
                "capacity": CAPACITY,
                "occupancy": {"model": "balance", "reset_at": "04:00"},
            }
            for i in range(zones)
        ],
        "gates": [
            {"id": f"G{i:03d}", "station": f"S{i:03d}", "zone": f"Z{i:03d}", "direction": "in"}
            for i in range(zones)
        ],
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class _Surges(StatefulSourcePartition[RawBatch, None]):
    """Hall after hall fills up; remembers when the crossing records were sent."""

    def __init__(self, zones: int, crossings: dict[tuple[str, str], float]) -> None:
        self.zones = zones
        self.crossings = crossings
        self.started = time.perf_counter()
        self.stagger_s = 0.5
        self.entered = np.zeros(zones, dtype=np.int64)
        self.target = int(CAPACITY * 1.2)
        self.next_at = datetime.now(UTC)
        self.row = 0
        self.full_at: float | None = None

    def next_batch(self) -> list[RawBatch]:
        elapsed = time.perf_counter() - self.started
        if (self.entered >= self.target).all():
            if self.full_at is None:
                self.full_at = elapsed
            if elapsed - self.full_at > LINGER_S:
                raise StopIteration
        active = [i for i in range(self.zones) if elapsed >= i * self.stagger_s]
        due = np.array(
            [min(self.target, int((elapsed - i * self.stagger_s) * RATE_PER_S)) for i in active]
        )
        new = due - self.entered[active]
        gates, stamps = [], []
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        for zone, n in zip(active, new, strict=True):
            gates += [f"G{zone:03d}"] * int(n)
            stamps += [now] * int(n)
        sent = time.perf_counter()
        for zone, n in zip(active, new, strict=True):
            before, after = self.entered[zone], self.entered[zone] + n
            crossed = [
                level
                for level, share in SHARES.items()
                if before < math.ceil(share * CAPACITY) <= after
            ]
            if crossed:
                # one batch crossing several thresholds (a slow tick) escalates straight to the
                # highest: that is the alert to time, the levels below it are never announced
                self.crossings[(f"Z{zone:03d}", crossed[-1])] = sent
            self.entered[zone] = after
        self.next_at = datetime.now(UTC) + timedelta(seconds=TICK_S)
        frame = pl.DataFrame(
            {"ts": stamps, "gate_id": gates, "direction": ["in"] * len(gates)},
            schema={"ts": pl.String, "gate_id": pl.String, "direction": pl.String},
        )
        self.row += frame.height
        return [RawBatch("live", "passage", frame, self.row - frame.height)]

    def next_awake(self) -> datetime | None:
        return self.next_at

    def snapshot(self) -> None:
        return None


class SurgeSource(FixedPartitionedSource[RawBatch, None]):
    """The live surges, as one partition."""

    def __init__(self, zones: int, crossings: dict[tuple[str, str], float]) -> None:
        self.zones = zones
        self.crossings = crossings

    def list_parts(self) -> list[str]:
        return ["surges"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Surges:
        return _Surges(self.zones, self.crossings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zones", type=int, default=40)
    args = parser.parse_args()
    crossings: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp, AlertReceiver() as receiver:
        settings = Settings(
            data_dir=Path(tmp),
            site_file=site_file(Path(tmp) / "site.yaml", args.zones, receiver),
            notify="on",
        )
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
        flow = build(settings, source=SurgeSource(args.zones, crossings))
        cli_main(flow, workers_per_process=1)  # type: ignore[no-untyped-call]
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            # the outbox's share: from the event written down to its first request sent
            queued = warehouse.query(
                "SELECT quantiles(0.5, 0.99)(queued_ms) AS q, max(queued_ms) AS top "
                "FROM alert_deliveries FINAL WHERE attempt = 1"
            ).row(0)
        seen = [
            (arrived, event)
            for zone in range(args.zones)
            for arrived, event in receiver.arrivals(f"/S{zone:03d}")
        ]
        escalations = receiver.arrivals("/duty")
        engine = sa.create_engine(settings.outbox_dsn())
        with engine.connect() as db:
            deadlines = dict(
                db.execute(
                    sa.select(acks_table.c.alert_id, acks_table.c.deadline_ms).where(
                        acks_table.c.role == "station_master", acks_table.c.level == "red"
                    )
                ).all()
            )
        engine.dispose()
    latencies = [
        (arrived - crossings[(event["zone_id"], event["level"])]) * 1000
        for arrived, event in seen
        if event["event"] in ("opened", "escalated")
        and (event["zone_id"], event["level"]) in crossings
    ]
    expected = len(crossings)
    if len(latencies) != expected:
        raise SystemExit(f"measured {len(latencies)} escalations, expected {expected}")
    if expected < args.zones * len(SHARES):
        print(
            f"{args.zones * len(SHARES) - expected} levels were crossed in the same batch as a "
            "higher one and escalated past (the machine was slow to tick)"
        )
    p50, p99 = np.percentile(latencies, [50, 99])
    print(
        f"escalations: {len(latencies)} ({args.zones} halls x 4 levels), "
        f"batches every {TICK_S * 1000:.0f} ms"
    )
    print(f"latency p50 / p99 / max: {p50:.0f} / {p99:.0f} / {max(latencies):.0f} ms")
    print(
        f"of which in the outbox (written down → first request) p50 / p99 / max: "
        f"{queued[0][0]:.0f} / {queued[0][1]:.0f} / {queued[1]:.0f} ms"
    )
    # arrival (perf_counter) to wall-clock ms: the deadline is on the wall clock
    to_wall_ms = time.time() * 1000 - time.perf_counter() * 1000
    late = [
        arrived * 1000 + to_wall_ms - deadlines[event["alert_id"]]
        for arrived, event in escalations
        if event["alert_id"] in deadlines
    ]
    if len(late) != len(deadlines):
        raise SystemExit(f"{len(late)} escalations arrived for {len(deadlines)} red deadlines")
    e50, e99 = np.percentile(late, [50, 99])
    print(
        f"missed deadline → escalation message: {len(late)} escalations, p50 / p99 / max: "
        f"{e50:.0f} / {e99:.0f} / {max(late):.0f} ms"
    )
    print(f"alert latency p99: {p99:.0f} ms")  # the headline, last


if __name__ == "__main__":
    main()
