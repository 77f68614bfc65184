"""Local stand-ins for the vendors' robots, an SMS gateway and a mail server: tests and the demo.

`RobotReceiver` is a real HTTP server on 127.0.0.1 that answers as a DingTalk group robot, a
WeCom group robot, a Feishu/Lark bot, a JSON SMS gateway and a plain JSON endpoint (Apprise's
``json://``) do, and checks what each vendor documents: the body's shape, DingTalk's signed URL
(``timestamp`` in ms within an hour, ``sign``), Feishu's signed body (``timestamp`` in s, ``sign``)
and the gateway's bearer token. A request that fails a check is answered as the vendor answers
it (HTTP 200 and an error code) and kept in `rejected`; one that passes is recorded once per
``Idempotency-Key``. `MailReceiver` is an SMTP server (aiosmtpd) that keeps every message.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from crowdwatch.risk.channels import WECOM_MAX_BYTES
from crowdwatch.risk.notify import LocalServer

SIGNATURE_WINDOW_S = 3600
"""DingTalk and Feishu refuse a signature whose timestamp is over an hour from their clock."""


@dataclass(frozen=True)
class Received:
    """One accepted request: the vendor path it came to, its JSON body, key and headers."""

    vendor: str
    name: str
    body: dict[str, Any]
    key: str
    query: dict[str, str]
    headers: dict[str, str] = field(hash=False)


class RobotReceiver(LocalServer):
    """Vendor robots and gateways on 127.0.0.1; see the module docstring.

    Args:
        secrets: The signing secret of each DingTalk or Feishu robot, by name.
        sms_token: The bearer token the SMS gateway wants (None: no check).

    Use it as a context manager; each robot is a name within one vendor's path::

        with RobotReceiver({"duty": "SECabc"}) as robots:
            url = robots.dingtalk_url("duty")
    """

    def __init__(self, secrets: dict[str, str] | None = None, sms_token: str | None = None) -> None:
        super().__init__("robot-receiver")
        self.secrets = dict(secrets or {})
        self.sms_token = sms_token
        self._received: dict[str, list[Received]] = defaultdict(list)
        self._rejected: dict[str, list[str]] = defaultdict(list)
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._holds: dict[str, list[threading.Event]] = defaultdict(list)
        self._answers: dict[str, list[dict[str, Any]]] = defaultdict(list)

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def dingtalk_url(self, name: str) -> str:
        """A DingTalk robot's webhook URL (``access_token`` is the name)."""
        return f"{self.base}/dingtalk/{name}/robot/send?access_token={name}"

    def wecom_url(self, name: str) -> str:
        """A WeCom robot's webhook URL (``key`` is the name)."""
        return f"{self.base}/wecom/{name}/cgi-bin/webhook/send?key={name}"

    def feishu_url(self, name: str) -> str:
        """A Feishu/Lark bot's webhook URL."""
        return f"{self.base}/feishu/{name}/open-apis/bot/v2/hook/{name}"

    def sms_url(self, name: str = "gateway") -> str:
        """The JSON SMS gateway's URL."""
        return f"{self.base}/sms/{name}"

    def json_url(self, name: str, scheme: str = "json") -> str:
        """A plain JSON endpoint as an Apprise URL (``json://127.0.0.1:<port>/json/<name>``)."""
        return f"{scheme}://127.0.0.1:{self.port}/json/{name}"

    def received(self, name: str) -> list[Received]:
        """The accepted requests to ``name``, each ``Idempotency-Key`` once."""
        with self._changed:
            return list(self._received[name])

    def rejected(self, name: str) -> list[str]:
        """Why each refused request to ``name`` was refused."""
        with self._changed:
            return list(self._rejected[name])

    def wait_received(self, name: str, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until ``name`` has ``count`` accepted requests; False if the time ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._received[name]) >= count, timeout_s)

    def hold(self, name: str) -> threading.Event:
        """Hold the next request to ``name`` until the returned event is set (or close)."""
        release = self._hold_event()
        with self._changed:
            self._holds[name].append(release)
        return release

    def answer(self, name: str, reply: dict[str, Any]) -> None:
        """Answer the next request to ``name`` with ``reply`` (HTTP 200) without recording."""
        with self._changed:
            self._answers[name].append(reply)

    def _handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        parts = urllib.parse.urlsplit(path)
        segments = parts.path.strip("/").split("/")
        vendor, name = [*segments, "", ""][:2]
        query = dict(urllib.parse.parse_qsl(parts.query))
        with self._changed:
            release = self._holds[name].pop(0) if self._holds[name] else None
        if release is not None:
            release.wait()
        with self._changed:
            if self._answers[name]:
                return 200, self._answers[name].pop(0)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        check = {
            "dingtalk": self._dingtalk,
            "wecom": self._wecom,
            "feishu": self._feishu,
            "sms": self._sms,
            "json": self._any_json,
        }.get(vendor)
        if check is None:
            return 404, {"error": f"no such vendor {vendor!r}"}
        if not isinstance(data, dict):
            problem: tuple[int, dict[str, Any]] | None = (400, {"error": "body is not JSON"})
        else:
            problem = check(name, data, query, headers)
        key = headers.get("Idempotency-Key", "")
        with self._changed:
            if problem is not None:
                self._rejected[name].append(json.dumps(problem[1], ensure_ascii=False))
                self._changed.notify_all()
                return problem
            if key and key in self._seen[name]:
                return 200, _ok(vendor)
            if key:
                self._seen[name].add(key)
            assert isinstance(data, dict)
            self._received[name].append(Received(vendor, name, data, key, query, headers))
            self._changed.notify_all()
            return 200, _ok(vendor)

    def _any_json(
        self, name: str, data: dict[str, Any], query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]] | None:
        return None

    def _dingtalk(
        self, name: str, data: dict[str, Any], query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]] | None:
        if query.get("access_token") != name:
            return 200, {"errcode": 300001, "errmsg": "token is not exist"}
        secret = self.secrets.get(name)
        if secret is not None:
            stamp, sign = query.get("timestamp", ""), query.get("sign", "")
            if (
                not stamp.isdigit()
                or abs(time.time() * 1000 - int(stamp)) > SIGNATURE_WINDOW_S * 1000
            ):
                return 200, {"errcode": 310000, "errmsg": "timestamp invalid"}
            if sign != _dingtalk_expected(secret, stamp):
                return 200, {"errcode": 310000, "errmsg": "sign not match"}
        kind = data.get("msgtype")
        content = data.get(kind) if isinstance(kind, str) else None
        if kind == "markdown" and isinstance(content, dict):
            if content.get("title") and content.get("text"):
                return None
        elif kind == "text" and isinstance(content, dict) and content.get("content"):
            return None
        return 200, {"errcode": 40035, "errmsg": "missing or invalid msgtype or content"}

    def _wecom(
        self, name: str, data: dict[str, Any], query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]] | None:
        if query.get("key") != name:
            return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}
        kind = data.get("msgtype")
        content = data.get(kind) if isinstance(kind, str) else None
        if kind not in ("text", "markdown") or not isinstance(content, dict):
            return 200, {"errcode": 40008, "errmsg": "invalid message type"}
        text = content.get("content")
        if not isinstance(text, str) or not text:
            return 200, {"errcode": 44004, "errmsg": "empty content"}
        if len(text.encode("utf-8")) > WECOM_MAX_BYTES:
            return 200, {"errcode": 40058, "errmsg": "content exceed max length 4096"}
        return None

    def _feishu(
        self, name: str, data: dict[str, Any], query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]] | None:
        secret = self.secrets.get(name)
        if secret is not None:
            stamp, sign = str(data.get("timestamp", "")), data.get("sign")
            if not stamp.isdigit() or abs(time.time() - int(stamp)) > SIGNATURE_WINDOW_S:
                return 200, {"code": 19021, "msg": "timestamp is not within one hour"}
            if sign != _feishu_expected(secret, stamp):
                return 200, {"code": 19021, "msg": "sign match fail"}
        kind = data.get("msg_type")
        if kind == "interactive":
            card = data.get("card")
            if (
                isinstance(card, dict)
                and isinstance(card.get("elements"), list)
                and card.get("header", {}).get("title", {}).get("content")
            ):
                return None
        elif kind == "text" and data.get("content", {}).get("text"):
            return None
        return 200, {"code": 9499, "msg": "Bad Request: invalid msg_type or content"}

    def _sms(
        self, name: str, data: dict[str, Any], query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]] | None:
        if (
            self.sms_token is not None
            and headers.get("Authorization") != f"Bearer {self.sms_token}"
        ):
            return 401, {"error": "bad token"}
        to, text = data.get("to"), data.get("text")
        if not isinstance(to, list) or not to or not isinstance(text, str) or not text:
            return 400, {"error": "need to (a list of numbers) and text"}
        return None


