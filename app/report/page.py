"""``crowdwatch report``, the drawing half: a `Report` as one self-contained HTML page.

Time series as inline SVG with the capacity line and the level colours, state timelines, stat
tiles and tables, in Grafana's colours; the page has inline CSS and SVG only and loads nothing
from the network. The data comes from `app.report.queries.build_report`.
"""

from __future__ import annotations

import html
import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import polars as pl

from app.report.queries import (
    PanelResult,
    Report,
    aware,
    frame_of,
    local_time,
    worst_alert,
)
from dashboards.overview import UID as OVERVIEW_UID
from dashboards.panels import LEVELS, SHARE_THRESHOLDS
from dashboards.pipeline import UID as PIPELINE_UID
from dashboards.response import UID as RESPONSE_UID
from dashboards.zone import UID as ZONE_UID

COLORS: dict[str, str] = {
    "green": "#73BF69",
    "blue": "#5794F2",
    "yellow": "#FADE2A",
    "orange": "#FF9830",
    "red": "#F2495C",
    "purple": "#B877D9",
    "transparent": "transparent",
}
"""Grafana's named colours, so a level looks the same here as on the dashboards."""

SERIES_COLORS = ("#1F60C4", "#8F3BB8", "#37872D", "#C4162A", "#6E6E6E", "#E0752D")
"""Colours for series without their own: darker than the level colours, to stand apart."""

NO_LEVEL = "#E4E7EB"
"""The colour of ``none``: no warning."""

OTHER_STATES = ("#E3EBF1", "#4F6478")
"""Lightest and darkest colour for state values without a mapping (level of service A-F)."""


# -- formatting --------------------------------------------------------------------------------


def esc(value: object) -> str:
    """Text escaped for HTML and SVG, quotes included."""
    return html.escape(str(value), quote=True)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_value(value: object, unit: str = "none", tz: tzinfo = UTC) -> str:
    """A cell or tile value as text: thousands separated, percent for ``percentunit``."""
    if _is_missing(value):
        return "–"
    if isinstance(value, datetime):
        return local_time(value, tz).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if unit == "percentunit":
        pct = float(value) * 100
        return f"{pct:.1f} %" if abs(pct) < 10 and pct != round(pct) else f"{pct:.0f} %"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _epoch(ts: datetime) -> float:
    return aware(ts).timestamp()


def time_column(frame: pl.DataFrame) -> str | None:
    """The frame's time field: its first date-time column, or an integer column named time.

    ``DateTime`` (not ``DateTime64``) arrives as epoch seconds, as from ``$__timeInterval``.
    """
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime | pl.Date):
            return name
    for name in ("time", "ts"):
        if name in frame.columns and frame.schema[name].is_integer():
            return name
    return None


def epochs(column: pl.Series) -> list[float]:
    """A time column as epoch seconds."""
    if column.dtype.is_integer():
        return [float(v) for v in column.to_list()]
    return [_epoch(t) for t in column.to_list()]


def _color(name: str | None) -> str:
    if not name:
        return SERIES_COLORS[0]
    return COLORS.get(name, name)


def _ink(background: str) -> str:
    """Dark or white text, whichever reads on the background."""
    if not background.startswith("#") or len(background) != 7:
        return "#1b1f24"
    r, g, b = (int(background[i : i + 2], 16) for i in (1, 3, 5))
    return "#1b1f24" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#ffffff"


def _ramp(i: int, n: int) -> str:
    """The i-th of n colours from light to dark (`OTHER_STATES`)."""
    light, dark = (tuple(int(c[k : k + 2], 16) for k in (1, 3, 5)) for c in OTHER_STATES)
    share = i / max(n - 1, 1)
    mix = (round(a + (b - a) * share) for a, b in zip(light, dark, strict=True))
    return "#" + "".join(f"{v:02X}" for v in mix)


