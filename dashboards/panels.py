"""Shared panel defaults: the ClickHouse data source, SQL targets and the four level colours.

The SDK has no builder for the ClickHouse plugin's query, so `ClickHouseQuery` is a small
`Dataquery` of our own and `sql` returns a builder for it. Every dashboard module builds its
targets with `sql` and colours levels with `LEVEL_MAPPINGS` / `level_thresholds`.
"""

from __future__ import annotations

import enum
import typing

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as model

DATASOURCE = model.DataSourceRef(
    type_val="grafana-clickhouse-datasource", uid="crowdwatch-clickhouse"
)
"""The provisioned ClickHouse data source every panel and variable reads."""

LEVELS: tuple[str, ...] = ("blue", "yellow", "orange", "red")
"""Warning levels, lowest first; each shown in the Grafana colour of the same name."""

SHARE_THRESHOLDS: tuple[float, ...] = (0.6, 0.8, 0.9, 1.0)
"""Capacity share at which each level starts (`crowdwatch.levels.Thresholds.share`)."""


class Format(enum.IntEnum):
    """How the plugin shapes a result (its ``format`` field)."""

    TIME_SERIES = 0
    TABLE = 1


class ClickHouseQuery(cogvariants.Dataquery):
    """A raw SQL query of the ``grafana-clickhouse-datasource`` plugin."""

    def __init__(self, ref_id: str, raw_sql: str, format_val: Format) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format_val = format_val

    def to_json(self) -> dict[str, object]:
        """The target as the plugin stores it in dashboard JSON."""
        return {
            "datasource": DATASOURCE,
            "editorType": "sql",
            "format": int(self.format_val),
            "queryType": "timeseries" if self.format_val is Format.TIME_SERIES else "table",
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class ClickHouseQueryBuilder(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builds a `ClickHouseQuery` (a panel's ``with_target`` takes builders)."""

    def __init__(self, query: ClickHouseQuery) -> None:
        self._internal = query

    def build(self) -> ClickHouseQuery:
        """The query."""
        return self._internal


def sql(query: str, *, ref_id: str = "A", table: bool = False) -> ClickHouseQueryBuilder:
    """A ClickHouse SQL target.

    Args:
        query: SQL with the plugin's macros (``$__timeFilter(ts)``) and variables
            (``${zone:singlequote}``); tables unqualified (the data source names the database).
        ref_id: the target's id within its panel.
        table: shape the result as a table instead of time series.
    """
    fmt = Format.TABLE if table else Format.TIME_SERIES
    return ClickHouseQueryBuilder(ClickHouseQuery(ref_id, query.strip(), fmt))


def _level_color(level: str, index: int) -> model.ValueMappingResult:
    return model.ValueMappingResult(text=level, color=level, index=index)


LEVEL_MAPPINGS: list[model.ValueMapping] = [
    model.ValueMap(options={level: _level_color(level, i) for i, level in enumerate(LEVELS)}),
    model.ValueMap(
        options={str(i + 1): _level_color(level, i + 1) for i, level in enumerate(LEVELS)}
        | {"0": model.ValueMappingResult(text="none", color="green", index=0)}
    ),
]
"""Level names (``blue``) and ranks (1-4, 0 for none) shown in their colours."""


def level_thresholds(
    limits: typing.Sequence[float] = SHARE_THRESHOLDS,
) -> cogbuilder.Builder[model.ThresholdsConfig]:
    """Absolute thresholds: green below the first limit, then blue, yellow, orange, red."""
    steps = [model.Threshold(value=None, color="green")]
    steps += [model.Threshold(value=v, color=c) for v, c in zip(limits, LEVELS, strict=True)]
    return dashboard.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)
