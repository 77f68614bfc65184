"""Grafana alerting as code: alert rules, contact points and the notification policy tree.

Grafana is the second line behind the pipeline's own alerts (`crowdwatch.risk.notify`): it reads the
warehouse the pipeline writes and calls the same people when a zone's level, a forecast or a
burst of 110 calls says so, and it calls the operators when the pipeline or the cameras fail.

Everything is built from the site file:

- Big crowd: a rule per level that some station routes to someone (yellow, orange and red by
  default) on the newest level of every zone in ``zone_state``; label ``level`` is the rule's
  level, ``zone_id`` and ``station_id`` come from the query.
- Forecast early warning: open ``predicted_big_crowd`` alerts, labelled with the predicted level;
  every zone of the site without one reads 0 (level ``''``), so it has a series, not NoData.
- 110 call bursts, camera online rate below 90 % and working rate below 95 %, and a stalled
  pipeline (no new ``zone_state`` row for 5 minutes, no data, or a failing query).
- Contact points: one per role, a placeholder webhook that says to set it in the site file; a
  station whose contact for a role has channels Grafana can call (webhook, DingTalk as
  ``dingding``, WeCom as ``wecom``, email) gets its own, one integration per channel.
- The policy tree mirrors `Site.routes`: an alert with ``level=L`` (and ``station_id=S``) goes to
  exactly the roles the site routes ``L`` to at ``S``; everything else (health, call bursts, a
  level routed to nobody) goes to the operators' contact point at the root.

Alert queries are table-format SQL on the ClickHouse data source returning one numeric column
(the value) and string columns (the labels); a reduce and a threshold expression follow.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as alerting_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

from crowdwatch.risk.levels import LEVELS
from crowdwatch.site import (
    Contact,
    DingTalkChannel,
    EmailChannel,
    Level,
    Role,
    Site,
    WebhookChannel,
    WeComChannel,
)
from dashboards.cameras import ONLINE_TARGET, WORKING_TARGET
from dashboards.panels import DATASOURCE, sql

FOLDER_UID = "crowdwatch"
"""The folder of the dashboards and the alert rules."""

FOLDER_TITLE = "crowdwatch"

OPERATIONS = "crowdwatch-operations"
"""The root receiver: whoever runs crowdwatch (health alerts, call bursts, unrouted levels)."""

PLACEHOLDER_WEBHOOK = "https://set-a-webhook-in-the-site-file.invalid/crowdwatch/{name}"
"""The URL of a contact point the site file gives no webhook for (``.invalid`` never resolves)."""

STALL_AFTER_S = 300
"""The pipeline counts as stalled when its newest ``zone_state`` row is older than this."""

EXPRESSION = dashboard_model.DataSourceRef(type_val="__expr__", uid="__expr__")
Comparison = Literal["gt", "lt"]

# The newest level of every zone seen in the range: 1 when it is the rule's level, else 0.
# argMax over a one-element tuple keeps a newest NULL (no warning) instead of an older level.
BIG_CROWD_SQL = """
SELECT
    zone_id,
    station_id,
    toUInt8(ifNull(argMax(tuple(level), ts).1, 'none') = '{level}') AS at_level
FROM zone_state FINAL
WHERE $__timeFilter(ts)
GROUP BY zone_id, station_id
"""

# Predicted big crowds raised in the last two hours (their horizon), per zone and level. A zone
# of the site without one is one row with level '' and 0: every zone keeps a series that reads
# 0 (normal) instead of going NoData and back whenever a forecast warns.
PREDICTED_SQL = """
SELECT
    z.zone_id AS zone_id,
    z.station_id AS station_id,
    ifNull(p.level, '') AS level,
    ifNull(p.predicted, 0) AS predicted
FROM (SELECT zone_id, station_id FROM site_zones FINAL) AS z
LEFT JOIN
(
    SELECT zone_id, level, toUInt32(uniqExact(alert_id)) AS predicted
    FROM alerts FINAL
    WHERE kind = 'predicted_big_crowd' AND event != 'resolved' AND $__timeFilter(ts)
    GROUP BY zone_id, level
) AS p ON p.zone_id = z.zone_id
ORDER BY zone_id, level
"""

# The newest burst decision of every zone, station and district with calls in the range.
CALL_BURST_SQL = """
SELECT
    b.key AS key,
    b.scope AS scope,
    if(b.scope = 'zone', b.key, '') AS zone_id,
    multiIf(b.scope = 'station', b.key, b.scope = 'zone', z.station_id, '') AS station_id,
    b.burst AS burst