def _value_key(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def mapped(value: object, mappings: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The text and colour a value mapping gives ``value``, or None without one."""
    key = _value_key(value)
    for mapping in mappings:
        if mapping.get("type") == "value" and key in (mapping.get("options") or {}):
            result = mapping["options"][key]
            return str(result.get("text", key)), _color(result.get("color"))
    return None


def threshold_color(value: object, thresholds: Mapping[str, Any] | None) -> str | None:
    """The colour of the absolute threshold step ``value`` falls in, or None."""
    if not thresholds or _is_missing(value) or not isinstance(value, int | float):
        return None
    color = None
    for step in thresholds.get("steps") or []:
        if step.get("value") is None or value >= step["value"]:
            color = _color(step.get("color"))
    return color


def _field_config(panel: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The panel's field defaults with the overrides for the field ``name`` applied."""
    config = dict(panel.get("fieldConfig", {}).get("defaults") or {})
    config["custom"] = dict(config.get("custom") or {})
    for override in panel.get("fieldConfig", {}).get("overrides") or []:
        matcher = override.get("matcher") or {}
        if matcher.get("id") == "byName" and matcher.get("options") == name:
            for prop in override.get("properties") or []:
                key, value = str(prop.get("id")), prop.get("value")
                if key.startswith("custom."):
                    config["custom"][key.removeprefix("custom.")] = value
                else:
                    config[key] = value
    return config


# -- SVG: shared axes -------------------------------------------------------------------------

_STEPS_MIN = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)


def time_ticks(start: datetime, end: datetime, tz: tzinfo, most: int) -> list[datetime]:
    """Round local times between start and end, at most ``most`` of them."""
    span_min = (end - start).total_seconds() / 60
    step = next((s for s in _STEPS_MIN if span_min / s <= most), _STEPS_MIN[-1])
    local = local_time(start, tz)
    tick = local.replace(hour=0, minute=0, second=0, microsecond=0)
    ticks = []
    while tick <= local_time(end, tz):
        if tick >= local:
            ticks.append(tick)
        tick += timedelta(minutes=step)
    return ticks


def value_ticks(top: float, most: int = 5) -> tuple[float, list[float]]:
    """A round axis top at or above ``top`` and the ticks from 0 up to it."""
    if top <= 0 or math.isnan(top):
        top = 1.0
    raw = top / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    count = math.ceil(top / step - 1e-9)
    return count * step, [i * step for i in range(count + 1)]


@dataclass(frozen=True)
class _Frame:
    """The plot area of a chart in SVG units, and its scales."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float
    t0: float
    t1: float
    ymax: float = 1.0

    def x(self, t: float) -> float:
        span = (self.t1 - self.t0) or 1.0
        return self.left + (t - self.t0) / span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        return self.height - self.bottom - v / self.ymax * (self.height - self.top - self.bottom)


def _time_axis(frame: _Frame, start: datetime, end: datetime, tz: tzinfo) -> list[str]:
    parts = []
    plot_w = frame.width - frame.left - frame.right
    ticks = time_ticks(start, end, tz, max(2, int(plot_w // 95)))
    multi_day = local_time(start, tz).date() != local_time(end, tz).date()
    base = frame.height - frame.bottom
    for tick in ticks:
        x = frame.x(tick.timestamp())
        label = tick.strftime("%H:%M")
        if multi_day and tick.hour == 0 and tick.minute == 0:
            label = tick.strftime("%d %b")
        parts.append(
            f'<line x1="{x:.1f}" y1="{frame.top:.1f}" x2="{x:.1f}" y2="{base:.1f}" '
            'class="grid"/>'
            f'<text x="{x:.1f}" y="{base + 16:.1f}" class="tick" text-anchor="middle">'
            f"{esc(label)}</text>"
        )
    parts.append(
        f'<line x1="{frame.left:.1f}" y1="{base:.1f}" x2="{frame.width - frame.right:.1f}" '
        f'y2="{base:.1f}" class="axis"/>'
    )
    return parts


# -- SVG: time series -------------------------------------------------------------------------


@dataclass
class _Series:
    name: str
    times: list[float]
    values: list[float | None]
    config: dict[str, Any]
    color: str = ""


def _series_of(panel: Mapping[str, Any], frames: Mapping[str, pl.DataFrame]) -> list[_Series]:
    out = []
    for frame in frames.values():
        times_col = time_column(frame)
        if times_col is None or frame.height == 0:
            continue
        frame = frame.sort(times_col)
        times = epochs(frame[times_col])
        for name, dtype in frame.schema.items():
            if name == times_col or not dtype.is_numeric():
                continue
            values = [None if _is_missing(v) else float(v) for v in frame[name].to_list()]
            out.append(_Series(name, times, values, _field_config(panel, name)))
    palette = iter(SERIES_COLORS * 3)
    for series in out:
        color = series.config.get("color") or {}
        fixed = color.get("fixedColor") if color.get("mode") == "fixed" else None
        series.color = _color(fixed) if fixed else next(palette)
    return out


def _thin(
    times: Sequence[float], values: Sequence[float | None], frame: _Frame
) -> list[tuple[float, float] | None]:
    """Points in SVG units, at most a few per pixel column (first, min, max, last); None: gap."""
    points: list[tuple[float, float] | None] = []
    bucket: list[tuple[float, float]] = []
    column = None

    def flush() -> None:
        if not bucket:
            return
        keep = {0, len(bucket) - 1}
        keep.add(min(range(len(bucket)), key=lambda i: bucket[i][1]))
        keep.add(max(range(len(bucket)), key=lambda i: bucket[i][1]))
        points.extend(bucket[i] for i in sorted(keep))
        bucket.clear()

    for t, v in zip(times, values, strict=True):
        if v is None:
            flush()
            points.append(None)
            column = None
            continue
        x, y = frame.x(t), frame.y(v)
        if column is not None and int(x) != column:
            flush()
        column = int(x)
        bucket.append((x, y))
    flush()
    return points


def _runs(points: list[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if point is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(point)
    return [r for r in runs if r]


def _path(run: Sequence[tuple[float, float]]) -> str:
    return "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in run)


def svg_timeseries(
    panel: Mapping[str, Any],
    frames: Mapping[str, pl.DataFrame],
    *,
    start: datetime,
    end: datetime,
    tz: tzinfo,
    width: float,
    height: float = 280,
) -> tuple[str, list[_Series], int]:
    """A time-series panel as SVG: lines, fills, capacity bands and dashed thresholds.

    Returns the SVG, the series drawn and the number of data points plotted.
    """
    series = _series_of(panel, frames)
    values = [v for s in series for v in s.values if v is not None]
    unit = str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "none"))
    top, ticks = value_ticks(max(values, default=1.0) * 1.05)
    frame = _Frame(width, height, 58, 16, 12, 26, _epoch(start), _epoch(end), top)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'class="chart" role="img" aria-label="{esc(panel.get("title", ""))}" '
        f'data-panel="{esc(panel.get("title", ""))}" data-points="{{points}}">'
    ]
    # the levels' capacity shares as faint bands behind a series named capacity
    bands: list[str] = []  # labels, drawn over the lines
    capacity = next((s for s in series if s.name == "capacity"), None)
    cap = next((v for v in capacity.values if v), None) if capacity else None
    if cap:
        limits = [*SHARE_THRESHOLDS[1:], math.inf]
        for level, low, high in zip(LEVELS, SHARE_THRESHOLDS, limits, strict=True):
            y_low, y_high = frame.y(min(low * cap, top)), frame.y(min(high * cap, top))
            if y_low - y_high > 0.5:
                parts.append(
                    f'<rect x="{frame.left}" y="{y_high:.1f}" '
                    f'width="{width - frame.left - frame.right:.1f}" height="{y_low - y_high:.1f}" '
                    f'fill="{COLORS[level]}" fill-opacity="0.13">'
                    f"<title>{esc(level)}: from {low:.0%} of capacity</title></rect>"
                )
            if y_low - y_high >= 12:
                bands.append(
                    f'<text x="{width - frame.right - 6:.1f}" y="{y_low - 3:.1f}" '
                    f'class="band" text-anchor="end">{esc(level)} ≥ {low:.0%}</text>'
                )
    for tick in ticks:
        y = frame.y(tick)
        parts.append(
            f'<line x1="{frame.left}" y1="{y:.1f}" x2="{width - frame.right}" y2="{y:.1f}" '
            f'class="grid"/><text x="{frame.left - 6}" y="{y + 4:.1f}" class="tick" '
            f'text-anchor="end">{esc(fmt_value(tick, unit))}</text>'
        )
    parts += _time_axis(frame, start, end, tz)
    defaults = panel.get("fieldConfig", {}).get("defaults") or {}
    if (defaults.get("custom") or {}).get("thresholdsStyle", {}).get("mode") == "dashed":
        for step in (defaults.get("thresholds") or {}).get("steps") or []:
            value = step.get("value")
            if value is not None and value <= top:
                y = frame.y(value)
                parts.append(
                    f'<line x1="{frame.left}" y1="{y:.1f}" x2="{width - frame.right}" '
                    f'y2="{y:.1f}" stroke="{_color(step.get("color"))}" stroke-width="1.5" '
                    'stroke-dasharray="6 4"/>'
                )
    by_name = {s.name: s for s in series}
    points = 0
    for s in series:
        below = s.config["custom"].get("fillBelowTo")
        other = by_name.get(str(below)) if below else None
        if other is not None and len(other.values) == len(s.values):
            # a band between two series of one frame (forecast_lower up to forecast_upper)
            pairs = [
                (t, lo, hi)
                for t, lo, hi in zip(s.times, s.values, other.values, strict=True)
                if lo is not None and hi is not None
            ]
            if pairs:
                upper = [(frame.x(t), frame.y(hi)) for t, _, hi in pairs]
                lower = [(frame.x(t), frame.y(lo)) for t, lo, _ in reversed(pairs)]
                parts.append(
                    f'<path d="{_path(upper + lower)} Z" fill="{s.color}" fill-opacity="0.18"/>'
                )
    for s in series:
        thinned = _thin(s.times, s.values, frame)
        points += sum(1 for v in s.values if v is not None)
        opacity = float(s.config["custom"].get("fillOpacity", 0) or 0) / 100
        line_width = s.config["custom"].get("lineWidth", 2 if s.name != "capacity" else 1.5)
        base = frame.y(0)
        for run in _runs(thinned):
            if opacity > 0 and not s.config["custom"].get("fillBelowTo"):
                area = f"{_path(run)} L{run[-1][0]:.1f},{base:.1f} L{run[0][0]:.1f},{base:.1f} Z"
                parts.append(f'<path d="{area}" fill="{s.color}" fill-opacity="{opacity:.2f}"/>')
            if line_width:
                dash = ' stroke-dasharray="8 5"' if s.name == "capacity" else ""
                parts.append(
                    f'<path d="{_path(run)}" fill="none" stroke="{s.color}" '
                    f'stroke-width="{line_width}" stroke-linejoin="round"{dash}>'
                    f"<title>{esc(s.name)}</title></path>"
                )
    parts += bands
    if not values:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" class="nodata" '
            'text-anchor="middle">no data in the range</text>'
        )
    parts.append("</svg>")
    return "".join(parts).replace("{points}", str(points), 1), series, points


def _legend(series: Sequence[_Series], unit: str) -> str:
    items = []
    for s in series:
        if not s.config["custom"].get("lineWidth", 1) and not s.config["custom"].get("fillBelowTo"):
            continue
        present = [v for v in s.values if v is not None]
        stats = f"max {fmt_value(max(present), unit)}" if present else "no data"
        if s.name == "capacity" and present:
            stats = fmt_value(present[-1], unit)
        name = "forecast band" if s.config["custom"].get("fillBelowTo") else s.name
        items.append(
            f'<span class="key"><i style="background:{s.color}"></i>{esc(name)} '
            f"<b>{esc(stats)}</b></span>"
        )
    return f'<div class="legend">{"".join(items)}</div>' if items else ""


# -- SVG: state timeline ----------------------------------------------------------------------


def _state_rows(
    frames: Mapping[str, pl.DataFrame], formats: Mapping[str, int]
) -> list[tuple[str, list[float], list[object]]]:
    """(row label, times, values) per row; a time-series frame's string columns are labels."""
    rows = []
    for ref, frame in frames.items():
        time_col = time_column(frame)
        if time_col is None or frame.height == 0:
            continue
        frame = frame.sort(time_col)
        labels = [c for c, t in frame.schema.items() if t == pl.String and c != time_col]
        values = [c for c in frame.columns if c != time_col and c not in labels]
        if formats.get(ref, 1) == 0 and labels and values:
            for key, group in frame.group_by(labels, maintain_order=True):
                label = " ".join(str(k) for k in key)
                times = epochs(group[time_col])
                for col in values:
                    rows.append((label, times, group[col].to_list()))
            rows.sort(key=lambda r: r[0])
        else:
            times = epochs(frame[time_col])
            for col in [c for c in frame.columns if c != time_col]:
                rows.append((col, times, frame[col].to_list()))
    return rows


def state_runs(
    times: Sequence[float], values: Sequence[object], end: float
) -> list[tuple[float, float, object]]:
    """Runs of one value: (from, to, value); a value holds until the next reading.

    The last reading, and one followed by a gap of more than ten usual steps, holds one step.
    """
    if not times:
        return []
    steps = [b - a for a, b in itertools.pairwise(times) if b > a]
    step = statistics.median(steps) if steps else 60.0
    runs: list[tuple[float, float, object]] = []
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        nxt = times[i + 1] if i + 1 < len(times) else min(end, t + step)
        stop = nxt if nxt - t <= 10 * step else t + step
        if runs and runs[-1][2] == v and abs(runs[-1][1] - t) < 1e-6:
            runs[-1] = (runs[-1][0], stop, v)
        else:
            runs.append((t, stop, v))
    return runs


def svg_state_timeline(
    panel: Mapping[str, Any],
    frames: Mapping[str, pl.DataFrame],
    formats: Mapping[str, int],
    *,
    start: datetime,
    end: datetime,
    tz: tzinfo,
    width: float,
) -> tuple[str, str, int]:
    """A state-timeline panel as SVG, one bar per row coloured by the value mappings.

    Returns the SVG, its legend (HTML) and the number of readings drawn.
    """
    mappings = panel.get("fieldConfig", {}).get("defaults", {}).get("mappings") or []
    rows = _state_rows(frames, formats)
    unmapped = sorted(
        {_value_key(v) for _, _, vs in rows for v in vs if mapped(v, mappings) is None}
    )
    others = {v: _ramp(i, len(unmapped)) for i, v in enumerate(unmapped)} | {"none": NO_LEVEL}

    def look(value: object) -> tuple[str, str]:
        found = mapped(value, mappings)
        if found:
            return found
        key = _value_key(value)
        return ("–" if _is_missing(value) else key), others.get(key, "#eeeeee")

    row_h, gap, label_w = 30, 8, 150
    height = 10 + len(rows) * (row_h + gap) + 22
    frame = _Frame(width, height, label_w, 16, 10, 26, _epoch(start), _epoch(end))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'class="chart timeline" role="img" aria-label="{esc(panel.get("title", ""))}" '
        f'data-panel="{esc(panel.get("title", ""))}" data-points="{{points}}">'
    ]
    parts += _time_axis(frame, start, end, tz)
    seen: dict[str, str] = {}
    points = 0
    for i, (label, times, values) in enumerate(rows):
        y = 10 + i * (row_h + gap)
        parts.append(
            f'<text x="{label_w - 10}" y="{y + row_h / 2 + 5:.1f}" class="rowlabel" '
            f'text-anchor="end">{esc(label)}</text>'
        )
        points += len(times)
        for t0, t1, value in state_runs(times, values, frame.t1):
            text, color = look(value)
            seen.setdefault(text, color)
            x0, x1 = frame.x(max(t0, frame.t0)), frame.x(min(t1, frame.t1))
            if x1 <= x0:
                continue
            when = f"{local_time(t0, tz):%H:%M}"
            until = f"{local_time(t1, tz):%H:%M}"
            parts.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1.0):.1f}" height="{row_h}" '
                f'fill="{color}"><title>{esc(label)}: {esc(text)} {when}–{until}</title></rect>'
            )
    if not rows:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" class="nodata" '
            'text-anchor="middle">no data in the range</text>'
        )
    parts.append("</svg>")
    order = {text: i for i, text in enumerate(("none", *LEVELS))}
    legend = "".join(
        f'<span class="key"><i style="background:{color}"></i>{esc(text)}</span>'
        for text, color in sorted(seen.items(), key=lambda kv: (order.get(kv[0], 9), kv[0]))
    )
    return (
        "".join(parts).replace("{points}", str(points), 1),
        f'<div class="legend">{legend}</div>',
        points,
    )


