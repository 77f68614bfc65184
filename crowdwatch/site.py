"""The site model: stations, zones, gates and cameras, loaded from a validated YAML file.

A site file is the one source of truth for zones. Loading checks every field and every
cross-reference (a gate's zone must exist and belong to the gate's station, ids are unique …);
an error names the file and the field.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

M = TypeVar("M", bound=BaseModel)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_yaml_model(
    path: Path | str, model: type[M], error: type[ValueError], *, missing: str, expected: str
) -> M:
    """Read ``path`` and validate it as ``model``.

    Raises:
        error: the file is missing (the message ends with ``missing``), is not YAML, is not a
            mapping (``expected`` says what it should hold), or a field is wrong; the message
            names the file and the field.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping with {expected}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_location(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise error(f"{path}: {problems}") from None


class SiteError(ValueError):
    """A site file that cannot be used; the message names the file and the field."""


class ZoneKind(StrEnum):
    """What a zone is; it decides defaults such as the occupancy model."""

    PLATFORM = "platform"
    CONCOURSE = "concourse"
    ENTRANCE = "entrance"
    HALL = "hall"
    PLAZA = "plaza"
    SCENIC_AREA = "scenic_area"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied, validated again like a loaded site file.

        Pydantic's own copy skips validation and keeps the cached properties computed from the
        old values: a site moved to another time zone kept telling the old one's time.
        """
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        values = {**fields, **(update or {})}
        return self.model_validate(copy.deepcopy(values) if deep else values)


LatLon = tuple[Annotated[float, Field(ge=-90, le=90)], Annotated[float, Field(ge=-180, le=180)]]


class Polygon(_Model):
    """A zone outline as ``[lat, lon]`` points (at least three)."""

    polygon: list[LatLon] = Field(min_length=3)


class Circle(_Model):
    """A zone as a centre ``[lat, lon]`` and a radius in metres."""

    centre: LatLon
    radius_m: float = Field(gt=0)


class DwellModel(_Model):
    """Metro occupancy: people inside ≈ entries over the last N minutes + exits over the last M.

    People who tapped in during the last ``entry_minutes`` are still walking to or waiting on
    the platform; people who tap out spent about ``exit_minutes`` inside before their tap.
    """

    model: Literal["dwell"] = "dwell"
    entry_minutes: int = Field(default=8, ge=1, le=240)
    exit_minutes: int = Field(default=3, ge=1, le=240)


class BalanceModel(_Model):
    """Enclosed venue occupancy: cumulative entries − exits, never below 0.

    The count resets to 0 every day at ``reset_at`` local time (a time when the venue is
    empty), so that missed exits do not accumulate for ever.
    """

    model: Literal["balance"] = "balance"
    reset_at: time = time(4, 0)


OccupancyModel = Annotated[DwellModel | BalanceModel, Field(discriminator="model")]


Role = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
"""Who responds: one of `BUILTIN_ROLES`, or a role the site file's ``response.roles`` adds."""

BUILTIN_ROLES: tuple[str, ...] = (
    "station_master",
    "transit_police",
    "local_police",
    "street_office",
)
"""The four chiefs of a station's big-crowd response (四长联动), as metro stations organise it."""

Level = Literal["blue", "yellow", "orange", "red"]
"""The four-colour big-crowd warning levels, lowest first."""

LEVEL_NAMES: tuple[Level, ...] = ("blue", "yellow", "orange", "red")


Language = Literal["zh-CN", "en"]
"""The languages messages are written in."""

LANGUAGES: tuple[Language, ...] = ("zh-CN", "en")

CHINA_TIMEZONES = frozenset(
    {"Asia/Shanghai", "Asia/Chongqing", "Asia/Chungking", "Asia/Harbin", "Asia/Urumqi", "PRC"}
)
"""Time zones of mainland China: a site in one of them (and no other country) reads zh-CN."""

_URL = r"^https?://\S+$"
_CHANNEL_ID = r"^[a-z][a-z0-9_-]{0,15}$"


class _Channel(_Model):
    type: str
    id: str | None = Field(
        default=None,
        pattern=_CHANNEL_ID,
        description="Names the channel in the delivery log (default: its type); unique per contact",
    )

    @property
    def channel_id(self) -> str:
        """The channel's id: as set, else its type."""
        return self.id or self.type

    @property
    def target(self) -> str:
        """Where this channel sends to: the key its deliveries are queued and ordered by."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The channel for a log line: its type and host, no token or secret."""
        return f"{self.type} {_host(self.target)}"


def _host(target: str) -> str:
    rest = target.partition("://")[2]
    return rest.split("/", 1)[0].rsplit("@", 1)[-1] if rest else target.split(":", 1)[0]


class WebhookChannel(_Channel):
    """The generic webhook: the alert event as JSON (schema ``crowdwatch.alert.v1``)."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=_URL)

    @property
    def target(self) -> str:
        """The webhook URL."""
        return self.url


class DingTalkChannel(_Channel):
    """A DingTalk group robot (自定义机器人): markdown, signed when ``secret`` is set (加签)."""

    type: Literal["dingtalk"]
    url: str = Field(pattern=_URL, description="…/robot/send?access_token=…")
    secret: SecretStr | None = Field(default=None, description="the robot's SEC… signing secret")
    at_mobiles: list[str] = Field(default_factory=list, description="mobiles to @ in the group")
    at_all: bool = False

    @property
    def target(self) -> str:
        """The robot's webhook URL."""
        return self.url


class WeComChannel(_Channel):
    """A WeCom (企业微信) group robot: markdown."""

    type: Literal["wecom"]
    url: str = Field(pattern=_URL, description="…/cgi-bin/webhook/send?key=…")

    @property
    def target(self) -> str:
        """The robot's webhook URL."""
        return self.url


class FeishuChannel(_Channel):
    """A Feishu or Lark custom bot: a card, signed when ``secret`` is set (签名校验)."""

    type: Literal["feishu", "lark"]
    url: str = Field(pattern=_URL, description="…/open-apis/bot/v2/hook/…")
    secret: SecretStr | None = Field(default=None, description="the bot's signing secret")

    @property
    def target(self) -> str:
        """The bot's webhook URL."""
        return self.url


class EmailChannel(_Channel):
    """Email to one or more addresses, through the SMTP server of the settings."""

    type: Literal["email"]
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)

    @property
    def target(self) -> str:
        """``mailto:`` and the addresses."""
        return "mailto:" + ",".join(self.to)

    @property
    def label(self) -> str:
        """The channel and how many addresses (not the addresses: personal data)."""
        return f"email ({len(self.to)} addresses)"


