"""AMQP 0-9-1 (RabbitMQ) as a source: a durable queue per signal, manual acks after the spool.

Records are published to a topic exchange, ``amq.topic`` by default — where DeepStream's AMQP
adapter (``libnvds_amqp_proto.so``, ``cfg_amqp.txt``: ``exchange = amq.topic``, ``topic`` is
the routing key) publishes — with routing key ``<prefix>.<kind>`` (``crowdwatch.passage``,
``crowdwatch.deepstream_minimal`` …), or ``<prefix>.<kind>.<k>`` for station partitions; one
JSON record per message. Each signal is read from a durable queue ``<queue prefix>.<kind>``
bound to that routing key (declared by the source and by ``crowdwatch publish amqp``: a topic
exchange drops messages that no queue is bound for).

Delivery: messages are consumed with manual acknowledgements and a prefetch window; a batch is
acknowledged (``multiple``) only after it is ``fsync``ed into the `Spool`, from which the
pipeline reads. RabbitMQ requeues whatever was not acknowledged when a connection drops or the
process dies, flagged as redelivered; a redelivered message that is already among the spool's
newest records (same ``message_id``, or same body when it has none) is acknowledged and dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions

from crowdwatch.batches import RecordKind
from crowdwatch.sources.redis_streams import BrokerError
from crowdwatch.sources.spool import Spool, SpooledSource

PREFETCH = 2000
BATCH = 1000
INACTIVITY_S = 0.02
CONNECT_TIMEOUT_S = 10.0
RECONNECT_S = 1.0
PUBLISH_CHUNK = 2000
BACKLOG_CHECK_S = 0.25


def routing_key(prefix: str, kind: RecordKind, partition: int | None = None) -> str:
    """The routing key of one signal: ``<prefix>.<kind>``, or ``<prefix>.<kind>.<k>``."""
    return f"{prefix}.{kind}" if partition is None else f"{prefix}.{kind}.{partition}"


def describe(url: str) -> str:
    """``amqp://host:port/vhost`` without credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 5672}{parts.path or '/'}"


def parameters(url: str) -> pika.URLParameters:
    """Connection parameters from ``amqp://user:password@host:port/vhost``.

    Raises:
        BrokerError: not an AMQP URL.
    """
    if urlsplit(url).scheme not in ("amqp", "amqps"):
        raise BrokerError(
            f"bad AMQP URL {describe(url)!r}: expected amqp://user:password@host:port/vhost "
            "(CROWDWATCH_AMQP_URL)"
        )
    params = pika.URLParameters(url)
    params.heartbeat = 30
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = CONNECT_TIMEOUT_S
    return params


def declare(
    channel: pika.adapters.blocking_connection.BlockingChannel,
    exchange: str,
    queue: str,
    key: str,
) -> None:
    """Check the exchange exists; declare the durable queue and bind it to ``key``."""
    channel.exchange_declare(exchange, passive=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, routing_key=key)


def _fault(exc: BaseException, url: str, exchange: str) -> BrokerError | None:
    """A fault that reconnecting will not cure, as a `BrokerError`; None for the others."""
    if isinstance(
        exc, pika.exceptions.ProbableAuthenticationError | pika.exceptions.ProbableAccessDeniedError
    ):
        return BrokerError(f"the AMQP broker at {describe(url)} refused the login: {exc}")
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        return BrokerError(
            f"the AMQP broker at {describe(url)} closed the channel: {exc.reply_text} "
            f"(exchange {exchange!r}: CROWDWATCH_AMQP_EXCHANGE)"
        )
    return None


