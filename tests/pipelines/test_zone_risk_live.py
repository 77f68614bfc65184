"""zone_risk live on Redis Streams: a camera 30 s behind the gates, then a camera that stops."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSink, run_main

from crowdwatch.batches import RawBatch
from crowdwatch.risk.notify import AlertEvent
from crowdwatch.settings import Settings
from crowdwatch.sources.redis_streams import (
    BrokerError,
    RedisStream,
    RedisStreamSource,
    StreamCursor,
    connect,
    publish,
)
from crowdwatch.warehouse.client import TableRows
from pipelines.zone_risk import build
from tests.conftest import EXAMPLE_SITE

URL = "redis://127.0.0.1:6379/0"
TZ = "Asia/Shanghai"


class _Stoppable(StatefulSourcePartition[RawBatch, StreamCursor]):
    def __init__(
        self, part: StatefulSourcePartition[RawBatch, StreamCursor], stop: threading.Event
    ):
        self.part = part
        self.stop = stop

    def next_batch(self) -> list[RawBatch]:
        if self.stop.is_set():
            raise StopIteration
        return list(self.part.next_batch())

    def next_awake(self) -> datetime | None:
        return self.part.next_awake()

    def snapshot(self) -> StreamCursor:
        return self.part.snapshot()

    def close(self) -> None:
        self.part.close()


class StoppableSource(FixedPartitionedSource[RawBatch, StreamCursor]):
    """A live Redis source that the test ends (a live source never does by itself)."""

    def __init__(self, source: RedisStreamSource, stop: threading.Event) -> None:
        self.source = source
        self.stop = stop

    def list_parts(self) -> list[str]:
        return self.source.list_parts()

    def build_part(
        self, step_id: str, for_part: str, resume_state: StreamCursor | None
    ) -> _Stoppable:
        return _Stoppable(self.source.build_part(step_id, for_part, resume_state), self.stop)


class _Clock(StatelessSinkPartition[AlertEvent]):
    def __init__(self, seen: list[tuple[float, AlertEvent]]) -> None:
        self.seen = seen

    def write_batch(self, items: list[AlertEvent]) -> None:
        self.seen.extend((time.monotonic(), event) for event in items)


class ClockSink(DynamicSink[AlertEvent]):
    """Records when each alert event comes out of the dataflow (monotonic clock)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, AlertEvent]] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Clock:
        return _Clock(self.seen)


@pytest.fixture
def prefix() -> Iterator[str]:
    try:
        client = connect(URL)
    except BrokerError as exc:
        pytest.fail(f"this test needs the Redis that runs here: {exc}")
    name = f"cwtest-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def camera(at: datetime, frame: int) -> str:
    """A frame of the stadium forecourt camera, ten people in it."""
    return json.dumps(
        {
            "camera_id": "STD-CAM01",
            "frame": frame,
            "ts": iso(at),
            "persons": 10,
            "rois": [{"id": "forecourt", "persons": 10}],
            "lines": [],
        }
    )


def entries(at: datetime, n: int) -> list[dict[str, str]]:
    """``n`` entries through one concourse gate, in the second from ``at``."""
    return [
        {
            "ts": iso(at + timedelta(milliseconds=i * 1000 // n)),
            "gate_id": "STD-G01",
            "direction": "in",
        }
        for i in range(n)
    ]


def wait_for(seen: list[tuple[float, AlertEvent]], count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_lagging_camera_holds_the_gates_and_a_stopped_one_does_not(
    prefix: str, engine_dir: object
) -> None:
    client: redis.Redis = connect(URL)
    gates_key, video_key = f"{prefix}:passage", f"{prefix}:video"
    idle_s = 3
    settings = Settings(
        site_file=EXAMPLE_SITE,
        source="redis",
        redis_stream_prefix=prefix,
        source_idle_s=idle_s,
    )
    assert settings.live
    stop = threading.Event()
    source = StoppableSource(
        RedisStreamSource(
            URL, [RedisStream(gates_key, "passage"), RedisStream(video_key, "video")], idle_s=0.02
        ),
        stop,
    )
    rows: list[TableRows] = []
    alerts = ClockSink()
    runner = threading.Thread(
        target=run_main,
        args=(build(settings, source=source, sink=TestingSink(rows), alert_sink=alerts),),
    )
    # event time: an hour ago, on a minute (live records are near the wall clock, and never
    # more than CROWDWATCH_MAX_CLOCK_SKEW_S ahead of it)
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=60)
    runner.start()
    try:
        publish(client, video_key, [camera(t0 + timedelta(seconds=s), s) for s in range(0, 61)])
        # the camera is a source of the station once its first frames are read
        deadline = time.monotonic() + 30
        while not any(t == "video_zone_metrics" for t, _ in rows) and time.monotonic() < deadline:
            time.sleep(0.01)
        publish(client, gates_key, entries(t0 + timedelta(seconds=30), 20))
        # the gates fill the concourse over capacity in the minute from t0 + 1 min: the window
        # holds from its end, t0 + 2 min; the cameras are 30 s behind, at t0 + 90 s
        publish(client, gates_key, entries(t0 + timedelta(seconds=70), 1900))
        publish(client, video_key, [camera(t0 + timedelta(seconds=s), s) for s in range(61, 91)])
        wait_for(alerts.seen, 1, 2.0)
        assert alerts.seen == []  # held: the watermark (the cameras) has not passed the crossing
        publish(client, video_key, [camera(t0 + timedelta(seconds=s), s) for s in range(91, 126)])
        passed = time.monotonic()
        wait_for(alerts.seen, 1, 30.0)
        assert [(e.event, e.level) for _, e in alerts.seen] == [("opened", "red")]
        at, red = alerts.seen[0]
        assert red.ts_ms == int((t0 + timedelta(minutes=2)).timestamp() * 1000)
        assert at - passed < 1.0, f"decided {at - passed:.3f} s after the watermark passed it"

        # the camera stops; the gates go on and the concourse empties: the held readings go
        # once the camera has been quiet for idle_s on the wall clock, and it is marked stale
        publish(client, gates_key, entries(t0 + timedelta(minutes=40), 1))
        stopped = time.monotonic()
        wait_for(alerts.seen, 2, 30.0)
        assert len(alerts.seen) >= 2, "the stopped camera still holds the gates back"
        assert alerts.seen[1][0] - stopped >= idle_s - 1.0
        assert alerts.seen[1][1].ts_ms > red.ts_ms
    finally:
        stop.set()
        client.xadd(gates_key, {"payload": "{}"})  # wakes a partition waiting for entries
        runner.join(timeout=60)
    assert not runner.is_alive()
    states = pl.concat([f for t, f in rows if t == "zone_state"])
    late = states.filter(pl.col("ts") > t0 + timedelta(minutes=30))
    # (the gates too, when they have been quiet as long by the time the rows are decided)
    assert late.height and all("video" in s for s in late["stale_sources"].to_list())
    early = states.filter(pl.col("ts") <= t0 + timedelta(minutes=2))
    assert early.height and all(s == [] for s in early["stale_sources"].to_list())