# -- HTML: stat tiles and tables ---------------------------------------------------------------


def html_stat(panel: Mapping[str, Any], frames: Mapping[str, pl.DataFrame]) -> str:
    """A stat panel's values: the first row of its first frame, coloured by its thresholds."""
    frame = next(iter(frames.values()), None)
    if frame is None or frame.height == 0:
        return '<div class="stat"><span class="big nodata">no data</span></div>'
    row = frame.row(0, named=True)
    numeric = [c for c, t in frame.schema.items() if t.is_numeric()]
    cells = []
    for name in numeric:
        config = _field_config(panel, name)
        value = row[name]
        color = threshold_color(value, config.get("thresholds"))
        style = f' style="color:{color}"' if color else ""
        caption = (
            f'<span class="sub">{esc(name.replace("_", " "))}</span>' if len(numeric) > 1 else ""
        )
        cells.append(
            f'<div class="statcell"><span class="big"{style}>'
            f"{esc(fmt_value(value, str(config.get('unit', 'none'))))}</span>{caption}</div>"
        )
    return f'<div class="stat">{"".join(cells)}</div>'


def _cell(
    value: object, name: str, dtype: pl.DataType, config: Mapping[str, Any], tz: tzinfo
) -> str:
    mappings = config.get("mappings") or []
    # value mappings colour level names and ranks, not other numbers that happen to be 0-4
    if mappings and (dtype == pl.String or "level" in name) and not _is_missing(value):
        found = mapped(value, mappings)
        if found:
            text, color = found
            return (
                f'<td><span class="badge" style="background:{color};color:{_ink(color)}">'
                f"{esc(text)}</span></td>"
            )
    text = fmt_value(value, str(config.get("unit", "none")), tz)
    cell_type = (config.get("custom") or {}).get("cellOptions", {}).get("type")
    numeric = dtype.is_numeric()
    cls = ' class="num"' if numeric else ""
    if cell_type == "color-background":
        fill = threshold_color(value, config.get("thresholds"))
        if fill:
            return f'<td{cls} style="background:{fill};color:{_ink(fill)}">{esc(text)}</td>'
    return f"<td{cls}>{esc(text)}</td>"


