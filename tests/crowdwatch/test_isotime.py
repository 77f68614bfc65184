"""The fast timestamp path agrees with Python's datetime on every input, valid or not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdwatch.isotime import epoch_ms

moments = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - naive bounds; the offset is drawn apart
    max_value=datetime(2199, 12, 30),  # noqa: DTZ001
)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def canonical(moment: datetime, tz: timezone) -> str:
    return moment.replace(tzinfo=tz).isoformat(timespec="milliseconds")


def python_ms(text: str, local: str = "Asia/Shanghai") -> int | None:
    from zoneinfo import ZoneInfo

    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(local))
    return (parsed - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(moments, offsets), min_size=1, max_size=50))
def test_canonical_times_match_python(values: list[tuple[datetime, timezone]]) -> None:
    texts = [canonical(m, tz) for m, tz in values]
    assert epoch_ms(pl.Series(texts), "UTC").to_list() == [python_ms(t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(moments, offsets, st.integers(0, 28), st.sampled_from("0123456789+-:.TZ x"))
def test_a_damaged_time_is_null_or_what_python_reads(
    moment: datetime, tz: timezone, at: int, char: str
) -> None:
    text = canonical(moment, tz)
    damaged = text[:at] + char + text[at + 1 :]
    got = epoch_ms(pl.Series([damaged, text]), "Asia/Shanghai").to_list()
    assert got[1] == python_ms(text)
    assert got[0] is None or got[0] == python_ms(damaged)


def test_other_forms_nulls_and_impossible_dates() -> None:
    texts = [
        "2026-05-01T08:00:00.000+08:00",
        "2026-05-01T00:00:00Z",
        "2026-05-01 08:00:00",
        "2026-05-01T08:00:00+0800",
        None,
        "2026-02-29T08:00:00.000+08:00",
        "2024-02-29T08:00:00.000+08:00",
        "2026-04-31T08:00:00.000+08:00",
        "2026-05-01T24:00:00.000+08:00",
        "2026-05-01T08:00:00.000+24:00",
    ]
    got = epoch_ms(pl.Series(texts, dtype=pl.String), "Asia/Shanghai").to_list()
    may_day = 1777593600000
    assert got[:4] == [may_day] * 4
    assert got[4] is None
    assert got[5] is None  # 2026 is not a leap year
    assert got[6] == python_ms("2024-02-29T08:00:00.000+08:00")
    assert got[7:] == [None, None, None]
