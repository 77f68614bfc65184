"""Messages people read: both languages rendered from the templates and catalogues."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from crowdwatch.risk.engine import causes
from crowdwatch.risk.levels import Thresholds, ZoneInputs
from crowdwatch.risk.messages import (
    LOCALES,
    TEMPLATES,
    Renderer,
    language_for,
    render,
    renderer,
    warm,
)
from crowdwatch.risk.notify import AlertEvent, EventType
from crowdwatch.site import Contact, Level, Site, load_site
from tests.conftest import EXAMPLE_SITE

TS_MS = 1_777_593_600_000
"""2026-05-01 00:00 UTC: 08:00 in Asia/Shanghai."""


@pytest.fixture(scope="module")
def site() -> Site:
    base = load_site(EXAMPLE_SITE)
    stations = [
        s.model_copy(update={"contacts": {"station_master": Contact(name="王站长")}})
        if s.id == "CTR"
        else s
        for s in base.stations
    ]
    return Site.model_validate(base.model_copy(update={"stations": stations}).model_dump())


def red(
    event: EventType = "opened",
    level: Level = "red",
    previous: Level | None = None,
    share: float = 1.07,
    density: float = 1.34,
    reasons: tuple[str, ...] = ("capacity",),
) -> AlertEvent:
    return AlertEvent(
        alert_id="CTR-concourse@1",
        event=event,
        kind="big_crowd",
        zone_id="CTR-concourse",
        station_id="CTR",
        level=level,
        previous_level=previous,
        ts_ms=TS_MS,
        reason="107% of capacity ≥ 100%",
        values={"capacity_share": share, "density": density, "headcount": 3210.0},
        causes=reasons,
    )


def test_a_red_alert_in_chinese_names_level_station_zone_role_reason_and_local_time(
    site: Site,
) -> None:
    message = render(red(), site, role="station_master", lang="zh-CN")

    assert message.lang == "zh-CN"
    assert message.title == "红色预警:中心站(1/2号线换乘) 站厅付费区"
    assert message.text.splitlines() == [
        "红色预警:中心站(1/2号线换乘) 站厅付费区",
        "致:站长(王站长)",
        "时间:2026年5月1日 08:00:00",
        "原因:站厅付费区客流已达承载量的107%",
    ]
    assert message.markdown.startswith("### 红色预警:中心站(1/2号线换乘) 站厅付费区\n")
    assert "- 原因:站厅付费区客流已达承载量的107%" in message.markdown
    assert message.short == (
        "红色预警:中心站(1/2号线换乘) 站厅付费区。站厅付费区客流已达承载量的107%。"
        "2026年5月1日 08:00:00"
    )


def test_the_same_alert_in_english(site: Site) -> None:
    message = render(red(), site, role="station_master", lang="en")

    assert message.title == "Red warning: Central (interchange L1/L2) Central paid concourse"
    assert message.text.splitlines()[1:] == [
        "To: station master (王站长)",
        "Time: May 1, 2026, 8:00:00 AM",
        "Reason: Central paid concourse is at 107% of its capacity",
    ]


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        (
            "zh-CN",
            [
                "【演练】【第2次提醒】【上报】红色预警:中心站(1/2号线换乘) 站厅付费区",
                "致:站长(王站长)",
                "时间:2026年5月1日 08:00:00",
                "原因:站厅付费区客流已达承载量的107%;密度达4.30人/㎡,极度拥挤",
                "站长、轨道公安派出所所长未在规定时间内确认,已上报值班主任。",
                "处置措施:",
                "1. 闸机限流",
                "2. 关闭A出入口",
                "确认收到:https://cw.example/ack/t0k",
                "本消息为演练,请按演练方案处置。",
            ],
        ),
        (
            "en",
            [
                "[DRILL] [Reminder 2] [Escalated] Red warning: Central (interchange L1/L2) "
                "Central paid concourse",
                "To: station master (王站长)",
                "Time: May 1, 2026, 8:00:00 AM",
                "Reason: Central paid concourse is at 107% of its capacity; density 4.30 "
                "persons/m², dangerously crowded",
                "Not acknowledged in time by station master, transit police chief: escalated "
                "to duty chief.",
                "Measures to take:",
                "1. 闸机限流",
                "2. 关闭A出入口",
                "Acknowledge: https://cw.example/ack/t0k",
                "This is a drill: respond as the drill plan says.",
            ],
        ),
    ],
)
def test_measures_ack_link_drill_reminder_and_escalation(
    site: Site, lang: str, expected: list[str]
) -> None:
    message = render(
        red(density=4.3, reasons=("capacity", "density")),
        site,
        role="station_master",
        lang=lang,
        measures=["闸机限流", "关闭A出入口"],
        ack_url="https://cw.example/ack/t0k",
        drill=True,
        escalated_to="duty_chief",
        escalated_from=["station_master", "transit_police"],
        reminder=2,
    )

    assert message.text.splitlines() == expected
    assert message.title == expected[0]
    link = "确认收到" if lang == "zh-CN" else "Acknowledge"
    assert f"[{link}](https://cw.example/ack/t0k)" in message.markdown
    assert "1. 闸机限流\n2. 关闭A出入口" in message.markdown
    assert message.short.endswith("https://cw.example/ack/t0k")


@pytest.mark.parametrize(
    ("event", "level", "previous", "reasons", "title", "reason"),
    [
        ("opened", "blue", None, ("capacity",), "蓝色预警:", "客流已达承载量的107%"),
        ("escalated", "orange", "yellow", ("los_f",), "升级为橙色预警:", "服务水平F级"),
        ("de-escalated", "yellow", "orange", ("capacity", "held"), "降为黄色预警:", "暂时保持"),
        ("resolved", "yellow", "yellow", ("calm",), "黄色预警解除:", "客流已恢复正常"),
        ("escalated", "red", "orange", ("capacity", "burst"), "升级为红色预警:", "110涉客流警情"),
        ("escalated", "orange", "yellow", ("anomaly",), "升级为橙色预警:", "客流异常"),
    ],
)
def test_every_step_and_cause_has_chinese_words(
    site: Site,
    event: EventType,
    level: Level,
    previous: Level | None,
    reasons: tuple[str, ...],
    title: str,
    reason: str,
) -> None:
    message = render(
        red(event, level, previous, density=2.5, reasons=reasons),
        site,
        role="transit_police",
        lang="zh-CN",
    )

    assert message.title.startswith(title)
    assert reason in message.text
    assert "致:轨道公安派出所所长\n" in message.text  # no contact: the role alone


def test_a_predicted_alert_says_how_far_ahead(site: Site) -> None:
    event = AlertEvent(
        alert_id="CTR-concourse:predicted:orange:1",
        event="opened",
        kind="predicted_big_crowd",
        zone_id="CTR-concourse",
        station_id="CTR",
        level="orange",
        previous_level=None,
        ts_ms=TS_MS,
        reason="forecast",
        values={"forecast": 2760.0, "capacity": 3000.0, "capacity_share": 0.92},
        lead_time_s=45 * 60,
    )

    zh = render(event, site, role="station_master", lang="zh-CN")
    en = render(event, site, role="station_master", lang="en")

    assert zh.title == "预计45分钟后橙色预警:中心站(1/2号线换乘) 站厅付费区"
    assert "预测:站厅付费区客流将在45分钟后达承载量的92%" in zh.text
    assert en.title.startswith("Orange warning expected in 45 min: ")

    # in an event window the band's upper bound decided: a crowd that is possible, not expected
    upper = AlertEvent(**{**event.__dict__, "values": {**event.values, "upper_bound": 1.0}})
    zh = render(upper, site, role="station_master", lang="zh-CN")
    en = render(upper, site, role="station_master", lang="en")
    assert zh.title == "45分钟后可能橙色预警:中心站(1/2号线换乘) 站厅付费区"
    assert "活动预测:站厅付费区客流在45分钟后可能达承载量的92%(预测区间上限)" in zh.text
    assert en.title.startswith("Orange warning possible in 45 min: ")
    assert "could reach 92% of its capacity in 45 min (the forecast's upper bound)" in en.text


def test_an_event_without_causes_or_figures_shows_its_reason(site: Site) -> None:
    event = AlertEvent(**{**red().__dict__, "values": {"occupancy": 1.0}, "causes": ()})

    assert "原因:107% of capacity ≥ 100%" in render(event, site, role="station_master").text


def test_the_site_file_names_its_roles(site: Site) -> None:
    assert Renderer("en").site_role_name("transit_police", site) == "transit police chief"
    assert Renderer("zh-CN").site_role_name("district_command", site) == "区应急指挥中心"


def test_level_and_role_names_in_both_languages() -> None:
    zh, en = Renderer("zh-CN"), Renderer("en")

    assert [zh.level_name(level) for level in ("red", "orange", "yellow", "blue")] == [
        "红色预警",
        "橙色预警",
        "黄色预警",
        "蓝色预警",
    ]
    assert [
        zh.role_name(role)
        for role in ("station_master", "transit_police", "local_police", "street_office")
    ] == ["站长", "轨道公安派出所所长", "属地派出所所长", "街道(乡镇)负责人"]
    assert en.level_name("orange") == "Orange warning"
    assert en.role_name("duty_chief") == "Duty chief"
    assert zh.role_name("district_command") == "区应急指挥中心"
    assert zh.role_name("bus_depot") == "bus depot"  # unknown: its id in words


def test_the_language_comes_from_the_run_the_contact_or_the_site(site: Site) -> None:
    assert site.site.language == "zh-CN"
    assert language_for(site, "station_master", "CTR") == "zh-CN"
    assert language_for(site, "station_master", "CTR", override="en") == "en"
    english = site.model_copy(
        update={
            "site": site.site.model_copy(
                update={"language": None, "timezone": "UTC", "country": None}
            )
        }
    )
    assert english.site.lang == "en"
    chinese = english.model_copy(update={"site": english.site.model_copy(update={"country": "CN"})})
    assert chinese.site.lang == "zh-CN"
    # a fresh Site: model_copy would keep the cached station_by_id
    foreign = Site.model_validate(
        site.model_copy(
            update={
                "stations": [
                    s.model_copy(
                        update={"contacts": {"station_master": Contact(name="Ann", language="en")}}
                    )
                    for s in site.stations
                ]
            }
        ).model_dump()
    )
    assert language_for(foreign, "station_master", "CTR") == "en"
    assert render(red(), foreign, role="station_master").title.startswith("Red warning")


def test_an_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError, match="no messages in 'fr'"):
        Renderer("fr")


def test_the_engine_gives_the_causes_of_its_reason() -> None:
    t = Thresholds()
    assert causes(ZoneInputs(1.07, 4.5), t, "red") == ("capacity", "density")
    assert causes(ZoneInputs(0.5, 2.5), t, "orange") == ("los_f",)
    assert causes(ZoneInputs(0.85, 0.5, call_burst=True), t, "orange") == ("capacity", "burst")
    assert causes(ZoneInputs(0.85, 0.5), t, "orange") == ("capacity", "held")
    assert causes(ZoneInputs(0.1, 0.1), t, None) == ("calm",)


def _template_msgids() -> set[str]:
    found = extract_from_dir(
        str(TEMPLATES),
        method_map=[("**.j2", "jinja2.ext:babel_extract")],
        options_map={"**.j2": {"trim_blocks": "true", "lstrip_blocks": "true"}},
        keywords={"_": None},
    )
    return {message for _, _, message, _, _ in found if isinstance(message, str)}


def test_every_text_in_the_templates_has_a_chinese_translation() -> None:
    with (LOCALES / "zh_CN" / "LC_MESSAGES" / "crowdwatch.po").open("rb") as po:
        catalog = read_po(po)
    translated = {m.id: m.string for m in catalog if m.id and not m.fuzzy}

    wanted = _template_msgids()
    assert len(wanted) > 30
    assert sorted(wanted - {k for k, v in translated.items() if v}) == []
    assert sorted(set(translated) - wanted) == []  # no leftovers: run `make messages`


def test_the_committed_mo_catalogue_is_compiled_from_the_po() -> None:
    folder = LOCALES / "zh_CN" / "LC_MESSAGES"
    with (folder / "crowdwatch.po").open("rb") as po:
        catalog = read_po(po)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)

    assert (folder / "crowdwatch.mo").read_bytes() == compiled.getvalue(), (
        "crowdwatch.mo is stale: run `make messages`"
    )


def test_templates_and_catalogues_are_package_data() -> None:
    import tomllib

    pyproject = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
    data = pyproject["tool"]["setuptools"]["package-data"]["crowdwatch.risk"]
    assert {"templates/*.j2", "locales/*/LC_MESSAGES/*.mo"} <= set(data)


def test_warming_compiles_the_languages_a_site_sends_in(site: Site) -> None:
    renderer.cache_clear()
    warm(site)
    assert renderer.cache_info().currsize == 1  # zh-CN only: no contact asks for English
    warm(site, "en")
    assert renderer.cache_info().currsize == 2
