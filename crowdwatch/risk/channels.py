r"""Channels duty staff read: one message to one channel, once, and what each vendor expects.

A contact's channels (`crowdwatch.site.Contact`) each get the role's `Message` in the form
their receiver takes (`payload`), written to the outbox as the row's body; `Channels.post`
sends one row's body, once, and says how it went as an `Attempt` (``delivered``, ``retry``
or ``failed``); the outbox retries. Every request carries the row's ``Idempotency-Key``.

* ``webhook``: the alert event as JSON (`AlertEvent.to_json`, with the message), as before.
* ``dingtalk``: a DingTalk group robot, ``msgtype: markdown``; with a secret the URL gets
  ``timestamp`` (ms) and ``sign`` = base64(HMAC-SHA256(secret, "{timestamp}\\n{secret}")),
  URL-encoded (加签). DingTalk answers HTTP 200 with ``errcode``: 0 is delivered.
* ``wecom``: a WeCom group robot, ``msgtype: markdown`` (at most 4096 bytes), ``errcode`` 0.
* ``feishu`` / ``lark``: a Feishu or Lark custom bot, an interactive card; with a secret the
  body gets ``timestamp`` (s) and ``sign`` = base64(HMAC-SHA256(key="{timestamp}\\n{secret}",
  message="")) (签名校验). The bot answers ``code`` 0.
* ``email``: through Apprise (``mailto://`` / ``mailtos://``, the SMTP server of
  ``CROWDWATCH_MAIL_URL``), the markdown as an HTML part, the key as ``X-Idempotency-Key``.
* ``sms``: through the gateway of ``CROWDWATCH_SMS_GATEWAY``: an ``http(s)://`` URL is a JSON
  gateway (POST ``{"to": [...], "text": ..., "idempotency_key": ...}``, bearer token
  ``CROWDWATCH_SMS_TOKEN``, any 2xx delivered); anything else is an Apprise URL of one of the
  SMS services it knows, with ``{to}`` where the numbers go (``twilio://SID:TOKEN@+1555/{to}``).
* ``apprise``: any Apprise URL, as it is.

Why the robots are senders of ours and not Apprise's ``dingtalk://``, ``wecombot://`` and
``feishu://``: those plugins post to the vendors' fixed hosts (no local receiver can stand in
for them in a test), return only True or False (a refusal for good cannot be told from a
timeout worth retrying, nor the HTTP status logged), send no ``Idempotency-Key``, and Apprise's
Feishu plugin does not sign. Each robot is one JSON POST, so ours are thin. Email and SMS
gateways are where Apprise pays: SMTP with STARTTLS, SSL and MIME, and dozens of SMS services.

Secrets (robot secrets, the SMTP password, the SMS token, Apprise URLs) are never logged: log
lines name a channel by `crowdwatch.site.Channel.label` (type and host).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from http.client import HTTPException
from typing import Any

from pydantic import SecretStr

from crowdwatch.risk.messages import Message
from crowdwatch.risk.notify import Attempt, AttemptStatus, WebhookPoster, _NoRedirect
from crowdwatch.site import (
    AppriseChannel,
    Channel,
    DingTalkChannel,
    EmailChannel,
    FeishuChannel,
    Site,
    SmsChannel,
    WebhookChannel,
    WeComChannel,
)

log = logging.getLogger(__name__)

WECOM_MAX_BYTES = 4096
"""WeCom's limit on a markdown message."""

_RETRYABLE_STATUS = frozenset({408, 425, 429})

DINGTALK_RETRY = frozenset({130101, 410100, -1})
"""DingTalk errcodes worth a retry: sending too fast (20 a minute per robot), system busy."""

WECOM_RETRY = frozenset({45009, 45033, -1})
"""WeCom errcodes worth a retry: over the API's rate limits, system busy."""

FEISHU_RETRY = frozenset({9499, 11232, 11233})
"""Feishu/Lark codes worth a retry: rate limits."""