def html_table(
    panel: Mapping[str, Any], frames: Mapping[str, pl.DataFrame], tz: tzinfo, max_rows: int = 40
) -> str:
    """A table panel's first frame as an HTML table, levels as coloured badges."""
    frame = next(iter(frames.values()), None)
    if frame is None:
        return ""
    if frame.height == 0:
        return '<p class="empty">No rows in the range.</p>'
    configs = {name: _field_config(panel, name) for name in frame.columns}
    head = "".join(
        f"<th{' class=num' if frame.schema[c].is_numeric() else ''}>{esc(c)}</th>"
        for c in frame.columns
    )
    body = []
    for row in frame.head(max_rows).iter_rows():
        cells = "".join(
            _cell(v, c, frame.schema[c], configs[c], tz)
            for v, c in zip(row, frame.columns, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    more = ""
    if frame.height > max_rows:
        more = f'<p class="empty">… and {frame.height - max_rows} more rows in Grafana.</p>'
    return (
        f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{more}"
    )


# -- the page ---------------------------------------------------------------------------------

PAGE_WIDTH = 1240
"""SVG units across a full-width panel: about CSS pixels on a 1300-pixel-wide page."""


def render_panel(result: PanelResult, report: Report) -> str:
    """One panel as a card: title, description, chart or table, notes and its SQL."""
    pick, panel = result.pick, result.panel
    width = PAGE_WIDTH * pick.span / 24
    start, end = result.start or report.start, result.end or report.end
    body = ""
    kind = panel.get("type") if panel else None
    if panel is not None and result.frames:
        unit = str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "none"))
        if kind == "timeseries":
            svg, series, _ = svg_timeseries(
                panel, result.frames, start=start, end=end, tz=report.tz, width=width
            )
            body = svg + _legend(series, unit)
        elif kind == "state-timeline":
            svg, legend, _ = svg_state_timeline(
                panel,
                result.frames,
                result.formats,
                start=start,
                end=end,
                tz=report.tz,
                width=width,
            )
            body = svg + legend
        elif kind == "stat":
            body = html_stat(panel, result.frames)
        elif kind == "table":
            body = html_table(panel, result.frames, report.tz)
        else:
            result.notes.append(f"Panels of type {kind!r} are not drawn here; see Grafana.")
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in result.notes)
    description = (panel or {}).get("description")
    desc = f'<p class="desc">{esc(description)}</p>' if description else ""
    sql = ""
    if result.sql:
        queries = "\n\n".join(f"-- {ref}\n{text}" for ref, text in result.sql.items())
        sql = f"<details><summary>SQL</summary><pre>{esc(queries)}</pre></details>"
    caption = f' <span class="caption">· {esc(result.caption)}</span>' if result.caption else ""
    cls = "panel stat-panel" if kind == "stat" else "panel"
    missing = " missing" if panel is None else ""
    return (
        f'<section class="{cls}{missing}" style="grid-column: span {pick.span}" '
        f'data-kind="{esc(kind or "missing")}">'
        f"<h3>{esc(pick.title)}{caption}</h3>{desc}{body}{notes}{sql}</section>"
    )


