"""The generated dashboards fit Grafana's dashboard schema, as the foundation SDK models it.

The SDK's models are generated from Grafana's schema (the dashboard kind and every panel
plugin's options). Decoding a dashboard with them and encoding it again keeps every field the
schema knows and drops the rest, so a round trip that loses nothing and changes no value means
every field we write is a schema field, at its place. The decoders do not check value types
(a string where the schema has an integer passes). Decoders add defaults for fields we leave
out; that is allowed.

Two documented exceptions:

- The SDK's builders write ``"options": null`` for a panel whose options were never set
  (Grafana reads that as the plugin's defaults), which the SDK's own decoders cannot read: it
  is decoded as ``{}``.
- An annotation's ``target`` is described by the schema as the fields of Grafana's own
  annotation store ("TODO.. this should just be a normal query target"); a data source
  annotation stores its query there. The ClickHouse query fields are the only ones allowed to
  be dropped.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.build import dashboards, render
from dashboards.panels import ClickHouseQuery, Format

ANNOTATION_QUERY_FIELDS = set(ClickHouseQuery("A", "", Format.TABLE).to_json())


def lost(original: Any, decoded: Any, path: str = "") -> list[str]:
    """Paths of values in ``original`` that ``decoded`` drops or changes."""
    if isinstance(original, dict) and isinstance(decoded, dict):
        out = []
        for key, value in original.items():
            here = f"{path}/{key}"
            if key not in decoded:
                out.append(f"{here}: dropped")
            else:
                out += lost(value, decoded[key], here)
        return out
    if isinstance(original, list) and isinstance(decoded, list):
        if len(original) != len(decoded):
            return [f"{path}: {len(original)} items became {len(decoded)}"]
        return [
            p
            for i, (a, b) in enumerate(zip(original, decoded, strict=True))
            for p in lost(a, b, f"{path}[{i}]")
        ]
    return [] if original == decoded else [f"{path}: {original!r} became {decoded!r}"]


def round_trip(board: dict[str, Any]) -> list[str]:
    """What a decode and encode with the SDK's models loses, less the documented exceptions."""
    plugins.register_default_plugins()
    board = copy.deepcopy(board)
    for panel in board["panels"]:
        if panel.get("options") is None:
            panel["options"] = {}
    decoded = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
    allowed = {
        f"/annotations/list[{i}]/target/{field}: dropped"
        for i, _ in enumerate(board["annotations"].get("list") or [])
        for field in ANNOTATION_QUERY_FIELDS
    }
    return [p for p in lost(board, decoded) if p not in allowed]


@pytest.mark.parametrize("uid", sorted(dashboards()))
def test_every_field_is_a_schema_field(uid: str) -> None:
    board = json.loads(render(dashboards()[uid]))
    assert round_trip(board) == []
    # every panel type is one the SDK knows (an unknown one would decode as a bare panel)
    assert {p["type"] for p in board["panels"]} <= {
        "stat",
        "table",
        "timeseries",
        "state-timeline",
        "geomap",
    }


def test_a_field_outside_the_schema_is_found() -> None:
    board = json.loads(render(dashboards()["crowdwatch-overview"]))
    board["panels"][0]["options"]["colourMode"] = "value"  # the schema spells it colorMode
    board["panels"][4]["fieldConfig"]["defaults"]["units"] = "percent"  # it is unit
    board["refreshRate"] = "30s"  # it is refresh
    board["refresh"] = "1m"  # a schema field: kept
    assert sorted(round_trip(board)) == [
        "/panels[0]/options/colourMode: dropped",
        "/panels[4]/fieldConfig/defaults/units: dropped",
        "/refreshRate: dropped",
    ]


@pytest.mark.parametrize("uid", sorted(dashboards()))
def test_panels_fit_the_grid_without_overlapping(uid: str) -> None:
    board = json.loads(render(dashboards()[uid]))
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in "hwxy"), panel["title"]
        # the schema's GridPos: h > 0, 0 < w <= 24, x < 24; a panel must not run off the grid
        assert pos["h"] > 0 and 0 < pos["w"] <= 24 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        for row in range(pos["y"], pos["y"] + pos["h"]):
            for column in range(pos["x"], pos["x"] + pos["w"]):
                assert (row, column) not in cells, f"{panel['title']} overlaps {cells[row, column]}"
                cells[row, column] = panel["title"]
