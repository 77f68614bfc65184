"""What the broker tests share: librdkafka's mock cluster, a TCP proxy that cuts connections,
records to publish, a file replay to compare with, and pipelines run as subprocesses.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from bytewax.testing import run_main

from crowdwatch.settings import REPO_ROOT, Settings
from crowdwatch.sources.files import FileSource, ReplayFile
from crowdwatch.warehouse.client import Warehouse
from pipelines import gate_flow
from tests.commands import crowdwatch, user_env
from tests.conftest import EXAMPLE_SITE

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
TOTALS_SQL = (
    "SELECT zone_id, toInt64(sum(entries)) AS entries, toInt64(sum(exits)) AS exits "
    "FROM zone_metrics FINAL WHERE scope = 'zone' GROUP BY zone_id ORDER BY zone_id"
)
METRICS_SQL = (
    "SELECT zone_id, scope, toString(ts) AS ts, toInt64(entries) AS entries, "
    "toInt64(exits) AS exits, toString(occupancy) AS occupancy "
    "FROM zone_metrics FINAL ORDER BY zone_id, scope, ts"
)
REJECTED_SQL = "SELECT source, position, reason FROM rejected_events FINAL ORDER BY position"
BAD = [
    "not json at all",
    '["an", "array"]',
    json.dumps({"ts": "yesterday", "gate_id": "RVS-G01", "direction": "in"}),
    json.dumps({"ts": "2026-05-04T08:01:00+00:00", "gate_id": "NO-SUCH-GATE", "direction": "in"}),
    json.dumps({"ts": "2026-05-04T08:01:00+00:00", "gate_id": "RVS-G01", "direction": "up"}),
]


def passages(
    n: int, gates: tuple[str, ...] = ("RVS-G01", "CTR-G03"), step_s: float = 0.5
) -> list[str]:
    """``n`` passages as JSON lines, round robin over ``gates``, ``step_s`` apart."""
    return [
        json.dumps(
            {
                "ts": (T0 + timedelta(seconds=i * step_s)).isoformat(),
                "gate_id": gates[i % len(gates)],
                "direction": "out" if i % 3 == 0 else "in",
            }
        )
        for i in range(n)
    ]


def with_bad(lines: list[str], every: int) -> tuple[list[str], list[int]]:
    """``lines`` with the `BAD` records spread through them, and where those went."""
    out: list[str] = []
    at: list[int] = []
    pending = list(BAD)
    for i, line in enumerate(lines):
        if i % every == every // 2 and pending:
            at.append(len(out))
            out.append(pending.pop())
        out.append(line)
    return out, at


def file_replay(engine_dir: Path, database: str, folder: Path, lines: list[str]) -> Warehouse:
    """The same JSON lines replayed from a file into a database of their own."""
    path = folder / f"{database}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    settings = Settings(data_dir=engine_dir, site_file=EXAMPLE_SITE, clickhouse_database=database)
    warehouse = Warehouse.connect(settings.dsn(), settings.clickhouse_database)
    warehouse.migrate()
    run_main(gate_flow.build(settings, source=FileSource([ReplayFile(path, "UTC", 500)])))
    return warehouse


# -- librdkafka's mock cluster ---------------------------------------------------------------


class MockKafka:
    """librdkafka's mock cluster: real Kafka-protocol brokers on loopback, in this process.

    Topics are created on first use with 4 partitions. The mock keeps about 5 MiB or 100,000
    message batches per partition and deletes the oldest beyond that, as retention does.
    It lives as long as this object.
    """

    def __init__(self, brokers: int = 3) -> None:
        from confluent_kafka import Producer

        self._holder = Producer({"test.mock.num.brokers": brokers, "log_level": 3})
        found = self._holder.list_topics(timeout=10).brokers.values()
        self.brokers = ",".join(f"{b.host}:{b.port}" for b in found)


def kafka_brokers() -> tuple[str, MockKafka | None]:
    """``CROWDWATCH_TEST_KAFKA_BROKERS`` when set, else a new mock cluster's brokers."""
    real = os.environ.get("CROWDWATCH_TEST_KAFKA_BROKERS", "")
    if real:
        return real, None
    mock = MockKafka()
    return mock.brokers, mock


