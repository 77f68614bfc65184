"""Write every dashboard as Grafana JSON: ``python -m dashboards.build``.

The JSON under ``infra/grafana/dashboards`` is committed; a test fails when it is stale.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from crowdwatch.settings import REPO_ROOT
from dashboards.calls import call_overview
from dashboards.cameras import camera_health
from dashboards.overview import network_overview
from dashboards.pipeline import pipeline_health
from dashboards.response import response_kpis
from dashboards.zone import zone_detail

FOLDER = REPO_ROOT / "infra" / "grafana" / "dashboards"
"""Where the JSON goes: ``infra/grafana/dashboards`` in the repository."""

BUILDERS: tuple[Callable[[], dashboard.Dashboard], ...] = (
    network_overview,
    zone_detail,
    call_overview,
    camera_health,
    pipeline_health,
    response_kpis,
)


def dashboards() -> dict[str, dashboard.Dashboard]:
    """Every dashboard builder by its uid."""
    out: dict[str, dashboard.Dashboard] = {}
    for make in BUILDERS:
        builder = make()
        uid = builder.build().uid
        if not uid:
            raise ValueError(f"{make.__name__}() builds a dashboard without a uid; set .uid(...)")
        out[uid] = builder
    return out


def render(builder: dashboard.Dashboard) -> str:
    """A dashboard's JSON as committed: sorted keys, indent 2, a final newline."""
    return json.dumps(builder.build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def built_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON by uid, as committed for Grafana."""
    return {uid: json.loads(render(builder)) for uid, builder in dashboards().items()}


def write_all(folder: Path = FOLDER) -> list[Path]:
    """Write ``<uid>.json`` for every dashboard into ``folder``; return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, builder in dashboards().items():
        path = folder / f"{uid}.json"
        path.write_text(render(builder), encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    """Write the dashboards and print the files written."""
    for path in write_all():
        print(path)


if __name__ == "__main__":
    main()
