"""Expand the ClickHouse data source's macros and template variables, as Grafana would.

Lets a test run a panel's SQL on the real engine. The expansions follow the plugin's
documentation (``grafana-clickhouse-datasource``):

- ``$__timeFilter(c)`` → ``c >= toDateTime(<from s>) AND c <= toDateTime(<to s>)``
- ``$__fromTime`` / ``$__toTime`` → ``toDateTime(<epoch s>)``
- ``$__timeInterval(c)`` → ``toStartOfInterval(toDateTime(c), INTERVAL <n> second)``

Variables: ``${v:singlequote}`` quotes every value (``'a','b'``), as Grafana's format does;
``${v}`` and ``$v`` give a single value as it is and several values quoted and joined, as the
plugin's own formatter does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime

DEFAULT_POINTS = 1000
"""Grafana's usual ``maxDataPoints``: the interval is about range / points."""

_TIME_FILTER = re.compile(r"\$__timeFilter\(\s*([^)]+?)\s*\)")
_TIME_INTERVAL = re.compile(r"\$__timeInterval\(\s*([^)]+?)\s*\)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def interval_s(start: datetime, end: datetime, points: int = DEFAULT_POINTS) -> int:
    """The interval Grafana gives ``$__timeInterval``: the range over the points, at least 1 s."""
    return max(1, int((end - start).total_seconds()) // points)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _format(values: Sequence[str], fmt: str | None) -> str:
    if fmt == "singlequote" or len(values) != 1:
        return ",".join(_quote(v) for v in values)
    if fmt is None or fmt == "raw":
        return values[0]
    raise ValueError(f"variable format {fmt!r} is not supported; use singlequote or none")


def expand(
    sql: str,
    *,
    start: datetime,
    end: datetime,
    variables: Mapping[str, str | Sequence[str]] | None = None,
    points: int = DEFAULT_POINTS,
) -> str:
    """Expand the plugin's macros and the template variables in ``sql``.

    Args:
        sql: a panel's raw SQL.
        start: the dashboard range's start (timezone-aware).
        end: its end.
        variables: template variable values by name: one string or several.
        points: the panel's max data points, for ``$__timeInterval``.

    Raises:
        KeyError: the SQL uses a variable not given, naming it.
    """
    lo, hi = int(start.timestamp()), int(end.timestamp())
    step = interval_s(start, end, points)
    out = _TIME_FILTER.sub(
        lambda m: f"{m[1]} >= toDateTime({lo}) AND {m[1]} <= toDateTime({hi})", sql
    )
    out = _TIME_INTERVAL.sub(
        lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {step} second)", out
    )
    out = out.replace("$__fromTime", f"toDateTime({lo})").replace("$__toTime", f"toDateTime({hi})")
    given = dict(variables or {})

    def variable(m: re.Match[str]) -> str:
        name = m[1] or m[3]
        if name not in given:
            raise KeyError(f"SQL uses variable {name!r}; given: {sorted(given)}")
        value = given[name]
        return _format([value] if isinstance(value, str) else list(value), m[2])

    return _VARIABLE.sub(variable, out)
