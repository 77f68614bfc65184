"""Per-station video state: rolling headcounts per camera ROI and zone, and camera health.

One `StationVideo` per station keeps the last ``horizon_s`` seconds of per-frame ROI counts and
the line crossings per window. Each update adds a batch and returns, for every window it
touched, the ROI statistics (frames, mean, max, p90 of per-frame counts), the zone headcount
(cameras combined by the zone's rule: sum for disjoint ROIs, max for overlapping ones), line
crossings per zone, and the state of every camera of the station. Rows carry growing versions;
the warehouse keeps the newest, so a window grows more exact as its frames arrive and a late
frame corrects it.

Camera health, in event time: a camera is ``offline`` when the station's newest frame is more
than its ``offline_after_s`` past the camera's last one; ``stuck`` when its counts have not
changed for ``stuck_after_s`` while another camera of the station saw a change; else
``online``. `StationVideo.silence` covers a whole station going quiet, in wall-clock time.
"""

from __future__ import annotations

import polars as pl

from crowdwatch.site import Site

ROI_WINDOW_SCHEMA = pl.Schema(
    {
        "camera_id": pl.String(),
        "roi_id": pl.String(),
        "zone_id": pl.String(),
        "station_id": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "window_s": pl.UInt32(),
        "frames": pl.UInt32(),
        "persons_mean": pl.Float32(),
        "persons_max": pl.UInt32(),
        "persons_p90": pl.Float32(),
        "version": pl.UInt64(),
    }
)
ZONE_SCHEMA = pl.Schema(
    {
        "zone_id": pl.String(),
        "station_id": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "window_s": pl.UInt32(),
        "headcount": pl.Float32(),
        "headcount_max": pl.UInt32(),
        "rois": pl.UInt16(),
        "entered": pl.UInt32(),
        "exited": pl.UInt32(),
        "inflow_per_min": pl.Float32(),
        "outflow_per_min": pl.Float32(),
        "capacity": pl.UInt32(),
        "capacity_use": pl.Float32(),
        "density": pl.Float32(),
        "version": pl.UInt64(),
    }
)
FRAME_SCHEMA = pl.Schema(
    {
        "camera_id": pl.String(),
        "roi_id": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "frame": pl.UInt64(),
        "persons": pl.UInt32(),
    }
)
HEALTH_SCHEMA = pl.Schema(
    {
        "camera_id": pl.String(),
        "station_id": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "window_s": pl.UInt32(),
        "messages": pl.UInt32(),
        "fps": pl.Float32(),
        "persons_mean": pl.Float32(),
        "version": pl.UInt64(),
    }
)
STATUS_SCHEMA = pl.Schema(
    {
        "camera_id": pl.String(),
        "station_id": pl.String(),
        "status": pl.String(),
        "since": pl.Datetime("ms", "UTC"),
        "last_seen": pl.Datetime("ms", "UTC"),
        "fps": pl.Float32(),
        "expected_fps": pl.Float32(),
        "version": pl.UInt64(),
    }
)
_STORED = pl.Schema(
    {
        "camera_id": pl.String(),
        "roi_id": pl.String(),
        "zone_id": pl.String(),
        "frame": pl.Int64(),
        "ts_ms": pl.Int64(),
        "persons": pl.Int64(),
    }
)
_LINES = pl.Schema(
    {"zone_id": pl.String(), "window": pl.Int64(), "entered": pl.Int64(), "exited": pl.Int64()}
)

Tables = dict[str, pl.DataFrame]


def _ms(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Datetime("ms", "UTC"))


