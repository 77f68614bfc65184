"""Personal numbers never survive scrub_text; keyed_hash links spellings of one caller."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import date

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crowdwatch.privacy import keyed_hash, scrub_text

KEY = b"test-key-not-a-secret"

# Surrounding text without digits, so any digit left in the output is a leftover of the number.
# It has the characters that sit next to numbers in real descriptions: CJK, letters, brackets,
# plus signs, dashes, colons, full-width punctuation, the X of an ID number.
SURROUNDING = st.text(
    alphabet=st.sampled_from(list("报警人称电话身份证号码在地铁站拥挤 abcXxTel:+-()（），。.\n")),
    max_size=12,
)
# Every kind of separator between digit groups: spaces (also non-breaking and ideographic),
# dashes of every width, dots, slashes, underscores, zero-width spaces, a dash with spaces.
SEPARATORS = st.sampled_from(
    [
        "",
        " ",
        "-",
        "\u00a0",
        "\u3000",
        "\u2011",
        "\u2014",
        "\uff0d",
        "\u2212",
        ".",
        "/",
        "_",
        "\u200b",
        " - ",
        "·",
    ]
)


def nfkc(text: str) -> str:
    """What the scrubber stores around a number: number forms normalised, the rest as it is."""
    return "".join(
        n if (n := unicodedata.normalize("NFKC", c)) in set("()+-./_Xx ") else c for c in text
    )


def scrub_one(text: str | None) -> str | None:
    result: str | None = scrub_text(pl.Series("description", [text])).item()
    return result


@st.composite
def mobiles(draw: st.DrawFn) -> str:
    digits = draw(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
    sep = draw(SEPARATORS)
    body = f"{digits[:3]}{sep}{digits[3:7]}{sep}{digits[7:]}"
    country = draw(st.sampled_from(["", "+86", "86", "0086", "(+86)"]))
    return f"{country}{draw(SEPARATORS) if country else ''}{body}"


@st.composite
def landlines(draw: st.DrawFn) -> str:
    area = draw(st.from_regex(r"[1-9][0-9]{1,2}", fullmatch=True))
    local = draw(st.from_regex(r"[0-9]{7,8}", fullmatch=True))
    sep = draw(SEPARATORS)
    if draw(st.booleans()):
        local = f"{local[:-4]}{draw(SEPARATORS)}{local[-4:]}"
    style = draw(st.sampled_from(["domestic", "brackets", "international"]))
    if style == "brackets":
        return f"(0{area}){sep}{local}"
    if style == "international":
        return f"{draw(st.sampled_from(['+86', '0086']))}{draw(SEPARATORS)}{area}{sep}{local}"
    return f"0{area}{sep}{local}"


@st.composite
def na_numbers(draw: st.DrawFn) -> str:
    area = draw(st.from_regex(r"[2-9][0-9]{2}", fullmatch=True))
    exchange = draw(st.from_regex(r"[2-9][0-9]{2}", fullmatch=True))
    line = draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    sep = draw(st.sampled_from([" ", "-", "."]))
    country = draw(st.sampled_from(["", "+1 ", "1-", "+1"]))
    if draw(st.booleans()):
        return f"{country}({area}){draw(st.sampled_from(['', ' ']))}{exchange}{sep}{line}"
    return f"{country}{area}{sep}{exchange}{sep}{line}"


ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
ID_CHECK = "10X98765432"


def check_digit(first17: str) -> str:
    return ID_CHECK[sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True)) % 11]


def test_check_digit_matches_a_published_example() -> None:
    # GB 11643-1999's worked example.
    assert check_digit("11010519491231002") == "X"


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    region = draw(st.from_regex(r"[1-6][0-9]{5}", fullmatch=True))
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)))
    sequence = draw(st.from_regex(r"[0-9]{3}", fullmatch=True))
    if draw(st.integers(0, 4)) == 0:  # the old 15-digit number: two-digit year, no check digit
        return f"{region}{born:%y%m%d}{sequence}"
    first17 = f"{region}{born:%Y%m%d}{sequence}"
    check = check_digit(first17)
    return first17 + (check.lower() if draw(st.booleans()) else check)


@given(SURROUNDING, mobiles() | landlines() | na_numbers(), SURROUNDING)
def test_phone_numbers_never_survive(before: str, number: str, after: str) -> None:
    out = scrub_one(before + number + after)
    assert out is not None
    assert not any(c.isdigit() for c in out), out
    assert "[phone]" in out
    assert out.endswith(nfkc(after))
    assert out.startswith(nfkc(before).rstrip("+("))


@given(SURROUNDING, id_numbers(), SURROUNDING)
def test_id_numbers_never_survive(before: str, number: str, after: str) -> None:
    out = scrub_one(before + number + after)
    assert out is not None
    assert not any(c.isdigit() for c in out), out
    assert out == nfkc(f"{before}[id]{after}")


@given(st.lists(mobiles() | landlines() | na_numbers() | id_numbers(), min_size=2, max_size=4))
def test_numbers_separated_by_one_character_are_all_scrubbed(numbers: list[str]) -> None:
    # The character between two numbers is the boundary of both.
    out = scrub_one(",".join(numbers))
    assert out is not None
    assert not any(c.isdigit() for c in out), out
    assert out.count(",") == len(numbers) - 1


@pytest.mark.parametrize(
    "text",
    [
        "At 21:30 about 3 people fell near Platform 2, No. 18 Wulin Road, in 2026.",
        "21:30 地铁1号线2号站台约300人拥挤，门牌18号，2026年5月1日",
        "Crowd of 1500 at Gate 12, 2026-05-01 21:30:05, call 110 or 120",
        "order 123456789012345678901 is not a phone number",  # 21 digits: not one number
        "counts 13 14 15 and 2026 05 01",
    ],
)
def test_ordinary_numbers_survive(text: str) -> None:
    assert scrub_one(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("报警人13812345678称", "报警人[phone]称"),
        ("tel +86 138 1234 5678.", "tel [phone]."),
        ("call 0571-87654321 or 010 1234 5678", "call [phone] or [phone]"),
        ("(206) 555-0123, +1 206 555 0123", "[phone], [phone]"),
        ("身份证110105194912310021x", "身份证[id]x"),  # 19 characters: 18 digits, then an x
        ("身份证11010519491231002X，", "身份证[id]，"),
        ("ID 110105491231002", "ID [id]"),
        ("全角１３８１２３４５６７８", "全角[phone]"),
        # the formats that survived before (issue 15, case 7)
        ("tel 138\u00a01234\u00a05678", "tel [phone]"),
        ("tel 138\u20111234\u20115678", "tel [phone]"),
        ("tel 138—1234—5678", "tel [phone]"),
        ("tel 138－1234－5678", "tel [phone]"),
        ("tel 138/1234/5678", "tel [phone]"),
        ("tel 138_1234_5678", "tel [phone]"),
        ("tel 138\u200b1234\u200b5678", "tel [phone]"),
        ("tel 1381 234 5678", "tel [phone]"),
        ("电话（010）62345678", "电话[phone]"),
        ("tel 0571.8765.4321", "tel [phone]"),
        ("证件 110101-19900307-123X", "证件 [id]"),
        ("ID 110101 1990 0307 123X", "ID [id]"),
        ("ID 110101\u200b19900307\u200b1234", "ID [id]"),
    ],
)
def test_known_spellings(text: str, expected: str) -> None:
    assert scrub_one(text) == expected


def test_nulls_stay_null_and_the_name_is_kept() -> None:
    out = scrub_text(pl.Series("description", [None, "13812345678", None]))
    assert out.name == "description"
    assert out.dtype == pl.String
    assert out.to_list() == [None, "[phone]", None]


def test_same_caller_in_different_spellings_has_one_hash() -> None:
    spellings = [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+8613812345678",
        "008613812345678",
        "86-138-1234-5678",
    ]
    hashes = keyed_hash(pl.Series(spellings), KEY)
    assert hashes.n_unique() == 1
    assert len(hashes[0]) == 32
    assert all(c in "0123456789abcdef" for c in hashes[0])
    other = keyed_hash(pl.Series(["13912345678"]), KEY)
    assert other[0] != hashes[0]


def test_other_fields_normalise_too() -> None:
    hashes = keyed_hash(
        pl.Series(
            ["11010519491231002x", "110105 19491231 002X", "+86 571 8765 4321", "0571-87654321"]
        ),
        KEY,
    )
    assert hashes[0] == hashes[1]
    assert hashes[2] == hashes[3]
    assert hashes[0] != hashes[2]


def test_different_keys_give_different_hashes() -> None:
    values = pl.Series(["13812345678"])
    assert keyed_hash(values, KEY)[0] != keyed_hash(values, b"another key")[0]


def test_nulls_and_empty_values_hash_to_null() -> None:
    out = keyed_hash(pl.Series("caller_phone", [None, "13812345678", " - ", None]), KEY)
    assert out.name == "caller_phone"
    assert out.dtype == pl.String
    assert out.is_null().to_list() == [True, False, True, True]


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_hash_does_not_contain_the_number(number: str) -> None:
    digest = keyed_hash(pl.Series([number]), KEY)[0]
    assert number not in digest
    # Not the plain hash, which anyone can recompute for every mobile number.
    assert digest != hashlib.sha256(number.encode()).hexdigest()[:32]


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="CROWDWATCH_CALLER_HASH_KEY"):
        keyed_hash(pl.Series(["13812345678"]), b"")