FROM
(
    SELECT key, level AS scope, argMax(alert, ts) AS burst
    FROM call_bursts FINAL
    WHERE $__timeFilter(ts)
    GROUP BY key, level
) AS b
LEFT JOIN (SELECT zone_id, station_id FROM site_zones FINAL) AS z ON z.zone_id = b.key
"""

CAMERA_SQL = "SELECT {column} FROM camera_network WHERE cameras > 0"

# Seconds from the newest zone_state row to now; no row in the range at all gives no data.
STALLED_SQL = """
SELECT toFloat64(dateDiff('second', max(ts), $__toTime)) AS seconds_since_newest
FROM zone_state
WHERE $__timeFilter(ts)
HAVING count() > 0
"""


# Alert events of the last hour (event time) whose delivery to a role is still being retried, was
# refused or was given up; roles without a contact are a set-up matter, shown on the dashboard.
# Drills are left out: an exercise's missed delivery is for its drill report, not a page.
UNDELIVERED_SQL = """
SELECT toFloat64(countIf(status IN ('retry', 'failed', 'expired'))) AS undelivered
FROM
(
    SELECT argMax(status, attempt) AS status
    FROM alert_deliveries FINAL
    WHERE $__timeFilter(event_ts) AND kind != 'drill'
    GROUP BY idempotency_key, channel
)
"""


@dataclass(frozen=True)
class RuleSpec:
    """One alert rule before it is built: its SQL, time range, threshold and states."""

    uid: str
    title: str
    group: str
    sql: str
    range_s: int
    comparison: Comparison
    threshold: float
    labels: dict[str, str]
    summary: str
    for_: str = "0s"
    no_data: Literal["Alerting", "NoData", "OK"] = "OK"
    exec_err: Literal["OK", "Alerting", "Error"] = "OK"


CROWD_GROUP = "crowdwatch-crowd"
HEALTH_GROUP = "crowdwatch-health"
GROUP_INTERVAL_S = 60

_FOR: dict[Level, str] = {"blue": "5m", "yellow": "2m", "orange": "1m", "red": "0s"}


def routed_levels(site: Site) -> list[Level]:
    """The levels some station routes to at least one role, lowest first."""
    return [lv for lv in LEVELS if any(site.routes(s.id, lv) for s in site.stations)]


def rule_specs(site: Site) -> list[RuleSpec]:
    """Every alert rule of the site, in the order they are shown."""
    specs = [
        RuleSpec(
            uid=f"crowdwatch-big-crowd-{level}",
            title=f"Big crowd: {level}",
            group=CROWD_GROUP,
            sql=BIG_CROWD_SQL.format(level=level),
            range_s=600,
            comparison="gt",
            threshold=0,
            labels={"kind": "big_crowd", "level": level, "source": "grafana"},
            summary=(
                f"Zone {{{{ $labels.zone_id }}}} at station {{{{ $labels.station_id }}}} "
                f"is at level {level} (the newest zone state)."
            ),
            for_=_FOR[level],
        )
        for level in routed_levels(site)
    ]
    specs += [
        RuleSpec(
            uid="crowdwatch-predicted-big-crowd",
            title="Predicted big crowd",
            group=CROWD_GROUP,
            sql=PREDICTED_SQL,
            range_s=7200,
            comparison="gt",
            threshold=0,
            labels={"kind": "predicted_big_crowd", "source": "grafana"},
            summary=(
                "The forecast puts zone {{ $labels.zone_id }} at station "
                "{{ $labels.station_id }} at level {{ $labels.level }} within two hours."
            ),
        ),
        RuleSpec(
            uid="crowdwatch-call-burst",
            title="Burst of 110 calls",
            group=CROWD_GROUP,
            sql=CALL_BURST_SQL,
            range_s=900,
            comparison="gt",
            threshold=0,
            labels={"kind": "call_burst", "source": "grafana"},
            summary=(
                "A burst of crowd-related 110 calls at {{ $labels.scope }} {{ $labels.key }}."
            ),
        ),
        RuleSpec(
            uid="crowdwatch-cameras-online",
            title="Cameras online below target",
            group=HEALTH_GROUP,
            sql=CAMERA_SQL.format(column="online_rate"),
            range_s=600,
            comparison="lt",
            threshold=ONLINE_TARGET,
            labels={"kind": "camera_health", "source": "grafana"},
            summary=(
                f"Fewer than {ONLINE_TARGET:.0%} of the site's cameras are online "
                "({{ $values.B }})."
            ),
            for_="5m",
        ),
        RuleSpec(
            uid="crowdwatch-cameras-working",
            title="Cameras working below target",
            group=HEALTH_GROUP,
            sql=CAMERA_SQL.format(column="working_rate"),
            range_s=600,
            comparison="lt",
            threshold=WORKING_TARGET,
            labels={"kind": "camera_health", "source": "grafana"},
            summary=(
                f"Fewer than {WORKING_TARGET:.0%} of the site's cameras are working "
                "(online and not stuck): {{ $values.B }}."
            ),
            for_="5m",
        ),
        RuleSpec(
            uid="crowdwatch-pipeline-stalled",
            title="Pipeline stalled",
            group=HEALTH_GROUP,
            sql=STALLED_SQL,
            range_s=3 * STALL_AFTER_S,
            comparison="gt",
            threshold=STALL_AFTER_S,
            labels={"kind": "pipeline_stalled", "source": "grafana"},
            summary=(
                f"No new zone state for more than {STALL_AFTER_S // 60} minutes, or the "
                "warehouse cannot be queried: the pipeline's own alerts are not being raised."
            ),
            no_data="Alerting",
            exec_err="Alerting",
        ),
        RuleSpec(
            uid="crowdwatch-alerts-undelivered",
            title="Alerts not delivered",
            group=HEALTH_GROUP,
            sql=UNDELIVERED_SQL,
            range_s=3600,
            comparison="gt",
            threshold=0,
            labels={"kind": "alert_delivery", "source": "grafana"},
            summary=(
                "{{ $values.B }} alert event(s) of the last hour have not reached a role: "
                "the receiver is failing or refused them (see the pipeline health dashboard)."
            ),
            for_="2m",
        ),
    ]
    return specs


def _rule(spec: RuleSpec) -> alerting.Rule:
    reduce = (
        expr.TypeReduce()
        .ref_id("B")
        .datasource(EXPRESSION)
        .expression("A")
        .reducer("last")
        .settings(expr.ExprTypeReduceSettings().mode("dropNN"))
    )
    threshold = (
        expr.TypeThreshold()
        .ref_id("C")
        .datasource(EXPRESSION)
        .expression("B")
        .conditions(
            [
                expr.ExprTypeThresholdConditions().evaluator(
                    expr.ExprTypeThresholdConditionsEvaluator()
                    .type(spec.comparison)
                    .params([spec.threshold])
                )
            ]
        )
    )
    clickhouse = DATASOURCE.uid or ""
    return (
        alerting.Rule(spec.title)
        .uid(spec.uid)
        .folder_uid(FOLDER_UID)
        .rule_group(spec.group)
        .org_id(1)
        .condition("C")
        .with_query(
            alerting.Query("A")
            .datasource_uid(clickhouse)
            .relative_time_range(alerting_model.RelativeTimeRange(from_val=spec.range_s, to=0))
            .model(sql(spec.sql, ref_id="A", table=True))
        )
        .with_query(
            alerting.Query("B")
            .datasource_uid(EXPRESSION.uid or "")
            .relative_time_range(alerting_model.RelativeTimeRange(from_val=0, to=0))
            .model(reduce)
        )
        .with_query(
            alerting.Query("C")
            .datasource_uid(EXPRESSION.uid or "")
            .relative_time_range(alerting_model.RelativeTimeRange(from_val=0, to=0))
            .model(threshold)
        )
        .for_val(spec.for_)
        .no_data_state(spec.no_data)
        .exec_err_state(spec.exec_err)
        .labels(spec.labels)
        .annotations({"summary": spec.summary})
        .is_paused(False)
    )


def rule_groups(site: Site) -> list[alerting.RuleGroup]:
    """The alert rule groups (crowd, health), every rule in the crowdwatch folder."""
    groups: dict[str, alerting.RuleGroup] = {}
    for spec in rule_specs(site):
        if spec.group not in groups:
            groups[spec.group] = (
                alerting.RuleGroup(spec.group).folder_uid(FOLDER_UID).interval(GROUP_INTERVAL_S)
            )
        groups[spec.group].with_rule(_rule(spec))
    return list(groups.values())


GrafanaKind = Literal["webhook", "dingding", "wecom", "email"]
"""The Grafana integrations the site's channels map to."""