def story(report: Report) -> list[str]:
    """Sentences (HTML) on what happened in the zone, from its panels' frames."""
    if report.zone is None:
        return ["No zone has data in the range."]
    z, tz = report.zone, report.tz

    def hhmm(ts: datetime | float) -> str:
        return f"{local_time(ts, tz):%H:%M}"

    def badge(level: str) -> str:
        color = COLORS.get(level, "#ccc")
        return (
            f'<span class="badge" style="background:{color};color:{_ink(color)}">'
            f"{esc(level.upper())}</span>"
        )

    who = f"<b>{esc(z.zone_id)}</b> ({esc(z.name)}, station {esc(z.station_id)})"
    out = []
    alerts = frame_of(report.zone_panels, "Alerts")
    first = worst_alert(report.zone_panels)
    if alerts is not None and first is not None:
        out.append(
            f"{who} went {badge(str(first['level']))} at <b>{hhmm(first['ts'])}</b>: "
            f"{esc(first.get('reason') or '')}."
        )
        alert_id = first.get("alert_id")
        events = alerts.sort("ts")
        if alert_id and "alert_id" in alerts.columns:
            events = events.filter(pl.col("alert_id") == alert_id)
        steps = [
            f"{esc(e.get('event', ''))} {badge(str(e['level']))} {hhmm(e['ts'])}"
            for e in events.iter_rows(named=True)
        ]
        out.append("Alert timeline: " + " → ".join(steps) + ".")
    if not out:
        out.append(f"{who}: no alert in the range.")
    headcount = frame_of(report.zone_panels, "Headcount against capacity and forecast")
    if headcount is not None and headcount.height and "headcount" in headcount.columns:
        known = headcount.drop_nulls("headcount")
        if known.height:
            peak = known.row(int(known["headcount"].arg_max() or 0), named=True)
            capacity = peak.get("capacity") or z.capacity
            text = (
                f"Headcount peaked at <b>{fmt_value(peak['headcount'])}</b> at {hhmm(peak['time'])}"
            )
            if capacity:
                share = peak["headcount"] / capacity
                text += f" against a capacity of {fmt_value(capacity)} ({share:.0%})"
                over = known.filter(pl.col("headcount") >= capacity)
                if over.height:
                    text += (
                        f"; at or over capacity from {hhmm(over['time'].min())}"  # type: ignore[arg-type]
                        f" to {hhmm(over['time'].max())}"  # type: ignore[arg-type]
                    )
            out.append(text + ".")
    return out


