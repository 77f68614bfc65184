"""Per-station window state: entries and exits per zone and window, and occupancy from them.

One `StationWindows` holds a station's recent windows as numpy arrays. Each update adds a batch
of per-window counts and returns the metric rows of every window whose values it changed, so a
late record comes out as a corrected row for its window (and for the later windows whose
occupancy it moves). Rows carry a version that only grows; the warehouse keeps the newest row
of each ``(zone_id, ts)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import polars as pl

from crowdwatch.site import BalanceModel, DwellModel, Site

Counts = npt.NDArray[np.int64]
DAY_S = 86_400

METRIC_SCHEMA = pl.Schema(
    {
        "zone_id": pl.String(),
        "station_id": pl.String(),
        "scope": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "window_s": pl.UInt32(),
        "entries": pl.UInt32(),
        "exits": pl.UInt32(),
        "inflow_per_min": pl.Float32(),
        "outflow_per_min": pl.Float32(),
        "occupancy": pl.UInt32(),
        "capacity": pl.UInt32(),
        "capacity_use": pl.Float32(),
        "density": pl.Float32(),
        "version": pl.UInt64(),
    }
)


@dataclass(frozen=True)
class ZoneSpec:
    """What the window state needs to know of a zone."""

    zone_id: str
    capacity: int
    area_m2: float
    model: DwellModel | BalanceModel


def gate_fed_zones(site: Site) -> dict[str, list[ZoneSpec]]:
    """Per station, the zones that gate records can reach (a gate's zone or the entry zone)."""
    fed = site.gate_fed_zones
    return {
        station.id: [
            ZoneSpec(z.id, z.capacity, z.area_m2, z.occupancy)
            for z in site.zones_of(station.id)
            if z.id in fed
        ]
        for station in site.stations
    }


@lru_cache(maxsize=65_536)
def _utc_offset_s(timezone: str, hour: int) -> int:
    offset = datetime.fromtimestamp(hour * 3600, UTC).astimezone(ZoneInfo(timezone)).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _window_sums(x: Counts, length: int) -> Counts:
    """Sum of ``x`` over the last ``length`` positions, at every position."""
    c = np.concatenate(([0], np.cumsum(x)))
    idx = np.arange(1, x.size + 1)
    return c[idx] - c[np.maximum(idx - length, 0)]


def _balance(net: Counts, period: npt.NDArray[np.int64]) -> Counts:
    """Cumulative ``net`` per period, never below zero (a reflected random walk)."""
    out = np.empty_like(net)
    bounds = np.flatnonzero(np.diff(period)) + 1
    for seg in np.split(np.arange(net.size), bounds):
        s = np.cumsum(net[seg])
        out[seg] = s - np.minimum(np.minimum.accumulate(s), 0)
    return out


class StationWindows:
    """Entries and exits per zone and window for one station, with occupancy models.

    State is plain numpy and picklable, so Bytewax can snapshot it.
    """

    def __init__(
        self,
        station_id: str,
        zones: list[ZoneSpec],
        *,
        window_s: int,
        horizon_s: int,
        rate_minutes: int,
        timezone: str,
    ) -> None:
        self.station_id = station_id
        self.zones = zones
        self.zone_index = {z.zone_id: i for i, z in enumerate(zones)}
        self.window_s = window_s
        self.window_ms = window_s * 1000
        self.horizon = max(1, horizon_s // window_s)
        self.rate_windows = max(1, -(-rate_minutes * 60 // window_s))
        self.timezone = timezone
        self.lookback = max([self.rate_windows, *(self._dwell_windows(z)[0] for z in zones)])
        self.keep = self.horizon + -(-DAY_S // window_s) + self.lookback
        self.chunk = -(-DAY_S // window_s)
        self.base = 0
        self.counts: Counts = np.zeros((2, len(zones), 0), dtype=np.int64)
        self.watermark: int | None = None
        self.emitted_until: int | None = None
        self.version = 0

    def _dwell_windows(self, zone: ZoneSpec) -> tuple[int, int]:
        if not isinstance(zone.model, DwellModel):
            return (1, 1)
        per = self.window_s
        return (-(-zone.model.entry_minutes * 60 // per), -(-zone.model.exit_minutes * 60 // per))

    def update(self, flows: pl.DataFrame, now_ns: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Add per-window counts of this station; return changed metric rows and late rejects.

        Args:
            flows: ``zone_id, window, entries, exits`` (window start in epoch ms).
            now_ns: the wall clock in ns; row versions never go below it and always grow.

        Returns:
            The metric rows (`METRIC_SCHEMA`) of every window from the earliest changed one to
            the newest seen, and the counts that came too late to correct (zone, window and
            counts as the payload), which the caller sends to ``rejected_events``.

        Memory stays bounded whatever the times: a batch spanning more than a day is added in
        chunks of at most a day, oldest first, and windows older than the state keeps are
        dropped before newer ones are made room for (a record years ahead costs no more than
        one a minute ahead; the windows in between, all empty, are not written).
        """
        win = flows["window"].to_numpy() // self.window_ms
        if win.size == 0:
            return self._update(flows, win, now_ns)
        low, high = int(win.min()), int(win.max())
        if high - low <= self.chunk:
            return self._update(flows, win, now_ns)
        part = (win - low) // self.chunk
        results = [
            self._update(flows.filter(pl.Series(part == k)), win[part == k], now_ns)
            for k in np.unique(part)
        ]
        return pl.concat([r[0] for r in results]), pl.concat([r[1] for r in results])

    def _update(
        self, flows: pl.DataFrame, win: Counts, now_ns: int
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """`update` with windows ``win`` spanning at most `chunk` windows."""
        if self.watermark is None:
            # room for records up to the late horizon before the first one seen
            self.base = int(win.min()) - self.horizon if win.size else self.base
            floor = self.base
        else:
            floor = max(self.base, self.watermark - self.horizon)
        late = win < floor
        if late.any():
            rejected = flows.filter(pl.Series(late))
            flows = flows.filter(pl.Series(~late))
            win = win[~late]
        else:
            rejected = flows.clear()
        if not win.size:
            return pl.DataFrame(schema=METRIC_SCHEMA), rejected
        newest = int(win.max())
        self.watermark = newest if self.watermark is None else max(self.watermark, newest)
        self._evict()
        self._grow_to(self.watermark)
        zone = np.array([self.zone_index[z] for z in flows["zone_id"].to_list()])
        pos = win - self.base
        np.add.at(self.counts[0], (zone, pos), flows["entries"].to_numpy())
        np.add.at(self.counts[1], (zone, pos), flows["exits"].to_numpy())
        first = int(win.min())
        if self.emitted_until is not None:
            first = min(first, self.emitted_until + 1)
        rows = self._metrics(max(first, floor, self.base), self.watermark, now_ns)
        self.emitted_until = self.watermark
        return rows, rejected

    def _grow_to(self, window: int) -> None:
        need = window - self.base + 1
        have = self.counts.shape[2]
        if need > have:
            extra = max(need - have, have // 2, 64)
            self.counts = np.pad(self.counts, ((0, 0), (0, 0), (0, extra)))

    def _evict(self) -> None:
        assert self.watermark is not None
        drop = self.watermark - self.keep - self.base
        if drop > self.keep // 4:
            self.counts = self.counts[:, :, min(drop, self.counts.shape[2]) :].copy()
            self.base += drop

    def _periods(self, first: int, last: int, reset_s: int) -> npt.NDArray[np.int64]:
        """The balance period (local day starting at ``reset_s``) of windows ``[first, last]``."""
        starts_s = np.arange(first, last + 1, dtype=np.int64) * self.window_s
        hours, hour_index = np.unique(starts_s // 3600, return_inverse=True)
        offsets = np.array([_utc_offset_s(self.timezone, int(h)) for h in hours], dtype=np.int64)
        return (starts_s + offsets[hour_index] - reset_s) // DAY_S

    def _occupancy(self, z: int, zone: ZoneSpec, first: int, last: int) -> Counts:
        """Occupancy of zone ``z`` at windows ``[first, last]`` (absolute window indices)."""
        entries, exits = self.counts[0, z], self.counts[1, z]
        if isinstance(zone.model, DwellModel):
            n, m = self._dwell_windows(zone)
            occ = _window_sums(entries, n) + _window_sums(exits, m)
            return occ[first - self.base : last - self.base + 1]
        reset_s = zone.model.reset_at.hour * 3600 + zone.model.reset_at.minute * 60
        period_first = self._period_start(first, reset_s)
        period = self._periods(period_first, last, reset_s)
        net = (entries - exits)[period_first - self.base : last - self.base + 1]
        return _balance(net, period)[first - period_first :]

    def _period_start(self, window: int, reset_s: int) -> int:
        """The first stored window of the balance period that ``window`` falls in."""
        start = max(self.base, window - -(-DAY_S // self.window_s) - 1)
        period = self._periods(start, window, reset_s)
        return start + int(np.flatnonzero(period == period[-1])[0])

    def _metrics(self, first: int, last: int, now_ns: int) -> pl.DataFrame:
        """Metric rows of windows ``[first, last]``: one per zone and window, then the station."""
        self.version = max(now_ns, self.version + 1)
        sl = slice(first - self.base, last - self.base + 1)
        n = last - first + 1
        zones = len(self.zones)
        # rows 0..zones-1 are the zones, row `zones` the station (their sum)
        entries = np.zeros((zones + 1, n), dtype=np.int64)
        exits = np.zeros_like(entries)
        occupancy = np.zeros_like(entries)
        entries[:zones] = self.counts[0, :, sl]
        exits[:zones] = self.counts[1, :, sl]
        for z, zone in enumerate(self.zones):
            occupancy[z] = self._occupancy(z, zone, first, last)
        for table in (entries, exits, occupancy):
            table[zones] = table[:zones].sum(axis=0)
        per_min = self.rate_windows * self.window_s / 60
        inflow = np.stack([_window_sums(row, self.rate_windows) for row in self._with_station(0)])
        outflow = np.stack([_window_sums(row, self.rate_windows) for row in self._with_station(1)])
        capacity = np.array(
            [*(z.capacity for z in self.zones), sum(z.capacity for z in self.zones)]
        )
        area = np.array([*(z.area_m2 for z in self.zones), sum(z.area_m2 for z in self.zones)])
        ids = [*(z.zone_id for z in self.zones), self.station_id]
        ts = np.arange(first, last + 1, dtype=np.int64) * self.window_ms
        frame = pl.DataFrame(
            {
                "zone_id": np.repeat(ids, n),
                "station_id": self.station_id,
                "scope": np.repeat(["zone"] * zones + ["station"], n),
                "ts": np.tile(ts, zones + 1),
                "window_s": self.window_s,
                "entries": entries.ravel(),
                "exits": exits.ravel(),
                "inflow_per_min": (inflow[:, sl] / per_min).ravel(),
                "outflow_per_min": (outflow[:, sl] / per_min).ravel(),
                "occupancy": occupancy.ravel(),
                "capacity": np.repeat(capacity, n),
                "capacity_use": (occupancy / capacity[:, None]).ravel(),
                "density": (occupancy / area[:, None]).ravel(),
                "version": self.version,
            }
        )
        return frame.with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC"))).cast(METRIC_SCHEMA)

    def _with_station(self, which: int) -> Counts:
        """Entries (0) or exits (1) of every zone over all stored windows, plus their sum."""
        rows = self.counts[which]
        return np.vstack([rows, rows.sum(axis=0, keepdims=True)])
