"""The demo's response loop: the day's red alert handled by simulated duty staff.

The demo's replay tells nobody (a replay is in ``log`` mode). This part takes the day's first red
alert and runs it through the real chain as a live alert would go: the workflow store, the
outbox and its dispatcher posting each role's message to a local receiver, the acknowledge
links served by the real API server, the escalation loop. The clock is the demo's own, started
at the alert's time and moved by hand, so the story takes seconds: the station master
acknowledges from the link in the message, the transit police chief through the API, the local
police chief from the command line, the street office never — and at the deadline the duty chief
is called. A measure of the plan is taken, the alert is signed off, the audit log goes to the
warehouse and the response KPIs are read back from it. Phrases are in ``texts/response_loop.json``
(zh-CN and en).
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl
from pydantic import SecretStr
from rich.console import Console

from crowdwatch.risk.notify import AlertEvent, AlertReceiver
from crowdwatch.settings import Settings
from crowdwatch.site import BUILTIN_ROLES, Contact, Site
from crowdwatch.warehouse.client import Warehouse
from crowdwatch.workflow import kpis
from crowdwatch.workflow.api import ApiServer
from crowdwatch.workflow.loop import Responder

TEXTS = Path(__file__).resolve().parent / "texts" / "response_loop.json"
SECOND = 1000


class DemoClock:
    """The demo's clock (epoch ms), moved by hand."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        """The time now."""
        return self.now


@dataclass(frozen=True)
class LoopSummary:
    """What the loop did: the alert, who acknowledged, who was escalated to, the KPI rows."""

    alert_id: str
    acknowledged: tuple[str, ...]
    escalated_to: tuple[str, ...]
    audit_rows: int
    kpis: pl.DataFrame


def alert_events(alerts: pl.DataFrame) -> list[AlertEvent]:
    """The events of the first alert that reached red, up to its red step (`ALERTS_SQL` rows)."""
    red = alerts.filter(pl.col("level") == "red")
    if red.height == 0:
        return []
    alert_id = red["alert_id"][0]
    events = []
    for row in alerts.filter(pl.col("alert_id") == alert_id).iter_rows(named=True):
        events.append(
            AlertEvent(
                alert_id=row["alert_id"],
                event=row["event"],
                kind="big_crowd",
                zone_id=row["zone_id"],
                station_id=row["station_id"],
                level=row["level"],
                previous_level=row["previous_level"],
                ts_ms=int(row["ts"].timestamp() * 1000),
                reason=row["reason"],
                values={
                    k: float(v)
                    for k, v in json.loads(row.get("values") or "{}").items()
                    if isinstance(v, int | float)
                },
                causes=causes_of(row["reason"]),
            )
        )
        if row["level"] == "red":
            break
    return events


CAUSES = (
    ("of capacity", "capacity"),
    ("persons/m² ≥", "density"),
    ("level of service F", "los_f"),
    ("strong anomaly", "anomaly"),
    ("burst of crowd-related", "burst"),
    ("held while", "held"),
)
"""The parts of an alert's English reason (`crowdwatch.risk.engine.reason`) and their codes."""


def causes_of(reason: str) -> tuple[str, ...]:
    """The cause codes of a stored reason, so the messages say it in their language."""
    if reason.startswith("calm:"):
        return ("calm",)
    return tuple(code for part in reason.split("; ") for text, code in CAUSES if text in part)


def duty_site(site: Site, station_id: str, receiver: AlertReceiver) -> Site:
    """``site`` with simulated contacts on the local receiver, and none of the site file's.

    At ``station_id`` the four built-in roles are reached at ``/<role>``, and so is the duty
    chief site-wide; a role the site file gives a contact of its own (at that station or
    site-wide, a command centre say) is reached there too, and every other station has no
    contact: a simulated alert never pages a real person.
    """
    names = {
        "station_master": "王站长",
        "transit_police": "李所长",
        "local_police": "赵所长",
        "street_office": "陈主任",
        "duty_chief": "周主任",
    }

    def simulated(*roles: str) -> dict[str, Contact]:
        return {
            role: Contact(name=names.get(role, "吴主任"), webhook=receiver.url(f"/{role}"))
            for role in dict.fromkeys(roles)
        }

    here = simulated(*BUILTIN_ROLES, *site.station_by_id[station_id].contacts)
    stations = [
        s.model_copy(update={"contacts": here if s.id == station_id else {}}) for s in site.stations
    ]
    response = site.response.model_copy(
        update={"contacts": simulated("duty_chief", *site.response.contacts)}
    )
    data = site.model_copy(update={"stations": stations, "response": response}).model_dump()
    return Site.model_validate(data)


