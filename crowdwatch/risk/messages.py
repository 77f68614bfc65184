"""Messages people read: an alert event rendered for one role, in the site's language.

`render` turns an `AlertEvent` into a `Message` — a title, a plain text (SMS, WeCom text,
email), a markdown text (DingTalk, WeCom, Feishu, the HTML email) and a one-paragraph short
text (SMS) — for one role at the event's station: the level's name (红色预警 …), the role's name,
the station's and zone's names in the message's language (``names`` in the site file), the
reason in words ("站厅付费区客流已达承载量的107%"), the local time in the site's time zone,
and optionally the plan's measures, the acknowledge link, a drill mark (【演练】 / [DRILL]), a
reminder number and an escalation note.

The words live in Jinja2 templates (``crowdwatch/risk/templates``) and Babel message
catalogues (``crowdwatch/risk/locales``; msgids are English, ``zh_CN`` translates them). The
templates are compiled once per language and process (`renderer`), so rendering costs a few
hundred microseconds. ``make messages`` extracts the msgids, updates the catalogues and compiles
the ``.mo`` files, which are committed; a test fails when they are stale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime
from babel.support import NullTranslations, Translations
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

from crowdwatch.risk.notify import AlertEvent
from crowdwatch.site import LANGUAGES, Site

TEMPLATES = Path(__file__).parent / "templates"
"""The message templates."""

LOCALES = Path(__file__).parent / "locales"
"""The message catalogues: ``<locale>/LC_MESSAGES/crowdwatch.po`` and ``.mo``."""

DOMAIN = "crowdwatch"

PARTS = ("text", "markdown", "short")


@dataclass(frozen=True)
class Message:
    """One alert message for one role: title, plain text, markdown and a short text (SMS)."""

    lang: str
    title: str
    text: str
    markdown: str
    short: str


def locale_of(lang: str) -> str:
    """The Babel locale name of a language tag: ``zh-CN`` → ``zh_CN``."""
    return lang.replace("-", "_")


class Renderer:
    """The templates of one language, compiled once; `render` fills them in.

    Raises:
        ValueError: for a language without a catalogue.
    """

    def __init__(self, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"no messages in {lang!r}: use one of {', '.join(LANGUAGES)}")
        self.lang = lang
        self.locale = Locale.parse(locale_of(lang))
        translations: NullTranslations = Translations.load(str(LOCALES), [locale_of(lang)], DOMAIN)
        env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            extensions=["jinja2.ext.i18n"],
            autoescape=False,  # plain text and markdown, not HTML
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=StrictUndefined,
        )
        env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
        self.env = env
        self.templates: dict[str, Template] = {
            part: env.get_template(f"{part}.j2") for part in PARTS
        }
        self.names: Any = env.get_template("names.j2").module

    def level_name(self, level: str) -> str:
        """The level's name: ``red`` → 红色预警 / Red warning."""
        return str(self.names.level_name(level))

    def role_name(self, role: str) -> str:
        """The role's name: ``station_master`` → 站长 / Station master."""
        return str(self.names.role_name(role))

    def site_role_name(self, role: str, site: Site) -> str:
        """The role's name: the site file's (``response.roles``), else the catalogue's."""
        return site.role_name(role, self.lang) or self.role_name(role)

    def local_time(self, ts_ms: int, site: Site) -> str:
        """An epoch-ms time as the site's local date and time, in this language."""
        return self._local_time(ts_ms, site.site.timezone)

    @lru_cache(maxsize=1024)  # noqa: B019 - one Renderer per language, for the process
    def _local_time(self, ts_ms: int, timezone: str) -> str:
        tz = ZoneInfo(timezone)
        when = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).astimezone(tz)
        text = format_datetime(when, format="medium", tzinfo=tz, locale=self.locale)
        # CLDR puts a narrow no-break space before AM/PM, which some SMS gateways garble
        return text.replace("\u202f", " ")

    def render(
        self,
        event: AlertEvent,
        site: Site,
        *,
        role: str,
        measures: Sequence[str] = (),
        ack_url: str | None = None,
        drill: bool = False,
        escalated_to: str | None = None,
        escalated_from: Sequence[str] = (),
        reminder: int = 0,
    ) -> Message:
        """The message about ``event`` for ``role`` at the event's station; see `render`."""
        station = site.station_by_id.get(event.station_id)
        zone = site.zone_by_id.get(event.zone_id)
        contact = site.contact_for(event.station_id, role) if station is not None else None
        m: dict[str, Any] = {
            "kind": event.kind,
            "event": event.event,
            "level": event.level,
            "previous_level": event.previous_level,
            "station": station.name_in(self.lang) if station else event.station_id,
            "zone": zone.name_in(self.lang) if zone else event.zone_id,
            "role": self.site_role_name(role, site),
            "recipient": contact.name if contact is not None else None,
            "time": self.local_time(event.ts_ms, site),
            "figures": {k: v for k, v in event.values.items() if math.isfinite(v)},
            "causes": event.causes,
            "reason": event.reason,
            "lead_min": (
                None if event.lead_time_s is None else max(0, round(event.lead_time_s / 60))
            ),
            "measures": list(measures),
            "ack_url": ack_url,
            "drill": drill,
            "escalated_to": self.site_role_name(escalated_to, site) if escalated_to else None,
            "escalated_from": [self.site_role_name(r, site) for r in escalated_from],
            "reminder": reminder,
        }
        # the pieces every part shows, rendered once (the macros of names.j2)
        m["title"] = str(self.names.title(m))
        m["reason_text"] = str(self.names.reason(m))
        m["escalation"] = str(self.names.escalation(m)) if m["escalated_to"] else ""
        m["to"] = str(self.names.to(m))
        parts = {part: self.templates[part].render(m=m).strip() for part in PARTS}
        return Message(lang=self.lang, title=m["title"], **parts)


