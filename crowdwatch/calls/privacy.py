"""Keep callers' personal numbers out of the warehouse: scrub free text, hash caller fields.

Emergency-call records (110 dispatch / CAD feeds) carry the caller's phone number, name and
resident identity number, and dispatchers often type numbers into the free-text description.
None of these may reach ClickHouse.

What :func:`scrub_text` removes (replaced by ``[id]`` or ``[phone]``):

- resident identity numbers: 18 characters (17 digits and a digit or ``X``/``x``, optionally
  grouped 6-8-4 with spaces) and old 15-digit ones → ``[id]``;
- Chinese mobile numbers (``1[3-9]`` and 9 digits, optionally after ``+86``, ``0086`` or ``86``,
  with optional spaces or dashes grouped 3-4-4) → ``[phone]``;
- Chinese landlines (``0``, a 2–3 digit area code, 7–8 digits, optional dash/space/brackets;
  also ``+86 571 …`` without the trunk ``0``) → ``[phone]``;
- North-American numbers written with separators (``(206) 555-0123``, ``206-555-0123``,
  ``206.555.0123``, ``+1 206 555 0123``) → ``[phone]``.

What it keeps: every other character, and numbers that are not one of the above as a whole
run of digits: times (``21:30``), counts (``3 people``), house numbers (``No. 18``), years,
dates, platforms, the short service numbers (``110``, ``120``). A pattern only matches a whole
run of digits, so a 20-digit order number is not half-replaced. Full-width digits (``１３８``)
are turned into ASCII digits first (in the output too), so they are scrubbed as well.

Known limits: numbers written in words (一三八…); other groupings or separators
(``138.1234.5678`` and ``1381 234 5678`` survive; ``138 12345678`` is caught); a number glued
to other digits (``电话1381234567801``) is not a number any more; bare 10-digit North-American
numbers without separators survive (they look like timestamps); bank card numbers are not
recognised, except that 15- and 18-digit ones become ``[id]``.

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

import polars as pl

__all__ = ["keyed_hash", "scrub_text"]

ID_TOKEN = "[id]"
PHONE_TOKEN = "[phone]"

_FULL_WIDTH_DIGITS = [chr(0xFF10 + i) for i in range(10)]
_ASCII_DIGITS = [str(i) for i in range(10)]

# Polars' regex engine has no look-around, so "this digit is not followed by another digit" is
# written with a marker: _END is inserted after the last digit of every run of digits, each
# pattern must end by consuming it (so it never takes the first 11 digits of a 20-digit number),
# and the markers are removed at the end. Consuming the marker rather than the character after
# the number leaves that character to serve as the left boundary of a number right after it.
_END = "\ue000"  # a private-use character; any already in the text is removed with the markers
_MAY_END = f"{_END}?"  # inside a number, where a group of digits may end
_SEP = f"{_MAY_END}[ -]?"
_ID_18 = rf"[1-9][0-9]{{5}}{_MAY_END} ?[0-9]{{8}}{_MAY_END} ?[0-9]{{3}}(?:[0-9]{_END}|{_END}[Xx])"
_ID_15 = rf"[1-9][0-9]{{14}}{_END}"
_MOBILE = (
    rf"(?:\(?(?:\+|00)?86{_MAY_END}\)?{_SEP})?"
    rf"1[3-9][0-9]{_SEP}[0-9]{{4}}{_SEP}[0-9]{{4}}{_END}"
)
# Domestic (0571 …) or international (+86 571 …, where the trunk 0 is usually dropped).
_LANDLINE = (
    rf"(?:(?:\+|00)86{_SEP}\(?0?|\(?0)[1-9][0-9]{{1,2}}{_MAY_END}\)?"
    rf"{_SEP}[0-9]{{3,4}}{_SEP}[0-9]{{4}}{_END}"
)
# Separators are required: a bare 10-digit run is more often a timestamp than a phone number.
_NANP = (
    rf"(?:\+?1{_MAY_END}[ .-]?)?"
    rf"(?:\([2-9][0-9]{{2}}{_MAY_END}\)[ .-]?|[2-9][0-9]{{2}}{_MAY_END}[ .-])"
    rf"[2-9][0-9]{{2}}{_MAY_END}[ .-][0-9]{{4}}{_END}"
)

# IDs first, so an ID's digits are never taken for a phone number. Matching whole runs of digits
# already prevents that today; the order keeps it so if a pattern is loosened later.
_PATTERNS: list[tuple[str, str]] = [
    (_ID_18, ID_TOKEN),
    (_ID_15, ID_TOKEN),
    (_MOBILE, PHONE_TOKEN),
    (_LANDLINE, PHONE_TOKEN),
    (_NANP, PHONE_TOKEN),
]


def _ascii_digits(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_many(_FULL_WIDTH_DIGITS, _ASCII_DIGITS)


def _scrub_expr(expr: pl.Expr) -> pl.Expr:
    expr = _ascii_digits(expr.str.replace_all(_END, "", literal=True))
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
    return frame.select(_scrub_expr(pl.col("text"))).to_series().alias(text.name)


def _normalise_expr(expr: pl.Expr) -> pl.Expr:
    expr = _ascii_digits(expr).str.replace_all(r"[\s\-().]", "").str.to_uppercase()
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
