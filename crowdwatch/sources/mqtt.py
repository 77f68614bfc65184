"""MQTT as a source: one topic per signal, QoS 1 on a persistent session, through a local spool.

Topics are named ``<prefix>/<kind>`` (``crowdwatch/passage``, ``crowdwatch/deepstream_minimal``
…), or ``<prefix>/<kind>/<k>`` when stations are split into partitions; one JSON record per
message. DeepStream's MQTT adapter (``libnvds_mqtt_proto.so``, DeepStream 6.3 on, over Eclipse
Mosquitto's client) publishes to the topic its ``nvmsgbroker`` ``topic`` property names: set it
to ``crowdwatch/deepstream_minimal`` (or ``…/deepstream_full``), and ``conn-str`` to the broker.

Delivery: each topic is read by its own MQTT 5 client with a fixed client id, ``clean_start``
off and a session that never expires, subscribed at QoS 1, with manual acknowledgements. The
broker keeps the session's messages while the pipeline is down and sends again whatever was
not acknowledged. A message is acknowledged only after it is ``fsync``ed into the `Spool`, from
which the pipeline reads, so a ``kill -9`` loses nothing and, resuming from the snapshot's spool
position, counts nothing twice. The broker bounds what it keeps per session (Mosquitto's
``max_queued_messages``, 1000 by default): beyond that it drops messages for a slow or absent
subscriber, which no client can undo; raise it for a crowdwatch session.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from crowdwatch.batches import RecordKind
from crowdwatch.sources.redis_streams import BrokerError
from crowdwatch.sources.spool import Spool, SpooledSource

CONNECT_TIMEOUT_S = 10.0
RECEIVE_MAXIMUM = 1000
"""Messages the broker may send before we acknowledge (MQTT 5 Receive Maximum)."""
FLUSH_S = 0.005
KEEPALIVE_S = 20


def topic_name(prefix: str, kind: RecordKind, partition: int | None = None) -> str:
    """The topic of one signal: ``<prefix>/<kind>``, or ``<prefix>/<kind>/<k>``."""
    return f"{prefix}/{kind}" if partition is None else f"{prefix}/{kind}/{partition}"


def session_id(client_id: str, topic: str) -> str:
    """The client id of the persistent session that reads ``topic``: ``<id>-<topic, / as ->``."""
    return f"{client_id}-{topic.replace('/', '-')}"


@dataclass(frozen=True)
class Broker:
    """Where an MQTT broker is and how to log in, from ``mqtt[s]://[user:pw@]host[:port]``."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> Broker:
        """Parse the URL.

        Raises:
            BrokerError: not an ``mqtt://`` or ``mqtts://`` URL.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise BrokerError(
                f"bad MQTT URL {parts.scheme}://{parts.hostname or ''}: expected "
                "mqtt://[user:password@]host:port (CROWDWATCH_MQTT_URL)"
            )
        tls = parts.scheme == "mqtts"
        return cls(
            parts.hostname,
            parts.port or (8883 if tls else 1883),
            tls,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )

    def client(self, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
        """An MQTT 5 client for this broker (not yet connected)."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        return client

    def describe(self) -> str:
        """``mqtt://host:port`` without credentials."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _session_properties(receive_maximum: int | None = None) -> Properties:
    """CONNECT properties of a session that never expires."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 0xFFFFFFFF
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties


def _connect(client: mqtt.Client, broker: Broker, properties: Properties | None = None) -> None:
    try:
        client.connect(
            broker.host, broker.port, KEEPALIVE_S, clean_start=False, properties=properties
        )
    except OSError as exc:
        raise BrokerError(
            f"cannot reach the MQTT broker at {broker.describe()}: {exc}; start it there or "
            "set CROWDWATCH_MQTT_URL"
        ) from exc


def _wait_connected(client: mqtt.Client, ready: threading.Event, broker: Broker) -> None:
    if not ready.wait(CONNECT_TIMEOUT_S) or not client.is_connected():
        client.loop_stop()
        raise BrokerError(
            f"the MQTT broker at {broker.describe()} did not accept the connection within "
            f"{CONNECT_TIMEOUT_S:.0f} s; check CROWDWATCH_MQTT_URL and its credentials"
        )


