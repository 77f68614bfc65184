"""Signed one-time acknowledge links: an HMAC token bound to an alert, a role and an expiry.

A token is ``<claims>.<signature>``, both base64url: the claims are the alert id, the role,
the expiry (epoch ms) and a random nonce; the signature is HMAC-SHA256 of the claims under the
site's link key. `LinkSigner.verify` refuses a token whose signature does not match (forged,
or altered) or that has expired; the workflow refuses a nonce used before (replayed) and a
token presented for another alert or role than its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Literal

Refusal = Literal["forged", "expired", "replayed", "wrong_alert", "wrong_role", "unknown_alert"]
"""Why a link was refused."""


class LinkRefused(Exception):
    """An acknowledge link that does not acknowledge anything; ``reason`` says why."""

    def __init__(self, reason: Refusal, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Refusal = reason
        self.detail = detail


@dataclass(frozen=True)
class LinkClaims:
    """What a link says: which alert, which role, until when, and its one-time nonce."""

    alert_id: str
    role: str
    expires_ms: int
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and checks acknowledge tokens with one secret key (at least 16 bytes)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the acknowledge link key must be at least 16 bytes")
        self._key = key

    def _signature(self, claims: str) -> str:
        return _b64(hmac.new(self._key, claims.encode("ascii"), hashlib.sha256).digest())

    def sign(self, alert_id: str, role: str, expires_ms: int) -> str:
        """A fresh token for ``role`` to acknowledge ``alert_id`` until ``expires_ms``."""
        body = json.dumps(
            {"a": alert_id, "r": role, "e": expires_ms, "n": secrets.token_urlsafe(12)},
            separators=(",", ":"),
        )
        claims = _b64(body.encode("utf-8"))
        return f"{claims}.{self._signature(claims)}"

    def verify(self, token: str, now_ms: int) -> LinkClaims:
        """The token's claims, if its signature holds and it has not expired.

        Raises:
            LinkRefused: ``forged`` (malformed, or the signature does not match) or
                ``expired``.
        """
        claims, _, signature = token.partition(".")
        if not claims or not hmac.compare_digest(signature, self._signature(claims)):
            raise LinkRefused("forged", "the signature does not match")
        try:
            raw = json.loads(_unb64(claims))
            found = LinkClaims(str(raw["a"]), str(raw["r"]), int(raw["e"]), str(raw["n"]))
        except (ValueError, KeyError, TypeError) as exc:  # signed by us, so never; still
            raise LinkRefused("forged", f"unreadable claims: {exc}") from None
        if now_ms >= found.expires_ms:
            raise LinkRefused("expired", f"expired at {found.expires_ms}")
        return found