def create_topic(brokers: str, name: str, partitions: int) -> None:
    """Create a topic on a real broker; the mock cluster creates topics on first use (4)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    if not os.environ.get("CROWDWATCH_TEST_KAFKA_BROKERS"):
        return
    admin = AdminClient({"bootstrap.servers": brokers})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result()


# -- a TCP proxy that cuts connections --------------------------------------------------------

Rewrite = Callable[[bytes, dict[int, tuple[int, int]]], bytes]


class TcpProxy:
    """Forwards loopback connections to ``target``; `cut` drops every open connection.

    Clients reconnect to the same listening port, so a cut is what a broker restart or a
    network fault looks like to them. ``rewrite`` (Kafka) sees whole protocol frames.
    """

    def __init__(self, target: tuple[str, int], rewrite: Rewrite | None = None) -> None:
        self.target = target
        self.rewrite = rewrite
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.cuts = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._open |= {client, server}
            requests: dict[int, tuple[int, int]] = {}
            framed = self.rewrite is not None
            threading.Thread(
                target=self._pump, args=(client, server, requests, framed, False), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, requests, framed, True), daemon=True
            ).start()

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        requests: dict[int, tuple[int, int]],
        framed: bool,
        replies: bool,
    ) -> None:
        buffer = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not framed:
                    dst.sendall(data)
                    continue
                buffer += data
                while len(buffer) >= 4:
                    size = struct.unpack(">i", buffer[:4])[0]
                    if len(buffer) < 4 + size:
                        break
                    frame, buffer = buffer[: 4 + size], buffer[4 + size :]
                    if replies:
                        assert self.rewrite is not None
                        frame = self.rewrite(frame, requests)
                    else:  # api key, version by correlation id
                        key, version, correlation = struct.unpack(">hhi", frame[4:12])
                        requests[correlation] = (key, version)
                    dst.sendall(frame)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *sockets: socket.socket) -> None:
        with self._lock:
            for s in sockets:
                self._open.discard(s)
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> int:
        """Drop every open connection; returns how many connections were dropped."""
        with self._lock:
            sockets = list(self._open)
        self._drop(*sockets)
        self.cuts += 1
        return len(sockets) // 2

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.cut()


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _skip_tags(data: bytes, pos: int) -> int:
    count, pos = _uvarint(data, pos)
    for _ in range(count):
        _, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        pos += size
    return pos


def metadata_rewriter(ports: dict[int, int]) -> Rewrite:
    """Rewrite broker ports in Kafka Metadata responses (``real → proxy``), in place.

    Brokers advertise their own addresses; a client told the proxies' ports connects to every
    broker through a proxy. Only the port (a fixed-size int32) changes, so no length does.
    """

    def rewrite(frame: bytes, requests: dict[int, tuple[int, int]]) -> bytes:
        correlation = struct.unpack(">i", frame[4:8])[0]
        key, version = requests.pop(correlation, (-1, -1))
        if key != 3:  # Metadata
            return frame
        data = bytearray(frame)
        flexible = version >= 9
        pos = 8
        if flexible:
            pos = _skip_tags(frame, pos)
        if version >= 3:
            pos += 4  # throttle_time_ms
        if flexible:
            count, pos = _uvarint(frame, pos)
            count -= 1
        else:
            count = struct.unpack(">i", frame[pos : pos + 4])[0]
            pos += 4
        for _ in range(count):
            pos += 4  # node_id
            if flexible:
                size, pos = _uvarint(frame, pos)
                pos += size - 1
            else:
                pos += 2 + struct.unpack(">h", frame[pos : pos + 2])[0]
            port = struct.unpack(">i", frame[pos : pos + 4])[0]
            data[pos : pos + 4] = struct.pack(">i", ports.get(port, port))
            pos += 4
            if version >= 1:  # rack, nullable
                if flexible:
                    size, pos = _uvarint(frame, pos)
                    pos += max(size - 1, 0)
                else:
                    size = struct.unpack(">h", frame[pos : pos + 2])[0]
                    pos += 2 + max(size, 0)
            if flexible:
                pos = _skip_tags(frame, pos)
        return bytes(data)

    return rewrite


class KafkaProxy:
    """A `TcpProxy` in front of every broker, telling clients the proxies' ports."""

    def __init__(self, brokers: str) -> None:
        targets = []
        for address in brokers.split(","):
            host, port = address.rsplit(":", 1)
            targets.append((host, int(port)))
        ports: dict[int, int] = {}
        self.proxies = [TcpProxy(t, metadata_rewriter(ports)) for t in targets]
        ports.update({t[1]: p.port for t, p in zip(targets, self.proxies, strict=True)})
        self.brokers = ",".join(f"127.0.0.1:{p.port}" for p in self.proxies)

    @property
    def accepted(self) -> int:
        return sum(p.accepted for p in self.proxies)

    def cut(self) -> int:
        return sum(p.cut() for p in self.proxies)

    def close(self) -> None:
        for p in self.proxies:
            p.close()


@contextmanager
def cutting(proxy: TcpProxy | KafkaProxy, every_s: float, times: int) -> Iterator[list[int]]:
    """Cut ``proxy``'s connections every ``every_s`` seconds, ``times`` times at most.

    Yields a list that collects how many connections each cut dropped.
    """
    dropped: list[int] = []
    stop = threading.Event()

    def run() -> None:
        while len(dropped) < times and not stop.wait(every_s):
            dropped.append(proxy.cut())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield dropped
    finally:
        stop.set()
        thread.join()


# -- pipelines as subprocesses ---------------------------------------------------------------


def pipeline_env(data_dir: Path, **variables: str) -> dict[str, str]:
    """A user's environment for ``crowdwatch run`` on the example site, and ``variables``."""
    return user_env(data_dir, CROWDWATCH_SITE_FILE=str(EXAMPLE_SITE), **variables)