def grafana_integrations(contact: Contact | None) -> list[tuple[str, GrafanaKind, dict[str, Any]]]:
    """The contact's channels Grafana can call itself: ``(channel id, type, settings)``.

    The generic webhook (``webhook``), DingTalk robots (``dingding``: Grafana does not sign, so
    a signed robot refuses it; give Grafana's robot a keyword or IP allow-list instead), WeCom
    robots (``wecom``) and email (``email``, through Grafana's own SMTP settings). Grafana has
    no Feishu/Lark, SMS or Apprise integration: those channels are the pipeline's alone.
    """
    if contact is None:
        return []
    found: list[tuple[str, GrafanaKind, dict[str, Any]]] = []
    for channel in contact.all_channels:
        if isinstance(channel, WebhookChannel):
            found.append(
                (channel.channel_id, "webhook", {"url": channel.url, "httpMethod": "POST"})
            )
        elif isinstance(channel, DingTalkChannel):
            found.append((channel.channel_id, "dingding", {"url": channel.url, "msgType": "link"}))
        elif isinstance(channel, WeComChannel):
            found.append((channel.channel_id, "wecom", {"url": channel.url}))
        elif isinstance(channel, EmailChannel):
            found.append(
                (
                    channel.channel_id,
                    "email",
                    {"addresses": ";".join(channel.to), "singleEmail": False},
                )
            )
    return found


