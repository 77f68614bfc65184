"""Call categories: the shipped file loads, feeds' codes and texts land in the right groups."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest
import yaml

from crowdwatch.calls.categories import CategoriesError, load_categories
from crowdwatch.settings import REPO_ROOT
from tests.conftest import SHARED_DATA

CATEGORIES = REPO_ROOT / "infra" / "calls" / "categories.yaml"
SEATTLE = SHARED_DATA / "emergency_calls" / "seattle_fire_911_mva.csv"


def assign(codes: Sequence[str | None], texts: Sequence[str | None]) -> list[str]:
    frame = load_categories(CATEGORIES).assign(
        pl.Series(codes, dtype=pl.String), pl.Series(texts, dtype=pl.String)
    )
    groups: list[str] = frame["group"].to_list()
    return groups


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "categories.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_shipped_file_loads_with_its_groups_and_weights() -> None:
    categories = load_categories(CATEGORIES)
    assert categories.groups == [
        "crowding",
        "disorder",
        "fire",
        "medical",
        "theft",
        "traffic",
        "weather",
        "other",
    ]
    assert categories.weight_of("crowding") == 1.0
    assert categories.weight_of("other") == 0.1


def test_weather_and_mass_gatherings_have_their_groups() -> None:
    texts = ["Tree Down", "Wires Down", "台风 树木倒伏", "中暑", "群体性事件", "聚众斗殴", "Police"]
    assert assign([None] * len(texts), texts) == [
        "weather",
        "weather",
        "weather",
        "weather",
        "crowding",
        "disorder",
        "other",
    ]


def test_seattle_types_are_traffic_by_code_and_by_text() -> None:
    types = [
        "Motor Vehicle Accident",
        "Motor Vehicle Accident Freeway",
        "Motor Vehicle Incident",
        "Motor Vehicle Incident Freeway",
    ]
    assert assign(types, [None] * 4) == ["traffic"] * 4
    assert assign([None] * 4, types) == ["traffic"] * 4
    assert assign(["Aid Response", "Car Fire"], ["Aid Response", "Car Fire"]) == [
        "medical",
        "fire",
    ]


def test_every_row_of_the_real_seattle_feed_is_traffic() -> None:
    if not SEATTLE.exists():
        pytest.skip(f"{SEATTLE} is not here")
    feed = pl.read_csv(SEATTLE, infer_schema=False)
    frame = load_categories(CATEGORIES).assign(feed["Type"], feed["Type"])
    assert frame.height == feed.height
    assert frame.schema == pl.Schema({"group": pl.String, "weight": pl.Float64})
    assert frame["group"].unique().to_list() == ["traffic"]
    assert frame["weight"].unique().to_list() == [0.2]


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("地铁站台人员拥挤", "crowding"),
        ("景区发生踩踏", "crowding"),
        ("踩踏事件多人受伤", "crowding"),  # crowding comes before medical in the file
        ("两伙人打架斗殴", "disorder"),
        ("有人聚集闹事", "disorder"),
        ("商场火灾", "fire"),
        ("乘客晕倒", "medical"),
        ("老人摔倒受伤", "medical"),
        ("手机被扒窃", "theft"),
        ("电动车被盗窃", "theft"),
        ("路口交通事故", "traffic"),
        ("CROWD CRUSH at gate", "crowding"),
        ("Pickpocket on platform", "theft"),
        ("Fireworks complaint", "other"),  # \bfire\b: a word, not a prefix
        ("噪音扰民", "other"),
    ],
)
def test_texts_map_to_their_groups(text: str, group: str) -> None:
    assert assign([None], [text]) == [group]


def test_assign_returns_group_and_weight_per_row() -> None:
    frame = load_categories(CATEGORIES).assign(
        pl.Series(["X", None, None]), pl.Series(["人员拥挤", "噪音扰民", None])
    )
    assert frame.to_dict(as_series=False) == {
        "group": ["crowding", "other", "other"],
        "weight": [1.0, 0.1, 0.1],
    }


def test_a_code_match_beats_a_text_match_of_an_earlier_group(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "groups": [
                {"name": "crowding", "weight": 1.0, "texts": ["拥挤"]},
                {"name": "traffic", "weight": 0.2, "codes": ["T01"], "texts": ["车"]},
                {"name": "other", "weight": 0.1},
            ]
        },
    )
    frame = load_categories(path).assign(
        pl.Series(["T01", "Z99", " T01 ", "t01"]),
        pl.Series(["道路拥挤", "道路拥挤", "x", "车"]),
    )
    # Code first; codes are exact after trimming (t01 is not T01 but its text says traffic).
    assert frame["group"].to_list() == ["traffic", "crowding", "traffic", "traffic"]
    assert frame["weight"].to_list() == [0.2, 1.0, 0.2, 0.2]


def test_first_group_in_file_order_wins_among_texts(tmp_path: Path) -> None:
    groups = [
        {"name": "medical", "weight": 0.5, "texts": ["受伤"]},
        {"name": "crowding", "weight": 1.0, "texts": ["踩踏"]},
        {"name": "other", "weight": 0.1},
    ]
    first = load_categories(write(tmp_path, {"groups": groups}))
    assert first.assign(pl.Series(["x"]), pl.Series(["踩踏受伤"]))["group"].item() == "medical"
    groups[0], groups[1] = groups[1], groups[0]
    swapped = load_categories(write(tmp_path, {"groups": groups}))
    assert swapped.assign(pl.Series(["x"]), pl.Series(["踩踏受伤"]))["group"].item() == "crowding"


def test_texts_are_case_insensitive_regexes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "groups": [
                {"name": "crowding", "weight": 1.0, "texts": [r"crowd(ing|ed)\b"]},
                {"name": "other", "weight": 0.1},
            ]
        },
    )
    groups = load_categories(path).assign(
        pl.Series([None, None, None]), pl.Series(["OVERCROWDED hall", "crowds", "Crowding"])
    )["group"]
    assert groups.to_list() == ["crowding", "other", "crowding"]


def test_unequal_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        load_categories(CATEGORIES).assign(pl.Series(["a", "b"]), pl.Series(["a"]))


@pytest.mark.parametrize(
    ("groups", "field", "message"),
    [
        (
            [{"name": "crowding", "weight": 1.5}, {"name": "other", "weight": 0.1}],
            "groups.0.weight",
            "less than or equal to 1",
        ),
        (
            [
                {"name": "crowding", "weight": 1.0, "texts": ["(unclosed"]},
                {"name": "other", "weight": 0.1},
            ],
            "groups.0.texts",
            "not a valid regex",
        ),
        (
            [
                {"name": "crowding", "weight": 1.0, "colour": "red"},
                {"name": "other", "weight": 0.1},
            ],
            "groups.0.colour",
            "Extra inputs",
        ),
        ([{"name": "crowding", "weight": 1.0}], "(top level)", "'other'"),
        ([{"name": "other", "weight": 0.1, "codes": ["X"]}], "groups.0", "fallback"),
        (
            [
                {"name": "a", "weight": 1.0},
                {"name": "a", "weight": 0.5},
                {"name": "other", "weight": 0.1},
            ],
            "(top level)",
            "duplicate",
        ),
    ],
)
def test_malformed_file_names_file_and_field(
    tmp_path: Path, groups: list[dict[str, object]], field: str, message: str
) -> None:
    path = write(tmp_path, {"groups": groups})
    with pytest.raises(CategoriesError) as caught:
        load_categories(path)
    assert str(path) in str(caught.value)
    assert field in str(caught.value)
    assert message in str(caught.value)


def test_broken_yaml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "categories.yaml"
    path.write_text("groups: [\n", encoding="utf-8")
    with pytest.raises(CategoriesError, match="not valid YAML") as caught:
        load_categories(path)
    assert str(path) in str(caught.value)
    with pytest.raises(CategoriesError, match="not found"):
        load_categories(tmp_path / "missing.yaml")
