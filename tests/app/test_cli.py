"""The command line: help everywhere, one-line errors, and the real commands in subprocesses.

Commands that open the embedded engine run in a subprocess, as a user runs them (chDB allows one
engine path per process, and this test process already has one).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

import pipelines
from app import registry
from app.cli import build_parser, main
from crowdwatch.flow import PipelineConfigError
from tests.commands import crowdwatch, run_module, user_env

COMMANDS = [
    ["db", "migrate"],
    ["replay"],
    ["simulate"],
    ["run"],
    ["pipelines"],
    ["demo"],
    ["query"],
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*command, "--help"])
    assert done.value.code == 0
    assert "usage: crowdwatch" in capsys.readouterr().out


def test_known_failures_are_one_line_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text("ts,gate_id,direction\n", encoding="utf-8")
    code = main(["replay", str(feed), "--site-file", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"error: {tmp_path / 'nope.yaml'}: site file not found (set CROWDWATCH_SITE_FILE)"
    code = main(["simulate", "--out", str(tmp_path / "x.txt"), "--no-surge"])
    assert code == 2
    assert "use .csv, .jsonl or .parquet" in capsys.readouterr().err.replace("\n", " ")
    code = main(["simulate", "--out", str(tmp_path / "x.csv"), "--surge", "STD-at-nine"])
    assert code == 2
    assert "expected STATION@HH:MM+MINUTES:EXTRA" in capsys.readouterr().err


def test_a_pipeline_module_without_build_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_flow.py").write_text('"""No build here."""\n', encoding="utf-8")
    monkeypatch.setattr(pipelines, "__path__", [*pipelines.__path__, str(tmp_path)])
    with pytest.raises(PipelineConfigError, match=r"broken_flow\.py has no build"):
        registry.discover()


def test_pipelines_are_discovered() -> None:
    assert "gate_flow" in registry.discover()
    with pytest.raises(PipelineConfigError, match=r"known: .*gate_flow"):
        registry.get("no_such_flow")


def test_demo_then_query(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    demo = crowdwatch("demo", "--day", "2026-11-20", env=env)
    assert "STD-concourse went over capacity (1,750) at 21:4" in demo.stdout
    assert "unknown gate 'GATE-404'" in demo.stdout
    # the demo leaves its story as a page: the zone that went red, drawn from the warehouse
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "STD-concourse" in page and "<svg" in page
    assert (tmp_path / "report.html").as_uri() in demo.stdout.replace("\n", "")
    query = crowdwatch(
        "query",
        "SELECT zone_id, max(capacity_use) AS peak FROM zone_metrics FINAL "
        "WHERE scope = 'zone' GROUP BY zone_id ORDER BY peak DESC",
        "--format",
        "csv",
        env=env,
    )
    peaks = pl.read_csv(query.stdout.encode())
    assert peaks["zone_id"][0] == "STD-concourse" and peaks["peak"][0] > 1.0
    assert peaks.height == 5  # the five gate-fed zones of the example site
    again = crowdwatch("demo", "--day", "2026-11-20", env=env)
    assert "schema up to date" in again.stdout
    same = crowdwatch(
        "query",
        "SELECT sum(entries) AS n FROM zone_metrics FINAL",
        "--format",
        "csv",
        env=env,
    )
    first = crowdwatch(
        "query",
        "SELECT count() AS rejected FROM rejected_events FINAL",
        "--format",
        "csv",
        env=env,
    )
    assert (
        pl.read_csv(first.stdout.encode())["rejected"][0] == 252
    )  # injected malformed records, once
    assert pl.read_csv(same.stdout.encode())["n"][0] > 0
    bad = crowdwatch("query", "SELECT nope FROM zone_metrics", env=env, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_simulate_then_run_and_the_bytewax_way(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    feed = tmp_path / "day.parquet"
    crowdwatch(
        "simulate",
        "--day",
        "2026-11-21",
        "--out",
        str(feed),
        "--no-surge",
        "--scale",
        "0.2",
        env=env,
    )
    records = pl.read_parquet(feed)
    entries = int((records["direction"] == "in").sum())
    crowdwatch("db", "migrate", env=env)
    crowdwatch("run", "gate_flow", "--input", str(feed), env=env)
    total = "SELECT toInt64(sum(entries)) AS n FROM zone_metrics FINAL WHERE scope = 'station'"
    got = crowdwatch("query", total, "--format", "csv", env=env)
    assert pl.read_csv(got.stdout.encode())["n"][0] == entries
    env_bytewax = {
        **os.environ,
        "CROWDWATCH_INPUT_PATH": str(feed),
        "CROWDWATCH_DATA_DIR": str(tmp_path),
        "CROWDWATCH_CLICKHOUSE_DATABASE": "bytewax_way",
    }
    crowdwatch("db", "migrate", env=env_bytewax)
    run_module("bytewax.run", "pipelines.gate_flow:build()", env=env_bytewax)
    again = crowdwatch("query", total, "--format", "csv", env=env_bytewax)
    assert pl.read_csv(again.stdout.encode())["n"][0] == entries


def test_a_bad_outbox_url_is_one_line_that_names_the_setting(tmp_path: Path) -> None:
    env = user_env(tmp_path, CROWDWATCH_NOTIFY="on", CROWDWATCH_OUTBOX_URL="nonsense")
    gates = tmp_path / "gates.csv"
    gates.write_text("ts,gate_id,direction\n2026-11-20T08:00:00+08:00,CTR-G01,in\n")
    crowdwatch("db", "migrate", env=env)
    bad = crowdwatch("replay", str(gates), "--pipeline", "zone_risk", env=env, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: the workflow store URL")
    assert "CROWDWATCH_OUTBOX_URL" in bad.stderr