def _has_webhook(site: Site, station_id: str, role: Role) -> bool:
    """Whether the station's contact for ``role`` has a channel Grafana can call."""
    return bool(grafana_integrations(site.station_by_id[station_id].contacts.get(role)))


def receiver_name(site: Site, station_id: str | None, role: Role) -> str:
    """The contact point for ``role`` at a station: its own if it has channels, else the role's."""
    if station_id is not None and _has_webhook(site, station_id, role):
        return f"crowdwatch-{station_id}-{role}"
    return f"crowdwatch-{role}"


def _specific_stations(site: Site) -> list[str]:
    """Stations that need routes of their own: their own routing or a webhook of their own."""
    return [
        s.id
        for s in site.stations
        if s.routing is not None or any(grafana_integrations(c) for c in s.contacts.values())
    ]


def _matcher(name: str, value: str) -> alerting_model.Matcher:
    return alerting_model.Matcher(name=name, type=alerting_model.MatchType.EQUAL, value=value)


Route = cogbuilder.Builder[alerting_model.NotificationPolicy]


def _fan_out(receivers: list[str]) -> list[Route]:
    # Sibling routes without matchers all match; `continue` lets each one notify.
    return [alerting.NotificationPolicy().receiver(r).continue_val(True) for r in receivers]


def notification_policy(site: Site) -> alerting.NotificationPolicy:
    """The policy tree: ``level`` (then ``station_id``) routes to the site's roles for it."""
    level_routes: list[Route] = []
    specific = _specific_stations(site)
    for level in routed_levels(site):
        children: list[Route] = []
        for station_id in specific:
            roles = site.routes(station_id, level)
            station = alerting.NotificationPolicy().object_matchers(
                [_matcher("station_id", station_id)]
            )
            if roles:
                station = station.routes(
                    _fan_out([receiver_name(site, station_id, role) for role, _ in roles])
                )
            else:
                station = station.receiver(OPERATIONS)
            children.append(station)
        children += _fan_out(
            [receiver_name(site, None, role) for role in site.routing.roles(level)]
        )
        level_routes.append(
            alerting.NotificationPolicy()
            .object_matchers([_matcher("level", level)])
            .routes(children)
        )
    return (
        alerting.NotificationPolicy()
        .receiver(OPERATIONS)
        .group_by(["alertname", "level", "station_id", "zone_id"])
        .group_wait("10s")
        .group_interval("1m")
        .repeat_interval("15m")
        .routes(level_routes)
    )