class AmqpReceiver:
    """Consumes one durable queue in a thread of its own; spools, fsyncs, then acknowledges."""

    def __init__(self, url: str, exchange: str, queue: str, key: str, spool: Spool) -> None:
        self.url = url
        self.exchange = exchange
        self.queue = queue
        self.key = key
        self.spool = spool
        self.error: BaseException | None = None
        self.reconnects = 0
        self._last = time.monotonic()
        self._pending = 0
        self._backlog = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(CONNECT_TIMEOUT_S + 5) and self.error is None:
            self.error = BrokerError(f"the AMQP broker at {describe(url)} did not answer")
        if self.error is not None:
            self.close()
            raise BrokerError(str(self.error))

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                connection = pika.BlockingConnection(parameters(self.url))
            except pika.exceptions.AMQPError as exc:
                fault = _fault(exc, self.url, self.exchange)
                if first or fault is not None:
                    self.error = fault or BrokerError(
                        f"cannot reach the AMQP broker at {describe(self.url)}: {exc!r}; start "
                        "it there or set CROWDWATCH_AMQP_URL"
                    )
                    self._ready.set()
                    return
                time.sleep(RECONNECT_S)
                continue
            try:
                self._consume(connection)
            except pika.exceptions.AMQPError as exc:
                fault = _fault(exc, self.url, self.exchange)
                if fault is not None:
                    self.error = fault
                    self._ready.set()
                    return
                self.reconnects += 1  # a dropped connection: the broker requeues what was not acked
            finally:
                first = False
                if connection.is_open:
                    with contextlib.suppress(pika.exceptions.AMQPError):
                        connection.close()

    def _consume(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        declare(channel, self.exchange, self.queue, self.key)
        channel.basic_qos(prefetch_count=PREFETCH)
        self._last = time.monotonic()
        self._ready.set()
        records: list[tuple[bytes, bytes]] = []
        keys: set[bytes] = set()
        last_tag: int | None = None
        checked = 0.0
        for method, properties, body in channel.consume(
            self.queue, inactivity_timeout=INACTIVITY_S
        ):
            if self._stop.is_set():
                break
            if method is not None:
                with self._lock:
                    self._last = time.monotonic()
                    self._pending += 1
                key = (properties.message_id or "").encode() or hashlib.blake2b(
                    body, digest_size=16
                ).digest()
                last_tag = method.delivery_tag
                if not (method.redelivered and (key in keys or self.spool.seen(key))):
                    keys.add(key)
                    records.append((key, body))
                if len(records) < BATCH:
                    continue
            if last_tag is None:
                if time.monotonic() - checked >= BACKLOG_CHECK_S:  # idle: is the queue empty?
                    declared = channel.queue_declare(self.queue, passive=True)
                    with self._lock:
                        self._backlog = int(declared.method.message_count)
                    checked = time.monotonic()
                continue
            while self.spool.full and not self._stop.is_set():
                connection.sleep(0.05)  # keep heartbeats going; the broker holds the rest
            if self._stop.is_set():
                break
            self.spool.append(records)
            channel.basic_ack(last_tag, multiple=True)
            with self._lock:
                self._pending = 0
            records, keys, last_tag = [], set(), None
        channel.cancel()

    def idle_s(self) -> float:
        """Seconds since the last message, or since consuming began."""
        with self._lock:
            return time.monotonic() - self._last

    def pending(self) -> int:
        """Messages received and not yet spooled, and those the queue last said it held."""
        with self._lock:
            return self._pending + self._backlog

    def close(self) -> None:
        """Stop consuming; unacknowledged messages go back to the queue."""
        self._stop.set()
        self._thread.join(timeout=30)


class AmqpRecordSource(SpooledSource):
    """Read AMQP queues as `RawBatch` micro-batches, one Bytewax partition per queue.

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        exchange: the topic exchange the records are published to.
        bindings: queue → (routing key, kind of record).
        spooling: where and how to spool, see `SpooledSource`.
    """

    scheme = "amqp"

    def __init__(
        self,
        url: str,
        exchange: str,
        bindings: dict[str, tuple[str, RecordKind]],
        **spooling: Any,
    ) -> None:
        super().__init__({q: kind for q, (_, kind) in bindings.items()}, **spooling)
        parameters(url)
        self.url = url
        self.exchange = exchange
        self.keys = {q: key for q, (key, _) in bindings.items()}

    def receiver(self, part: str, spool: Spool) -> AmqpReceiver:
        """Declare and bind the queue and start consuming it."""
        return AmqpReceiver(self.url, self.exchange, part, self.keys[part], spool)


def publish(
    url: str,
    exchange: str,
    keys: Sequence[str],
    records: Sequence[str],
    queues: dict[str, str] | None = None,
) -> int:
    """Publish persistent messages, record i with routing key ``keys[i]``, in transactions.

    ``queues`` (queue → routing key) are declared and bound first, so that nothing published
    before the pipeline's first run is dropped by the exchange. Returns how many were published.

    Raises:
        BrokerError: the broker cannot be reached, refused a message or lacks the exchange.
    """
    try:
        connection = pika.BlockingConnection(parameters(url))
    except pika.exceptions.AMQPError as exc:
        raise _fault(exc, url, exchange) or BrokerError(
            f"cannot reach the AMQP broker at {describe(url)}: {exc!r}; set CROWDWATCH_AMQP_URL"
        ) from exc
    try:
        channel = connection.channel()
        for queue, key in (queues or {}).items():
            declare(channel, exchange, queue, key)
        # a transaction per chunk: the broker has every message of it when the commit returns
        channel.tx_select()
        persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        for i, (key, record) in enumerate(zip(keys, records, strict=True)):
            channel.basic_publish(exchange, key, record.encode(), persistent)
            if i % PUBLISH_CHUNK == PUBLISH_CHUNK - 1:
                channel.tx_commit()
        channel.tx_commit()
    except pika.exceptions.AMQPError as exc:
        raise _fault(exc, url, exchange) or BrokerError(
            f"cannot publish to the AMQP broker at {describe(url)}: {exc!r}"
        ) from exc
    finally:
        if connection.is_open:
            connection.close()
    return len(records)
