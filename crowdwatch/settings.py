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

from crowdwatch.batches import RecordKind, TimeBounds

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SITE_FILE = REPO_ROOT / "infra" / "sites" / "example_interchange.yaml"
DEFAULT_DATA_DIR = REPO_ROOT / ".crowdwatch"
DEFAULT_CATEGORIES_FILE = REPO_ROOT / "infra" / "calls" / "categories.yaml"
Minutes = Annotated[tuple[Annotated[int, Field(gt=0, le=1440)], ...], NoDecode]
"""Window lengths in minutes, ``15,60`` from the environment."""


class Settings(BaseSettings):
    """Settings for every crowdwatch command and pipeline."""

    # No setting means anything at infinity: an anomaly floor of inf would silence every alarm.
    model_config = SettingsConfigDict(
        env_prefix="CROWDWATCH_", env_file=".env", frozen=True, extra="ignore", allow_inf_nan=False
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

    risk_redecide_s: int = Field(
        default=600,
        gt=0,
        description=(
            "Late readings (behind a station's last decided tick) this recent re-decide the "
            "ticks they belong to; older ones are applied at the last tick."
        ),
    )

    # Surge detection (issue 16): defaults chosen with `python -m detectors.evaluate` on the
    # shared real data, for the general case (README, "Detection quality").
    anomaly_strong_z: float = Field(
        default=6.0,
        gt=0,
        description="A seasonal robust z-score (rise) this high is a strong anomaly: one step up.",
    )
    anomaly_relative_floor: float = Field(
        default=0.10,
        ge=0,
        description="Floor on the seasonal scale as a share of the usual level.",
    )
    anomaly_poisson_floor: float = Field(
        default=2.5,
        ge=0,
        description="Floor on the seasonal scale in multiples of sqrt(usual level) (count noise).",
    )
    anomaly_time_of_day_spread: float = Field(
        default=1.0,
        ge=0,
        description=(
            "Floor on a slot's week-to-week spread as a multiple of its time of day's (the "
            "median over the weekdays, relative to the level); 0: the slot's own only."
        ),
    )
    anomaly_history_weeks: int = Field(
        default=8, ge=3, description="Past weeks per time-of-week slot in the seasonal baseline."
    )
    anomaly_refractory_s: int = Field(
        default=3 * 3600,
        ge=0,
        description="Strong anomalies less than this apart are one episode (one alert).",
    )
    burst_windows: Minutes = Field(
        default=(15, 60),
        min_length=1,
        description="Burst windows in minutes of a zone, station or district, e.g. 15,60.",
    )
    burst_site_windows: Minutes = Field(
        default=(15, 60, 180, 360, 720, 1440),
        min_length=1,
        description="Burst windows in minutes of the site-wide series (storms last hours).",
    )
    burst_site_threshold: float = Field(
        default=3.5, gt=0, description="Site-wide call burst alert: -log10 of the Poisson tail."
    )
    burst_dispersion: float = Field(
        default=1.0,
        ge=1.0,
        description="Call counts vary this many times more than Poisson (quasi-Poisson scoring).",
    )
    burst_floor_per_hour: float = Field(
        default=0.2, gt=0, description="Least expected calls per hour of a burst series."
    )
    burst_quiet_minutes: int = Field(
        default=10,
        gt=0,
        le=1440,
        description="A call burst ends once this many minutes pass without a call in its series.",
    )
    burst_parent_calls: float = Field(
        default=4.0,
        gt=0,
        description=(
            "How many calls of a series' own the rate borrowed from its parent area weighs as "
            "(zone from station, station from district, district from site)."
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
    sink_hold_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description=(
            "Rows wait at most this long (wall clock) to be written to the warehouse, gathered "
            "into one insert per table, so alert decisions do not wait behind many small "
            "inserts; 0: every batch is written at once."
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

    # Plausibility bounds on input (issue 15): a record outside them goes to rejected_events
    # with the reason; see README "Robustness".
    max_clock_skew_s: int = Field(
        default=300,
        gt=0,
        description=(
            "Live: a record whose event time is more than this ahead of the wall clock is "
            "rejected as from the future. A file replay bounds event time by the file's span."
        ),
    )
    max_gate_per_min: int = Field(
        default=120,
        gt=0,
        description="Most people one gate can pass per minute (bounds a gate's interval counts).",
    )
    max_station_per_min: int = Field(
        default=20_000,
        gt=0,
        description="Most people a whole station can pass per minute (station-level counts).",
    )
    max_camera_persons: int = Field(
        default=5_000,
        gt=0,
        description="Most people one camera (or one of its ROIs) can report in a frame.",
    )

    def time_bounds(self) -> TimeBounds:
        """The event-time bounds of input records (the skew bound ahead, the replay's span)."""
        return TimeBounds(skew_ms=self.max_clock_skew_s * 1000, pad_ms=self.late_horizon_s * 1000)

    source: Literal["file", "redis", "kafka", "mqtt", "amqp"] = Field(
        default="file",
        description=(
            "Where pipelines read records when no source is passed: input_path replayed, Redis "
            "Streams (<redis_stream_prefix>:<kind>[:<k>]), Kafka topics (<prefix>.<kind>), MQTT "
            "topics (<prefix>/<kind>[/<k>]) or AMQP queues bound to <prefix>.<kind>[.<k>]."
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

    # Brokers (issue 19): Kafka's deleted records, the MQTT and AMQP sources and their spool
    kafka_skip_deleted: bool = Field(
        default=False,
        description=(
            "When Kafka deleted records (retention) before they were read, go on from the oldest "
            "record kept, losing them; default: stop with an error naming the lost offsets."
        ),
    )
    mqtt_url: SecretStr = Field(
        default=SecretStr("mqtt://127.0.0.1:1883"),
        description="mqtt://[user:password@]host:port of the MQTT broker (mqtts:// for TLS).",
    )
    mqtt_topic_prefix: str = Field(default="crowdwatch", pattern=r"^[^#+]+$")
    mqtt_client_id: str = Field(
        default="crowdwatch",
        min_length=1,
        description=(
            "MQTT client id of this process's persistent session (the broker keeps its messages "
            "while the process is down); one per process, suffixed with the topic's kind."
        ),
    )
    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/%2F"),
        description="amqp://user:password@host:port/vhost of the AMQP 0-9-1 broker (RabbitMQ).",
    )
    amqp_exchange: str = Field(
        default="amq.topic",
        description="The topic exchange records are published to (DeepStream's AMQP default).",
    )
    amqp_routing_prefix: str = Field(default="crowdwatch", pattern=r"^[A-Za-z0-9._-]+$")
    amqp_queue_prefix: str = Field(
        default="crowdwatch",
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Durable queues <prefix>.<kind>[.<k>] bound to the exchange, one per signal.",
    )
    source_drain_idle_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "MQTT and AMQP read until drained: stop once everything received was read and "
            "no message came for this long."
        ),
    )
    spool_max_mb: float = Field(
        default=256.0,
        gt=0,
        description=(
            "MQTT and AMQP records acknowledged but not yet snapshotted, kept on disk under "
            "data_dir/spool; when full, the source stops acknowledging and the broker holds them."
        ),
    )

    # Alert delivery: who is told (notify mode), the durable outbox, how long to keep trying.
    notify: Literal["on", "log", "off"] | None = Field(
        default=None,
        description=(
            "on: alert events are sent to the site's contacts; log: stored and logged, nobody "
            "called; off: not even logged. None: on for a live run, log for a replay."
        ),
    )
    notify_max_age_s: float = Field(
        default=600.0,
        gt=0,
        description=(
            "Alert events whose event time is older than this (against the wall clock) are "
            "logged, not sent: catching up after an outage does not page people about the past."
        ),
    )
    outbox_url: SecretStr | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the alert outbox (sqlite:///path, postgresql+psycopg://…). "
            "Default: a SQLite file per warehouse database under data_dir/outbox."
        ),
    )
    language: Literal["zh-CN", "en"] | None = Field(
        default=None,
        description="The language of alert messages, over the site file's (zh-CN or en).",
    )
    mail_url: SecretStr | None = Field(
        default=None,
        description=(
            "The SMTP server of email channels, as an Apprise mailto:// or mailtos:// URL "
            "(mailtos://user:password@smtp.example.cn:465?from=crowdwatch@example.cn)."
        ),
    )
    sms_gateway: SecretStr | None = Field(
        default=None,
        description=(
            "The SMS gateway of sms channels: an http(s):// URL of a JSON gateway, or an Apprise "
            "URL of an SMS service with {to} where the numbers go."
        ),
    )
    sms_token: SecretStr | None = Field(
        default=None, description="The bearer token of a JSON SMS gateway."
    )
    notify_timeout_s: float = Field(
        default=2.0, gt=0, description="Connect and read timeout of one webhook request."
    )
    notify_backoff_max_s: float = Field(
        default=60.0, gt=0, description="The longest wait between two attempts to one receiver."
    )
    notify_after_close_s: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "Deliveries are retried while their alert is open and this long after it resolved; "
            "then they are given up as expired."
        ),
    )
    notify_drain_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "When a pipeline ends, how long it waits for pending deliveries; the rest stay in "
            "the outbox and go out on the next start."
        ),
    )

    # Alert handling (issue 18): acknowledge links, the HTTP API
    public_url: str = Field(
        default="http://127.0.0.1:8787",
        pattern=r"^https?://\S+$",
        description=(
            "Where duty staff reach `crowdwatch serve`: acknowledge links in messages point here."
        ),
    )
    ack_link_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description=(
            "HMAC key of the signed acknowledge links; default: a random key made once and kept "
            "in the workflow store (every process on that store shares it)."
        ),
    )
    serve_host: str = Field(default="127.0.0.1", description="`crowdwatch serve` listens here.")
    serve_port: int = Field(default=8787, ge=0, le=65535, description="… on this port.")
    escalate_every_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "How often a process that runs the escalation loop looks for requests another "
            "process wrote; its own are handled at their due time."
        ),
    )

    @field_validator("burst_windows", "burst_site_windows", mode="before")
    @classmethod
    def _minutes(cls, value: object) -> object:
        """Accept ``15,60,180`` from the environment as well as a sequence."""
        if isinstance(value, str):
            return tuple(int(part) for part in value.split(",") if part.strip())
        return value

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

    @property
    def notify_mode(self) -> Literal["on", "log", "off"]:
        """``notify`` as set, else ``on`` for a live run and ``log`` for a replay."""
        if self.notify is not None:
            return self.notify
        return "on" if self.live else "log"

    def outbox_dsn(self) -> str:
        """The outbox's SQLAlchemy URL, defaulting to a SQLite file under ``data_dir/outbox``."""
        if self.outbox_url is not None:
            return self.outbox_url.get_secret_value()
        path = (self.data_dir / "outbox" / f"{self.clickhouse_database}.sqlite3").resolve()
        return f"sqlite:///{path}"

    def dsn(self) -> str:
        """Return the ClickHouse DSN, defaulting to the embedded engine under ``data_dir``."""
        if self.clickhouse_dsn is not None:
            return self.clickhouse_dsn.get_secret_value()
        return f"chdb://{(self.data_dir / 'warehouse').resolve()}"
