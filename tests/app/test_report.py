"""crowdwatch report: the surge day's story on one self-contained page, drawn by a real browser.

The demo day (the shared `demo_day` fixture: what `crowdwatch demo` replays) is read from the
embedded warehouse; the page is checked as text and then as pixels of a headless Chromium
screenshot (skipped, with the reason, where Chromium is not installed: `make browser`).
"""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from app.report.page import COLORS, SERIES_COLORS, render_page, state_runs, summary, write_report
from app.report.queries import OVERVIEW_UID, build_report, built_dashboards
from crowdwatch.site import Site, load_site
from crowdwatch.warehouse.client import Warehouse
from crowdwatch.warehouse.sitesync import sync_site
from dashboards.macros import interval_s
from dashboards.panels import LEVELS
from tests.commands import crowdwatch, user_env
from tests.conftest import EXAMPLE_SITE
from tests.demo_day import ZONE, DemoWarehouse

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def site(warehouse: Warehouse) -> Site:
    site = load_site(EXAMPLE_SITE)
    sync_site(warehouse, site)
    return site


@pytest.fixture(scope="module")
def surge_day(demo_day: DemoWarehouse) -> tuple[Warehouse, Site]:
    """The demo day (a large event ending at STD), shared and read-only."""
    return demo_day.warehouse, demo_day.site


def charts(page: str) -> list[tuple[str, int, str]]:
    """(panel title, data points, svg text) of every chart, in page order."""
    found = re.finditer(
        r'<svg [^>]*data-panel="([^"]*)" data-points="(\d+)">(.*?)</svg>', page, flags=re.S
    )
    return [(m[1], int(m[2]), m[3]) for m in found]


def test_report_tells_which_zone_went_red_and_when(
    surge_day: tuple[Warehouse, Site], tmp_path: Path
) -> None:
    warehouse, site = surge_day
    report = build_report(warehouse, now=NOW, tz=site.tz)
    path = write_report(report, tmp_path / "out" / "report.html")
    page = path.read_text(encoding="utf-8")

    # the truth, straight from the tables: only the stadium concourse went red
    red = warehouse.query(
        "SELECT zone_id, min(ts) AS ts FROM alerts FINAL WHERE level = 'red' GROUP BY zone_id"
    )
    assert red["zone_id"].to_list() == [ZONE]
    red_at = red["ts"][0].astimezone(site.tz)
    assert report.zone is not None and report.zone.zone_id == ZONE
    story = re.search(r'<div class="story">(.*?)</div>', page, flags=re.S)
    assert story is not None
    assert f"<b>{ZONE}</b> (Stadium paid concourse, station STD) went" in story[1]
    assert f">RED</span> at <b>{red_at:%H:%M}</b>" in story[1]
    assert f"red at {red_at:%H:%M}" in summary(report)

    drawn = charts(page)
    titles = [title for title, _, _ in drawn]
    assert titles.count("Headcount against capacity and forecast") == 2  # the day and the zoom
    assert "Level per station" in titles
    # the zone's peak headcount of every interval Grafana would ask for (about 1,000 over the
    # range) is plotted, and the capacity beside each
    expected = warehouse.query(
        "SELECT count(peak) + count() AS n FROM ("
        "  SELECT toStartOfInterval(toDateTime(ts), INTERVAL {step:UInt32} second) AS t,"
        "         max(headcount) AS peak FROM zone_state FINAL"
        "  WHERE zone_id = {z:String} AND ts >= toDateTime({a:UInt32})"
        "    AND ts <= toDateTime({b:UInt32}) GROUP BY t)",
        {
            "z": ZONE,
            "a": int(report.start.timestamp()),
            "b": int(report.end.timestamp()),
            "step": interval_s(report.start, report.end),
        },
    )["n"][0]
    _, points, svg = drawn[titles.index("Headcount against capacity and forecast")]
    assert points == expected > 1000
    assert svg.count(" L") > 500  # a line through the points, not a placeholder
    assert 'stroke-dasharray="8 5"' in svg  # the capacity line
    assert f'fill="{COLORS["red"]}" fill-opacity' in svg  # the red band above capacity
    stations = drawn[titles.index("Level per station")][2]
    assert f'fill="{COLORS["red"]}"><title>STD: red' in stations
    assert "<title>CTR: red" not in stations

    # the overview a minute into the red alert shows it open, the zone first and red
    assert report.snapshot_at == red["ts"][0].replace(tzinfo=UTC) + timedelta(minutes=1)
    assert f"The network at {red_at + timedelta(minutes=1):%H:%M}" in page
    nearest = next(r for r in report.snapshot if r.pick.title == "Zones nearest to capacity")
    assert nearest.frames["A"]["zone_id"][0] == ZONE
    assert nearest.frames["A"]["level"][0] == "red"

    # who was told: the example site has no contacts, so every routed role is shown as such
    told = next(r for r in report.deliveries if r.pick.title == "Alert events not delivered")
    at_red = told.frames["A"].filter(pl.col("level") == "red")
    assert at_red.height == 4 and set(at_red["status"]) == {"no_contact"}
    assert "<h2>Who was told</h2>" in page and "no_contact" in page

    # self-contained: nothing fetched, nothing run
    for pattern in (r"\bsrc\s*=", r"\bhref\s*=", r"url\(", r"@import", r"<script", r"<link"):
        assert not re.search(pattern, page, flags=re.I), pattern
    assert 'class="note"' not in page  # every panel found, every query ran


