"""Shared panel defaults: the ClickHouse data source, SQL targets, panels and level colours.

The SDK has no builder for the ClickHouse plugin's query, so `ClickHouseQuery` is a small
`Dataquery` of our own and `sql` returns a builder for it. Every dashboard module starts its stat,
time series and table panels with `stat_panel`, `timeseries_panel` and `table_panel` (data
source and target set), and colours levels with `LEVEL_MAPPINGS` / `level_thresholds`.
"""

from __future__ import annotations

import enum
import typing

from grafana_foundation_sdk.builders import common, dashboard, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model

from crowdwatch.risk import levels

DATASOURCE = model.DataSourceRef(
    type_val="grafana-clickhouse-datasource", uid="crowdwatch-clickhouse"
)
"""The provisioned ClickHouse data source every panel and variable reads."""

LEVELS: tuple[str, ...] = levels.LEVELS
"""Warning levels, lowest first; each shown in the Grafana colour of the same name."""

SHARE_THRESHOLDS: tuple[float, ...] = levels.Thresholds().share
"""Capacity share at which each level starts (the default `crowdwatch.risk.levels.Thresholds`)."""


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


def stat_panel(
    title: str,
    query: str,
    *,
    span: int,
    color_mode: common_model.BigValueColorMode = common_model.BigValueColorMode.VALUE,
) -> stat.Panel:
    """A stat panel, 4 high, of a table query: its big values without a sparkline.

    Args:
        title: the panel's title.
        query: SQL returning one row; each column is shown as a value.
        span: the panel's width in grid columns (24 in a row).
        color_mode: what the thresholds colour (the value, its background, or nothing).
    """
    return (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(sql(query, table=True))
        .color_mode(color_mode)
        .graph_mode(common_model.BigValueGraphMode.NONE)
        .height(4)
        .span(span)
    )


def timeseries_panel(title: str, query: str, *, height: int, span: int) -> timeseries.Panel:
    """A time series panel of a SQL query (target ``A``); add further targets with `sql`."""
    return (
        timeseries.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(sql(query))
        .height(height)
        .span(span)
    )


def table_panel(title: str, query: str, *, height: int, span: int) -> table.Panel:
    """A table panel of a SQL query shaped as a table."""
    return (
        table.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(sql(query, table=True))
        .height(height)
        .span(span)
    )


def absolute_thresholds(
    base: str, steps: typing.Sequence[tuple[float, str]]
) -> cogbuilder.Builder[model.ThresholdsConfig]:
    """Absolute thresholds: ``base`` colour below the first step, then each ``(value, colour)``."""
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps(
            [model.Threshold(value=None, color=base)]
            + [model.Threshold(value=value, color=color) for value, color in steps]
        )
    )


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
    return absolute_thresholds("green", list(zip(limits, LEVELS, strict=True)))


class ClickHouseAnnotationTarget(model.AnnotationTarget):
    """An annotation query's target: the plugin's SQL query.

    Grafana stores a data source annotation's query in ``target``. Its schema still describes
    the fields of Grafana's own annotation store (limit, matchAny, tags, type: "TODO.. this
    should just be a normal query target"); they are set, and the plugin's query fields added.
    """

    def __init__(self, raw_sql: str) -> None:
        super().__init__(limit=100, match_any=False, tags=[], type_val="tags")
        self.raw_sql = raw_sql

    def to_json(self) -> dict[str, object]:
        """The Grafana fields and the plugin's query fields."""
        return super().to_json() | ClickHouseQuery("Anno", self.raw_sql, Format.TABLE).to_json()


class _AnnotationTargetBuilder(cogbuilder.Builder[model.AnnotationTarget]):
    def __init__(self, target: ClickHouseAnnotationTarget) -> None:
        self._internal = target

    def build(self) -> model.AnnotationTarget:
        return self._internal


def annotation(name: str, query: str, color: str = "red") -> dashboard.AnnotationQuery:
    """An annotation from a ClickHouse query returning ``time``, ``text`` and ``tags``.

    Args:
        name: shown in the dashboard's annotation toggles.
        query: SQL with the plugin's macros and the dashboard's variables.
        color: the markers' colour.
    """
    return (
        dashboard.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(color)
        .target(_AnnotationTargetBuilder(ClickHouseAnnotationTarget(query.strip())))
    )


def markers(
    name: str, *, color_field: str | None = None, size_field: str | None = None
) -> cogbuilder.Builder[common_model.MapLayerOptions]:
    """A geomap markers layer placed by the ``lat`` and ``lon`` columns.

    Args:
        name: the layer's name.
        color_field: a numeric column coloured by the panel's thresholds (else one colour).
        size_field: a numeric column that scales the markers (else a fixed size).
    """
    color: dict[str, object] = {"fixed": "dark-green"}
    if color_field:
        color["field"] = color_field
    size: dict[str, object] = {"fixed": 6, "min": 4, "max": 16}
    if size_field:
        size["field"] = size_field
    return (
        common.MapLayerOptions()
        .type("markers")
        .name(name)
        .location(
            common.FrameGeometrySource()
            .mode(common_model.FrameGeometrySourceMode.COORDS)
            .latitude("lat")
            .longitude("lon")
        )
        .config({"showLegend": True, "style": {"color": color, "size": size, "opacity": 0.8}})
        .tooltip(True)
    )


def basemap() -> cogbuilder.Builder[common_model.MapLayerOptions]:
    """The default OpenStreetMap-based base layer."""
    return common.MapLayerOptions().type("default").name("Basemap")


def level_cells() -> list[model.DynamicConfigValue]:
    """Field overrides for a table column of levels: each cell in its level's colour.

    Use on the level columns only (``override_by_name("level", level_cells())``): as panel
    defaults the mappings would also turn a headcount of 1-4 into a level name.
    """
    return [
        model.DynamicConfigValue(
            id_val="mappings", value=[mapping.to_json() for mapping in LEVEL_MAPPINGS]
        ),
        model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
    ]
