"""End to end on the channels duty staff read: a surge's red alert in Chinese on four channels.

The red alert of the West Lake surge (the real zone_risk dataflow, as in `test_response_loop`)
goes through the workflow and the outbox to the four chiefs, each on another kind of channel —
a signed DingTalk robot, a WeCom robot, a signed Feishu bot and SMS through a JSON gateway —
all local receivers that check each vendor's body and signature. Two chiefs acknowledge through
the link in the message they read; at the deadline the escalation reaches the duty chief by
e-mail (aiosmtpd), in Chinese, naming who did not acknowledge.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from crowdwatch.risk.notify import AlertEvent
from crowdwatch.risk.receivers import MailReceiver, RobotReceiver
from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.store import wall_ms
from crowdwatch.warehouse.client import Warehouse
from crowdwatch.workflow.api import ApiServer
from crowdwatch.workflow.loop import Responder
from tests.app.test_response_loop import surge_events  # noqa: F401 - a fixture
from tests.conftest import EXAMPLE_SITE
from tests.crowdwatch.workflow.helpers import Clock
from tests.crowdwatch.workflow.test_api import request

DING, FEISHU, TOKEN = "SECding-0123456789", "feishu-secret", "sms-token"
TITLE = "红色预警:西湖景区 湖滨景区"


def site_file(folder: Path, robots: RobotReceiver, mail: MailReceiver) -> Path:
    data = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    wlk = next(s for s in data["stations"] if s["id"] == "WLK")
    wlk["contacts"] = {
        "station_master": {
            "name": "王站长",
            "channels": [
                {"type": "dingtalk", "url": robots.dingtalk_url("master"), "secret": DING}
            ],
        },
        "transit_police": {
            "name": "李所长",
            "channels": [{"type": "wecom", "url": robots.wecom_url("police")}],
        },
        "local_police": {
            "name": "赵所长",
            "channels": [{"type": "feishu", "url": robots.feishu_url("local"), "secret": FEISHU}],
        },
        "street_office": {
            "name": "孙主任",
            "channels": [{"type": "sms", "to": ["+8613800000000"]}],
        },
    }
    data["response"]["contacts"] = {
        "duty_chief": {
            "name": "周主任",
            "channels": [{"type": "email", "to": ["duty@example.test"]}],
        }
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_a_red_alert_in_chinese_on_four_channels_acknowledged_by_link_and_escalated_by_mail(
    surge_events: list[AlertEvent],  # noqa: F811
    settings: Settings,
    tmp_path: Path,
) -> None:
    clock = Clock(wall_ms())
    with (
        RobotReceiver({"master": DING, "local": FEISHU}, sms_token=TOKEN) as robots,
        MailReceiver() as mail,
    ):
        settings = settings.model_copy(
            update={
                "site_file": site_file(tmp_path, robots, mail),
                "outbox_url": SecretStr(f"sqlite:///{tmp_path / 'store.sqlite3'}"),
                "notify": "on",
                "notify_max_age_s": 1e12,  # the surge is from May: tell them anyway
                "mail_url": SecretStr(mail.url),
                "sms_gateway": SecretStr(robots.sms_url()),
                "sms_token": SecretStr(TOKEN),
            }
        )
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
        responder = Responder(settings, load_site(settings.site_file), escalate=False, clock=clock)
        with responder, ApiServer(responder.workflow) as api:
            responder.workflow.public_url = api.url
            responder.raise_events(surge_events)

            def last(name: str, text: Callable[[dict[str, Any]], str]) -> str:
                for count in range(1, 6):
                    assert robots.wait_received(name, count), f"nothing on {name}"
                    got = text(robots.received(name)[-1].body)
                    if TITLE in got:
                        return got
                raise AssertionError(f"no red message on {name}")

            ding = last("master", lambda b: b["markdown"]["text"])
            wecom = last("police", lambda b: b["markdown"]["content"])
            feishu = last(
                "local",
                lambda b: (
                    b["card"]["header"]["title"]["content"]
                    + "\n"
                    + b["card"]["elements"][0]["content"]
                ),
            )
            sms = last("gateway", lambda b: b["text"])

            assert ding.startswith("### 升级为红色预警:西湖景区 湖滨景区\n")  # orange → red
            assert "**致:站长(王站长)**" in ding
            assert "湖滨景区客流已达承载量的" in ding
            assert "1. 停止售票,只出不进(承载量100%)" in ding.replace("，", ",").replace(
                "（", "("
            ).replace("）", ")")
            assert "致:轨道公安派出所所长(李所长)" in wecom
            assert "致:属地派出所所长(赵所长)" in feishu
            assert sms.startswith("升级为红色预警:西湖景区 湖滨景区。湖滨景区客流已达承载量的")
            assert robots.rejected("master") == robots.rejected("local") == []

            link = re.compile(r"\[确认收到\]\((\S+?)\)")
            clock.advance(35)
            for text in (ding, feishu):  # the station master and the local police tap the link
                (url,) = link.findall(text)
                status, _, body = request(url, method="POST")
                assert (status, json.loads(body)["status"]) == (200, "acknowledged")
            (sms_link,) = re.findall(r"确认收到:(\S+)", sms)
            assert "/street_office?t=" in sms_link

            clock.advance(90)  # the transit police and the street office missed the deadline
            assert responder.escalator.step()
            assert mail.wait_messages(1)
            [(to, message)] = mail.messages()

    assert to == ["duty@example.test"]
    assert message["Subject"].startswith("【上报】升级为红色预警:西湖景区 湖滨景区")
    text = message.get_body(("plain",)).get_content()
    assert "未在规定时间内确认,已上报值班主任" in text
    assert "轨道公安派出所所长" in text  # who did not acknowledge in time