CSS = """
:root { --ink:#1b1f24; --muted:#5b6470; --line:#e3e6ea; --bg:#f4f5f7; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 28px 40px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 2px 0; color: var(--muted); }
.story { background:#fff; border-left: 6px solid #F2495C; border-radius: 8px; padding: 14px 18px;
  margin: 18px 0 8px; box-shadow: 0 1px 2px rgba(0,0,0,.06); }
.story p { margin: 4px 0; font-size: 16px; }
h2 { margin: 28px 0 4px; font-size: 20px; }
.lead { margin: 0 0 10px; color: var(--muted); font-size: 14px; }
.grid { display: grid; grid-template-columns: repeat(24, 1fr); gap: 14px; }
.panel { background:#fff; border:1px solid var(--line); border-radius: 8px; padding: 12px 14px;
  min-width: 0; box-shadow: 0 1px 2px rgba(0,0,0,.05); }
.panel h3 { margin: 0 0 2px; font-size: 15px; }
.panel h3 .caption { color: #C4162A; font-weight: 600; }
.panel .desc { margin: 0 0 6px; color: var(--muted); font-size: 13px; }
.panel.missing { background: #fff8e6; border-color: #f0c36d; }
.note { margin: 6px 0 0; padding: 6px 10px; background: #fff3cd; border-radius: 4px;
  color: #6b4e00; font-size: 13px; }
.stat { display: flex; gap: 22px; align-items: baseline; padding: 4px 0 2px; }
.statcell { display: flex; flex-direction: column; }
.big { font-size: 38px; font-weight: 650; line-height: 1.1; }
.sub { color: var(--muted); font-size: 12px; }
svg.chart { width: 100%; height: auto; display: block; margin-top: 4px; }
svg .grid { stroke: #eceef1; stroke-width: 1; }
svg .axis { stroke: #9aa3ad; stroke-width: 1; }
svg .tick { font-size: 12px; fill: #5b6470; }
svg .rowlabel { font-size: 13px; fill: #1b1f24; font-weight: 600; }
svg .band { font-size: 11px; fill: #5b6470; }
svg .nodata { font-size: 15px; fill: #8a929c; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; font-size: 13px; color: var(--muted);
  margin-top: 4px; }
.key i { display: inline-block; width: 14px; height: 10px; border-radius: 2px;
  margin-right: 5px; vertical-align: 0; }
.key b { color: var(--ink); font-weight: 600; }
.tablewrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 650;
  font-size: 12px; }
.empty { color: var(--muted); font-size: 13px; margin: 6px 0 0; }
details { margin-top: 6px; font-size: 12px; color: var(--muted); }
details pre { white-space: pre-wrap; background: #f7f8fa; padding: 8px; border-radius: 4px; }
footer { margin-top: 28px; color: var(--muted); font-size: 13px; }
"""


