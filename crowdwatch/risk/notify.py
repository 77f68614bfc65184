"""Alert notifications: what is sent about an alert event, to whom, and one request of it.

An `AlertEvent` is one step in the life of a zone's alert episode (opened, escalated,
de-escalated, resolved). Who hears what:

* ``opened`` and ``escalated`` go to the roles of the event's ``level``.
* ``de-escalated`` and ``resolved`` go to the roles of the *higher* of ``level`` and
  ``previous_level``, i.e. the level being left. Whoever was called to a red alert hears that
  it went down to yellow or ended, not only the station master who stays on it.

`WebhookPoster` makes one POST of an event's JSON to one webhook; `crowdwatch.risk.outbox`
writes each event down first and retries that step until it is decided. Every attempt carries
the same ``Idempotency-Key`` header (a stable hash of the alert, the event, the level, the
event time and the role), so a receiver can drop repeats; `AlertReceiver`, a small real HTTP
server for tests and the demo, does exactly that.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.client import HTTPException
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

from crowdwatch.risk.levels import RANK
from crowdwatch.site import Contact, Level, Role

EventType = Literal["opened", "escalated", "de-escalated", "resolved"]
"""A step in an alert episode."""

SCHEMA = "crowdwatch.alert.v1"
"""The ``schema`` field of every payload; bumped when a field changes meaning."""

_RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True)
class AlertEvent:
    """One step of a zone's alert episode, as sent to the people who respond.

    ``alert_id`` is stable over the episode (opened … resolved) so receivers can thread the
    events. ``level`` is the level after the step and ``previous_level`` the one before
    (None when opened). ``values`` are the numbers behind the decision (occupancy, density …);
    non-finite values are sent as JSON ``null``. ``lead_time_s`` is how far ahead a predicted
    alert looks.
    """

    alert_id: str
    event: EventType
    kind: str
    zone_id: str
    station_id: str
    level: Level
    previous_level: Level | None
    ts_ms: int
    reason: str
    values: dict[str, float] = field(hash=False)
    lead_time_s: float | None = None
    causes: tuple[str, ...] = ()
    """What put the zone at ``level``, as codes the messages put in words (`reason` is the
    English log line): ``capacity``, ``density``, ``los_f``, ``anomaly``, ``burst``, ``held``
    and ``calm`` (resolved)."""

    @property
    def routing_level(self) -> Level:
        """The level whose roles hear this event: the level being left for a step down."""
        if self.event in ("de-escalated", "resolved") and self.previous_level is not None:
            return max(self.level, self.previous_level, key=RANK.__getitem__)
        return self.level

    def idempotency_key(self, role: Role) -> str:
        """A stable key for this event sent to ``role``: the same on every attempt and resend.

        It hashes ``alert_id``, ``event``, ``level``, ``ts_ms`` and ``role`` only, so two
        events of one episode at different times or levels get different keys.
        """
        material = json.dumps([self.alert_id, self.event, self.level, self.ts_ms, role])
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]

    def to_json(
        self, role: Role, contact: Contact, message: Mapping[str, str] | None = None
    ) -> bytes:
        """The JSON body sent to ``role``: the event, its key, the recipient and the message.

        ``message`` (the rendered `crowdwatch.risk.messages.Message` as a mapping: ``lang``,
        ``title``, ``text``, ``markdown``, ``short``) is sent as ``message`` when given.
        """
        payload: dict[str, Any] = {
            "schema": SCHEMA,
            "idempotency_key": self.idempotency_key(role),
            "recipient": {"role": role, "name": contact.name},
            "alert_id": self.alert_id,
            "event": self.event,
            "kind": self.kind,
            "zone_id": self.zone_id,
            "station_id": self.station_id,
            "level": self.level,
            "previous_level": self.previous_level,
            "ts_ms": self.ts_ms,
            "ts": datetime.fromtimestamp(self.ts_ms / 1000, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "reason": self.reason,
            "values": {k: (v if math.isfinite(v) else None) for k, v in self.values.items()},
            "lead_time_s": self.lead_time_s,
            "causes": list(self.causes),
        }
        if message is not None:
            payload["message"] = dict(message)
        return json.dumps(payload, sort_keys=True, allow_nan=False).encode("utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would turn the POST into a GET and lose the alert."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        return None


AttemptStatus = Literal["delivered", "retry", "failed"]
"""How one request ended: delivered, worth retrying, or refused for good."""


@dataclass(frozen=True)
class Attempt:
    """One webhook request: how it ended, the HTTP status, why it failed, how long it took."""

    status: AttemptStatus
    http_status: int | None
    error: str | None
    latency_ms: float


class WebhookPoster:
    """POSTs one alert event to one webhook, once: the single step that retries are made of.

    2xx is delivered; connection errors, timeouts, 408, 425, 429 and 5xx are worth a retry;
    any other 4xx (and a redirect, which urllib would turn into a GET) is refused for good.
    """

    def __init__(self, timeout_s: float = 2.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(_NoRedirect())

    def post(self, url: str, key: str, body: bytes) -> Attempt:
        """POST ``body`` with the ``Idempotency-Key`` header ``key``; never raises."""
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
        )
        started = time.perf_counter()

        def took() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
                return Attempt("delivered", response.status, None, took())
        except urllib.error.HTTPError as exc:
            with exc:
                error = f"HTTP {exc.code} {exc.reason}"
            retry = exc.code >= 500 or exc.code in _RETRYABLE_STATUS
            return Attempt("retry" if retry else "failed", exc.code, error, took())
        except (OSError, HTTPException, ValueError) as exc:
            # URLError (refused, DNS), timeouts and dropped connections are all OSErrors.
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return Attempt("retry", None, f"{type(reason).__name__}: {reason}", took())


class _ReceiverServer(ThreadingHTTPServer):
    receiver: LocalServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A sender that timed out has hung up on a held request; that is expected here.
        pass


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        status, reply = self.server.receiver._handle(self.path, dict(self.headers), body)
        data = json.dumps(reply, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalServer:
    """A real HTTP server on 127.0.0.1 in a thread of its own; each POST goes to `_handle`.

    The base of the local receivers of the tests and the demo (`AlertReceiver`, and the
    vendors' stand-ins in `crowdwatch.risk.receivers`). Requests can be held until released
    (`_hold_event`); closing releases every hold. Use it as a context manager.
    """

    def __init__(self, name: str, port: int = 0) -> None:
        self._server = _ReceiverServer(("127.0.0.1", port), _ReceiverHandler)
        self._server.receiver = self
        # A short poll interval so that closing the receiver takes milliseconds, not 0.5 s.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=name,
            daemon=True,
        )
        self._changed = threading.Condition()
        self._all_holds: list[threading.Event] = []

    @property
    def port(self) -> int:
        """The port the receiver listens on."""
        return int(self._server.server_address[1])

    def _hold_event(self) -> threading.Event:
        """A new hold, released when set or when the server closes."""
        release = threading.Event()
        with self._changed:
            self._all_holds.append(release)
        return release

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """The status and JSON reply of one POST; called from the server's threads."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._changed:
            for release in self._all_holds:
                release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class AlertReceiver(LocalServer):
    """A real webhook receiver on 127.0.0.1 for tests and the demo.

    It records the JSON events POSTed to each path, once per ``Idempotency-Key`` (a repeat is
    answered 200 but not recorded again), and remembers the key of every request, failed ones
    included. It can be told to fail the first requests on a path (`fail`) or to hold them
    until released (`hold`). Use it as a context manager::

        with AlertReceiver() as receiver:
            url = receiver.url("/station-master")
    """

    def __init__(self, port: int = 0) -> None:
        super().__init__("alert-receiver", port)
        self._received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._arrived: dict[str, list[float]] = defaultdict(list)
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._keys: dict[str, list[str]] = defaultdict(list)
        self._failures: dict[str, list[int]] = defaultdict(list)
        self._holds: dict[str, list[threading.Event]] = defaultdict(list)

    def url(self, path: str) -> str:
        """The full URL of ``path`` (which starts with ``/``) on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def fail(self, path: str, times: int, status: int = 503) -> None:
        """Answer the next ``times`` requests to ``path`` with ``status`` without recording."""
        with self._changed:
            self._failures[path].extend([status] * times)

    def hold(self, path: str, times: int = 1) -> threading.Event:
        """Hold the next ``times`` requests to ``path`` until the returned event is set.

        A held request is handled normally once released (recorded unless its key was seen
        meanwhile). Closing the receiver releases every hold.
        """
        release = self._hold_event()
        with self._changed:
            self._holds[path].extend([release] * times)
        return release

    def received(self, path: str) -> list[dict[str, Any]]:
        """The events recorded on ``path``, first received first, each once."""
        with self._changed:
            return list(self._received[path])

    def arrivals(self, path: str) -> list[tuple[float, dict[str, Any]]]:
        """The events recorded on ``path`` with when each request arrived (`time.perf_counter`)."""
        with self._changed:
            return list(zip(self._arrived[path], self._received[path], strict=True))

    def keys(self, path: str) -> list[str]:
        """The ``Idempotency-Key`` of every request to ``path``, repeats and failures too."""
        with self._changed:
            return list(self._keys[path])

    def wait_received(self, path: str, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until ``path`` has ``count`` recorded events; False if ``timeout_s`` ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._received[path]) >= count, timeout_s)

    def _handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Decide the answer to one request; called from the server's handler threads."""
        arrived = time.perf_counter()
        key = headers.get("Idempotency-Key")
        with self._changed:
            self._keys[path].append(key or "")
            release = self._holds[path].pop(0) if self._holds[path] else None
        if release is not None:
            release.wait()
        with self._changed:
            if self._failures[path]:
                status = self._failures[path].pop(0)
                return status, {"error": f"told to fail with {status}"}
            if not key:
                return 400, {"error": "missing Idempotency-Key header"}
            if key in self._seen[path]:
                return 200, {"duplicate": True}
            try:
                event = json.loads(body)
            except ValueError as exc:
                return 400, {"error": f"body is not JSON: {exc}"}
            if not isinstance(event, dict):
                return 400, {"error": "body is not a JSON object"}
            self._seen[path].add(key)
            self._received[path].append(event)
            self._arrived[path].append(arrived)
            self._changed.notify_all()
            return 200, {"duplicate": False}
