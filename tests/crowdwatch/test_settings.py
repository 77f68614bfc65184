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