def render_page(report: Report) -> str:
    """The whole report as one HTML document: inline CSS and SVG, no scripts, no links out."""
    tz_name = getattr(report.tz, "key", None) or str(report.tz)
    span = (
        f"{local_time(report.start, report.tz):%Y-%m-%d %H:%M} – "
        f"{local_time(report.end, report.tz):%Y-%m-%d %H:%M}"
    )
    zone_heading = "No zone"
    if report.zone is not None:
        z = report.zone
        capacity = f", capacity {z.capacity:,}" if z.capacity else ""
        zone_heading = f"Zone {z.zone_id} — {z.name} (station {z.station_id}{capacity})"
    story_html = "".join(f"<p>{sentence}</p>" for sentence in story(report))
    # the range-wide panels (level per station) first: where and when; the state panels last
    ranged = [r for r in report.overview if (r.panel or {}).get("type") == "state-timeline"]
    timeline = "".join(render_panel(r, report) for r in ranged)
    overview = "".join(render_panel(r, report) for r in report.overview if r not in ranged)
    snapshot = ""
    if report.snapshot and report.snapshot_at is not None and report.zone is not None:
        at = f"{local_time(report.snapshot_at, report.tz):%H:%M}"
        snapshot = (
            f"<h2>The network at {esc(at)}, a minute after {esc(report.zone.zone_id)} went "
            f"{esc(str((worst_alert(report.zone_panels) or {}).get('level', '')))}</h2>"
            '<p class="lead">The overview panels with the range ending then, as Grafana showed '
            "them at that moment.</p>"
            f'<div class="grid">{"".join(render_panel(r, report) for r in report.snapshot)}</div>'
        )
    end_at = f"{local_time(report.end, report.tz):%H:%M}"
    zone = "".join(render_panel(r, report) for r in report.zone_panels)
    deliveries = "".join(render_panel(r, report) for r in report.deliveries)
    response = "".join(render_panel(r, report) for r in report.response)
    missing = len({(r.pick.uid, r.pick.title) for r in _results(report) if r.panel is None})
    others = ""
    if report.only_in_grafana:
        others = (
            "<p>Also on the dashboards (Grafana only): "
            + esc("; ".join(report.only_in_grafana))
            + ".</p>"
        )
    variables = (
        f" with zone={report.zone.zone_id}, station={report.zone.station_id}" if report.zone else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(report.title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<h1>{esc(report.title)}</h1>
<p>{esc(span)} ({esc(tz_name)}) · the panels of the Grafana dashboards, drawn without Grafana</p>
</header>
<div class="story">{story_html}</div>
<h2>Network overview</h2>
<div class="grid">{timeline}</div>
{snapshot}
<h2>{esc(zone_heading)}</h2>
<div class="grid">{zone or '<p class="empty">No zone to show.</p>'}</div>
<h2>Who was told</h2>
<p class="lead">Each alert event in the range, to each role the site routes it to: the roles that
were not reached and why (no contact, not sent, still trying), and how long delivery took.</p>
<div class="grid">{deliveries}</div>
<h2>How they responded</h2>
<p class="lead">Acknowledgement and sign-off per role, station and level (p50 and p90 seconds), the
deadlines missed and escalated, and who has not acknowledged an open alert yet. Drills are left
out.</p>
<div class="grid">{response}</div>
<h2>The network at the end of the range ({esc(end_at)})</h2>
<p class="lead">The overview's stat tiles and tables: the newest state of each zone, the alerts
still open.</p>
<div class="grid">{overview}</div>
<footer>
<p>Same queries as the Grafana dashboards {esc(OVERVIEW_UID)}, {esc(ZONE_UID)}{esc(variables)} and
{esc(PIPELINE_UID)}, {esc(RESPONSE_UID)},
run on {esc(report.source)}. Times in {esc(tz_name)}.
{missing} picked panel(s) missing. Generated {report.generated:%Y-%m-%d %H:%M:%S} UTC.</p>
{others}
</footer>
</main>
</body>
</html>
"""


def _results(report: Report) -> list[PanelResult]:
    return [
        *report.snapshot,
        *report.overview,
        *report.zone_panels,
        *report.deliveries,
        *report.response,
    ]


def write_report(report: Report, path: Path) -> Path:
    """Write the page to ``path`` (folders made as needed) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(report), encoding="utf-8")
    return path


def summary(report: Report) -> str:
    """One line: the zone, its worst level, the range and how many panels were drawn."""
    results = _results(report)
    drawn = sum(1 for r in results if r.panel is not None and r.frames)
    notes = sum(len(r.notes) for r in results)
    first = worst_alert(report.zone_panels)
    worst = "no alert"
    if first is not None:
        worst = f"{first['level']} at {local_time(first['ts'], report.tz):%H:%M}"
    zone = report.zone.zone_id if report.zone else "no zone"
    to = (
        "%H:%M"
        if local_time(report.start, report.tz).date() == local_time(report.end, report.tz).date()
        else "%Y-%m-%d %H:%M"
    )
    start, end = local_time(report.start, report.tz), local_time(report.end, report.tz)
    span = f"{start:%Y-%m-%d %H:%M}–{end:{to}}"
    return f"{zone} ({worst}), {span}: {drawn} of {len(results)} panels drawn, {notes} note(s)"