class StationVideo:
    """Video windows and camera health for the cameras of one station."""

    def __init__(
        self,
        station_id: str,
        site: Site,
        *,
        window_s: int = 5,
        horizon_s: int = 120,
        health_window_s: int = 10,
        stuck_after_s: int = 60,
    ) -> None:
        self.station_id = station_id
        cameras = [c for c in site.cameras if c.station == station_id]
        self.offline_after_ms = {c.id: int(c.offline_after_s * 1000) for c in cameras}
        self.expected_fps = {c.id: c.fps for c in cameras}
        zone_ids = sorted(
            {r.zone for c in cameras for r in c.rois} | {ln.zone for c in cameras for ln in c.lines}
        )
        zones = [site.zone_by_id[z] for z in zone_ids]
        self.zones = pl.DataFrame(
            {
                "zone_id": [z.id for z in zones],
                "capacity": [z.capacity for z in zones],
                "area_m2": [z.area_m2 for z in zones],
                "combine": [z.video_combine for z in zones],
            },
            schema={
                "zone_id": pl.String,
                "capacity": pl.Int64,
                "area_m2": pl.Float64,
                "combine": pl.String,
            },
        )
        self.window_ms = window_s * 1000
        self.horizon_ms = horizon_s * 1000
        self.health_ms = health_window_s * 1000
        self.stuck_ms = stuck_after_s * 1000
        self.frames = pl.DataFrame(schema=_STORED)
        self.lines = pl.DataFrame(schema=_LINES)
        self.last_seen: dict[str, int] = {}
        self.last_wall: dict[str, int] = {}
        self.status: dict[str, tuple[str, int]] = {}
        self.watermark: int | None = None
        self.version = 0

    def _next_version(self, now_ns: int) -> int:
        self.version = max(now_ns, self.version + 1)
        return self.version

    def update(
        self, messages: pl.DataFrame, rois: pl.DataFrame, lines: pl.DataFrame, now_ns: int
    ) -> tuple[Tables, pl.DataFrame]:
        """Add one batch of this station's parsed messages.

        Returns:
            Rows per table (``video_frames``, ``video_roi_windows``, ``video_zone_metrics``,
            ``camera_health``, ``camera_status``) and the messages that came later than the
            horizon (``camera_id, frame, ts_ms``), which the caller rejects.
        """
        floor = None if self.watermark is None else self.watermark - self.horizon_ms
        if floor is not None:
            late = messages.filter(pl.col("ts_ms") < floor)
            messages = messages.filter(pl.col("ts_ms") >= floor)
            rois = rois.filter(pl.col("ts_ms") >= floor)
            lines = lines.filter(pl.col("ts_ms") >= floor)
        else:
            late = messages.clear()
        if messages.height == 0:
            return {}, late
        version = self._next_version(now_ns)
        newest = int(messages["ts_ms"].max())  # type: ignore[arg-type]
        self.watermark = newest if self.watermark is None else max(self.watermark, newest)
        wall_ms = now_ns // 1_000_000
        for camera, seen in messages.group_by("camera_id").agg(pl.col("ts_ms").max()).iter_rows():
            self.last_seen[camera] = max(seen, self.last_seen.get(camera, seen))
            self.last_wall[camera] = wall_ms

        new = rois.select(_STORED.names())
        self.frames = (
            pl.concat([self.frames, new])
            .unique(["camera_id", "roi_id", "frame", "ts_ms"], keep="last", maintain_order=True)
            .filter(pl.col("ts_ms") >= self.watermark - self.horizon_ms)
        )
        window = (pl.col("ts_ms") // self.window_ms) * self.window_ms
        crossings = (
            lines.group_by("zone_id", window.alias("window"))
            .agg(pl.col("entered").sum(), pl.col("exited").sum())
            .select(_LINES.names())
        )
        self.lines = (
            pl.concat([self.lines, crossings])
            .group_by("zone_id", "window")
            .agg(pl.col("entered").sum(), pl.col("exited").sum())
            .filter(pl.col("window") >= self.watermark - self.horizon_ms - self.window_ms)
        )
        touched = pl.concat(
            [new.select(window.alias("window")), crossings.select("window")]
        ).unique()
        roi_windows = self._roi_windows(touched, version)
        tables: Tables = {
            "video_frames": new.select(
                "camera_id",
                "roi_id",
                _ms("ts_ms").alias("ts"),
                "frame",
                "persons",
            ).cast(FRAME_SCHEMA),
            "video_roi_windows": roi_windows,
            "video_zone_metrics": self._zone_windows(roi_windows, touched, version),
            "camera_health": self._health(messages, version),
            "camera_status": self._status(version),
        }
        return tables, late

    def _roi_windows(self, touched: pl.DataFrame, version: int) -> pl.DataFrame:
        window = (pl.col("ts_ms") // self.window_ms) * self.window_ms
        return (
            self.frames.with_columns(window.alias("window"))
            .join(touched, on="window", how="semi")
            .group_by("camera_id", "roi_id", "zone_id", "window")
            .agg(
                pl.len().alias("frames"),
                pl.col("persons").mean().alias("persons_mean"),
                pl.col("persons").max().alias("persons_max"),
                pl.col("persons").quantile(0.9, "linear").alias("persons_p90"),
            )
            .select(
                "camera_id",
                "roi_id",
                "zone_id",
                pl.lit(self.station_id).alias("station_id"),
                _ms("window").alias("ts"),
                pl.lit(self.window_ms // 1000).alias("window_s"),
                "frames",
                "persons_mean",
                "persons_max",
                "persons_p90",
                pl.lit(version).alias("version"),
            )
            .cast(ROI_WINDOW_SCHEMA)
        )

    def _zone_windows(
        self, roi_windows: pl.DataFrame, touched: pl.DataFrame, version: int
    ) -> pl.DataFrame:
        summed = pl.col("combine") == "sum"
        heads = (
            roi_windows.with_columns(pl.col("ts").dt.epoch("ms").alias("window"))
            .join(self.zones.select("zone_id", "combine"), on="zone_id")
            .group_by("zone_id", "window")
            .agg(
                pl.when(summed.first())
                .then(pl.col("persons_mean").sum())
                .otherwise(pl.col("persons_mean").max())
                .alias("headcount"),
                pl.when(summed.first())
                .then(pl.col("persons_max").sum())
                .otherwise(pl.col("persons_max").max())
                .alias("headcount_max"),
                pl.len().alias("rois"),
            )
        )
        crossings = self.lines.join(touched, on="window", how="semi")
        per_min = 60_000 / self.window_ms
        return (
            heads.join(crossings, on=["zone_id", "window"], how="full", coalesce=True)
            .join(self.zones, on="zone_id")
            .with_columns(
                pl.col("headcount").fill_null(0.0),
                pl.col("headcount_max").fill_null(0),
                pl.col("rois").fill_null(0),
                pl.col("entered").fill_null(0),
                pl.col("exited").fill_null(0),
            )
            .select(
                "zone_id",
                pl.lit(self.station_id).alias("station_id"),
                _ms("window").alias("ts"),
                pl.lit(self.window_ms // 1000).alias("window_s"),
                "headcount",
                "headcount_max",
                "rois",
                "entered",
                "exited",
                (pl.col("entered") * per_min).alias("inflow_per_min"),
                (pl.col("exited") * per_min).alias("outflow_per_min"),
                "capacity",
                (pl.col("headcount") / pl.col("capacity")).alias("capacity_use"),
                (pl.col("headcount") / pl.col("area_m2")).alias("density"),
                pl.lit(version).alias("version"),
            )
            .cast(ZONE_SCHEMA)
        )

    def _health(self, messages: pl.DataFrame, version: int) -> pl.DataFrame:
        """Messages, frame rate and mean persons per camera per health window touched."""
        window = (pl.col("ts_ms") // self.health_ms) * self.health_ms
        return (
            messages.with_columns(window.alias("window"))
            .group_by("camera_id", "window")
            .agg(
                pl.len().alias("messages"),
                (
                    (pl.col("frame").max() - pl.col("frame").min())
                    * 1000
                    / (pl.col("ts_ms").max() - pl.col("ts_ms").min())
                ).alias("fps"),
                pl.col("persons").mean().alias("persons_mean"),
            )
            .select(
                "camera_id",
                pl.lit(self.station_id).alias("station_id"),
                _ms("window").alias("ts"),
                pl.lit(self.health_ms // 1000).alias("window_s"),
                "messages",
                pl.col("fps").fill_nan(None),
                "persons_mean",
                pl.lit(version).alias("version"),
            )
            .cast(HEALTH_SCHEMA)
        )

    def _recent_fps(self) -> dict[str, float]:
        """Each camera's frame rate over the last health window, from its frame numbers.

        A camera may send one message per several frames, so counting messages would give the
        message rate; a camera that restarted (frame numbers went back) reads 0 until it has
        a window of its own again.
        """
        recent = self.frames.filter(pl.col("ts_ms") >= (self.watermark or 0) - self.health_ms)
        stats = recent.group_by("camera_id").agg(
            (pl.col("frame").max() - pl.col("frame").min()).alias("frames"),
            (pl.col("ts_ms").max() - pl.col("ts_ms").min()).alias("span"),
        )
        return {
            c: max(0, frames) * 1000 / span if span else 0.0
            for c, frames, span in stats.iter_rows()
        }

    def _stuck(self) -> set[str]:
        """Cameras with constant counts for ``stuck_after_s`` while a neighbour's changed."""
        assert self.watermark is not None
        recent = self.frames.filter(pl.col("ts_ms") >= self.watermark - self.stuck_ms)
        per_camera = recent.group_by("camera_id").agg(
            (pl.col("persons").n_unique() == 1).alias("constant"),
            (pl.col("ts_ms").max() - pl.col("ts_ms").min()).alias("span"),
        )
        constant = {
            c for c, flat, span in per_camera.iter_rows() if flat and span >= self.stuck_ms * 0.9
        }
        changing = set(per_camera.filter(~pl.col("constant"))["camera_id"])
        return constant if changing else set()

    def _judge(self, camera: str, stuck: set[str]) -> str:
        assert self.watermark is not None
        seen = self.last_seen.get(camera)
        if seen is None or self.watermark - seen > self.offline_after_ms[camera]:
            return "offline"
        return "stuck" if camera in stuck else "online"

    def _status(self, version: int) -> pl.DataFrame:
        """Every camera's state; a change of state starts a new ``since``."""
        assert self.watermark is not None
        stuck = self._stuck()
        fps = self._recent_fps()
        for camera in self.offline_after_ms:
            state = self._judge(camera, stuck)
            if self.status.get(camera, ("", 0))[0] != state:
                since = self.watermark if state == "offline" else self.last_seen.get(camera, 0)
                self.status[camera] = (state, since)
        return self._status_rows(fps, version)

    def _status_rows(self, fps: dict[str, float], version: int) -> pl.DataFrame:
        cameras = list(self.offline_after_ms)
        return (
            pl.DataFrame(
                {
                    "camera_id": cameras,
                    "station_id": self.station_id,
                    "status": [self.status[c][0] for c in cameras],
                    "since": [self.status[c][1] for c in cameras],
                    "last_seen": [self.last_seen.get(c) for c in cameras],
                    "fps": [fps.get(c, 0.0) for c in cameras],
                    "expected_fps": [self.expected_fps[c] for c in cameras],
                    "version": version,
                },
                schema_overrides={"since": pl.Int64, "last_seen": pl.Int64},
            )
            .with_columns(_ms("since"), _ms("last_seen"))
            .cast(STATUS_SCHEMA)
        )

    def silence(self, now_ns: int) -> pl.DataFrame:
        """Cameras that have sent nothing for their timeout in wall-clock time, now offline.

        For a whole station going quiet, when no newer frame moves event time on. Returns
        status rows for the cameras that changed (none when nothing changed).
        """
        wall_ms = now_ns // 1_000_000
        changed = False
        for camera, timeout in self.offline_after_ms.items():
            quiet = wall_ms - self.last_wall.get(camera, wall_ms) > timeout
            if quiet and self.status.get(camera, ("", 0))[0] != "offline":
                self.status[camera] = ("offline", self.last_seen.get(camera, 0) + timeout)
                changed = True
        if not changed or self.watermark is None:
            return pl.DataFrame(schema=STATUS_SCHEMA)
        return self._status_rows(self._recent_fps(), self._next_version(now_ns))

    def next_silence_check_ms(self) -> int | None:
        """Wall-clock time (ms) at which `silence` could next find a camera gone quiet."""
        pending = [
            self.last_wall[c] + t
            for c, t in self.offline_after_ms.items()
            if c in self.last_wall and self.status.get(c, ("", 0))[0] != "offline"
        ]
        return min(pending) + 1 if pending else None