class SmsChannel(_Channel):
    """SMS to one or more mobile numbers, through the SMS gateway of the settings."""

    type: Literal["sms"]
    to: list[Annotated[str, Field(pattern=r"^\+?[0-9]{5,20}$")]] = Field(min_length=1)

    @property
    def target(self) -> str:
        """``sms:`` and the numbers."""
        return "sms:" + ",".join(self.to)

    @property
    def label(self) -> str:
        """The channel and how many numbers (not the numbers: personal data)."""
        return f"sms ({len(self.to)} numbers)"


class AppriseChannel(_Channel):
    """Any service Apprise knows, by its Apprise URL (kept secret: it holds credentials)."""

    type: Literal["apprise"]
    url: SecretStr

    @property
    def target(self) -> str:
        """``apprise:`` and a hash of the URL (the URL itself holds credentials)."""
        digest = hashlib.sha256(self.url.get_secret_value().encode("utf-8")).hexdigest()
        return f"apprise:{digest[:16]}"

    @property
    def label(self) -> str:
        """The Apprise service, without its credentials."""
        return f"apprise {self.url.get_secret_value().split(':', 1)[0]}://"


Channel = Annotated[
    WebhookChannel
    | DingTalkChannel
    | WeComChannel
    | FeishuChannel
    | EmailChannel
    | SmsChannel
    | AppriseChannel,
    Field(discriminator="type"),
]
"""One way of reaching a contact."""


