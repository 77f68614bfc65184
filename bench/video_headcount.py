"""Benchmark: camera messages (JSON lines) → video_headcount (Bytewax) → embedded ClickHouse.

Every camera of the example site sends one message per frame at its frame rate, with the
per-frame people counts of the real MOT17-09 recording (cycled) and a counting line where the
camera has one. End to end: reading the file, decoding and validating, windows, zone
headcounts, camera health, and the chDB inserts. Prints messages/s, per-batch intervals and
peak memory; the last line is the headline figure.

    .venv/bin/python bench/video_headcount.py [--messages 600000] [--batch-rows 100000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from _harness import timed_replay

from crowdwatch.settings import DEFAULT_SITE_FILE, REPO_ROOT
from crowdwatch.site import load_site
from pipelines.video_headcount import build

MOT = REPO_ROOT.parent / "shared" / "data" / "video_detections" / "mot17_yolov8n_bytetrack"
T0_MS = 1_795_132_800_000


def messages(count: int) -> pl.DataFrame:
    """``count`` JSON messages spread over the site's cameras, in capture-time order."""
    site = load_site(DEFAULT_SITE_FILE)
    recorded = pl.read_csv(MOT / "MOT17-09" / "tracking.txt", has_header=False)
    per_frame = np.bincount(recorded[:, 0].to_numpy())[1:]
    per_camera = count // len(site.cameras)
    parts = []
    for camera in site.cameras:
        frame = np.arange(per_camera)
        columns = pl.DataFrame(
            {
                "frame": frame,
                "ts_ms": T0_MS + (frame * 1000 / camera.fps).astype(np.int64),
                "n": per_frame[frame % per_frame.size],
                "crossed": (frame % 97 == 0).astype(np.int64),
            }
        )
        ts = (
            pl.col("ts_ms")
            .cast(pl.Datetime("ms", "UTC"))
            .dt.convert_time_zone(site.site.timezone)
            .dt.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
        )
        pieces: list[pl.Expr] = [
            pl.lit(f'{{"camera_id":"{camera.id}","frame":'),
            pl.col("frame").cast(pl.String),
            pl.lit(',"ts":"'),
            ts,
            pl.lit('","persons":'),
            pl.col("n").cast(pl.String),
            pl.lit(',"rois":['),
        ]
        for i, roi in enumerate(camera.rois):
            sep = "," if i else ""
            pieces += [
                pl.lit(f'{sep}{{"id":"{roi.id}","persons":'),
                pl.col("n").cast(pl.String),
                pl.lit("}"),
            ]
        pieces.append(pl.lit('],"lines":['))
        for i, line in enumerate(camera.lines):
            sep = "," if i else ""
            pieces += [
                pl.lit(f'{sep}{{"id":"{line.id}","in":'),
                pl.col("crossed").cast(pl.String),
                pl.lit(',"out":0}'),
            ]
        pieces.append(pl.lit("]}"))
        parts.append(columns.select(pl.concat_str(pieces).alias("payload"), "ts_ms"))
    return pl.concat(parts).sort("ts_ms").select("payload")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Bytewax workers in this process; cameras are split in as many files by station",
    )
    args = parser.parse_args()
    feed = messages(args.messages)
    site = load_site(DEFAULT_SITE_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        stations = sorted({c.station for c in site.cameras})
        camera_part = {c.id: stations.index(c.station) % args.workers for c in site.cameras}
        part = feed["payload"].str.extract(r'"camera_id":"([^"]+)"').replace_strict(camera_part)
        paths = []
        for i in range(args.workers):
            paths.append(Path(tmp) / f"messages_{i}.jsonl")
            lines = feed.filter(part == i)["payload"]
            paths[-1].write_text("\n".join(lines) + "\n", encoding="utf-8")
        run = timed_replay(
            build,
            paths,
            data_dir=Path(tmp),
            timezone=site.site.timezone,
            batch_rows=args.batch_rows,
            workers=args.workers,
            result_sql="SELECT (SELECT count() FROM video_frames) AS stored, "
            "(SELECT count() FROM rejected_events) AS rejected",
        )
    stored, rejected = run.result.row(0)
    if rejected or stored < feed.height:
        raise SystemExit(
            f"stored {stored} ROI frames of {feed.height} messages, {rejected} rejected"
        )
    print(
        f"messages: {feed.height:,} from {len(site.cameras)} cameras, "
        f"batches of {args.batch_rows:,}, {args.workers} worker(s)"
    )
    run.report("read, decode, validate, windows, health, chDB inserts")
    print(f"throughput: {feed.height / run.elapsed_s:.0f} messages/s")


if __name__ == "__main__":
    main()