def payload(channel: Channel, message: Message, event_json: bytes) -> bytes:
    """The body a channel's receiver takes, for the outbox row (not signed yet).

    ``event_json`` is the event's JSON for the generic webhook (`AlertEvent.to_json`).
    """
    body: dict[str, Any]
    if isinstance(channel, WebhookChannel):
        return event_json
    if isinstance(channel, DingTalkChannel):
        text = message.markdown
        if channel.at_mobiles:
            # DingTalk @s a mobile only when the text names it too
            text += "\n\n" + " ".join(f"@{m}" for m in channel.at_mobiles)
        body = {
            "msgtype": "markdown",
            "markdown": {"title": message.title, "text": text},
            "at": {"atMobiles": list(channel.at_mobiles), "isAtAll": channel.at_all},
        }
    elif isinstance(channel, WeComChannel):
        body = {"msgtype": "markdown", "markdown": {"content": _cut(message.markdown)}}
    elif isinstance(channel, FeishuChannel):
        body = {
            "msg_type": "interactive",
            "card": {
                "header": {
                    "title": {"tag": "plain_text", "content": message.title},
                    "template": _card_colour(event_json),
                },
                "elements": [{"tag": "markdown", "content": _without_heading(message.markdown)}],
            },
        }
    elif isinstance(channel, EmailChannel):
        body = {"subject": message.title, "markdown": message.markdown, "text": message.text}
    elif isinstance(channel, SmsChannel):
        body = {"text": message.short}
    elif isinstance(channel, AppriseChannel):
        body = {"title": message.title, "body": message.markdown}
    else:  # pragma: no cover - the union is exhaustive
        raise TypeError(f"unknown channel {channel!r}")
    return json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8")


def _cut(markdown: str, limit: int = WECOM_MAX_BYTES) -> str:
    """``markdown`` cut to ``limit`` UTF-8 bytes at a character boundary."""
    data = markdown.encode("utf-8")
    return markdown if len(data) <= limit else data[: limit - 3].decode("utf-8", "ignore") + "…"


def _without_heading(markdown: str) -> str:
    """The markdown without its first ``###`` line (a card shows the title in its header)."""
    first, _, rest = markdown.partition("\n")
    return rest.lstrip("\n") if first.startswith("#") else markdown


_COLOURS = {"red": "red", "orange": "orange", "yellow": "yellow", "blue": "blue"}


