"""Channels against local receivers that check each vendor's documented body and signature.

DingTalk, WeCom and Feishu/Lark robots, a JSON SMS gateway and Apprise's ``json://`` are served
by `RobotReceiver` (a real HTTP server on localhost); email goes to `MailReceiver` (aiosmtpd).
The last tests send a red alert through the outbox to four roles on their channels.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from crowdwatch.risk.channels import Channels, ChannelSettings, payload
from crowdwatch.risk.messages import Message
from crowdwatch.risk.notify import AlertEvent, AlertReceiver
from crowdwatch.risk.outbox import Dispatcher, Outbox
from crowdwatch.risk.receivers import MailReceiver, RobotReceiver
from crowdwatch.site import (
    AppriseChannel,
    Channel,
    Contact,
    DingTalkChannel,
    EmailChannel,
    FeishuChannel,
    Role,
    Site,
    SiteError,
    SmsChannel,
    WebhookChannel,
    WeComChannel,
    load_site,
)
from tests.conftest import EXAMPLE_SITE

DING_SECRET = "SECd1ngt4lk-secret-0123456789abcdef"
FEISHU_SECRET = "f3ishu-secret-xyz"
SMS_TOKEN = "sms-t0ken"
KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def robots() -> Iterator[RobotReceiver]:
    with RobotReceiver(
        {"duty": DING_SECRET, "police": FEISHU_SECRET, "lark": FEISHU_SECRET}, sms_token=SMS_TOKEN
    ) as r:
        yield r


@pytest.fixture
def mail() -> Iterator[MailReceiver]:
    with MailReceiver() as m:
        yield m


def red_event(ts_ms: int = 1_777_593_600_000) -> AlertEvent:
    return AlertEvent(
        alert_id="CTR-concourse@1",
        event="opened",
        kind="big_crowd",
        zone_id="CTR-concourse",
        station_id="CTR",
        level="red",
        previous_level=None,
        ts_ms=ts_ms,
        reason="107% of capacity ≥ 100%",
        values={"capacity_share": 1.07, "density": 1.43, "headcount": 3210.0},
        causes=("capacity",),
    )


def site_with(contacts: dict[Role, Contact]) -> Site:
    base = load_site(EXAMPLE_SITE)
    stations = [
        s.model_copy(update={"contacts": contacts}) if s.id == "CTR" else s for s in base.stations
    ]
    return Site.model_validate(base.model_copy(update={"stations": stations}).model_dump())


MESSAGE = Message(
    lang="zh-CN",
    title="红色预警:中心站 站厅付费区",
    text="红色预警:中心站 站厅付费区\n原因:站厅付费区客流已达承载量的107%",
    markdown="### 红色预警:中心站 站厅付费区\n\n- 原因:站厅付费区客流已达承载量的107%",
    short="红色预警:中心站 站厅付费区。站厅付费区客流已达承载量的107%。",
)


def send(channel: Channel, settings: ChannelSettings | None = None, key: str = KEY):  # type: ignore[no-untyped-def]
    channels = Channels([channel], settings or ChannelSettings(timeout_s=5))
    body = payload(channel, MESSAGE, red_event().to_json("station_master", Contact(name="x")))
    return channels.post(channel.target, key, body)


def test_dingtalk_robot_gets_signed_markdown(robots: RobotReceiver) -> None:
    channel = DingTalkChannel(
        type="dingtalk",
        url=robots.dingtalk_url("duty"),
        secret=SecretStr(DING_SECRET),
        at_mobiles=["13800000000"],
    )

    attempt = send(channel)

    assert (attempt.status, attempt.http_status, attempt.error) == ("delivered", 200, None)
    [got] = robots.received("duty")
    assert got.key == KEY
    assert got.body["msgtype"] == "markdown"
    assert got.body["markdown"]["title"] == MESSAGE.title
    assert got.body["markdown"]["text"].startswith(MESSAGE.markdown)
    assert got.body["markdown"]["text"].endswith("@13800000000")
    assert got.body["at"] == {"atMobiles": ["13800000000"], "isAtAll": False}
    assert {"timestamp", "sign", "access_token"} <= set(got.query)
    assert robots.rejected("duty") == []


def test_dingtalk_refuses_a_wrong_signature_for_good(robots: RobotReceiver) -> None:
    channel = DingTalkChannel(
        type="dingtalk", url=robots.dingtalk_url("duty"), secret=SecretStr("SECwrong")
    )

    attempt = send(channel)

    assert attempt.status == "failed"
    assert attempt.error == "DingTalk errcode 310000: sign not match"
    assert robots.received("duty") == []


def test_dingtalk_without_the_signature_a_signed_robot_wants_is_refused(
    robots: RobotReceiver,
) -> None:
    attempt = send(DingTalkChannel(type="dingtalk", url=robots.dingtalk_url("duty")))

    assert attempt.status == "failed"
    assert "310000" in (attempt.error or "")


def test_dingtalk_rate_limit_is_retried(robots: RobotReceiver) -> None:
    robots.answer("duty", {"errcode": 130101, "errmsg": "send too fast"})
    channel = DingTalkChannel(
        type="dingtalk", url=robots.dingtalk_url("duty"), secret=SecretStr(DING_SECRET)
    )

    assert send(channel).status == "retry"
    assert send(channel).status == "delivered"


def test_wecom_robot_gets_markdown_cut_to_its_limit(robots: RobotReceiver) -> None:
    channel = WeComChannel(type="wecom", url=robots.wecom_url("station"))
    long = Message("zh-CN", "t", "x", "### 红色预警\n" + "客流" * 3000, "s")
    channels = Channels([channel], ChannelSettings(timeout_s=5))

    short = channels.post(channel.target, KEY, payload(channel, MESSAGE, b"{}"))
    cut = channels.post(channel.target, KEY + "2", payload(channel, long, b"{}"))

    assert short.status == cut.status == "delivered"
    first, second = robots.received("station")
    assert first.body == {"msgtype": "markdown", "markdown": {"content": MESSAGE.markdown}}
    assert len(second.body["markdown"]["content"].encode("utf-8")) <= 4096
    assert second.body["markdown"]["content"].endswith("…")


def test_wecom_refusal_is_final(robots: RobotReceiver) -> None:
    channel = WeComChannel(type="wecom", url=robots.wecom_url("station").replace("key=", "key=x"))

    attempt = send(channel)

    assert attempt.status == "failed"
    assert attempt.error == "WeCom errcode 93000: invalid webhook url"


@pytest.mark.parametrize("kind", ["feishu", "lark"])
def test_feishu_and_lark_bots_get_a_signed_card(robots: RobotReceiver, kind: str) -> None:
    name = "police" if kind == "feishu" else "lark"
    channel = FeishuChannel(
        type=kind,  # type: ignore[arg-type]
        url=robots.feishu_url(name),
        secret=SecretStr(FEISHU_SECRET),
    )
    event_json = red_event().to_json("station_master", Contact(name="x"))
    channels = Channels([channel], ChannelSettings(timeout_s=5))

    attempt = channels.post(channel.target, KEY, payload(channel, MESSAGE, event_json))

    assert attempt.status == "delivered"
    [got] = robots.received(name)
    assert got.body["msg_type"] == "interactive"
    card = got.body["card"]
    assert card["header"] == {
        "title": {"tag": "plain_text", "content": MESSAGE.title},
        "template": "red",
    }
    assert card["elements"] == [
        {"tag": "markdown", "content": "- 原因:站厅付费区客流已达承载量的107%"}
    ]


def test_feishu_refuses_a_wrong_signature(robots: RobotReceiver) -> None:
    channel = FeishuChannel(type="feishu", url=robots.feishu_url("police"), secret=SecretStr("no"))

    attempt = send(channel)

    assert attempt.status == "failed"
    assert attempt.error == "Feishu code 19021: sign match fail"


def test_sms_through_a_json_gateway_with_its_token(robots: RobotReceiver) -> None:
    channel = SmsChannel(type="sms", to=["+8613800000000", "13900000000"])
    settings = ChannelSettings(
        timeout_s=5, sms_gateway=SecretStr(robots.sms_url()), sms_token=SecretStr(SMS_TOKEN)
    )

    attempt = send(channel, settings)

    assert attempt.status == "delivered"
    [got] = robots.received("gateway")
    assert got.body == {
        "to": ["+8613800000000", "13900000000"],
        "text": MESSAGE.short,
        "idempotency_key": KEY,
    }


def test_sms_gateway_refuses_a_wrong_token_for_good(robots: RobotReceiver) -> None:
    settings = ChannelSettings(
        timeout_s=5, sms_gateway=SecretStr(robots.sms_url()), sms_token=SecretStr("wrong")
    )

    attempt = send(SmsChannel(type="sms", to=["13800000000"]), settings)

    assert (attempt.status, attempt.http_status) == ("failed", 401)


def test_sms_through_an_apprise_url_with_the_numbers_in_it(robots: RobotReceiver) -> None:
    settings = ChannelSettings(timeout_s=5, sms_gateway=SecretStr(robots.json_url("sms") + "/{to}"))

    attempt = send(SmsChannel(type="sms", to=["13800000000"]), settings)

    assert attempt.status == "delivered"
    [got] = robots.received("sms")
    assert got.body["message"] == MESSAGE.short


def test_sms_without_a_gateway_waits_for_one() -> None:
    attempt = send(SmsChannel(type="sms", to=["13800000000"]))

    assert attempt.status == "retry"
    assert attempt.error == "no SMS gateway: set CROWDWATCH_SMS_GATEWAY"


def test_any_apprise_url(robots: RobotReceiver) -> None:
    attempt = send(AppriseChannel(type="apprise", url=SecretStr(robots.json_url("ops"))))

    assert attempt.status == "delivered"
    [got] = robots.received("ops")
    assert (got.body["title"], got.body["message"]) == (MESSAGE.title, MESSAGE.markdown)


def test_an_apprise_url_that_fails_is_retried() -> None:
    attempt = send(AppriseChannel(type="apprise", url=SecretStr("json://127.0.0.1:9/nothing")))

    assert attempt.status == "retry"


def test_email_through_smtp_to_every_address(mail: MailReceiver) -> None:
    channel = EmailChannel(type="email", to=["duty@example.test", "chief@example.test"])

    attempt = send(channel, ChannelSettings(timeout_s=5, mail_url=SecretStr(mail.url)))

    assert attempt.status == "delivered"
    assert mail.wait_messages(2)
    got = sorted(mail.messages(), key=lambda m: m[0])
    assert [to for to, _ in got] == [["chief@example.test"], ["duty@example.test"]]
    for _, message in got:
        assert message["Subject"] == MESSAGE.title
        assert message["X-Idempotency-Key"] == KEY
        assert message["From"] == "crowdwatch <crowdwatch@example.test>"
        html = message.get_body(("html",))
        assert html is not None
        assert "<h3>红色预警:中心站 站厅付费区</h3>" in html.get_content()


def test_email_without_an_smtp_server_waits_for_one() -> None:
    attempt = send(EmailChannel(type="email", to=["duty@example.test"]))

    assert (attempt.status, attempt.error) == ("retry", "no SMTP server: set CROWDWATCH_MAIL_URL")


def test_a_target_no_longer_in_the_site_file_is_refused() -> None:
    channels = Channels([], ChannelSettings())

    assert channels.post("sms:13800000000", KEY, b"{}").status == "failed"


def test_contact_channels_are_validated_and_their_secrets_hidden() -> None:
    contact = Contact.model_validate(
        {
            "name": "王站长",
            "webhook": "https://hooks.example.test/a",
            "channels": [
                {
                    "type": "dingtalk",
                    "url": "https://oapi.dingtalk.com/robot/send?access_token=t",
                    "secret": DING_SECRET,
                },
                {
                    "type": "dingtalk",
                    "id": "dingtalk-2",
                    "url": "https://oapi.dingtalk.com/robot/send?access_token=u",
                },
                {"type": "email", "to": ["a@example.test"]},
            ],
        }
    )

    assert [c.channel_id for c in contact.all_channels] == [
        "webhook",
        "dingtalk",
        "dingtalk-2",
        "email",
    ]
    assert isinstance(contact.all_channels[0], WebhookChannel)
    assert DING_SECRET not in repr(contact)
    assert contact.all_channels[1].label == "dingtalk oapi.dingtalk.com"
    with pytest.raises(ValueError, match=r"ids \['dingtalk'\] are used twice"):
        Contact.model_validate(
            {
                "name": "x",
                "channels": [
                    {"type": "dingtalk", "url": "https://a.test/robot/send?access_token=1"},
                    {"type": "dingtalk", "url": "https://b.test/robot/send?access_token=2"},
                ],
            }
        )
    with pytest.raises(ValueError, match="to"):
        Contact.model_validate({"name": "x", "channels": [{"type": "sms", "to": []}]})


def test_a_site_file_with_channels_loads(tmp_path: Path) -> None:
    text = EXAMPLE_SITE.read_text(encoding="utf-8").replace(
        "    entry_zone: CTR-concourse\n",
        "    entry_zone: CTR-concourse\n"
        "    contacts:\n"
        "      station_master:\n"
        "        name: 王站长\n"
        "        channels:\n"
        "          - {type: wecom, url: 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k'}\n"
        "          - {type: sms, to: ['+8613800000000']}\n"
        "          - {type: pager}\n",
        1,
    )
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(SiteError, match=r"stations\.0\.contacts\.station_master\.channels\.2"):
        load_site(path)
    path.write_text(text.replace("          - {type: pager}\n", ""), encoding="utf-8")
    contact = load_site(path).station_by_id["CTR"].contacts["station_master"]
    assert [c.target for c in contact.all_channels] == [
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
        "sms:+8613800000000",
    ]


_outboxes = itertools.count()


def four_roles(robots: RobotReceiver, mail: MailReceiver, hooks: AlertReceiver) -> Site:
    """Four roles on four kinds of channel, two of them on two."""
    return site_with(
        {
            "station_master": Contact(
                name="王站长",
                channels=[
                    DingTalkChannel(
                        type="dingtalk",
                        url=robots.dingtalk_url("duty"),
                        secret=SecretStr(DING_SECRET),
                    ),
                    EmailChannel(type="email", to=["master@example.test"]),
                ],
            ),
            "transit_police": Contact(
                name="轨道公安值班室",
                channels=[WeComChannel(type="wecom", url=robots.wecom_url("police"))],
            ),
            "local_police": Contact(
                name="派出所",
                channels=[
                    FeishuChannel(
                        type="feishu",
                        url=robots.feishu_url("lark"),
                        secret=SecretStr(FEISHU_SECRET),
                    )
                ],
            ),
            "street_office": Contact(
                name="街道办",
                webhook=hooks.url("/street"),
                channels=[SmsChannel(type="sms", to=["+8613800000000"])],
            ),
        }
    )


def test_a_red_alert_reaches_four_roles_on_their_channels_in_chinese(
    robots: RobotReceiver, mail: MailReceiver, tmp_path: Path
) -> None:
    with AlertReceiver() as hooks:
        site = four_roles(robots, mail, hooks)
        event = red_event(ts_ms=1_777_593_600_000)
        settings = ChannelSettings(
            timeout_s=5,
            mail_url=SecretStr(mail.url),
            sms_gateway=SecretStr(robots.sms_url()),
            sms_token=SecretStr(SMS_TOKEN),
        )
        box = Outbox(f"sqlite:///{tmp_path / 'outbox.sqlite3'}")
        try:
            dispatcher = Dispatcher(
                box,
                backoff_s=0.01,
                backoff_max_s=0.05,
                rng=random.Random(3),
                channels=Channels.for_site(site, settings),
            ).start()
            dispatcher.wake(box.enqueue([event], site, mode="on", max_age_s=1e12))
            dispatcher.close(20)
            deliveries = box.deliveries(event, site)
        finally:
            box.close()
        street = hooks.received("/street")

    assert [(d.role, d.channel, d.status, d.attempts) for d in deliveries] == [
        ("station_master", "dingtalk", "delivered", 1),
        ("station_master", "email", "delivered", 1),
        ("transit_police", "wecom", "delivered", 1),
        ("local_police", "feishu", "delivered", 1),
        ("street_office", "webhook", "delivered", 1),
        ("street_office", "sms", "delivered", 1),
    ]
    [ding] = robots.received("duty")
    [wecom] = robots.received("police")
    [feishu] = robots.received("lark")
    [sms] = robots.received("gateway")
    assert ding.body["markdown"]["title"] == "红色预警:中心站(1/2号线换乘) 站厅付费区"
    assert "致:站长(王站长)" in ding.body["markdown"]["text"]
    assert "致:轨道公安派出所所长(轨道公安值班室)" in wecom.body["markdown"]["content"]
    assert "站厅付费区客流已达承载量的107%" in feishu.body["card"]["elements"][0]["content"]
    assert sms.body["text"].startswith("红色预警:中心站(1/2号线换乘) 站厅付费区。")
    [hook] = street
    assert hook["message"]["title"] == "红色预警:中心站(1/2号线换乘) 站厅付费区"
    assert hook["level"] == "red"
    assert mail.wait_messages(1)
    [(to, message)] = mail.messages()
    assert to == ["master@example.test"]
    assert message["Subject"] == "红色预警:中心站(1/2号线换乘) 站厅付费区"
    # one key per role, the same on each of its channels
    assert ding.key == message["X-Idempotency-Key"] == event.idempotency_key("station_master")
    assert sms.key == hook["idempotency_key"] == event.idempotency_key("street_office")


def test_a_hung_robot_delays_no_other_channel_and_no_secret_is_logged(
    robots: RobotReceiver, mail: MailReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = robots.hold("duty")
    with AlertReceiver() as hooks:
        site = four_roles(robots, mail, hooks)
        settings = ChannelSettings(
            timeout_s=30,
            mail_url=SecretStr(mail.url),
            sms_gateway=SecretStr(robots.sms_url()),
            sms_token=SecretStr("wrong-token"),  # the SMS gateway refuses: a logged failure
        )
        box = Outbox(f"sqlite:///{tmp_path / 'outbox.sqlite3'}")
        try:
            dispatcher = Dispatcher(
                box, backoff_s=0.01, backoff_max_s=0.05, channels=Channels.for_site(site, settings)
            ).start()
            with caplog.at_level(logging.DEBUG):
                dispatcher.wake(box.enqueue([red_event()], site, mode="on", max_age_s=1e12))
                # every other channel is delivered while the DingTalk robot holds its request
                assert robots.wait_received("police")
                assert robots.wait_received("lark")
                assert hooks.wait_received("/street")
                assert mail.wait_messages(1)
                assert robots.received("duty") == []
                release.set()
                assert robots.wait_received("duty")
                dispatcher.close(20)
            statuses = {(d.role, d.channel): d.status for d in box.deliveries(red_event(), site)}
        finally:
            box.close()

    assert statuses[("street_office", "sms")] == "failed"
    assert statuses[("station_master", "dingtalk")] == "delivered"
    logged = caplog.text
    for secret in (DING_SECRET, FEISHU_SECRET, "wrong-token", "access_token", "+8613800000000"):
        assert secret not in logged
    assert "alert delivery" in logged  # the refusal was logged, by channel and host