def _post(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def run_response_loop(
    settings: Settings,
    site: Site,
    alerts: pl.DataFrame,
    console: Console,
    *,
    lang: str = "zh-CN",
) -> LoopSummary | None:
    """Handle the day's first red alert with simulated duty staff; print the story.

    ``alerts`` are the day's `ALERTS_SQL` rows. The workflow store is a fresh SQLite file under
    ``data_dir/demo``; the audit log is exported to the settings' warehouse (migrated).
    Returns None when the day has no red alert.
    """
    texts: dict[str, Any] = json.loads(TEXTS.read_text(encoding="utf-8"))[lang]
    events = alert_events(alerts)
    if not events:
        return None
    first = events[0]
    store = settings.data_dir / "demo" / "workflow.sqlite3"
    for leftover in store.parent.glob(f"{store.name}*"):
        leftover.unlink()  # the demo's store is its own: a second run starts afresh
    clock = DemoClock(events[-1].ts_ms)
    console.rule(texts["title"])
    with AlertReceiver() as receiver:
        people = duty_site(site, first.station_id, receiver)
        live = settings.model_copy(
            update={
                "notify": "on",
                "notify_max_age_s": 1e12,  # the day replayed is in the past: tell them anyway
                "outbox_url": SecretStr(f"sqlite:///{store.resolve()}"),
                "language": lang,
            }
        )
        responder = Responder(live, people, escalate=False, clock=clock)
        with responder, ApiServer(responder.workflow) as api:
            workflow = responder.workflow
            workflow.public_url = api.url

            def at() -> str:
                moment = datetime.fromtimestamp(clock.now / 1000, UTC).astimezone(site.tz)
                return f"{moment:%H:%M:%S}"

            def role(name: str) -> str:
                return people.role_name(name, lang) or name.replace("_", " ")

            responder.raise_events(events)
            red_roles = [r for r, _ in people.routes(first.station_id, "red")]
            messages = {r: _red_message(receiver, f"/{r}") for r in red_roles}
            zone = people.zone_by_id[first.zone_id]
            console.print(
                texts["alert"].format(
                    time=at(),
                    zone=zone.name_in(lang),
                    level=texts["level"]["red"],
                    roles="、".join(role(r) for r in red_roles)
                    if lang == "zh-CN"
                    else ", ".join(role(r) for r in red_roles),
                ),
                highlight=False,
            )
            _show_message(console, texts, role(red_roles[0]), messages[red_roles[0]])
            acked: list[str] = []

            def ack_line(name: str, channel: str) -> None:
                found = next(
                    k for k in workflow.show(events[0].alert_id)["acks"] if k["role"] == name
                )
                console.print(
                    texts["ack"].format(
                        time=at(),
                        role=role(name),
                        actor=found["acked_by"],
                        seconds=(found["acked_ms"] - found["requested_ms"]) // SECOND,
                        channel=texts["channel"][channel],
                    ),
                    highlight=False,
                )
                acked.append(name)

            clock.now += 35 * SECOND  # the station master taps the link in the message
            _post(messages["station_master"]["response"]["ack_url"])
            ack_line("station_master", "link")
            clock.now += 5 * SECOND
            _remind(responder, texts, at, role, console)
            clock.now += 30 * SECOND  # the transit police chief, through the API
            police = workflow.issue_token("transit_police", "李所长")
            base = f"{api.url}/api/alerts/{quote(first.alert_id, safe='')}"
            _post(f"{base}/ack", token=police)
            ack_line("transit_police", "api")
            clock.now += 25 * SECOND  # the local police chief, from the command line
            workflow.acknowledge(first.alert_id, "local_police", actor="赵所长", channel="cli")
            ack_line("local_police", "cli")
            clock.now += 25 * SECOND  # 120 s: the street office's deadline passes
            escalated = _remind(responder, texts, at, role, console)
            clock.now += 40 * SECOND  # the duty chief answers the escalation's link
            escalation = _wait_json(receiver, "/duty_chief")
            _show_message(console, texts, role("duty_chief"), escalation)
            _post(escalation["response"]["ack_url"])
            ack_line("duty_chief", "link")
            master = workflow.issue_token("station_master", "王站长")
            for minutes, measure in ((4, "restrict_gates"), (6, "close_entrance")):
                clock.now += minutes * 60 * SECOND
                if any(m.id == measure for m in people.measures_for(first.zone_id, "red")):
                    _post(f"{base}/measures", {"measure": measure}, token=master)
                    text = next(
                        m.text_in(lang) for m in people.response.measures if m.id == measure
                    )
                    console.print(
                        texts["measure"].format(
                            time=at(), role=role("station_master"), actor="王站长", measure=text
                        ),
                        highlight=False,
                    )
            clock.now += 25 * 60 * SECOND
            _post(f"{base}/sign-off", {"outcome": texts["outcome"]}, token=master)
            console.print(
                texts["sign_off"].format(
                    time=at(), role=role("station_master"), actor="王站长", outcome=texts["outcome"]
                ),
                highlight=False,
            )
            for name in red_roles:
                if name not in acked:
                    console.print(texts["missed"].format(role=role(name)), highlight=False)
            audit_rows = workflow.audit_frame(alert_id=first.alert_id).height
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        start = datetime.fromtimestamp(first.ts_ms / 1000 - 86400, UTC)
        end = datetime.fromtimestamp(clock.now / 1000 + 86400, UTC)
        times = kpis.ack_times(warehouse, start, end)
        waiting = kpis.unacknowledged(warehouse)
    console.print(texts["kpi_title"], highlight=False)
    for row in times.iter_rows(named=True):
        console.print(
            texts["kpi"].format(
                role=role(row["role"]), n=row["n"], p50=row["p50_s"], p90=row["p90_s"]
            ),
            highlight=False,
        )
    items = ", ".join(
        f"{row['alert_id']} {role(row['role'])}" for row in waiting.iter_rows(named=True)
    )
    console.print(texts["unacked"].format(items=items or texts["none"]), highlight=False)
    console.print(texts["audit"].format(n=audit_rows, alert=first.alert_id), highlight=False)
    return LoopSummary(first.alert_id, tuple(acked), tuple(escalated), audit_rows, times)


def _remind(
    responder: Responder, texts: dict[str, Any], at: Any, role: Any, console: Console
) -> list[str]:
    """Send what is due now; print reminders and escalations; return who was escalated to."""
    escalated = []
    rule = responder.site.ack_rule("red")
    for _, name, notice in responder.escalator.step():
        if notice.notice == "reminder":
            line = texts["reminder"].format(time=at(), role=role(name), number=notice.number)
            console.print(line, highlight=False)
            continue
        line = texts["escalation"].format(
            time=at(),
            missed=", ".join(role(m) for m in notice.missed_by),
            within=f"{rule.within_s:g}" if rule else "?",
            target=role(name),
        )
        console.print(line, style="bold red", highlight=False)
        escalated.append(name)
    return escalated


def _show_message(
    console: Console, texts: dict[str, Any], role: str, received: dict[str, Any]
) -> None:
    """The message ``role`` received, as rendered for its channels, the link's token cut."""
    console.print(texts["message"].format(role=role), highlight=False)
    text = received["message"]["text"]
    link = received["response"]["ack_url"]
    if link:
        text = text.replace(link, link.split("?")[0] + "?t=…")
    for line in text.splitlines():
        console.print(f"          │ {line}", highlight=False, markup=False, soft_wrap=True)


def _red_message(receiver: AlertReceiver, path: str) -> dict[str, Any]:
    for count in range(1, 6):
        if not receiver.wait_received(path, count, timeout_s=10):
            break
        message = receiver.received(path)[-1]
        if message["level"] == "red":
            return message
    raise RuntimeError(f"the demo's receiver got no red alert on {path}")


def _wait_json(receiver: AlertReceiver, path: str) -> dict[str, Any]:
    if not receiver.wait_received(path, 1, timeout_s=10):
        raise RuntimeError(f"the demo's receiver got nothing on {path}")
    return receiver.received(path)[-1]
