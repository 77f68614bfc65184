"""One frozen, typed settings object, built once at the edge and passed in.

Every field can be set from the environment with the prefix ``CROWDWATCH_``
(``CROWDWATCH_CLICKHOUSE_DSN``, ``CROWDWATCH_SITE_FILE`` …) or from a ``.env`` file.
Library code never reads ``os.environ``: it takes a ``Settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from crowdwatch.batches import RecordKind

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SITE_FILE = REPO_ROOT / "infra" / "sites" / "example_interchange.yaml"
DEFAULT_DATA_DIR = REPO_ROOT / ".crowdwatch"
DEFAULT_CATEGORIES_FILE = REPO_ROOT / "infra" / "calls" / "categories.yaml"


class Settings(BaseSettings):
    """Settings for every crowdwatch command and pipeline."""

    model_config = SettingsConfigDict(
        env_prefix="CROWDWATCH_", env_file=".env", frozen=True, extra="ignore"
    )

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Where the embedded warehouse and other local state live.",
    )
    clickhouse_dsn: SecretStr | None = Field(
        default=None,
        description=(
            "chdb:///path for the embedded engine, http(s)://user:pw@host:8123/db for a server. "
            "Default: the embedded engine under data_dir/warehouse."
        ),
    )
    clickhouse_database: str = Field(default="crowdwatch", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    site_file: Path = Field(default=DEFAULT_SITE_FILE, description="The site YAML file.")
    batch_rows: int = Field(
        default=100_000, gt=0, description="Rows per micro-batch read from files."
    )
    window_s: int = Field(default=60, gt=0, description="Metric window length in seconds.")
    late_horizon_s: int = Field(
        default=24 * 3600,
        gt=0,
        description=(
            "How far behind a station's newest record a late record may be and still correct "
            "its window; older records go to rejected_events."
        ),
    )
    video_window_s: int = Field(default=5, gt=0, description="Video headcount window in seconds.")
    video_horizon_s: int = Field(
        default=120,
        gt=0,
        description="Camera messages later than this behind their station's newest are rejected.",
    )
    call_categories_file: Path = Field(
        default=DEFAULT_CATEGORIES_FILE,
        description="Dispatch categories → crowd-safety groups and weights.",
    )
    caller_hash_key: SecretStr | None = Field(
        default=None,
        description=(
            "Key for the keyed hash of caller phone numbers (links repeat callers); without it "
            "phone numbers are dropped."
        ),
    )
    burst_threshold: float = Field(
        default=4.0, gt=0, description="Call burst alert: -log10 of the Poisson tail."
    )
    risk_tick_s: int = Field(default=10, gt=0, description="Zone state every N seconds.")
    # Event time across sources (zone_risk): when a quiet source stops holding a station back
    source_idle_s: int = Field(
        default=60,
        gt=0,
        description=(
            "Live: a source (gates, video, calls) of a station with no reading for this many "
            "wall-clock seconds is stale and no longer holds the station's watermark back."
        ),
    )
    replay_idle_s: int = Field(
        default=900,
        gt=0,
        description=(
            "Replay: a source whose event time is this many seconds behind the station's "
            "newest (its input ended or has a gap) is stale and no longer holds it back."
        ),
    )
    input_path: Path | None = Field(
        default=None,
        description="A recorded file (CSV, JSONL, Parquet) to read when no source is given.",
    )
    replay_speed: float | None = Field(
        default=None, gt=0, description="Replay at this multiple of recorded speed; None: max."
    )
    workers: int = Field(default=1, ge=1, le=64, description="Bytewax workers in this process.")
    rate_window_minutes: int = Field(
        default=5, gt=0, description="Minutes averaged for the inflow rate."
    )
    recovery_dir: Path | None = Field(
        default=None,
        description=(
            "Bytewax recovery: snapshots of every pipeline's state and input position, one "
            "subdirectory per pipeline, so a killed run resumes where it was. None: no recovery."
        ),
    )
    snapshot_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="With recovery: seconds between snapshots (a resume replays at most this).",
    )
    recovery_partitions: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Recovery partitions created on first use (fixed afterwards); None: the workers."
        ),
    )
    sink_buffer_max_mb: float = Field(
        default=1024.0,
        gt=0,
        description=(
            "Rows kept on disk under data_dir/buffer while the warehouse is unreachable; when "
            "full, the pipeline waits for the warehouse instead of dropping rows."
        ),
    )

    source: Literal["file", "redis", "kafka"] = Field(
        default="file",
        description=(
            "Where pipelines read records when no source is passed: input_path replayed, Redis "
            "Streams (<redis_stream_prefix>:<kind>[:<k>]) or Kafka topics (<prefix>.<kind>)."
        ),
    )
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="redis://[user:password@]host:port/db of the Redis Streams source.",
    )
    redis_stream_prefix: str = Field(default="crowdwatch", min_length=1)
    kafka_brokers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap brokers, host:port,host:port."
    )
    kafka_topic_prefix: str = Field(default="crowdwatch", pattern=r"^[A-Za-z0-9._-]+$")
    source_kinds: Annotated[tuple[RecordKind, ...] | None, NoDecode] = Field(
        default=None,
        description=(
            "Signals read from Redis or Kafka (passage,count,video,…); None: the pipeline's own."
        ),
    )
    source_partition_count: int = Field(
        default=1,
        ge=1,
        description=(
            "Partitions per signal, records split by CRC-32(station_id) mod n: Redis streams "
            "<prefix>:<kind>:<k> (no suffix when 1); Kafka partitions of each topic."
        ),
    )
    source_partitions: Annotated[tuple[int, ...] | None, NoDecode] = Field(
        default=None, description="The partitions this process reads (e.g. 0,2); None: all."
    )
    source_until_drained: bool = Field(
        default=False,
        description="Stop reading Redis or Kafka once caught up (replays); otherwise wait on.",
    )

    @field_validator("source_kinds", "source_partitions", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """Accept ``a,b`` from the environment as well as a sequence."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip()) or None
        return value

    @property
    def live(self) -> bool:
        """True when records come from a broker as they happen, not from a recorded replay.

        A file replay (``source = file``) and a broker read only until drained are replays.
        """
        return self.source != "file" and not self.source_until_drained

    def dsn(self) -> str:
        """Return the ClickHouse DSN, defaulting to the embedded engine under ``data_dir``."""
        if self.clickhouse_dsn is not None:
            return self.clickhouse_dsn.get_secret_value()
        return f"chdb://{(self.data_dir / 'warehouse').resolve()}"