class Contact(_Model):
    """How to reach one role at one station: a name and the channels alert messages go to.

    ``webhook`` is the generic JSON webhook (a shorthand for a ``webhook`` channel); ``channels``
    lists the others (DingTalk, WeCom, Feishu/Lark robots, email, SMS, any Apprise URL). Each
    channel is delivered on its own. ``language`` overrides the site's for this contact.
    """

    name: str
    webhook: str | None = Field(default=None, pattern=_URL)
    channels: list[Channel] = Field(default_factory=list)
    language: Language | None = None

    @model_validator(mode="after")
    def _unique_channel_ids(self) -> Contact:
        if dup := _duplicates([c.channel_id for c in self.all_channels]):
            raise ValueError(
                f"channels: ids {dup} are used twice (give each channel of a type an id)"
            )
        return self

    @cached_property
    def all_channels(self) -> tuple[Channel, ...]:
        """Every channel: the ``webhook`` first, then ``channels`` in file order."""
        first: tuple[Channel, ...] = (
            (WebhookChannel(url=self.webhook),) if self.webhook is not None else ()
        )
        return first + tuple(self.channels)


_YELLOW: tuple[Role, ...] = ("station_master",)
_ORANGE: tuple[Role, ...] = ("station_master", "transit_police")
_RED: tuple[Role, ...] = ("station_master", "transit_police", "local_police", "street_office")


class Routing(_Model):
    """Which roles each warning level calls; each level's list should include the lower's."""

    blue: list[Role] = Field(default_factory=list)
    yellow: list[Role] = Field(default_factory=lambda: list(_YELLOW))
    orange: list[Role] = Field(default_factory=lambda: list(_ORANGE))
    red: list[Role] = Field(default_factory=lambda: list(_RED))

    def roles(self, level: Level) -> list[Role]:
        """The roles called at ``level``."""
        roles: list[Role] = getattr(self, level)
        return roles


class _Named(_Model):
    name: str
    names: dict[Language, str] = Field(
        default_factory=dict, description="The name in other languages, for messages."
    )

    def name_in(self, language: str) -> str:
        """The name in ``language``: from ``names``, else ``name``."""
        name: str = self.names.get(language, self.name)  # type: ignore[call-overload]
        return name


class Station(_Named):
    """A station, transport hub or venue: a group of zones."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    lines: list[str] = Field(default_factory=list)
    neighbours: list[str] = Field(
        default_factory=list, description="Adjacent stations on the network."
    )
    entry_zone: str | None = Field(
        default=None,
        description="The zone that station-level gate counts (no gate id) are attributed to.",
    )
    contacts: dict[Role, Contact] = Field(
        default_factory=dict, description="Who to call at this station, by role."
    )
    routing: Routing | None = Field(
        default=None, description="This station's routing, instead of the site's."
    )


class Zone(_Named):
    """An area with an area in m², a capacity and an occupancy model."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: ZoneKind
    station: str
    area_m2: float = Field(gt=0)
    capacity: int = Field(gt=0)
    geometry: Polygon | Circle | None = None
    occupancy: OccupancyModel = Field(default_factory=DwellModel)
    headcount_from: Literal["auto", "video", "gates", "max"] = Field(
        default="auto",
        description=(
            "where the zone's headcount comes from: video (cameras), gates (the occupancy "
            "model), max (both, the larger); auto: video when a camera watches the zone"
        ),
    )
    video_combine: Literal["sum", "max"] = Field(
        default="sum",
        description=(
            "how to combine cameras' regions that watch this zone: sum for disjoint regions, "
            "max for overlapping ones"
        ),
    )

    @property
    def centre(self) -> tuple[float, float] | None:
        """The zone's centre ``(lat, lon)``: its circle's, or the mean of its polygon's points."""
        if isinstance(self.geometry, Circle):
            return self.geometry.centre
        if isinstance(self.geometry, Polygon):
            points = self.geometry.polygon
            return sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)
        return None


class Gate(_Model):
    """A fare gate (or a bank of gates) between the outside and a zone."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    station: str
    zone: str
    direction: Literal["in", "out", "both"] = "both"


PixelPoint = tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]]


class CameraRoi(_Model):
    """A camera's region of interest and the zone it watches.

    ``polygon_px`` is the region in image pixels (default: the whole frame). A person is in
    the region when the bottom centre of their box (where they stand) is inside it.
    ``overcrowding_threshold`` is the DeepStream nvdsanalytics overcrowding level, in persons
    (default: the zone's capacity share seen by this region is not known, so none).
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    zone: str
    polygon_px: list[PixelPoint] | None = Field(default=None, min_length=3)
    overcrowding_threshold: int | None = Field(default=None, gt=0)


class CountingLine(_Model):
    """A counting line in image pixels: crossing it in ``in_direction`` enters ``zone``.

    ``line_px`` is ``[x1, y1, x2, y2]``; ``in_direction`` is the way people move when they
    enter (``right``, ``left``, ``down`` or ``up`` in the image).
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    zone: str
    line_px: tuple[float, float, float, float]
    in_direction: Literal["right", "left", "down", "up"]


class Camera(_Model):
    """A camera: its image size, expected frame rate, regions of interest and counting lines."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    station: str
    resolution: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] = (1920, 1080)
    fps: float = Field(default=25.0, gt=0, description="expected frames per second")
    offline_after_s: float = Field(
        default=10.0, gt=0, description="no message for this long: the camera is offline"
    )
    rois: list[CameraRoi] = Field(min_length=1)
    lines: list[CountingLine] = Field(default_factory=list)


