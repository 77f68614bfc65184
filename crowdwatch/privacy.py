"""Keep personal numbers out of the warehouse: one scrubber for every path that may hold a person.

Emergency-call records (110 dispatch / CAD feeds) carry the caller's phone number, name and
resident identity number, and dispatchers often type numbers into free text; a record sent to
the wrong place, or one that fails a check, may carry them anywhere. Everything that may hold a
person goes through :func:`scrub_text` before it is stored: the calls' free text and ids, and
the payload and reason of every rejected record of every source (`crowdwatch.batches`,
`crowdwatch.warehouse.client`).

Matching is done on normalised text, which is also what is stored: Unicode NFKC for every
character a number can be written with (full-width, circled and mathematical digits, full-width
brackets, plus and hyphen become ASCII; a non-breaking or ideographic space a space; the rest of
the text is kept as it came), zero-width characters and soft hyphens removed, every dash (em
dash, minus sign …) read as ``-``. Between any two digits of a number one separator may
stand — spaces of every kind, a dash, ``.``, ``/``, ``_`` or ``·`` — so ``138/1234/5678``,
``138_1234_5678``, ``0571.8765.4321``, ``110101-19900307-123X`` and
``ID 110101 1990 0307 123X`` are all caught.

What :func:`scrub_text` removes (replaced by ``[id]`` or ``[phone]``):

- resident identity numbers: 18 characters (17 digits and a digit or ``X``/``x``) and old
  15-digit ones → ``[id]``;
- Chinese mobile numbers (``1[3-9]`` and 9 digits, optionally after ``+86``, ``0086`` or
  ``86``) → ``[phone]``;
- Chinese landlines (``0``, a 2–3 digit area code, 7–8 digits, optional brackets; also
  ``+86 571 …`` without the trunk ``0``) → ``[phone]``;
- North-American numbers written with separators (``(206) 555-0123``, ``206-555-0123``,
  ``206.555.0123``, ``+1 206 555 0123``) → ``[phone]``.

What it keeps: every other character, and numbers that are not one of the above as a whole
run of digits: times (``21:30``), counts (``3 people``), house numbers (``No. 18``), years,
dates, platforms, the short service numbers (``110``, ``120``). A pattern only matches a whole
run of digits, so a 20-digit order number is not half-replaced.

Known limits: numbers written in words (一三八…); a number glued to other digits
(``电话1381234567801``) is not a number any more; bare 10-digit North-American numbers without
separators survive (they look like timestamps); bank card numbers are not recognised, except
that 15- and 18-digit ones become ``[id]``; digits grouped with two separators in a row
(``138 - 1234``) are only caught when the two are a space and a dash.

Why :func:`keyed_hash`: analysts need to see that the same caller rang five times about one
crowd, without the warehouse holding the number. A plain SHA-256 of an 11-digit mobile number is
not anonymous: there are only about 7·10⁹ valid numbers, and hashing all of them takes minutes,
so every plain hash can be reversed by enumeration. An HMAC with a secret key
(``CROWDWATCH_CALLER_HASH_KEY``) cannot be enumerated without the key, yet the same number
always gives the same token, so repeat callers still link.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

import polars as pl

__all__ = [
    "keyed_hash",
    "normalise_text",
    "scrub_expr",
    "scrub_record",
    "scrub_text",
    "without_name",
]

ID_TOKEN = "[id]"
PHONE_TOKEN = "[phone]"
NAME_TOKEN = "[caller]"
CALLER_FIELDS = ("caller_phone", "caller_name", "caller_id_number")

_KEPT_FORMS = set("0123456789()+-./_Xx ")


def _nfkc_number_forms() -> dict[str, str]:
    """Every character NFKC turns into a digit, a bracket, ``+ - . / _``, ``X`` or a space.

    Full-width ``１（－``, circled and mathematical digits, no-break and ideographic spaces …:
    NFKC restricted to what a number is written with, so the rest of the text (``，`` in
    Chinese) is stored as it came.
    """
    forms = {}
    for code in [*range(0x80, 0x10000), *range(0x1D7CE, 0x1D800)]:
        char = chr(code)
        if unicodedata.category(char) == "Cs":
            continue
        normal = unicodedata.normalize("NFKC", char)
        if normal != char and normal and all(c in _KEPT_FORMS for c in normal):
            forms[char] = normal
    return forms


_NUMBER_FORMS = _nfkc_number_forms()
# NFKC leaves these alone: zero-width characters and the soft hyphen go, dashes become "-".
_INVISIBLE = r"[\u00AD\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\uFEFF]"
_DASHES = r"[\p{Pd}\u2212\u2043\uFE63\uFF0D]"

# Polars' regex engine has no look-around, so "this digit is not followed by another digit" is
# written with a marker: _END is inserted after the last digit of every run of digits, each
# pattern must end by consuming it (so it never takes the first 11 digits of a 20-digit number),
# and the markers are removed at the end. Consuming the marker rather than the character after
# the number leaves that character to serve as the left boundary of a number right after it.
_END = "\ue000"  # a private-use character; any already in the text is removed with the markers
_MAY_END = f"{_END}?"  # inside a number, where a group of digits may end
# One separator between two digits: spaces of any kind, or one of - . / _ · with spaces around.
_SEP = r"(?:\s*[-./_·]\s*|\s+)?"
_GAP = f"{_MAY_END}{_SEP}"  # between any two digits of a number


def _digits(count: int) -> str:
    """``count`` digits, a separator allowed between any two (the first is matched before)."""
    return f"(?:{_GAP}[0-9]){{{count}}}"


_ID_18 = rf"[1-9]{_digits(16)}(?:{_GAP}[0-9]{_END}|{_GAP}[Xx])"
_ID_15 = rf"[1-9]{_digits(14)}{_END}"
_MOBILE = rf"(?:\(?(?:\+|00)?86{_MAY_END}\)?{_SEP})?1{_GAP}[3-9]{_digits(9)}{_END}"
# Domestic (0571 …) or international (+86 571 …, where the trunk 0 is usually dropped).
_LANDLINE = (
    rf"(?:(?:\+|00)86{_GAP}\(?0?|\(?0)[1-9][0-9]{{1,2}}{_MAY_END}\)?"
    rf"{_SEP}[0-9]{_digits(6)}(?:{_GAP}[0-9])?{_END}"
)
# Separators are required: a bare 10-digit run is more often a timestamp than a phone number.
_NANP = (
    rf"(?:\+?1{_MAY_END}[ .-]?)?"
    rf"(?:\([2-9][0-9]{{2}}{_MAY_END}\)[ .-]?|[2-9][0-9]{{2}}{_MAY_END}[ .-])"
    rf"[2-9][0-9]{{2}}{_MAY_END}[ .-][0-9]{{4}}{_END}"
)

# IDs first, so an ID's digits are never taken for a phone number.
_PATTERNS: list[tuple[str, str]] = [
    (_ID_18, ID_TOKEN),
    (_ID_15, ID_TOKEN),
    (_MOBILE, PHONE_TOKEN),
    (_LANDLINE, PHONE_TOKEN),
    (_NANP, PHONE_TOKEN),
]


def normalise_text(expr: pl.Expr) -> pl.Expr:
    """Number forms NFKC-normalised, zero-width characters removed, every dash a ``-``.

    This is what scrubbing matches on, and what is stored.
    """
    return (
        expr.str.replace_many(list(_NUMBER_FORMS), list(_NUMBER_FORMS.values()))
        .str.replace_all(_INVISIBLE, "")
        .str.replace_all(_DASHES, "-")
        .str.replace_all(_END, "", literal=True)
    )


def scrub_expr(expr: pl.Expr) -> pl.Expr:
    """`scrub_text` as a polars expression on a string column."""
    expr = normalise_text(expr)
    expr = expr.str.replace_all(r"([0-9])([^0-9]|$)", f"${{1}}{_END}${{2}}")
    for body, token in _PATTERNS:
        # The left neighbour (a non-digit, or the start) is matched as group 1 and put back.
        expr = expr.str.replace_all(rf"(^|[^0-9]){body}", f"${{1}}{token}")
    return expr.str.replace_all(_END, "", literal=True)


def scrub_text(text: pl.Series) -> pl.Series:
    """Replace identity and phone numbers in free text by ``[id]`` and ``[phone]``.

    Vectorised (regular expressions run by polars, no Python per row). Nulls stay null; the
    series keeps its name. See the module docstring for what is and is not recognised.
    """
    frame = text.cast(pl.String).to_frame("text")
    return frame.select(scrub_expr(pl.col("text"))).to_series().alias(text.name)


def without_name(text: str | None, name: str | None) -> str | None:
    """``text`` with ``name`` replaced by ``[caller]``, however it is spaced.

    ``欧阳 娜娜``, ``欧阳娜娜`` and ``欧阳\u200b娜娜`` are one name; so are ``Zhang  Wei`` and
    ``ZhangWei``. Names of one character are left alone (too many false hits).
    """
    letters = re.sub(r"[\s\u200b-\u200f\u2060\ufeff\u00ad]+", "", name or "")
    if not text or len(letters) < 2:
        return text
    gap = r"[\s\u200b-\u200f\u2060\ufeff\u00ad]*"
    pattern = gap.join(re.escape(c) for c in letters)
    return re.sub(pattern, NAME_TOKEN, text, flags=re.IGNORECASE)


_CALLER_VALUE = r'"(caller_(?:name|phone|id_number))"\s*:\s*"(?:[^"\\]|\\.)*"'
_CALLER_NAME = r'"caller_name"\s*:\s*"((?:[^"\\]|\\.)*)"'


def scrub_record(payloads: pl.Series) -> pl.Series:
    """A stored record's raw text (a rejected payload of any source) with nothing personal left.

    Caller fields (``caller_phone``, ``caller_name``, ``caller_id_number``) lose their value
    wherever they appear in the JSON, the caller's name is removed from the rest of the
    record, then the text is scrubbed as `scrub_text` does. Python runs only for records that
    name a caller.
    """
    text = payloads.cast(pl.String)
    names = text.str.extract(_CALLER_NAME, 1)
    if names.is_not_null().any():
        text = pl.Series(
            text.name,
            [without_name(t, n) for t, n in zip(text.to_list(), names.to_list(), strict=True)],
            dtype=pl.String,
        )
    text = text.str.replace_all(_CALLER_VALUE, '"${1}":null')
    return scrub_text(text)


def _normalise_expr(expr: pl.Expr) -> pl.Expr:
    expr = normalise_text(expr).str.replace_all(r"[\s\-().]", "").str.to_uppercase()
    # The same caller with or without a country code: +86 138…, 0086 138…, 86 138… → 138…
    expr = expr.str.replace(r"^(?:\+86|0086|86)(1[3-9][0-9]{9})$", "${1}")
    # International landline (+86 571 8765 4321) → domestic (0571 8765 4321).
    expr = expr.str.replace(r"^(?:\+86|0086)0?([1-9][0-9]{8,10})$", "0${1}")
    # A plus is needed for +1: "1" + 10 digits is also the shape of a Chinese mobile number.
    expr = expr.str.replace(r"^\+1([2-9][0-9]{9})$", "${1}")
    return pl.when(expr != "").then(expr)


def keyed_hash(values: pl.Series, key: bytes) -> pl.Series:
    """HMAC-SHA256 of each value, as 32 hex characters, to link callers without storing them.

    Values are normalised first so that spellings of the same caller match: whitespace, dashes,
    dots and brackets are removed, letters are upper-cased (``x`` in an ID number), and a
    leading ``+86`` / ``0086`` / ``86`` (mobiles) or ``+1`` is dropped. Null, or a value that is
    empty once normalised, gives null. The HMAC is computed once per distinct value.

    Args:
        values: caller phone numbers, names or ID numbers (cast to strings).
        key: the secret key; the same key must be used for as long as callers should link.

    Raises:
        ValueError: the key is empty.
    """
    if not key:
        raise ValueError(
            "the caller hash key is empty: set CROWDWATCH_CALLER_HASH_KEY to a long random secret"
        )
    frame = values.cast(pl.String).to_frame("value")
    normalised = frame.select(_normalise_expr(pl.col("value"))).to_series().alias(values.name)
    distinct: list[str] = normalised.drop_nulls().unique().to_list()
    digests = [
        hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32] for value in distinct
    ]
    return normalised.replace_strict(distinct, digests, default=None, return_dtype=pl.String)