# The vendors' documented checks, written out here on their own (not the senders' functions),
# so that a mistake in a sender's signature is caught, not repeated.


def _dingtalk_expected(secret: str, stamp: str) -> str:
    r"""DingTalk: HmacSHA256 keyed by the secret over "timestamp\nsecret", then Base64.

    The sender URL-encodes it in the query; parsing the query undoes that.
    """
    mac = hmac.new(secret.encode("utf-8"), (stamp + "\n" + secret).encode("utf-8"), "sha256")
    return base64.b64encode(mac.digest()).decode("utf-8")


def _feishu_expected(secret: str, stamp: str) -> str:
    r"""Feishu: HmacSHA256 keyed by "timestamp\nsecret" over nothing, then Base64."""
    mac = hmac.new((stamp + "\n" + secret).encode("utf-8"), digestmod=hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("utf-8")


def _ok(vendor: str) -> dict[str, Any]:
    if vendor == "feishu":
        return {"code": 0, "msg": "success", "data": {}}
    if vendor in ("dingtalk", "wecom"):
        return {"errcode": 0, "errmsg": "ok"}
    return {"ok": True}


class MailReceiver:
    """An SMTP server on 127.0.0.1 (aiosmtpd) that keeps every message it is given.

    ``url`` is the Apprise ``mailto://`` URL of it for ``CROWDWATCH_MAIL_URL``.
    """

    def __init__(self, sender: str = "crowdwatch@example.test") -> None:
        from aiosmtpd.controller import Controller

        self.sender = sender
        self._messages: list[tuple[list[str], EmailMessage]] = []
        self._changed = threading.Condition()
        # aiosmtpd needs a port up front: take a free one from the OS
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        """``mailto://127.0.0.1:<port>?from=…&mode=insecure`` (no TLS on localhost)."""
        return f"mailto://127.0.0.1:{self.port}?from={self.sender}&mode=insecure&name=crowdwatch"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the message (aiosmtpd's handler hook)."""
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._changed:
            self._messages.append((list(envelope.rcpt_tos), message))
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        """Every message: its envelope recipients and the parsed message."""
        with self._changed:
            return list(self._messages)

    def wait_messages(self, count: int, timeout_s: float = 10.0) -> bool:
        """Wait until ``count`` messages arrived; False if the time ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._messages) >= count, timeout_s)

    def __enter__(self) -> MailReceiver:
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()
