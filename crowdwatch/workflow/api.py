"""The HTTP JSON API of alert handling, and the acknowledge links, served by ``crowdwatch serve``.

Python's own threading HTTP server: a handful of routes, no framework to learn or pin, the same
server the tests' receivers use. Put a TLS-terminating reverse proxy in front of it in
production.

Acknowledge links (no other credential: the link is one):

* ``GET /ack/<alert>/<role>?t=<token>`` — a page that asks to confirm (changes nothing, so a
  chat app's link preview cannot acknowledge);
* ``POST /ack/<alert>/<role>`` with ``t`` in the query or a form — acknowledges; 403 for a
  forged, expired, replayed link or one made for another alert or role (and logged).

The API, each request with ``Authorization: Bearer <token>`` (``crowdwatch alerts token``); the
token's role and name are the actor; 401 without a valid one:

* ``GET /api/alerts`` (``?all=1``: closed too), ``GET /api/alerts/<alert>``;
* ``POST /api/alerts/<alert>/ack`` ``{"note"}``, ``/notes`` ``{"note"}``, ``/measures``
  ``{"measure", "note"}``, ``/sign-off`` ``{"outcome", "note"}``;
* ``GET /api/unacknowledged``; ``GET /api/audit.csv`` (``?alert=``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from crowdwatch.workflow.links import LinkRefused
from crowdwatch.workflow.service import NotAllowed, Workflow, WorkflowError

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_BODY = 64 * 1024


class HttpError(Exception):
    """An answer other than 200: status and a JSON body."""

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: ApiServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise HttpError(413, "request body too large")
            body = self.rfile.read(length) if length else b""
            status, content_type, payload = self.server.api.route(
                method, parts, query, body, self.headers, self.client_address[0]
            )
        except HttpError as exc:
            status, content_type = exc.status, "application/json"
            payload = json.dumps(exc.body, ensure_ascii=False).encode("utf-8")
        except Exception:
            log.exception("%s %s failed", method, split.path)
            status, content_type = 500, "application/json"
            payload = b'{"error": "internal error"}'
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="crowdwatch"')
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


def _json(value: Any) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(value, ensure_ascii=False, default=str).encode()


class ApiServer:
    """The API and the acknowledge links of ``workflow`` on ``host:port`` (0: any free port).

    ``on_action`` is called after every change (e.g. to export the audit log at once). A
    context manager: serving starts on enter and stops on exit.
    """

    def __init__(
        self,
        workflow: Workflow,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_action: Callable[[], None] | None = None,
    ) -> None:
        self.workflow = workflow
        self.on_action = on_action
        self._server = _Server((host, port), _Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="crowdwatch-api",
            daemon=True,
        )
        self._page = Template((TEMPLATES / "ack.html").read_text(encoding="utf-8"))
        self._form = Template((TEMPLATES / "ack_form.html").read_text(encoding="utf-8"))
        self._texts: dict[str, str] = json.loads(
            (TEMPLATES / "ack_texts.json").read_text(encoding="utf-8")
        )

    @property
    def url(self) -> str:
        """Where the server listens, e.g. ``http://127.0.0.1:8787``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ApiServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.serve_forever(poll_interval=0.1)

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- routing ----------------------------------------------------------------------------

    def route(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        body: bytes,
        headers: Any,
        remote: str,
    ) -> tuple[int, str, bytes]:
        """Answer one request: status, content type and body; raises `HttpError`."""
        if parts == ["healthz"]:
            return _json({"ok": True})
        if len(parts) == 3 and parts[0] == "ack":
            return self._ack_link(method, parts[1], parts[2], query, body, headers, remote)
        if parts and parts[0] == "api":
            role, actor = self._identity(headers)
            return self._api(method, parts[1:], query, body, role, actor)
        raise HttpError(404, "not found")

    def _ack_link(
        self,
        method: str,
        alert_id: str,
        role: str,
        query: dict[str, str],
        body: bytes,
        headers: Any,
        remote: str,
    ) -> tuple[int, str, bytes]:
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        token = form.get("t") or query.get("t") or ""
        html = method == "GET" or "form" in (headers.get("Content-Type") or "")
        if method == "GET":
            try:
                self.workflow.links.verify(token, self.workflow.clock())
            except LinkRefused:
                return self._ack_page(403, alert_id, role, "refused", token=None)
            return self._ack_page(200, alert_id, role, "confirm", token=token)
        try:
            result = self.workflow.acknowledge_link(alert_id, role, token, remote=remote)
        except LinkRefused as refused:
            if html:
                return self._ack_page(403, alert_id, role, "refused", token=None)
            raise HttpError(403, "link refused", reason=refused.reason) from None
        except WorkflowError as exc:
            raise HttpError(403, "link refused", reason=str(exc)) from None
        self._changed()
        if html:
            return self._ack_page(200, alert_id, role, result.status, token=None)
        return _json({"alert_id": alert_id, "role": role, "status": result.status})

    def _ack_page(
        self, status: int, alert_id: str, role: str, text: str, *, token: str | None
    ) -> tuple[int, str, bytes]:
        site = self.workflow.site
        try:
            alert = self.workflow.show(alert_id)
        except WorkflowError:
            alert = {"zone_id": "?", "level": "", "drill": False}
        zone = site.zone_by_id.get(alert["zone_id"])
        page = self._page.substitute(
            level=escape(alert["level"]),
            drill=self._texts["drill"] if alert["drill"] else "",
            zone_name=escape(zone.name if zone else alert["zone_id"]),
            alert_id=escape(alert_id),
            role_name=escape(site.role_name(role, "zh-CN") or role),
            status_text=escape(self._texts[text]),
            form=self._form.substitute(token=escape(token)) if token else "",
        )
        return status, "text/html; charset=utf-8", page.encode("utf-8")

    def _identity(self, headers: Any) -> tuple[str, str]:
        auth = headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        found = self.workflow.token_identity(token.strip()) if scheme.lower() == "bearer" else None
        if found is None:
            raise HttpError(401, "a valid API token is required (Authorization: Bearer …)")
        return found

    def _api(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        body: bytes,
        role: str,
        actor: str,
    ) -> tuple[int, str, bytes]:
        wf = self.workflow
        try:
            if method == "GET" and parts == ["alerts"]:
                return _json(wf.alerts(open_only=query.get("all") != "1"))
            if method == "GET" and parts == ["unacknowledged"]:
                return _json(wf.unacknowledged())
            if method == "GET" and parts == ["audit.csv"]:
                csv = wf.audit_csv(alert_id=query.get("alert"))
                return 200, "text/csv; charset=utf-8", csv.encode("utf-8")
            if method == "GET" and len(parts) == 2 and parts[0] == "alerts":
                return _json(wf.show(parts[1]))
            if method == "POST" and len(parts) == 3 and parts[0] == "alerts":
                return self._post(parts[1], parts[2], _body(body), role, actor)
        except NotAllowed as exc:
            raise HttpError(403, str(exc)) from None
        except WorkflowError as exc:
            status = 404 if str(exc).startswith("no alert") else 400
            raise HttpError(status, str(exc)) from None
        raise HttpError(404, "not found")

    def _post(
        self, alert_id: str, what: str, body: dict[str, Any], role: str, actor: str
    ) -> tuple[int, str, bytes]:
        wf = self.workflow
        note = str(body.get("note") or "")
        if what == "ack":
            result = wf.acknowledge(alert_id, role, actor=actor, channel="api", note=note)
            answer: dict[str, Any] = {"status": result.status}
        elif what == "notes":
            wf.add_note(alert_id, note, actor=actor, role=role, channel="api")
            answer = {"status": "noted"}
        elif what == "measures":
            wf.take_measure(
                alert_id,
                str(body.get("measure") or ""),
                actor=actor,
                role=role,
                channel="api",
                note=note,
            )
            answer = {"status": "recorded"}
        elif what == "sign-off":
            wf.sign_off(
                alert_id,
                str(body.get("outcome") or ""),
                actor=actor,
                role=role,
                channel="api",
                note=note,
            )
            answer = {"status": "closed"}
        else:
            raise HttpError(404, "not found")
        self._changed()
        return _json({"alert_id": alert_id, "role": role, "actor": actor, **answer})

    def _changed(self) -> None:
        if self.on_action is not None:
            try:
                self.on_action()
            except Exception as exc:  # the warehouse may be down; the export retries later
                log.warning("after an action: %s", exc)


def _body(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise HttpError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HttpError(400, "the body must be a JSON object")
    return value
