# grafana-client ships py.typed but leaves its methods unannotated.
# mypy: disable-error-code="no-untyped-call"
"""Push dashboards and alerting to a running Grafana: ``crowdwatch grafana push``.

`push` creates or updates, in this order (each step needs the ones before it): the folder, the
ClickHouse data source, every dashboard (in the folder), the contact points, the alert rule
groups and the notification policy tree. It reads what is there first and writes only what
differs, so a second run changes nothing and reports every object unchanged.

"Differs" means: some field we set has another value in Grafana (`covers`). Fields Grafana adds
(ids, versions, defaults) are ignored, and so are secrets Grafana does not return: a data source
password is sent when the data source is created or has none, not to detect a change of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException
from niquests.exceptions import RequestException

from crowdwatch.site import Site
from dashboards.alerting import (
    FOLDER_TITLE,
    FOLDER_UID,
    contact_points,
    notification_policy,
    policy_json,
    rule_groups,
    to_json,
)
from dashboards.provisioning import ClickHouseSource, datasource

Kind = Literal["folder", "datasource", "dashboard", "contact_point", "rule_group", "policy_tree"]
Outcome = Literal["created", "updated", "unchanged"]
KINDS: tuple[Kind, ...] = (
    "folder",
    "datasource",
    "dashboard",
    "contact_point",
    "rule_group",
    "policy_tree",
)
OUTCOMES: tuple[Outcome, ...] = ("created", "updated", "unchanged")
REDACTED = "[REDACTED]"
"""What Grafana returns in place of a secret setting."""

T = TypeVar("T")


class GrafanaPushError(RuntimeError):
    """Grafana refused or could not be reached; the message names the object and the reason."""


@dataclass
class PushSummary:
    """What a push did: the names of the objects created, updated and unchanged, per kind."""

    results: dict[Kind, dict[Outcome, list[str]]] = field(
        default_factory=lambda: {kind: {o: [] for o in OUTCOMES} for kind in KINDS}
    )

    def record(self, kind: Kind, name: str, outcome: Outcome) -> None:
        """Note one object's outcome."""
        self.results[kind][outcome].append(name)

    def count(self, outcome: Outcome) -> int:
        """How many objects of every kind had ``outcome``."""
        return sum(len(by[outcome]) for by in self.results.values())

    def changed(self) -> bool:
        """Whether anything was created or updated."""
        return self.count("created") + self.count("updated") > 0

    def lines(self) -> list[str]:
        """One line per kind: ``dashboard: 1 created, 0 updated, 1 unchanged``."""
        return [
            f"{kind}: " + ", ".join(f"{len(by[o])} {o}" for o in OUTCOMES)
            for kind, by in self.results.items()
        ]


