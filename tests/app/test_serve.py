"""``crowdwatch serve``, ``alerts`` and ``drill`` as a user runs them, in separate processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from crowdwatch.settings import REPO_ROOT
from tests.app.test_alert_delivery import free_port
from tests.commands import crowdwatch, user_env
from tests.crowdwatch.warehouse.test_client import HOLDER, python
from tests.crowdwatch.workflow.test_api import request


def red_drill(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`crowdwatch drill` of a red alert at STD-concourse, not waiting; it must exit 0."""
    drill = crowdwatch(
        "drill", "--zone", "STD-concourse", "--level", "red", "--wait", "0", env=env, check=False
    )
    assert drill.returncode == 0, drill.stderr
    return drill


def ack_as_station_master(alert_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`crowdwatch alerts ack` of ``alert_id`` by Wang, the station master."""
    return crowdwatch(
        "alerts", "ack", alert_id, "--role", "station_master", "--name", "Wang", env=env
    )


def test_serve_the_api_beside_the_command_line_and_a_drill(tmp_path: Path) -> None:
    port = free_port()
    env = user_env(tmp_path, CROWDWATCH_SERVE_PORT=str(port))
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # until it listens (it migrates the store and the warehouse first)
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as answer:
                    assert json.load(answer) == {"ok": True}
                    break
            except OSError:
                assert server.poll() is None, server.communicate()
                time.sleep(0.1)
        assert request(f"{base}/api/alerts")[0] == 401
        token = crowdwatch("alerts", "token", "duty_chief", "--name", "Zhou", env=env)
        secret = token.stdout.strip().splitlines()[-1]
        drill = red_drill(env)
        assert "【演练】drill drill:STD-concourse:" in drill.stdout
        report = next((tmp_path / "drills").glob("drill_STD-concourse_*.md"))
        assert "0 of 4 roles asked" in report.read_text(encoding="utf-8")
        status, _, body = request(f"{base}/api/alerts", token=secret)
        assert status == 200
        [alert] = json.loads(body)
        assert alert["drill"] is True and alert["kind"] == "drill"
        acked = ack_as_station_master(alert["alert_id"], env)
        assert "station_master acknowledged (Wang)" in acked.stdout
        refused = crowdwatch(
            "alerts",
            "sign-off",
            alert["alert_id"],
            "--role",
            "street_office",
            "--name",
            "X",
            "--outcome",
            "done",
            env=env,
            check=False,
        )
        assert refused.returncode == 2 and "may not sign off" in refused.stderr
        shown = crowdwatch("alerts", "show", alert["alert_id"], "--json", env=env)
        actions = [row["action"] for row in json.loads(shown.stdout)["audit"]]
        assert actions == ["raised"] + ["asked"] * 4 + ["acknowledged"]
        ledger = crowdwatch("alerts", "audit", env=env).stdout.splitlines()
        assert len(ledger) == 1 + len(actions) and ",Wang,station_master,cli," in ledger[-1]
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 130, err
    assert f"serving the alert API on {base}" in out


def test_alerts_are_handled_while_a_pipeline_holds_the_embedded_warehouse(tmp_path: Path) -> None:
    """The alert store does not wait for the warehouse; its copies go there once it is free."""
    env = user_env(tmp_path)
    holder = python(HOLDER, f"chdb://{tmp_path / 'warehouse'}", 600)  # as `crowdwatch run` does
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        drill = red_drill(env)
        assert f"in use by process {holder.pid}" in drill.stderr
        [alert] = json.loads(crowdwatch("alerts", "list", "--json", env=env).stdout)
        acked = ack_as_station_master(alert["alert_id"], env)
        assert "station_master acknowledged (Wang)" in acked.stdout
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    listed = crowdwatch("alerts", "list", env=env)  # the warehouse is free: the copies go now
    assert "warning" not in listed.stderr
    copied = crowdwatch(
        "query", "SELECT action FROM alert_actions ORDER BY action_id", "--format", "csv", env=env
    )
    assert copied.stdout.split() == ["action", "raised", *["asked"] * 4, "acknowledged"]