def test_missing_panel_and_failing_query_become_notes(warehouse: Warehouse, site: Site) -> None:
    boards = built_dashboards()
    for panel in boards[OVERVIEW_UID]["panels"]:
        if panel["title"] == "Alerts open":
            panel["title"] = "Alerts open (renamed)"
        if panel["title"] == "People in the network":
            panel["targets"][0]["rawSql"] = "SELECT count() AS people FROM no_such_table"
    # escaped everywhere: a zone name with markup in it
    zone = warehouse.query("SELECT * FROM site_zones FINAL WHERE zone_id = {z:String}", {"z": ZONE})
    evil = '<script>alert("x")</script> & <b>'
    warehouse.insert(
        "site_zones",
        zone.with_columns(pl.lit(evil).alias("name"), pl.col("version") + 1),
    )
    start = datetime(2026, 11, 20, tzinfo=UTC)
    report = build_report(
        warehouse,
        now=NOW,
        zone=ZONE,
        start=start,
        end=start + timedelta(hours=6),
        boards=boards,
    )
    page = render_page(report)
    assert "Panel “Alerts open” is not on dashboard crowdwatch-overview" in page
    assert "Query A failed" in page and "no_such_table" in page
    assert (
        "Also on the dashboards (Grafana only): crowdwatch-overview: Alerts open (renamed)" in page
    )
    # the other panels are still there, even with no data in the range
    assert 'data-kind="table"><h3>Zones nearest to capacity' in page
    assert "no data in the range" in page
    assert "<script" not in page and evil not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert "2 note(s)" in summary(report)


def test_a_state_holds_until_the_next_reading() -> None:
    runs = state_runs([0, 60, 120, 180, 3600], ["a", "a", "b", "b", "a"], end=7200)
    # the gap after 180 s is longer than ten steps: "b" holds one step, then nothing
    assert runs == [(0, 120, "a"), (120, 240, "b"), (3600, 3660, "a")]


def png_rgb(data: bytes) -> np.ndarray:
    """An 8-bit RGB(A) PNG as a height x width x 3 array (zlib and struct, no imaging library)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        kind_of_filter = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind_of_filter == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind_of_filter == 2:
            line = bytearray(np.frombuffer(line, np.uint8) + np.frombuffer(prev, np.uint8))
        elif kind_of_filter == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind_of_filter == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return np.frombuffer(bytes(out), np.uint8).reshape(height, width, bpp)[:, :, :3]


def pixels_of(image: np.ndarray, color: str, tolerance: int = 4) -> int:
    rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(image.astype(np.int16) - rgb).max(axis=2) <= tolerance).sum())


def test_chromium_draws_the_charts(surge_day: tuple[Warehouse, Site], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed: `make browser` installs Debian's chromium")
    warehouse, site = surge_day
    page = write_report(build_report(warehouse, now=NOW, tz=site.tz), tmp_path / "r.html")
    shot = tmp_path / "report.png"
    browser = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = page.resolve().as_uri()
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1400,2000", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*browser, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    # the browser parsed the whole page: every chart is in its DOM
    assert dom.count("<svg") == page.read_text(encoding="utf-8").count("<svg") >= 8
    assert f"{ZONE} — Stadium paid concourse" in dom

    image = png_rgb(shot.read_bytes())
    assert image.shape == (2000, 1400, 3)
    background = pixels_of(image, "#f4f5f7", 0) + pixels_of(image, "#ffffff", 0)
    assert image.shape[0] * image.shape[1] - background > 150_000
    # the four levels (timeline bars, badges) and "none" appear in their colours,
    # and the headcount line in its own
    counts = {name: pixels_of(image, COLORS[name]) for name in ("green", *LEVELS)}
    counts["headcount"] = pixels_of(image, SERIES_COLORS[0], 12)
    assert counts["green"] > 50_000, counts  # stations without a warning, all day
    assert counts["red"] > 3_000, counts
    assert counts["blue"] > 3_000, counts
    assert counts["orange"] > 500, counts
    assert counts["yellow"] > 500, counts
    assert counts["headcount"] > 1_000, counts


def test_command_writes_the_page_and_says_where(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    for setup in (["db", "migrate"], ["site", "sync"]):
        assert crowdwatch(*setup, env=env, check=False).returncode == 0
    done = crowdwatch("report", "--from", "2026-11-20T08:00", env=env, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    out = tmp_path / "report.html"  # the default: in the data directory
    assert lines[0] == f"wrote {out}"
    # nothing ran yet: no zone, but the overview panels are drawn
    assert lines[1].startswith("no zone (no alert), 2026-11-20 08:00–"), lines
    assert "<h2>Network overview</h2>" in out.read_text(encoding="utf-8")
    wrong = crowdwatch("report", "--zone", "NOPE", "--out", "x.html", env=env, check=False)
    assert wrong.returncode == 2
    assert (
        "zone 'NOPE' is not in the warehouse's site_zones; zones: CTR-L1-platform" in wrong.stderr
    )
