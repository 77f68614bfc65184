from pathlib import Path

import pytest

from crowdwatch.settings import Settings


@pytest.mark.parametrize(
    ("source", "until_drained", "live"),
    [("file", False, False), ("redis", False, True), ("kafka", True, False)],
)
def test_live_means_a_broker_read_as_it_happens(
    source: str, until_drained: bool, live: bool
) -> None:
    settings = Settings(source=source, source_until_drained=until_drained)  # type: ignore[arg-type]
    assert settings.live is live


@pytest.mark.parametrize(
    ("source", "until_drained", "notify", "mode"),
    [
        ("file", False, None, "log"),  # a replay of history calls nobody
        ("kafka", True, None, "log"),
        ("redis", False, None, "on"),  # live
        ("file", False, "on", "on"),
        ("redis", False, "off", "off"),
    ],
)
def test_notify_mode_defaults_to_on_live_and_log_for_a_replay(
    source: str, until_drained: bool, notify: str | None, mode: str
) -> None:
    settings = Settings(
        source=source,  # type: ignore[arg-type]
        source_until_drained=until_drained,
        notify=notify,  # type: ignore[arg-type]
    )
    assert settings.notify_mode == mode


def test_the_outbox_defaults_to_a_file_per_database_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, clickhouse_database="site_a")
    assert settings.outbox_dsn() == f"sqlite:///{tmp_path.resolve()}/outbox/site_a.sqlite3"
    url = "postgresql+psycopg://crowdwatch@db/crowdwatch"
    assert Settings(outbox_url=url).outbox_dsn() == url  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize(
    "name", ["ANOMALY_RELATIVE_FLOOR", "ANOMALY_TIME_OF_DAY_SPREAD", "BURST_THRESHOLD"]
)
def test_a_float_setting_refuses_infinity_and_nan(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An anomaly floor of inf made every scale infinite: the zone never alarmed again.
    monkeypatch.setenv(f"CROWDWATCH_{name}", value)
    with pytest.raises(ValueError, match=name.lower()):
        Settings()