class MqttReceiver:
    """Subscribes at QoS 1 on a persistent session; spools, fsyncs, then acknowledges.

    Paho's network thread receives and reconnects; a second thread moves what arrived into the
    spool and acknowledges it. While the spool is full nothing is acknowledged, and the broker
    stops sending once ``RECEIVE_MAXIMUM`` messages are unacknowledged.
    """

    def __init__(self, broker: Broker, topic: str, client_id: str, spool: Spool) -> None:
        self.broker = broker
        self.topic = topic
        self.spool = spool
        self.error: BaseException | None = None
        self._inbox: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self.client = broker.client(client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        _connect(self.client, broker, _session_properties(RECEIVE_MAXIMUM))
        self.client.loop_start()
        _wait_connected(self.client, self._subscribed, broker)
        self._thread = threading.Thread(target=self._flush_loop, daemon=True)
        self._thread.start()

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, code: object, _p: object
    ) -> None:
        if getattr(code, "is_failure", False):
            self.error = BrokerError(
                f"the MQTT broker at {self.broker.describe()} refused the connection: {code}"
            )
            self._subscribed.set()
            return
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(
        self, _c: object, _u: object, _m: object, codes: Sequence[object], _p: object
    ) -> None:
        failed = [c for c in codes if getattr(c, "is_failure", False)]
        if failed:
            self.error = BrokerError(
                f"the MQTT broker at {self.broker.describe()} refused the subscription to "
                f"{self.topic!r}: {failed[0]}"
            )
        self._last = time.monotonic()
        self._subscribed.set()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._inbox.append(message)
            self._last = time.monotonic()

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_S):
            with self._lock:
                messages, self._inbox = self._inbox, []
            if not messages:
                continue
            records: list[tuple[bytes, bytes]] = []
            keys: set[bytes] = set()
            for message in messages:
                # a message sent again after a lost acknowledgement keeps its packet id
                key = (
                    b"%d:" % message.mid + hashlib.blake2b(message.payload, digest_size=8).digest()
                )
                if message.dup and (key in keys or self.spool.seen(key)):
                    continue
                keys.add(key)
                records.append((key, bytes(message.payload)))
            while self.spool.full and not self._stop.is_set():
                time.sleep(0.05)  # hold the acknowledgements: the broker keeps the rest
            if self._stop.is_set():
                return
            self.spool.append(records)
            for message in messages:
                self.client.ack(message.mid, message.qos)

    def idle_s(self) -> float:
        """Seconds since the last message, or since subscribing."""
        with self._lock:
            return time.monotonic() - self._last

    def pending(self) -> int:
        """Messages received and not yet spooled."""
        with self._lock:
            return len(self._inbox)

    def close(self) -> None:
        """Stop and disconnect; unacknowledged messages stay in the broker's session."""
        self._stop.set()
        self._thread.join()
        self.client.disconnect()
        self.client.loop_stop()


class MqttRecordSource(SpooledSource):
    """Read MQTT topics as `RawBatch` micro-batches, one Bytewax partition per topic.

    Args:
        url: ``mqtt[s]://[user:password@]host[:port]``.
        topics: topic → the kind of record it carries.
        client_id: prefix of each topic's session client id (``<id>-<topic with - for />``).
        spooling: where and how to spool, see `SpooledSource`.
    """

    scheme = "mqtt"

    def __init__(
        self, url: str, topics: dict[str, RecordKind], *, client_id: str, **spooling: Any
    ) -> None:
        super().__init__(topics, **spooling)
        self.broker = Broker.from_url(url)
        self.client_id = client_id

    def session_id(self, topic: str) -> str:
        """The client id of the persistent session that reads ``topic``."""
        return session_id(self.client_id, topic)

    def spool_name(self, part: str) -> str:
        """A topic's spool is named after its session."""
        return self.session_id(part)

    def receiver(self, part: str, spool: Spool) -> MqttReceiver:
        """Connect the topic's session and subscribe."""
        return MqttReceiver(self.broker, part, self.session_id(part), spool)


def subscribe_sessions(url: str, client_ids_topics: Iterable[tuple[str, str]]) -> None:
    """Create persistent QoS 1 sessions so the broker keeps messages published before a run.

    Each ``(client_id, topic)`` connects once, subscribes and disconnects, acknowledging nothing.
    """
    broker = Broker.from_url(url)
    for client_id, topic in client_ids_topics:
        _subscribe_once(broker, client_id, topic)


def _subscribe_once(broker: Broker, client_id: str, topic: str) -> None:
    ready = threading.Event()
    client = broker.client(client_id)
    client.on_subscribe = lambda *_: ready.set()
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    _connect(client, broker, _session_properties())
    client.loop_start()
    _wait_connected(client, ready, broker)
    client.disconnect()
    client.loop_stop()


def publish(url: str, topics: Sequence[str], records: Sequence[str], client_id: str) -> int:
    """Publish records at QoS 1, record i to ``topics[i]``; returns once the broker has them all.

    Raises:
        BrokerError: the broker cannot be reached or did not acknowledge every record.
    """
    broker = Broker.from_url(url)
    client = broker.client(client_id)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    ready = threading.Event()
    client.on_connect = lambda *_: ready.set()
    try:
        client.connect(broker.host, broker.port, KEEPALIVE_S)
    except OSError as exc:
        raise BrokerError(
            f"cannot reach the MQTT broker at {broker.describe()}: {exc}; set CROWDWATCH_MQTT_URL"
        ) from exc
    client.loop_start()
    try:
        _wait_connected(client, ready, broker)
        sent = [client.publish(t, r.encode(), qos=1) for t, r in zip(topics, records, strict=True)]
        for info in sent:
            info.wait_for_publish(60)
        missing = sum(not info.is_published() for info in sent)
        if missing:
            raise BrokerError(
                f"the MQTT broker at {broker.describe()} did not acknowledge {missing} of "
                f"{len(sent)} records within 60 s"
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return len(records)