def _receivers(policy: alerting_model.NotificationPolicy) -> Iterator[str]:
    if policy.receiver:
        yield policy.receiver
    for child in policy.routes or []:
        yield from _receivers(child)


def contact_point_uid(name: str) -> str:
    """A contact point's uid: its name in the characters Grafana allows, at most 40 of them."""
    uid = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    if len(uid) > 40:
        uid = uid[:31] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return uid


def contact_points(site: Site) -> list[alerting.ContactPoint]:
    """The contact points of every receiver the policy tree names, operators first.

    A receiver is one contact point with one integration per channel Grafana can call
    (`grafana_integrations`): Grafana groups integrations by name. The first keeps the uid of
    the name; a receiver the site gives no channel gets a placeholder webhook.
    """
    names = list(dict.fromkeys(_receivers(notification_policy(site).build())))
    integrations: dict[str, list[tuple[str, GrafanaKind, dict[str, Any]]]] = {}
    for station in site.stations:
        for role, contact in station.contacts.items():
            if found := grafana_integrations(contact):
                integrations[receiver_name(site, station.id, role)] = found
    points = []
    for name in names:
        placeholder = {"url": PLACEHOLDER_WEBHOOK.format(name=name), "httpMethod": "POST"}
        for i, (channel_id, kind, settings) in enumerate(
            integrations.get(name, [("webhook", "webhook", placeholder)])
        ):
            points.append(
                alerting.ContactPoint()
                .uid(contact_point_uid(name if i == 0 else f"{name}-{channel_id}"))
                .name(name)
                .type(kind)
                .settings(settings)
                .disable_resolve_message(False)
            )
    return points


def role_of(site: Site, receiver: str) -> Role | None:
    """The role a contact point calls, or None for the operators'."""
    roles = site.roles
    for station in [None, *(s.id for s in site.stations)]:
        for role in roles:
            if receiver_name(site, station, role) == receiver:
                return role
    return None


def to_json(value: Any) -> Any:
    """An SDK object (or builder) as plain JSON values: dicts, lists, strings and numbers."""
    if hasattr(value, "build"):
        value = value.build()
    return json.loads(json.dumps(value, cls=JSONEncoder))


def policy_json(policy: alerting.NotificationPolicy) -> dict[str, Any]:
    """The policy tree as Grafana reads it: ``object_matchers`` as ``[name, op, value]`` triples.

    The SDK writes a matcher as ``{"Name", "Type", "Value"}``; Grafana's API and provisioning
    files take the triple form.
    """

    def fix(node: dict[str, Any]) -> dict[str, Any]:
        out = dict(node)
        if "object_matchers" in out:
            out["object_matchers"] = [
                [m["Name"], m["Type"], m["Value"]] for m in out["object_matchers"]
            ]
        if "routes" in out:
            out["routes"] = [fix(child) for child in out["routes"]]
        return out

    tree: dict[str, Any] = to_json(policy)
    return fix(tree)


def route(tree: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The receivers an alert with ``labels`` is sent to, matching as Grafana does.

    At each node the children are tried in order; a matching child is followed (deepest
    match wins) and the walk stops after it unless it has ``continue``. A node none of whose
    children match uses its own receiver, or the nearest ancestor's.
    """

    def matches(node: dict[str, Any]) -> bool:
        for name, op, value in node.get("object_matchers", []):
            if op != "=":
                raise ValueError(f"matcher {name}{op}{value}: only = is used here")
            if labels.get(name, "") != value:
                return False
        return True

    def walk(node: dict[str, Any], inherited: str) -> list[str]:
        receiver = node.get("receiver") or inherited
        found: list[str] = []
        for child in node.get("routes", []):
            if matches(child):
                found += walk(child, receiver)
                if not child.get("continue", False):
                    break
        return found or [receiver]

    return walk(tree, tree["receiver"])