class AckRule(_Model):
    """Who must acknowledge a level's alert, by when, how often to remind, whom to call next.

    ``roles`` default to the roles the level is routed to. A role that has not acknowledged
    ``within_s`` after it was asked calls the first role of ``escalate_to`` (the next tier: a
    duty chief), which has ``within_s`` in turn before the next (a district command centre).
    Until it acknowledges, a role is reminded every ``remind_every_s``: until the alert ends
    (it resolves or is signed off), or at most ``remind_max`` times when set.
    """

    within_s: float = Field(gt=0)
    remind_every_s: float | None = Field(default=None, gt=0)
    remind_max: int | None = Field(default=None, ge=0)
    escalate_to: list[Role] = Field(default_factory=list)
    roles: list[Role] | None = None


class Measure(_Model):
    """One measure of a response plan (预案): an id and its text per language."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    text: dict[str, str] = Field(min_length=1, description="language (zh-CN, en) → text")

    def text_in(self, lang: str) -> str:
        """The text in ``lang``, else in the first language given."""
        return self.text.get(lang) or next(iter(self.text.values()))


class Plan(_Model):
    """The measures to take per level in some zones (by id) or kinds of zone.

    A zone takes the first plan that names it, else the first that names its kind.
    """

    zones: list[str] = Field(default_factory=list)
    kinds: list[ZoneKind] = Field(default_factory=list)
    blue: list[str] = Field(default_factory=list)
    yellow: list[str] = Field(default_factory=list)
    orange: list[str] = Field(default_factory=list)
    red: list[str] = Field(default_factory=list)


def _default_ack() -> dict[Level, AckRule]:
    return {
        "red": AckRule(within_s=120, remind_every_s=30),
        "orange": AckRule(within_s=300, remind_every_s=60),
        "yellow": AckRule(within_s=600, remind_every_s=120),
    }


class Response(_Model):
    """How people respond to an alert: roles, acknowledgement, sign-off and plans (预案).

    ``roles`` adds roles to `BUILTIN_ROLES` with their names per language; ``contacts`` reaches
    a role anywhere on the site (a district command centre) where a station has no contact of
    its own; ``ack`` is the acknowledgement policy per level (levels without a rule need no
    acknowledgement); ``sign_off`` the roles that may close an alert with an outcome; an alert
    of a zone opened within ``reopen_within_s`` of the zone's last alert closing belongs to the
    same incident; an acknowledge link expires after ``link_ttl_s``.
    """

    roles: dict[Role, dict[str, str]] = Field(default_factory=dict)
    contacts: dict[Role, Contact] = Field(default_factory=dict)
    ack: dict[Level, AckRule] = Field(default_factory=_default_ack)
    sign_off: list[Role] = Field(default_factory=lambda: ["station_master"], min_length=1)
    reopen_within_s: float = Field(default=1800.0, ge=0)
    link_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    measures: list[Measure] = Field(default_factory=list)
    plans: list[Plan] = Field(default_factory=list)


CALENDAR_YEARS = range(2000, 2051)
"""The years a site calendar covers: an event or event day outside them is a mistyped year."""
MAX_EVENT_DAYS = 31
"""The longest event window. A forecast leaves an event's hours out of its training, so a window
of months (an end year mistyped) would leave it no history; a festival of several weeks is a
window for each day or night it draws crowds."""
MAX_ATTENDANCE = 100_000_000
"""More people than any gathering has drawn: a larger expected attendance is a typo."""


def _in_calendar(day: date) -> None:
    if day.year not in CALENDAR_YEARS:
        raise ValueError(
            f"{day} is outside the years the site calendar covers "
            f"({CALENDAR_YEARS[0]}-{CALENDAR_YEARS[-1]}): is the year mistyped?"
        )


@cache
def public_holidays(country: str | None, subdivision: str | None = None) -> frozenset[int]:
    """Public holidays of a country (and subdivision) as date ordinals, 2000 to 2050.

    From the ``holidays`` package; an empty set without a country. Cached: sites share it.

    Raises:
        ValueError: If the package knows no such country or subdivision.
    """
    if country is None:
        return frozenset()
    try:
        calendar = holidays.country_holidays(country, subdiv=subdivision, years=CALENDAR_YEARS)
    except NotImplementedError as exc:
        raise ValueError(
            f"unknown country or subdivision {country!r}/{subdivision!r} for public holidays "
            "(use ISO 3166 codes the holidays package knows, e.g. 'CN', 'NZ'/'AUK')"
        ) from exc
    return frozenset(day.toordinal() for day in calendar)


class EventWindow(_Model):
    """A known event at the site, in local time: a match, a festival night, New Year's Eve.

    ``start`` and ``end`` are naive local times (the site's time zone); ``kind`` groups events
    that draw crowds alike (forecasts fit one effect per kind); ``attendance`` is the expected
    number of people, when known (a larger attendance scales the effect up).
    """

    name: str
    start: datetime
    end: datetime
    kind: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    attendance: int | None = Field(default=None, gt=0, le=MAX_ATTENDANCE)

    @model_validator(mode="after")
    def _ordered(self) -> EventWindow:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start and end are local times of the site: give no offset")
        if self.end <= self.start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        _in_calendar(self.start.date())
        _in_calendar(self.end.date())
        if self.end - self.start > timedelta(days=MAX_EVENT_DAYS):
            raise ValueError(
                f"{self.start} to {self.end} is longer than {MAX_EVENT_DAYS} days: a forecast "
                "trains on no hour inside an event window, so give a window for each day or "
                "night the event draws crowds"
            )
        return self

    def days(self) -> list[date]:
        """The local days the window touches."""
        last = (self.end - timedelta(microseconds=1)).date()
        return [
            date.fromordinal(n) for n in range(self.start.date().toordinal(), last.toordinal() + 1)
        ]


class SiteInfo(_Model):
    """The site's name, local time zone (naive timestamps are read in it) and calendar.

    The calendar — ``country`` and ``subdivision`` (ISO 3166 codes, for public holidays),
    ``event_days`` (the site's own big days: a match, a festival) and ``events`` (named event
    windows with start and end in local time, a kind and an expected attendance) — keeps
    unusual days out of the anomaly detectors' ordinary baselines, and gives the forecasts
    their calendar.
    """

    name: str
    timezone: str = "Asia/Shanghai"
    country: str | None = Field(default=None, description="ISO 3166-1 code for public holidays")
    subdivision: str | None = Field(default=None, description="ISO 3166-2 subdivision code")
    event_days: list[date] = Field(default_factory=list)
    events: list[EventWindow] = Field(default_factory=list)
    language: Language | None = Field(
        default=None,
        description=(
            "the language of alert messages; default zh-CN for a site in China (country CN, "
            "or no country and a Chinese time zone), else en"
        ),
    )

    @property
    def lang(self) -> Language:
        """The language of the site's messages: ``language``, else by country and time zone."""
        if self.language is not None:
            return self.language
        chinese = self.country == "CN" or (
            self.country is None and self.timezone in CHINA_TIMEZONES
        )
        return "zh-CN" if chinese else "en"

    @model_validator(mode="after")
    def _known_calendar(self) -> SiteInfo:
        public_holidays(self.country, self.subdivision)
        for day in self.event_days:
            _in_calendar(day)
        return self

    def days_off(self) -> frozenset[int]:
        """Public holidays of the site's country and subdivision, as date ordinals."""
        return public_holidays(self.country, self.subdivision)

    def event_ordinals(self) -> frozenset[int]:
        """The site's event days and the days its event windows touch, as date ordinals."""
        days = {day.toordinal() for day in self.event_days}
        days.update(day.toordinal() for event in self.events for day in event.days())
        return frozenset(days)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value


def _duplicates(ids: list[str]) -> list[str]:
    return sorted(i for i, n in Counter(ids).items() if n > 1)


class Site(_Model):
    """A whole site, with its cross-references checked."""

    site: SiteInfo
    stations: list[Station] = Field(min_length=1)
    zones: list[Zone] = Field(min_length=1)
    gates: list[Gate] = Field(default_factory=list)
    cameras: list[Camera] = Field(default_factory=list)
    routing: Routing = Field(default_factory=Routing)
    response: Response = Field(default_factory=Response)

    @model_validator(mode="after")
    def _check_references(self) -> Site:
        self._check_response()
        for name, ids in (
            ("stations", [s.id for s in self.stations]),
            ("zones", [z.id for z in self.zones]),
            ("gates", [g.id for g in self.gates]),
            ("cameras", [c.id for c in self.cameras]),
        ):
            if dup := _duplicates(ids):
                raise ValueError(f"{name}: duplicate ids {dup}")
        stations = {s.id for s in self.stations}
        if shared := sorted(stations & {z.id for z in self.zones}):
            raise ValueError(f"zones: ids {shared} are also station ids (they share a column)")
        zone_station = {z.id: z.station for z in self.zones}
        for i, zone in enumerate(self.zones):
            if zone.station not in stations:
                raise ValueError(f"zones.{i}.station: unknown station {zone.station!r}")
        for i, station in enumerate(self.stations):
            if (
                station.entry_zone is not None
                and zone_station.get(station.entry_zone) != station.id
            ):
                raise ValueError(
                    f"stations.{i}.entry_zone: {station.entry_zone!r} is not a zone of "
                    f"{station.id!r}"
                )
            for neighbour in station.neighbours:
                if neighbour not in stations:
                    raise ValueError(f"stations.{i}.neighbours: unknown station {neighbour!r}")
        for i, gate in enumerate(self.gates):
            if gate.station not in stations:
                raise ValueError(f"gates.{i}.station: unknown station {gate.station!r}")
            if zone_station.get(gate.zone) != gate.station:
                raise ValueError(
                    f"gates.{i}.zone: {gate.zone!r} is not a zone of station {gate.station!r}"
                )
        for i, camera in enumerate(self.cameras):
            if camera.station not in stations:
                raise ValueError(f"cameras.{i}.station: unknown station {camera.station!r}")
            for j, roi in enumerate(camera.rois):
                if roi.zone not in zone_station:
                    raise ValueError(f"cameras.{i}.rois.{j}.zone: unknown zone {roi.zone!r}")
            for j, line in enumerate(camera.lines):
                if line.zone not in zone_station:
                    raise ValueError(f"cameras.{i}.lines.{j}.zone: unknown zone {line.zone!r}")
            for name, items in (("rois", camera.rois), ("lines", camera.lines)):
                if dup := _duplicates([item.id for item in items]):
                    raise ValueError(f"cameras.{i}.{name}: duplicate ids {dup}")
        return self

    def _check_response(self) -> None:
        roles = set(self.roles)
        used: list[tuple[str, list[str]]] = [
            ("response.sign_off", self.response.sign_off),
            ("response.contacts", list(self.response.contacts)),
        ]
        for where, routing in [("routing", self.routing)] + [
            (f"stations.{i}.routing", s.routing) for i, s in enumerate(self.stations)
        ]:
            if routing is not None:
                used += [(f"{where}.{level}", routing.roles(level)) for level in LEVEL_NAMES]
        used += [(f"stations.{i}.contacts", list(s.contacts)) for i, s in enumerate(self.stations)]
        for level, rule in self.response.ack.items():
            used.append((f"response.ack.{level}.escalate_to", rule.escalate_to))
            used.append((f"response.ack.{level}.roles", rule.roles or []))
        for where, names in used:
            if unknown := sorted(set(names) - roles):
                raise ValueError(
                    f"{where}: unknown roles {unknown} (known: {sorted(roles)}; add a role "
                    "under response.roles)"
                )
        measures = [m.id for m in self.response.measures]
        if dup := _duplicates(measures):
            raise ValueError(f"response.measures: duplicate ids {dup}")
        zones = {z.id for z in self.zones}
        for i, plan in enumerate(self.response.plans):
            if unknown := sorted(set(plan.zones) - zones):
                raise ValueError(f"response.plans.{i}.zones: unknown zones {unknown}")
            for level in LEVEL_NAMES:
                if unknown := sorted(set(getattr(plan, level)) - set(measures)):
                    raise ValueError(
                        f"response.plans.{i}.{level}: unknown measures {unknown} (define them "
                        "under response.measures)"
                    )

    @cached_property
    def roles(self) -> tuple[str, ...]:
        """Every role of the site: the four built in, then those ``response.roles`` adds."""
        return BUILTIN_ROLES + tuple(r for r in self.response.roles if r not in BUILTIN_ROLES)

    def role_name(self, role: str, lang: str) -> str | None:
        """The name the site file gives ``role`` in ``lang``, if any."""
        return self.response.roles.get(role, {}).get(lang)

    def contact_for(self, station_id: str, role: str) -> Contact | None:
        """The station's contact for ``role``, else the site-wide one, else None."""
        station = self.station_by_id[station_id]
        return station.contacts.get(role) or self.response.contacts.get(role)

    def ack_rule(self, level: Level) -> AckRule | None:
        """The acknowledgement policy of ``level``; None: no acknowledgement asked."""
        return self.response.ack.get(level)

    def ack_roles(self, station_id: str, level: Level) -> list[str]:
        """The roles that must acknowledge an alert of ``level`` at a station."""
        rule = self.ack_rule(level)
        if rule is None:
            return []
        if rule.roles is not None:
            return list(rule.roles)
        return [role for role, _ in self.routes(station_id, level)]

    def measures_for(self, zone_id: str, level: Level) -> list[Measure]:
        """The measures of the zone's response plan at ``level`` (none without a plan)."""
        zone = self.zone_by_id[zone_id]
        plans = self.response.plans
        plan = next((p for p in plans if zone_id in p.zones), None) or next(
            (p for p in plans if zone.kind in p.kinds), None
        )
        if plan is None:
            return []
        by_id = {m.id: m for m in self.response.measures}
        return [by_id[m] for m in getattr(plan, level)]

    @cached_property
    def tz(self) -> ZoneInfo:
        """The site's local time zone."""
        return ZoneInfo(self.site.timezone)

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """The UTC start and end of a local day (23 or 25 hours when the clocks change)."""
        start = datetime.combine(day, time(0), tzinfo=self.tz)
        return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)

    @cached_property
    def zone_by_id(self) -> dict[str, Zone]:
        """Zones by id."""
        return {z.id: z for z in self.zones}

    @cached_property
    def station_by_id(self) -> dict[str, Station]:
        """Stations by id."""
        return {s.id: s for s in self.stations}

    @cached_property
    def camera_by_id(self) -> dict[str, Camera]:
        """Cameras by id."""
        return {c.id: c for c in self.cameras}

    @cached_property
    def gate_by_id(self) -> dict[str, Gate]:
        """Gates by id."""
        return {g.id: g for g in self.gates}

    def routes(self, station_id: str, level: Level) -> list[tuple[Role, Contact | None]]:
        """Who to call at ``level`` at a station: each role and its contact (None if unset)."""
        station = self.station_by_id[station_id]
        routing = station.routing or self.routing
        return [(role, self.contact_for(station_id, role)) for role in routing.roles(level)]

    def zones_of(self, station_id: str) -> list[Zone]:
        """The zones of a station, in file order."""
        return [z for z in self.zones if z.station == station_id]

    def entry_zone_of(self, station_id: str) -> str | None:
        """The zone that station-level counts go to: ``entry_zone``, or the only zone."""
        station = self.station_by_id[station_id]
        if station.entry_zone is not None:
            return station.entry_zone
        zones = self.zones_of(station_id)
        return zones[0].id if len(zones) == 1 else None

    @cached_property
    def gate_fed_zones(self) -> frozenset[str]:
        """Zones that gate records reach: a gate's zone, or a station's entry zone."""
        return frozenset({g.zone for g in self.gates}) | {
            zone for s in self.stations if (zone := self.entry_zone_of(s.id)) is not None
        }


def load_site(path: Path | str) -> Site:
    """Load and validate a site file.

    Raises:
        SiteError: the file is missing, is not YAML, or a field is wrong; the message names
            the file and the field.
    """
    return load_yaml_model(
        path,
        Site,
        SiteError,
        missing="site file not found (set CROWDWATCH_SITE_FILE)",
        expected="site, stations and zones",
    )