def _card_colour(event_json: bytes) -> str:
    try:
        level = json.loads(event_json).get("level")
    except ValueError:
        level = None
    return _COLOURS.get(level, "grey") if isinstance(level, str) else "grey"


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    r"""DingTalk's ``sign``: base64 of HMAC-SHA256(secret, "{timestamp}\n{secret}"), not quoted."""
    digest = hmac.new(
        secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def feishu_sign(secret: str, timestamp_s: int) -> str:
    r"""Feishu's and Lark's ``sign``: base64 of HMAC-SHA256(key="{timestamp}\n{secret}", b"")."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes


class HttpJson:
    """One JSON POST with the ``Idempotency-Key`` header; never raises.

    Returns the attempt and, when an HTTP answer came, the reply (for vendors that answer 200
    with an error code in the body).
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(_NoRedirect())

    def post(
        self, url: str, key: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> tuple[Attempt, _Reply | None]:
        """POST ``body`` to ``url``."""
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Idempotency-Key": key,
                **(headers or {}),
            },
        )
        started = time.perf_counter()

        def took() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                data = response.read()
                return Attempt("delivered", response.status, None, took()), _Reply(
                    response.status, data
                )
        except urllib.error.HTTPError as exc:
            with exc:
                error = f"HTTP {exc.code} {exc.reason}"
            retry = exc.code >= 500 or exc.code in _RETRYABLE_STATUS
            return Attempt("retry" if retry else "failed", exc.code, error, took()), None
        except (OSError, HTTPException, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return Attempt("retry", None, f"{type(reason).__name__}: {reason}", took()), None


def _vendor_answer(
    attempt: Attempt,
    reply: _Reply | None,
    code_field: str,
    retry_codes: frozenset[int],
    vendor: str,
) -> Attempt:
    """A 2xx whose JSON says ``code_field`` != 0 is a refusal (or a retry for rate limits)."""
    if attempt.status != "delivered" or reply is None:
        return attempt
    try:
        answer = json.loads(reply.body or b"{}")
    except ValueError:
        return Attempt("retry", reply.status, f"{vendor} answered no JSON", attempt.latency_ms)
    code = answer.get(code_field, answer.get("StatusCode", 0)) if isinstance(answer, dict) else 0
    if code in (0, None):
        return attempt
    text = str(answer.get("errmsg") or answer.get("msg") or "")[:200]
    status: AttemptStatus = "retry" if code in retry_codes else "failed"
    return Attempt(
        status, reply.status, f"{vendor} {code_field} {code}: {text}", attempt.latency_ms
    )


def _with_query(url: str, extra: Mapping[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k not in extra] + list(extra.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class DingTalkSender:
    """Posts to a DingTalk group robot, signing the URL when the robot has a secret."""

    def __init__(
        self, http: HttpJson, secret: SecretStr | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.http = http
        self.secret = secret
        self.clock = clock

    def post(self, url: str, key: str, body: bytes) -> Attempt:
        """Sign (when there is a secret) and post."""
        if self.secret is not None:
            stamp = int(self.clock() * 1000)
            sign = dingtalk_sign(self.secret.get_secret_value(), stamp)
            url = _with_query(url, {"timestamp": str(stamp), "sign": sign})
        attempt, reply = self.http.post(url, key, body)
        return _vendor_answer(attempt, reply, "errcode", DINGTALK_RETRY, "DingTalk")


class WeComSender:
    """Posts to a WeCom group robot."""

    def __init__(self, http: HttpJson) -> None:
        self.http = http

    def post(self, url: str, key: str, body: bytes) -> Attempt:
        """Post."""
        attempt, reply = self.http.post(url, key, body)
        return _vendor_answer(attempt, reply, "errcode", WECOM_RETRY, "WeCom")


class FeishuSender:
    """Posts to a Feishu or Lark custom bot, signing the body when the bot has a secret."""

    def __init__(
        self, http: HttpJson, secret: SecretStr | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.http = http
        self.secret = secret
        self.clock = clock

    def post(self, url: str, key: str, body: bytes) -> Attempt:
        """Sign (when there is a secret) and post."""
        if self.secret is not None:
            stamp = int(self.clock())
            card = json.loads(body)
            card["timestamp"] = str(stamp)
            card["sign"] = feishu_sign(self.secret.get_secret_value(), stamp)
            body = json.dumps(card, ensure_ascii=False, sort_keys=True).encode("utf-8")
        attempt, reply = self.http.post(url, key, body)
        return _vendor_answer(attempt, reply, "code", FEISHU_RETRY, "Feishu")


_apprise_lock = threading.Lock()


@cache
def _apprise() -> Any:
    """Apprise, imported on first use (its plugins load then, once)."""
    with _apprise_lock:
        # Apprise's email plugin imports imghdr, deprecated since Python 3.11; import it here
        # once, quietly, so that the warning neither reaches users nor fails the tests
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import imghdr  # noqa: F401

            import apprise

            apprise.Apprise().add("json://127.0.0.1/")  # loads every plugin
        return apprise


def _apprise_notify(url: str, title: str, body: str, markdown: bool) -> Attempt:
    """One Apprise notification; its failures are retried (Apprise says no more than that)."""
    apprise = _apprise()
    started = time.perf_counter()
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return Attempt("failed", None, "Apprise does not accept the URL", 0.0)
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = notifier.notify(
            title=title,
            body=body,
            body_format=apprise.NotifyFormat.MARKDOWN if markdown else apprise.NotifyFormat.TEXT,
        )
    took = (time.perf_counter() - started) * 1000
    if ok:
        return Attempt("delivered", None, None, took)
    lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    return Attempt("retry", None, (lines[-1] if lines else "Apprise: not sent")[:300], took)


class EmailSender:
    """Sends email through Apprise's ``mailto://`` (the SMTP server of ``mail_url``)."""

    def __init__(self, mail_url: SecretStr | None) -> None:
        self.mail_url = mail_url

    def post(self, target: str, key: str, body: bytes) -> Attempt:
        """Mail the body's subject and markdown to the addresses of ``target`` (``mailto:…``)."""
        if self.mail_url is None:
            return Attempt("retry", None, "no SMTP server: set CROWDWATCH_MAIL_URL", 0.0)
        data = json.loads(body)
        url = self.mail_url.get_secret_value()
        to = target.removeprefix("mailto:")
        extra = {"to": to, "+X-Idempotency-Key": key}
        url = _with_query(url, extra)
        return _apprise_notify(url, data["subject"], data["markdown"], markdown=True)


class SmsSender:
    """Sends SMS through the configured gateway: a JSON HTTP gateway or an Apprise SMS URL."""

    def __init__(self, http: HttpJson, gateway: SecretStr | None, token: SecretStr | None) -> None:
        self.http = http
        self.gateway = gateway
        self.token = token

    def post(self, target: str, key: str, body: bytes) -> Attempt:
        """Send the body's text to the numbers of ``target`` (``sms:…``)."""
        if self.gateway is None:
            return Attempt("retry", None, "no SMS gateway: set CROWDWATCH_SMS_GATEWAY", 0.0)
        numbers = target.removeprefix("sms:").split(",")
        text = json.loads(body)["text"]
        gateway = self.gateway.get_secret_value()
        if gateway.startswith(("http://", "https://")):
            headers = (
                {"Authorization": f"Bearer {self.token.get_secret_value()}"} if self.token else {}
            )
            data = {"to": numbers, "text": text, "idempotency_key": key}
            encoded = json.dumps(data, ensure_ascii=False).encode("utf-8")
            attempt, _ = self.http.post(gateway, key, encoded, headers)
            return attempt
        url = gateway.replace("{to}", "/".join(urllib.parse.quote(n) for n in numbers))
        return _apprise_notify(url, "", text, markdown=False)


class AppriseSender:
    """Sends through any Apprise URL."""

    def __init__(self, url: SecretStr) -> None:
        self.url = url

    def post(self, target: str, key: str, body: bytes) -> Attempt:
        """Notify the body's title and markdown."""
        data = json.loads(body)
        return _apprise_notify(self.url.get_secret_value(), data["title"], data["body"], True)


@dataclass(frozen=True)
class ChannelSettings:
    """What the channels need besides the site file: timeouts, the SMTP server, the SMS gateway."""

    timeout_s: float = 2.0
    mail_url: SecretStr | None = None
    sms_gateway: SecretStr | None = None
    sms_token: SecretStr | None = None


class Channels:
    """Sends outbox rows to their channels: a sender per target, the generic webhook otherwise.

    Built from every channel of every contact of the site (`for_site`): a row's ``target``
    (`Channel.target`) picks its sender. A target the site does not know (a row written under
    an older site file, or a bare webhook URL) is posted as the generic webhook.
    """

    def __init__(self, channels: Iterable[Channel], settings: ChannelSettings) -> None:
        self.settings = settings
        self.http = HttpJson(settings.timeout_s)
        self.webhook = WebhookPoster(settings.timeout_s)
        self.email = EmailSender(settings.mail_url)
        self.sms = SmsSender(self.http, settings.sms_gateway, settings.sms_token)
        self._senders: dict[str, Any] = {}
        self._labels: dict[str, str] = {}
        for channel in channels:
            self._labels.setdefault(channel.target, channel.label)
            self._senders.setdefault(channel.target, self._sender(channel))

    @classmethod
    def for_site(cls, site: Site, settings: ChannelSettings) -> Channels:
        """The channels of every contact of ``site``: the stations' and the site-wide ones."""
        contacts = [c for station in site.stations for c in station.contacts.values()]
        contacts += site.response.contacts.values()
        return cls((channel for c in contacts for channel in c.all_channels), settings)

    def _sender(self, channel: Channel) -> Any:
        if isinstance(channel, DingTalkChannel):
            return DingTalkSender(self.http, channel.secret)
        if isinstance(channel, WeComChannel):
            return WeComSender(self.http)
        if isinstance(channel, FeishuChannel):
            return FeishuSender(self.http, channel.secret)
        if isinstance(channel, EmailChannel):
            return self.email
        if isinstance(channel, SmsChannel):
            return self.sms
        if isinstance(channel, AppriseChannel):
            return AppriseSender(channel.url)
        return self.webhook

    def label(self, target: str) -> str:
        """A target for a log line: the channel's type and host, never a token or secret."""
        if target in self._labels:
            return self._labels[target]
        return f"webhook {urllib.parse.urlsplit(target).netloc or target.split(':', 1)[0]}"

    def post(self, target: str, key: str, body: bytes) -> Attempt:
        """Send one row's ``body`` to ``target`` once; never raises."""
        sender = self._senders.get(target)
        if sender is None:
            if target.startswith(("http://", "https://")):
                return self.webhook.post(target, key, body)
            return Attempt("failed", None, "channel not in the site file any more", 0.0)
        try:
            attempt: Attempt = sender.post(target, key, body)
        except Exception as exc:  # a sender's bug must not stop the dispatcher's thread
            log.exception("alert channel %s failed", self.label(target))
            return Attempt("retry", None, f"{type(exc).__name__}", 0.0)
        return attempt
