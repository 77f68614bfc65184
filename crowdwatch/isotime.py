"""Fast, strict parsing of ISO 8601 timestamps to epoch milliseconds.

Feeds send one time per record, so parsing time text is the largest per-record cost of a
pipeline. The form real feeds send most, ``YYYY-MM-DDTHH:MM:SS.fff+HH:MM`` (29 bytes), is
read here straight from the Arrow string buffer with numpy, about four times faster than
polars' ``strptime``. Every other form, and any row the fast path cannot vouch for, goes to
polars: ``Z`` and ``+0800`` offsets, a space instead of ``T``, no or other fractions, and
naive local times (read in the given time zone). Invalid times come out null.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

_WIDTH = 29
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 24, 25, 27, 28])
_SEPARATORS = {4: b"-", 7: b"-", 10: b"T", 13: b":", 16: b":", 19: b".", 26: b":"}
_SIGN = 23
# year, month, day, hour, minute, second, millisecond, offset hours, offset minutes
_FIELD_DIGITS = [(0, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14), (14, 17), (17, 19), (19, 21)]
_WEIGHTS = np.zeros((_DIGITS.size, len(_FIELD_DIGITS)), dtype=np.float32)
for _field, (_first, _end) in enumerate(_FIELD_DIGITS):
    for _k in range(_first, _end):
        _WEIGHTS[_k, _field] = 10.0 ** (_end - 1 - _k)
_STRICT_FORM = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$"
_MAX_MS = 7_258_118_400_000  # 2200-01-01: times outside 1970-2199 are not valid here
_DAYS_IN_MONTH = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _days_from_civil(
    year: npt.NDArray[np.int64], month: npt.NDArray[np.int64], day: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return np.asarray(era * 146_097 + doe - 719_468, dtype=np.int64)


def _fixed_width(text: pl.Series) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Epoch ms of rows in the 29-byte offset form, and which rows were read that way."""
    array = text.cast(pl.String).to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = array.cast(pa.large_string())
    n = len(array)
    offsets = np.frombuffer(
        array.buffers()[1], dtype=np.int64, count=n + 1, offset=array.offset * 8
    )
    data_buffer = array.buffers()[2]
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)
        if data_buffer is not None
        else np.zeros(0, np.uint8)
    )
    fits = (np.diff(offsets) == _WIDTH) & ~np.asarray(array.is_null(), dtype=bool)
    epoch = np.zeros(n, dtype=np.int64)
    rows = np.flatnonzero(fits)
    if rows.size == 0:
        return epoch, fits
    if rows.size == n:  # every row in the form: the buffer is one n x 29 byte matrix
        raw = data[offsets[0] : offsets[0] + n * _WIDTH].reshape(n, _WIDTH)
    else:
        raw = data[offsets[rows][:, None] + np.arange(_WIDTH)]
    digits = raw[:, _DIGITS] - np.uint8(48)
    ok = (digits <= 9).all(axis=1)
    for position, char in _SEPARATORS.items():
        ok &= raw[:, position] == char[0]
    sign_char = raw[:, _SIGN]
    ok &= (sign_char == ord("+")) | (sign_char == ord("-"))
    fields = (digits.astype(np.float32) @ _WEIGHTS).astype(np.int64)
    year, month, day, hour, minute, second, milli, off_h, off_m = fields.T
    ok &= (month >= 1) & (month <= 12) & (day >= 1)
    ok &= day <= _DAYS_IN_MONTH[np.clip(month, 0, 12)]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    ok &= (month != 2) | (day <= 28) | leap
    ok &= (hour < 24) & (minute < 60) & (second < 60) & (off_h < 24) & (off_m < 60)
    sign = np.where(sign_char == ord("-"), -1, 1)
    seconds = ((_days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60 + second
    ms = seconds * 1000 + milli - sign * (off_h * 60 + off_m) * 60_000
    epoch[rows] = ms
    fits[rows] = ok & (ms >= 0) & (ms < _MAX_MS)
    return epoch, fits


def epoch_ms(text: pl.Series, timezone: str) -> pl.Series:
    """Parse ISO 8601 text to epoch milliseconds (Int64); null where it is not a valid time.

    Accepts ``YYYY-MM-DD[T ]HH:MM:SS[.fff]`` with an offset (``Z``, ``+08:00``, ``+0800``) or
    without one, in which case the time is local to ``timezone``. Years outside 1970-2199
    are refused as implausible for a live feed.
    """
    fast, done = _fixed_width(text)
    out = pl.Series(text.name, pa.array(fast, mask=~done, type=pa.int64()))
    retry = ~done & text.is_not_null().to_numpy()
    if not retry.any():
        return out
    index = pl.Series(np.flatnonzero(retry))
    rest = text.gather(index).str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    rest = rest.set(~rest.str.contains(_STRICT_FORM), None)  # chrono alone accepts " 8:00"
    with_offset = rest.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_unit="ms", time_zone="UTC"
    )
    naive = (
        rest.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="ms")
        .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
    )
    slow = with_offset.fill_null(naive).dt.epoch("ms")
    slow = slow.set(slow.is_not_null() & ((slow < 0) | (slow >= _MAX_MS)), None)
    return out.scatter(index, slow)