def covers(current: Any, desired: Any) -> bool:
    """Whether ``current`` (what Grafana has) already says everything ``desired`` says.

    Dicts: every key of ``desired`` is in ``current`` with a covered value (extra keys in
    ``current`` are Grafana's own and ignored). Lists: the same length, item by item. Numbers
    compare by value (``1 == 1.0``), never a bool with a number. A secret Grafana returns as
    ``[REDACTED]`` covers anything.
    """
    if current == REDACTED and isinstance(desired, str):
        return True
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(
            key in current and covers(current[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(covers(c, d) for c, d in zip(current, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(current, bool):
        return type(desired) is type(current) and desired == current
    if isinstance(desired, int | float) and isinstance(current, int | float):
        return float(desired) == float(current)
    return bool(current == desired)


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _message(exc: BaseException) -> str:
    """Grafana's own message (``HTTP 403: ...``), or the root cause of a connection error."""
    if isinstance(exc, GrafanaException):
        response = exc.response
        text = response.get("message") if isinstance(response, dict) else None
        detail = f"HTTP {exc.status_code}: {text}" if text and exc.status_code else exc.message
    else:
        cause = _ERRNO.search(str(exc))
        detail = cause[1] if cause else f"{type(exc).__name__}: {exc}"
    return " ".join(str(detail).split())


@contextmanager
def _grafana(what: str, api: GrafanaApi) -> Iterator[None]:
    """Turn a Grafana or connection error into one `GrafanaPushError` naming ``what``."""
    try:
        yield
    except GrafanaException as exc:
        raise GrafanaPushError(f"{what}: Grafana said {_message(exc)}") from exc
    except (RequestException, OSError) as exc:
        raise GrafanaPushError(
            f"{what}: cannot reach Grafana at {api.url} ({_message(exc)})"
        ) from exc


def _get_or_none(what: str, api: GrafanaApi, get: Callable[[], T]) -> T | None:
    """``get()``, or None when Grafana answers 404."""
    with _grafana(what, api):
        try:
            return get()
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise


@dataclass(frozen=True)
class Desired:
    """Everything a push writes, as Grafana's HTTP API takes it."""

    folder: dict[str, Any]
    datasource: dict[str, Any]
    dashboards: dict[str, dict[str, Any]]
    contact_points: list[dict[str, Any]]
    rule_groups: list[dict[str, Any]]
    policy_tree: dict[str, Any]


def desired(
    site: Site,
    *,
    folder: str = FOLDER_UID,
    clickhouse: ClickHouseSource | None = None,
    dashboards: Mapping[str, dict[str, Any]] | None = None,
) -> Desired:
    """What Grafana should hold for ``site``, with the rules and dashboards in ``folder``.

    ``dashboards`` defaults to every dashboard of `dashboards.build`, by uid.
    """
    if dashboards is None:
        from dashboards.build import built_dashboards

        dashboards = built_dashboards()
    source = clickhouse or ClickHouseSource()
    groups = []
    for group in rule_groups(site):
        body = to_json(group)
        body["folderUid"] = folder
        for rule in body["rules"]:
            rule["folderUID"] = folder
            # the org is the token's; Grafana fills it in
            rule.pop("orgID", None)
        groups.append(body)
    boards = {}
    for uid, board in dashboards.items():
        boards[uid] = {k: v for k, v in board.items() if k not in ("id", "version")}
    return Desired(
        folder={"uid": folder, "title": FOLDER_TITLE if folder == FOLDER_UID else folder},
        datasource=datasource(source, source.password),
        dashboards=boards,
        contact_points=[to_json(p) for p in contact_points(site)],
        rule_groups=groups,
        policy_tree=policy_json(notification_policy(site)),
    )


def connect(url: str, token: str | None, *, timeout: float = 10.0) -> GrafanaApi:
    """A client for the Grafana at ``url`` (``http(s)://host:3000``), with a bearer token.

    Raises:
        GrafanaPushError: the URL is not http(s) with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GrafanaPushError(f"Grafana URL {url!r}: expected http(s)://host:port")
    api: GrafanaApi = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    return api


def push(
    url: str,
    token: str | None,
    *,
    site: Site,
    folder: str = FOLDER_UID,
    clickhouse: ClickHouseSource | None = None,
    dashboards: Mapping[str, dict[str, Any]] | None = None,
    timeout: float = 10.0,
) -> PushSummary:
    """Create or update the folder, data source, dashboards and alerting at a Grafana.

    Args:
        url: Grafana's base URL, e.g. ``http://localhost:3000``.
        token: a service account token with the Admin role (or None: credentials in the URL).
        site: the site whose rules, contact points and routing to push.
        folder: the uid (and title) of the folder for the dashboards and rules.
        clickhouse: where the data source connects (its password is sent when needed).
        dashboards: dashboard JSON by uid (default: `dashboards.build.dashboards`).
        timeout: seconds for each HTTP request.

    Raises:
        GrafanaPushError: Grafana refused a write or could not be reached; the message names
            the object and Grafana's reason.
    """
    want = desired(site, folder=folder, clickhouse=clickhouse, dashboards=dashboards)
    api = connect(url, token, timeout=timeout)
    summary = PushSummary()
    _push_folder(api, want.folder, summary)
    _push_datasource(api, want.datasource, summary)
    for uid, board in want.dashboards.items():
        _push_dashboard(api, uid, board, folder, summary)
    _push_contact_points(api, want.contact_points, summary)
    for group in want.rule_groups:
        _push_rule_group(api, group, summary)
    _push_policy_tree(api, want.policy_tree, summary)
    return summary


def _push_folder(api: GrafanaApi, want: dict[str, Any], summary: PushSummary) -> None:
    what = f"folder {want['uid']!r}"
    have = _get_or_none(what, api, lambda: api.folder.get_folder(want["uid"]))
    with _grafana(what, api):
        if have is None:
            api.folder.create_folder(want["title"], uid=want["uid"])
            summary.record("folder", want["uid"], "created")
        elif covers(have, want):
            summary.record("folder", want["uid"], "unchanged")
        else:
            api.folder.update_folder(want["uid"], title=want["title"], overwrite=True)
            summary.record("folder", want["uid"], "updated")


def _push_datasource(api: GrafanaApi, want: dict[str, Any], summary: PushSummary) -> None:
    uid = want["uid"]
    what = f"data source {uid!r}"
    have = _get_or_none(what, api, lambda: api.datasource.get_datasource_by_uid(uid))
    public = {k: v for k, v in want.items() if k != "secureJsonData"}
    with _grafana(what, api):
        if have is None:
            api.datasource.create_datasource(want)
            summary.record("datasource", uid, "created")
            return
        password_missing = "secureJsonData" in want and not (
            have.get("secureJsonFields") or {}
        ).get("password")
        if covers(have, public) and not password_missing:
            summary.record("datasource", uid, "unchanged")
            return
        api.datasource.update_datasource_by_uid(uid, want if password_missing else public)
        summary.record("datasource", uid, "updated")


def _push_dashboard(
    api: GrafanaApi, uid: str, board: dict[str, Any], folder: str, summary: PushSummary
) -> None:
    what = f"dashboard {uid!r}"
    have = _get_or_none(what, api, lambda: api.dashboard.get_dashboard(uid))
    if have is not None:
        in_folder = (have.get("meta") or {}).get("folderUid") == folder
        if in_folder and covers(have.get("dashboard"), board):
            summary.record("dashboard", uid, "unchanged")
            return
    with _grafana(what, api):
        api.dashboard.update_dashboard(
            {
                "dashboard": board,
                "folderUid": folder,
                "overwrite": True,
                "message": "crowdwatch grafana push",
            }
        )
    summary.record("dashboard", uid, "created" if have is None else "updated")


def _push_contact_points(
    api: GrafanaApi, wanted: list[dict[str, Any]], summary: PushSummary
) -> None:
    with _grafana("contact points", api):
        have = {p.get("uid"): p for p in api.alertingprovisioning.get_contactpoints() or []}
    for want in wanted:
        uid = want["uid"]
        with _grafana(f"contact point {uid!r}", api):
            if uid not in have:
                api.alertingprovisioning.create_contactpoint(want)
                summary.record("contact_point", uid, "created")
            elif covers(have[uid], want):
                summary.record("contact_point", uid, "unchanged")
            else:
                api.alertingprovisioning.update_contactpoint(uid, want)
                summary.record("contact_point", uid, "updated")


def _push_rule_group(api: GrafanaApi, want: dict[str, Any], summary: PushSummary) -> None:
    folder, title = want["folderUid"], want["title"]
    what = f"alert rule group {title!r} in folder {folder!r}"
    have = _get_or_none(what, api, lambda: api.alertingprovisioning.get_rule_group(folder, title))
    if have is not None and covers(have, want):
        summary.record("rule_group", title, "unchanged")
        return
    with _grafana(what, api):
        api.alertingprovisioning.update_rule_group(folder, title, want)
    summary.record("rule_group", title, "created" if have is None else "updated")


def _push_policy_tree(api: GrafanaApi, want: dict[str, Any], summary: PushSummary) -> None:
    what = "notification policy tree"
    with _grafana(what, api):
        have = api.alertingprovisioning.get_notification_policy_tree()
        if covers(have, want):
            summary.record("policy_tree", "root", "unchanged")
            return
        api.alertingprovisioning.set_notification_policy_tree(want)
    summary.record("policy_tree", "root", "updated")