@cache
def renderer(lang: str) -> Renderer:
    """The `Renderer` of ``lang``, built once per process."""
    return Renderer(lang)


def warm(site: Site, override: str | None = None) -> None:
    """Compile the templates of every language ``site`` sends in, before the first alert.

    The first render of a language loads its catalogue and compiles the templates (tens of
    milliseconds); a pipeline does it at start, not on its first alert.
    """
    contacts = [c for s in site.stations for c in s.contacts.values()]
    contacts += site.response.contacts.values()
    languages = (
        {override}
        if override
        else {site.site.lang} | {c.language for c in contacts if c.language is not None}
    )
    for lang in languages:
        renderer(lang).render(
            AlertEvent("warm", "opened", "big_crowd", "-", "-", "red", None, 0, "", {}),
            site,
            role="station_master",
        )


def language_for(site: Site, role: str, station_id: str, override: str | None = None) -> str:
    """The language of messages to ``role`` at a station.

    ``override`` (a run's setting) first, then the contact's ``language``, then the site's.
    """
    if override is not None:
        return override
    contact = site.contact_for(station_id, role) if station_id in site.station_by_id else None
    if contact is not None and contact.language is not None:
        return str(contact.language)
    return site.site.lang


def render(
    event: AlertEvent,
    site: Site,
    *,
    role: str,
    lang: str | None = None,
    measures: Sequence[str] = (),
    ack_url: str | None = None,
    drill: bool = False,
    escalated_to: str | None = None,
    escalated_from: Sequence[str] = (),
    reminder: int = 0,
) -> Message:
    """The message about ``event`` for ``role``.

    Args:
        event: The alert event.
        site: The site: station and zone names, the time zone, the contact's name.
        role: Who reads it (its name is shown; the contact's name too).
        lang: ``zh-CN`` or ``en``; None: the contact's language, else the site's.
        measures: The plan's measures to take, in order.
        ack_url: The link that acknowledges the alert for this role.
        drill: An exercise: marked 【演练】 / [DRILL] in the title and said in the text.
        escalated_to: The role this is escalated to because nobody acknowledged in time.
        escalated_from: The roles that did not acknowledge in time.
        reminder: The reminder's number (1 = the first reminder); 0: not a reminder.
    """
    language = lang or language_for(site, role, event.station_id)
    return renderer(language).render(
        event,
        site,
        role=role,
        measures=measures,
        ack_url=ack_url,
        drill=drill,
        escalated_to=escalated_to,
        escalated_from=escalated_from,
        reminder=reminder,
    )