def start_run(pipeline: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``crowdwatch run PIPELINE`` in a subprocess, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run", pipeline],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )


def query(sql: str, env: dict[str, str]) -> pl.DataFrame:
    """Run SQL on the warehouse of ``env`` (another engine path: another process)."""
    out = crowdwatch("query", sql, "--format", "json", env=env).stdout
    return pl.read_ndjson(out.encode()) if out.strip() else pl.DataFrame()


def snapshots(part: Path, step_id: str) -> dict[str, Any]:
    """The newest snapshot of every state key of an input step (its partitions' positions)."""
    if not part.exists():
        return {}
    db = sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT state_key, ser_change FROM snaps WHERE step_id = ? ORDER BY snap_epoch",
            (step_id,),
        ).fetchall()
    except sqlite3.OperationalError:
        return {}  # the run has not created its tables yet
    finally:
        db.close()
    return {key: pickle.loads(change) for key, change in rows if change is not None}


def paced(
    publish: Callable[[list[str]], object], lines: list[str], folder: Path, chunk: int = 400
) -> None:
    """Publish ``lines`` in chunks, each once the pipeline's spool in ``folder`` holds the last.

    An MQTT broker keeps only so many messages per session (Mosquitto: 1000) for a subscriber
    that is slow or down, and drops the rest; a pipeline that keeps up, or a publisher that
    waits while it is down, loses none.
    """
    from crowdwatch.sources.spool import count

    sent = 0
    for start in range(0, len(lines), chunk):
        deadline = time.monotonic() + 300
        while (not folder.exists() or count(folder) < sent) and time.monotonic() < deadline:
            time.sleep(0.02)
        part = lines[start : start + chunk]
        publish(part)
        sent += len(part)


@contextmanager
def in_thread(target: Callable[[], object]) -> Iterator[threading.Thread]:
    """Run ``target`` in a thread while the block runs; re-raise what it raised after."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # handed to the test below
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield thread
    thread.join(timeout=600)
    if failed:
        raise failed[0]


def run_killed(
    env: dict[str, str], key: str, targets: tuple[int, ...], log: Path
) -> tuple[list[int], subprocess.Popen[bytes]]:
    """``crowdwatch run gate_flow`` with recovery, SIGKILLed once its input snapshot of partition
    ``key`` reaches each target; then started once more to run to the end.

    Returns the snapshot position at each kill (asserting each was a SIGKILL) and the last run.
    """
    part = Path(env["CROWDWATCH_RECOVERY_DIR"]) / "gate_flow" / "part-0.sqlite3"

    def position() -> int:
        state = snapshots(part, "gate_flow.records").get(key)
        return -1 if state is None else int(getattr(state, "ordinal", state))

    at = []
    for target in targets:
        proc = start_run("gate_flow", env, log)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and position() < target:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, log.read_text()
        at.append(position())
    return at, start_run("gate_flow", env, log)


def broker_settings(engine_dir: Path, database: str, **fields: Any) -> Settings:
    """Settings that read a broker until drained into ``database``, on the example site.

    ``data_dir`` (the spools) may differ from ``engine_dir``; the warehouse is always the
    engine's under ``engine_dir``: chDB opens one engine path per process.
    """
    return Settings(
        data_dir=fields.pop("data_dir", engine_dir),
        clickhouse_dsn=Settings(data_dir=engine_dir).dsn(),
        site_file=EXAMPLE_SITE,
        clickhouse_database=database,
        source_until_drained=True,
        source_drain_idle_s=3.0,
        batch_rows=fields.pop("batch_rows", 500),
        **fields,
    )


VIDEO_SQL = (
    "SELECT camera_id, count() AS frames, toInt64(sum(persons)) AS persons "
    "FROM video_frames FINAL GROUP BY camera_id ORDER BY camera_id"
)


def camera_feed() -> tuple[list[str], str, list[tuple[str, int, int]]]:
    """Camera messages (one of an unknown camera, at 50), a stock DeepStream minimal payload,
    and the `VIDEO_SQL` rows they give."""
    from crowdwatch.site import load_site
    from crowdwatch.video.messages import CameraMessage, RoiCount

    tz = load_site(EXAMPLE_SITE).tz
    t0_ms = 1_795_132_800_000  # 2026-11-20 08:00 in Shanghai
    messages = [
        CameraMessage(
            "CTR-CAM01", i, t0_ms + i * 1000, 10 + i % 7, (RoiCount("platform-L1", 10 + i % 7),)
        )
        for i in range(120)
    ]
    lines = [m.to_json(tz) for m in messages]
    lines.insert(50, '{"camera_id": "CAM-NOWHERE", "frame": 1, "ts": "2026-11-20T08:00:00+08:00"}')
    sample = REPO_ROOT / "tests" / "detectors" / "samples" / "minimal_person_frame.json"
    doc = json.loads(sample.read_text(encoding="utf-8"))
    doc["sensorId"], doc["@timestamp"] = "STD-CAM01", "2026-11-20T00:03:00.000Z"
    expected = [
        ("CTR-CAM01", 120, sum(m.persons for m in messages)),
        ("STD-CAM01", 1, 2),  # the minimal frame holds two people and a bag
    ]
    return lines, json.dumps(doc), expected
