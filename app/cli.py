"""The ``crowdwatch`` command line.

Settings come from the environment (``CROWDWATCH_*``) and the options here, built once at this
edge. Known failures print one clear line and what to do, with exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from time import time_ns
from typing import Any

import polars as pl
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import ValidationError
from rich.console import Console

from app import registry
from app.runner import prepare_warehouse, print_frame, replay_files, run_pipeline
from crowdwatch.batches import FIELDS
from crowdwatch.flow import PipelineConfigError
from crowdwatch.risk.outbox import OutboxError
from crowdwatch.settings import Settings
from crowdwatch.site import SiteError, load_site
from crowdwatch.sources.files import ReplayError
from crowdwatch.sources.redis_streams import BrokerError
from crowdwatch.video.mot import MotError, mot_messages, read_mot
from crowdwatch.warehouse.buffer import BufferInUseError
from crowdwatch.warehouse.client import Warehouse, WarehouseError, describe_dsn
from crowdwatch.warehouse.sitesync import sync_site
from crowdwatch.workflow.service import WorkflowError
from dashboards.push import GrafanaPushError

KNOWN_ERRORS = (
    SiteError,
    WorkflowError,
    WarehouseError,
    BufferInUseError,
    ReplayError,
    MotError,
    PipelineConfigError,
    BrokerError,
    GrafanaPushError,
    OutboxError,
    ClickHouseError,
    FileNotFoundError,
    ValueError,
)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in (
        "site_file",
        "data_dir",
        "clickhouse_dsn",
        "window_s",
        "batch_rows",
        "workers",
        "recovery_dir",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _warehouse(settings: Settings) -> Warehouse:
    return Warehouse.connect(settings.dsn(), settings.clickhouse_database)


def cmd_db_migrate(args: argparse.Namespace, console: Console) -> None:
    """Apply pending migrations."""
    settings = _settings(args)
    with _warehouse(settings) as warehouse:
        applied = warehouse.migrate()
        names = ", ".join(m.name for m in applied) or "nothing (up to date)"
        console.print(f"migrated {describe_dsn(settings.dsn())}: applied {names}")


def cmd_db_users(args: argparse.Namespace, console: Console) -> None:
    """Create the least-privilege roles and users on a ClickHouse server."""
    from crowdwatch.warehouse.users import create_users

    settings = _settings(args)
    with _warehouse(settings) as warehouse:
        result = create_users(
            warehouse,
            writer_password=args.writer_password,
            reader_password=args.reader_password,
            restricted_password=args.restricted_password,
        )
    if result.skipped:
        console.print(f"no users created: {result.skipped}")
        return
    for user, role in result.users.items():
        console.print(f"user {user}: role {role}")


def cmd_db_cluster_ddl(args: argparse.Namespace, console: Console) -> None:
    """Print (or write) the warehouse DDL for a ClickHouse cluster."""
    from crowdwatch.warehouse.cluster import cluster_script

    script = cluster_script(args.cluster, _settings(args).clickhouse_database)
    if args.out is None:
        sys.stdout.write(script)
        return
    args.out.write_text(script, encoding="utf-8")
    console.print(f"wrote the DDL for cluster {args.cluster} to {args.out}")


def cmd_site_sync(args: argparse.Namespace, console: Console) -> None:
    """Mirror the site file into the warehouse's site tables."""
    settings = _settings(args)
    site = load_site(settings.site_file)
    with _warehouse(settings) as warehouse:
        counts = sync_site(warehouse, site)
    console.print(
        f"synced {settings.site_file}: "
        + ", ".join(f"{n} {table.removeprefix('site_')}" for table, n in counts.items())
    )


def cmd_mot(args: argparse.Namespace, console: Console) -> None:
    """Turn a MOT detections file into a camera's JSON messages."""
    settings = _settings(args)
    site = load_site(settings.site_file)
    if args.camera not in site.camera_by_id:
        raise ValueError(
            f"--camera {args.camera!r} is not in {settings.site_file}; cameras: "
            + ", ".join(site.camera_by_id)
        )
    start = args.start if args.start.tzinfo is not None else args.start.replace(tzinfo=site.tz)
    messages = mot_messages(
        read_mot(args.file),
        site.camera_by_id[args.camera],
        start_ms=int(start.timestamp() * 1000),
        min_confidence=args.min_confidence,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(m.to_json(site.tz) + "\n" for m in messages), encoding="utf-8")
    console.print(f"wrote {len(messages)} messages of camera {args.camera} to {args.out}")


def cmd_forecast(args: argparse.Namespace, console: Console) -> None:
    """Train, predict, warn or backtest crowd-flow forecasts."""
    from forecasts import service

    if args.forecast_command == "backtest":
        from forecasts.backtest import main as backtest_main

        backtest_main(args.passed_on, prog="crowdwatch forecast backtest")
        return
    settings = _settings(args)
    site = load_site(settings.site_file)
    with _warehouse(settings) as warehouse:
        if args.forecast_command == "train":
            for target in args.targets:
                until = args.until
                if until is not None and until.tzinfo is None:
                    until = until.replace(tzinfo=site.tz)
                trained = service.train(settings, warehouse, site, target, until=until)
                for t in trained:
                    if t.skipped:
                        console.print(f"{target} {t.zone_id}: skipped, {t.skipped}")
                        continue
                    status = f"error: {t.error}" if t.error else t.method
                    if t.fallback_reason:
                        status = f"{status}, because {t.fallback_reason}"
                    console.print(f"{target} {t.zone_id}: {status} ({t.seconds:.2f} s)")
                fitted = sum(t.method is not None for t in trained)
                skipped = sum(t.skipped is not None for t in trained)
                console.print(
                    f"{target}: {fitted} model(s) fitted, {skipped} zone(s) skipped "
                    "(the rest were fresh)"
                )
        elif args.forecast_command == "predict":
            for target in args.targets:
                rows = service.predict(settings, warehouse, site, target, horizon_h=args.horizon_h)
                console.print(f"{target}: {rows.height} forecast rows written")
        else:
            now_ms = int(args.now.timestamp() * 1000) if args.now else time_ns() // 1_000_000
            warned = service.warn(settings, warehouse, site, now_ms)
            for e in warned.raised:
                console.print(f"{e.zone_id} {e.level.upper()}: {e.reason}")
            for e in warned.ended:
                console.print(f"{e.zone_id} {e.level.upper()} ended: {e.reason}")
            console.print(
                f"{len(warned.raised)} predicted-big-crowd alert(s) raised, "
                f"{len(warned.ended)} ended"
            )


def cmd_replay(args: argparse.Namespace, console: Console) -> None:
    """Replay recorded files through a pipeline."""
    settings = _settings(args)
    speed = None if args.max else args.speed
    replay_files(settings, args.pipeline, args.files, speed=speed, console=console)
    console.print(f"replayed {len(args.files)} file(s) into {describe_dsn(settings.dsn())}")


def cmd_run(args: argparse.Namespace, console: Console) -> None:
    """Run a pipeline on its configured input."""
    settings = _settings(args)
    if args.input is not None:
        settings = settings.model_copy(update={"input_path": args.input})
    prepare_warehouse(settings, load_site(settings.site_file))
    run_pipeline(settings, args.pipeline)


def cmd_pipelines(args: argparse.Namespace, console: Console) -> None:
    """List the pipelines found in ``pipelines/``."""
    for name, build in sorted(registry.discover().items()):
        doc = (sys.modules[build.__module__].__doc__ or "").strip().splitlines()
        console.print(f"[bold]{name}[/bold]  {doc[0] if doc else ''}")


def message_ids(path: Path, texts: list[str]) -> list[str]:
    """A stable id per record of a file: its name, position and content."""
    return [
        f"{path.name}:{row}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        for row, text in enumerate(texts)
    ]


def cmd_publish(args: argparse.Namespace, console: Console) -> None:
    """Publish a recorded file's records to the broker's stream, topic or exchange of their kind."""
    from crowdwatch.batches import READ_COLUMNS, payload_lines
    from crowdwatch.sources.files import KIND_COLUMN, read_records

    settings = _settings(args)
    kind, frame = read_records(args.file)
    kind = args.kind or kind
    if READ_COLUMNS[0] in frame.columns:
        unreadable = frame.filter(pl.col(READ_COLUMNS[0]).is_not_null())
        for reason in unreadable[READ_COLUMNS[0]].head(5):
            console.print(f"skipped {reason}", style="yellow")
        frame = frame.filter(pl.col(READ_COLUMNS[0]).is_null()).drop(READ_COLUMNS)
    frame = frame.drop(KIND_COLUMN, strict=False)
    if payload_lines(frame):
        lines = frame["payload"]
    else:
        lines = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series()
    texts = lines.to_list()
    if args.publish_command == "redis":
        from crowdwatch.sources.redis_streams import connect, publish, stream_key

        stream = args.stream or stream_key(settings.redis_stream_prefix, kind, args.partition)
        url = args.redis_url or settings.redis_url.get_secret_value()
        ids = publish(
            connect(url),
            stream,
            texts,
            message_ids=message_ids(args.file, texts),
            dedup_s=settings.late_horizon_s,
        )
        skipped = (
            f" ({len(texts) - len(ids):,} published before, skipped)"
            if len(ids) < len(texts)
            else ""
        )
        console.print(
            f"published {len(ids):,} {kind} records of {args.file} to stream {stream}{skipped}"
        )
        return
    from crowdwatch.sources.partition import record_stations, station_partition

    # every record keyed by its station, in the partition CRC-32(station) mod n
    stations = record_stations(frame, kind, load_site(settings.site_file)).to_list()
    count = args.partitions or settings.source_partition_count
    parts = [0 if s is None else station_partition(s, count) for s in stations]
    if args.publish_command == "kafka":
        from crowdwatch.sources.kafka import publish as to_kafka
        from crowdwatch.sources.kafka import topic_name

        topic = args.topic or topic_name(settings.kafka_topic_prefix, kind)
        brokers = args.brokers or settings.kafka_brokers
        sent = to_kafka(brokers, topic, texts, keys=stations, partitions=parts)
        where = f"Kafka topic {topic} ({count} partition{'s' if count > 1 else ''})"
    elif args.publish_command == "mqtt":
        from crowdwatch.sources import mqtt

        suffixes = [p if count > 1 else None for p in parts]
        topics = [
            args.topic or mqtt.topic_name(settings.mqtt_topic_prefix, kind, p) for p in suffixes
        ]
        url = args.mqtt_url or settings.mqtt_url.get_secret_value()
        if args.sessions:  # the pipeline's sessions, so the broker keeps the records for it
            sessions = [(mqtt.session_id(settings.mqtt_client_id, t), t) for t in set(topics)]
            mqtt.subscribe_sessions(url, sorted(sessions))
        sent = mqtt.publish(url, topics, texts, f"{settings.mqtt_client_id}-publish-{os.getpid()}")
        where = f"MQTT {', '.join(sorted(set(topics)))} (QoS 1)"
    else:
        from crowdwatch.sources import amqp

        keys = [
            amqp.routing_key(settings.amqp_routing_prefix, kind, p if count > 1 else None)
            for p in parts
        ]
        queues = {
            amqp.routing_key(settings.amqp_queue_prefix, kind, p if count > 1 else None): key
            for p, key in zip(parts, keys, strict=True)
        }
        url = args.amqp_url or settings.amqp_url.get_secret_value()
        sent = amqp.publish(url, settings.amqp_exchange, keys, texts, queues)
        where = f"AMQP {settings.amqp_exchange} with {', '.join(sorted(set(keys)))}"
    console.print(f"published {sent:,} {kind} records of {args.file} to {where}")


ROWS_STATEMENT = re.compile(r"\s*\(*\s*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS)\b", re.I)
"""Statements that return rows; with --write, others run as commands."""


def flat_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Array, map and tuple columns as JSON text (CSV has no nested values)."""
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    return frame.with_columns(
        pl.struct(pl.col(name).alias("v"))
        .struct.json_encode()
        .str.strip_prefix('{"v":')
        .str.strip_suffix("}")
        .alias(name)
        for name in nested
    )


def cmd_query(args: argparse.Namespace, console: Console) -> None:
    """Run SQL against the warehouse and print the result."""
    settings = _settings(args)
    with _warehouse(settings) as warehouse:
        if args.write and not ROWS_STATEMENT.match(args.sql):
            warehouse.command(args.sql)
            console.print("done", style="dim")
            return
        frame = warehouse.query(args.sql, readonly=not args.write)
    if args.format == "csv":
        sys.stdout.write(flat_columns(frame).write_csv())
    elif args.format == "json":
        sys.stdout.write(frame.write_ndjson())
    else:
        print_frame(frame, console)
        console.print(f"{frame.height} row(s)", style="dim")


def cmd_simulate(args: argparse.Namespace, console: Console) -> None:
    """Generate a day of gate passages at a site and write them to a file."""
    from app.simulate import Surge, default_surge, simulate_day, write_records

    settings = _settings(args)
    site = load_site(settings.site_file)
    surge: Surge | None = None
    if not args.no_surge:
        surge = default_surge() if args.surge is None else parse_surge(args.surge)
    frame = simulate_day(site, args.day, seed=args.seed, scale=args.scale, surge=surge)
    write_records(frame, args.out)
    console.print(
        f"wrote {frame.height:,} passages of {args.day} at {site.site.name} to {args.out}"
    )


def parse_surge(text: str) -> Any:
    """Parse ``STATION@HH:MM+MINUTES:EXTRA`` (e.g. ``STD@21:30+45:6000``)."""
    from app.simulate import Surge

    try:
        station, rest = text.split("@")
        at, rest = rest.split("+")
        minutes, extra = rest.split(":")
        return Surge(station, time.fromisoformat(at), int(minutes), int(extra))
    except ValueError:
        raise ValueError(
            f"--surge {text!r}: expected STATION@HH:MM+MINUTES:EXTRA, e.g. STD@21:30+45:6000"
        ) from None


def cmd_demo(args: argparse.Namespace, console: Console) -> None:
    """Run the demo: a simulated day with a surge through the gate pipeline."""
    from app.demo import run_demo

    run_demo(_settings(args), console, day=args.day, lang=args.lang)


def cmd_report(args: argparse.Namespace, console: Console) -> None:
    """Write the dashboards' key panels over a range as one self-contained HTML page."""
    from app.report.page import summary, write_report
    from app.report.queries import build_report

    settings = _settings(args)
    site = load_site(settings.site_file)
    start, end = (
        t if t is None or t.tzinfo else t.replace(tzinfo=site.tz) for t in (args.start, args.end)
    )
    began = time_ns()
    with _warehouse(settings) as warehouse:
        report = build_report(
            warehouse,
            now=datetime.now(UTC),
            tz=site.tz,
            zone=args.zone,
            start=start,
            end=end,
            title=f"crowdwatch report — {site.site.name}",
        )
    path = write_report(report, args.out or settings.data_dir / "report.html")
    console.print(f"wrote {path}", highlight=False)
    console.print(f"{summary(report)}, {(time_ns() - began) / 1e9:.1f} s", highlight=False)


def cmd_grafana_push(args: argparse.Namespace, console: Console) -> None:
    """Create or update the folder, data source, dashboards and alerting at a Grafana."""
    from dashboards.provisioning import ClickHouseSource
    from dashboards.push import push

    if not args.token and "@" not in args.url:
        raise GrafanaPushError(
            "no Grafana token: pass --token or set CROWDWATCH_GRAFANA_TOKEN "
            "(a service account token with the Admin role)"
        )
    site = load_site(_settings(args).site_file)
    source = ClickHouseSource.from_url(args.clickhouse_url) if args.clickhouse_url else None
    summary = push(args.url, args.token, site=site, folder=args.folder, clickhouse=source)
    for line in summary.lines():
        console.print(line, highlight=False)
    console.print(f"pushed to {args.url}: " + ("changed" if summary.changed() else "no change"))


def _responder(args: argparse.Namespace, *, live: bool = False) -> Any:
    """The workflow of the settings' store; ``live``: notify ``on`` unless set, senders started."""
    from crowdwatch.workflow.loop import Responder

    settings = _settings(args)
    if live:
        settings = settings.model_copy(update={"notify": settings.notify or "on"})
    # The warehouse only receives copies (deliveries, actions): handling an alert must not wait
    # for it, e.g. while a pipeline holds the embedded engine. What is not exported now is later.
    try:
        with Warehouse.connect(
            settings.dsn(), settings.clickhouse_database, busy_wait_s=0
        ) as warehouse:
            warehouse.migrate()
    except WarehouseError as exc:
        Console(stderr=True, soft_wrap=True).print(
            f"[yellow]warning:[/yellow] {exc} The alert store is used without it; the audit "
            "log and delivery attempts are copied there once it is free.",
            highlight=False,
        )
    return Responder(settings, load_site(settings.site_file), start=live)


def _ms(value: datetime | None, site_tz: Any) -> int | None:
    if value is None:
        return None
    return int((value if value.tzinfo else value.replace(tzinfo=site_tz)).timestamp() * 1000)


def _local(ms: int | None, tz: Any) -> str:
    if ms is None:
        return "-"
    return f"{datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz):%m-%d %H:%M:%S}"


def cmd_alerts(args: argparse.Namespace, console: Console) -> None:
    """List, show, acknowledge and handle alerts in the workflow store."""
    import json

    with _responder(args) as responder:
        wf, tz = responder.workflow, responder.site.tz
        what = args.alerts_command
        if what == "list":
            alerts = wf.alerts(open_only=not args.all)
            if args.json:
                sys.stdout.write(json.dumps(alerts, ensure_ascii=False, default=str) + "\n")
                return
            for a in alerts:
                waiting = [k["role"] for k in a["acks"] if k["status"] == "waiting"]
                console.print(
                    f"{a['alert_id']}  {'【演练】' if a['drill'] else ''}{a['zone_id']} "
                    f"{a['level'].upper()} {a['status']}, raised {_local(a['raised_ms'], tz)}"
                    + (f"; waiting for {', '.join(waiting)}" if waiting else ""),
                    highlight=False,
                )
            console.print(f"{len(alerts)} alert(s)", style="dim")
            return
        if what == "show":
            alert = wf.show(args.alert_id)
            if args.json:
                sys.stdout.write(json.dumps(alert, ensure_ascii=False, default=str) + "\n")
                return
            console.print(
                f"{alert['alert_id']} ({alert['zone_id']}, {alert['level']}, {alert['status']}, "
                f"incident {alert['incident_id']})",
                highlight=False,
            )
            for k in alert["acks"]:
                console.print(
                    f"  {k['role']:<18} tier {k['tier']} {k['status']:<9} asked "
                    f"{_local(k['requested_ms'], tz)} due {_local(k['deadline_ms'], tz)} acked "
                    f"{_local(k['acked_ms'], tz)} {k['acked_by'] or ''} {k['ack_channel'] or ''}",
                    highlight=False,
                )
            for row in alert["audit"]:
                console.print(
                    f"  {row['ts'].astimezone(tz):%m-%d %H:%M:%S} {row['action']:<15} "
                    f"{row['role'] or '-':<16} {row['actor']} ({row['channel']}) {row['note']}"
                    f"{' ' + row['measure'] if row['measure'] else ''}",
                    highlight=False,
                )
            return
        if what == "ack":
            result = wf.acknowledge(
                args.alert_id, args.role, actor=args.name, channel="cli", note=args.note
            )
            console.print(f"{args.alert_id}: {args.role} {result.status} ({args.name})")
        elif what == "note":
            wf.add_note(args.alert_id, args.text, actor=args.name, role=args.role, channel="cli")
            console.print(f"{args.alert_id}: note added")
        elif what == "measure":
            wf.take_measure(
                args.alert_id,
                args.measure,
                actor=args.name,
                role=args.role,
                channel="cli",
                note=args.note,
            )
            console.print(f"{args.alert_id}: measure {args.measure} recorded")
        elif what == "sign-off":
            wf.sign_off(
                args.alert_id,
                args.outcome,
                actor=args.name,
                role=args.role,
                channel="cli",
                note=args.note,
            )
            console.print(f"{args.alert_id}: signed off ({args.outcome})")
        elif what == "audit":
            csv = wf.audit_csv(
                alert_id=args.alert,
                since_ms=_ms(args.start, tz),
                until_ms=_ms(args.end, tz),
            )
            if args.out is None:
                sys.stdout.write(csv)
            else:
                args.out.write_text(csv, encoding="utf-8")
                console.print(f"wrote the audit log to {args.out}")
        elif what == "token":
            token = wf.issue_token(args.role, args.name)
            console.print(f"API token of {args.name} ({args.role}), shown once:")
            sys.stdout.write(token + "\n")


def cmd_serve(args: argparse.Namespace, console: Console) -> None:
    """Serve the HTTP JSON API and acknowledge links; run reminders and escalations."""
    from crowdwatch.workflow.api import ApiServer

    with _responder(args, live=True) as responder:
        settings = responder.settings
        server = ApiServer(
            responder.workflow,
            host=args.host or settings.serve_host,
            port=settings.serve_port if args.port is None else args.port,
            on_action=responder.escalator.wake,
        )
        console.print(
            f"serving the alert API on {server.url} (links point to {settings.public_url}); "
            f"notify {responder.mode}; Ctrl-C stops",
            highlight=False,
        )
        try:
            server.serve_forever()
        finally:
            server.close()


def cmd_drill(args: argparse.Namespace, console: Console) -> None:
    """Send a marked exercise alert through the real chain; report time to acknowledge."""
    import time as clock

    from crowdwatch.workflow.drill import drill_event, drill_report, write_drill_report

    with _responder(args, live=True) as responder:
        wf, site = responder.workflow, responder.site
        event = drill_event(site, args.zone, args.level, wf.clock())
        responder.raise_events([event], drill=True)
        asked = [k["role"] for k in wf.show(event.alert_id)["acks"]]
        console.print(
            f"【演练】drill {event.alert_id}: {args.level} at {args.zone}, asked "
            f"{', '.join(asked) or 'nobody (no acknowledgement policy at this level)'}; "
            f"waiting up to {args.wait:g} s for acknowledgements",
            highlight=False,
        )
        deadline = clock.monotonic() + args.wait
        while clock.monotonic() < deadline:
            if not any(k["alert_id"] == event.alert_id for k in wf.unacknowledged()):
                break
            clock.sleep(0.5)
        report = drill_report(wf, event.alert_id)
        out = args.out or responder.settings.data_dir / "drills" / f"{event.alert_id}.md"
        path = write_drill_report(report, site, Path(str(out).replace(":", "_")))
        for r in report.roles:
            took = "did not acknowledge" if r.seconds is None else f"{r.seconds:.0f} s"
            console.print(f"  {r.role:<18} tier {r.tier}: {took}", highlight=False)
        console.print(
            f"{report.acknowledged} of {len(report.roles)} acknowledged; report: {path}",
            highlight=False,
        )


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (default: CROWDWATCH_* environment variables)")
    group.add_argument("--site-file", type=Path, help="site YAML (CROWDWATCH_SITE_FILE)")
    group.add_argument("--data-dir", type=Path, help="local state directory")
    group.add_argument("--clickhouse-dsn", help="chdb:///path or http(s)://user:pw@host:8123/db")
    group.add_argument("--debug", action="store_true", help="show tracebacks")


def _recovery(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recovery-dir",
        type=Path,
        help="snapshot state here and resume a killed run from it (CROWDWATCH_RECOVERY_DIR)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with ``--help`` on every command."""
    parser = argparse.ArgumentParser(
        prog="crowdwatch",
        description="Crowd-safety analytics: gate, video and 110-call streams into ClickHouse.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="warehouse administration")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    migrate = db_sub.add_parser("migrate", help="apply infra/clickhouse/NNN_*.sql in order")
    _common(migrate)
    migrate.set_defaults(func=cmd_db_migrate)
    users = db_sub.add_parser(
        "users", help="server only: roles and users for the pipelines, Grafana and analysts"
    )
    users.add_argument("--writer-password", required=True, help="user crowdwatch_pipelines")
    users.add_argument("--reader-password", required=True, help="user crowdwatch_grafana")
    users.add_argument(
        "--restricted-password", help="user crowdwatch_analyst: no free text of 110 calls"
    )
    _common(users)
    users.set_defaults(func=cmd_db_users)
    cluster_ddl = db_sub.add_parser(
        "cluster-ddl", help="the DDL for a cluster: replicated local and Distributed tables"
    )
    cluster_ddl.add_argument("--cluster", required=True, help="cluster name in the server config")
    cluster_ddl.add_argument("--out", type=Path, help="write here instead of standard output")
    _common(cluster_ddl)
    cluster_ddl.set_defaults(func=cmd_db_cluster_ddl)

    replay = sub.add_parser("replay", help="stream recorded files through a pipeline")
    replay.add_argument("files", type=Path, nargs="+", help="CSV, JSONL or Parquet files")
    replay.add_argument("--pipeline", default="gate_flow", help="pipeline name (default gate_flow)")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=float, default=None, help="N x recorded speed (1 = real time)"
    )
    pace.add_argument("--max", action="store_true", help="as fast as possible (the default)")
    replay.add_argument("--batch-rows", type=int, help="rows per micro-batch")
    replay.add_argument("--window-s", type=int, help="metric window in seconds (default 60)")
    replay.add_argument("--workers", type=int, help="Bytewax worker threads")
    _recovery(replay)
    _common(replay)
    replay.set_defaults(func=cmd_replay)

    simulate = sub.add_parser("simulate", help="generate a realistic day of gate passages")
    simulate.add_argument(
        "--day", type=date.fromisoformat, default=_default_day(), help="YYYY-MM-DD"
    )
    simulate.add_argument("--out", type=Path, required=True, help=".csv, .jsonl or .parquet")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--scale", type=float, default=1.0, help="multiply every rate")
    surge = simulate.add_mutually_exclusive_group()
    surge.add_argument("--surge", help="STATION@HH:MM+MINUTES:EXTRA (default STD@21:30+45:6000)")
    surge.add_argument("--no-surge", action="store_true", help="an ordinary day")
    _common(simulate)
    simulate.set_defaults(func=cmd_simulate)

    site = sub.add_parser("site", help="the site file and the warehouse's site tables")
    site_sub = site.add_subparsers(dest="site_command", required=True, metavar="COMMAND")
    sync = site_sub.add_parser(
        "sync", help="write stations, zones, gates, cameras to the warehouse"
    )
    _common(sync)
    sync.set_defaults(func=cmd_site_sync)

    mot = sub.add_parser("mot", help="turn MOT-format detections into a camera's messages")
    mot.add_argument("file", type=Path, help="MOT file: frame,track_id,left,top,width,height,conf")
    mot.add_argument("--camera", required=True, help="the camera of the site that saw it")
    mot.add_argument("--out", type=Path, required=True, help="messages as JSON lines")
    mot.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default="2026-11-20T08:00:00",
        help="capture time of frame 1 (ISO 8601; site time zone if naive)",
    )
    mot.add_argument("--min-confidence", type=float, default=0.5)
    _common(mot)
    mot.set_defaults(func=cmd_mot)

    forecast = sub.add_parser("forecast", help="crowd-flow forecasts and early warnings")
    forecast_sub = forecast.add_subparsers(
        dest="forecast_command", required=True, metavar="COMMAND"
    )
    for name, text in (
        ("train", "fit the zones whose model is missing or stale (Prophet, in parallel)"),
        ("predict", "forecast the coming hours with every saved model"),
        ("warn", "raise predicted-big-crowd alerts from the newest forecasts"),
    ):
        command = forecast_sub.add_parser(name, help=text)
        command.add_argument(
            "--targets", nargs="+", default=["headcount", "inflow"], choices=["headcount", "inflow"]
        )
        command.add_argument("--horizon-h", type=int, default=24, help="hours to forecast")
        command.add_argument("--now", type=datetime.fromisoformat, help="the present (ISO 8601)")
        command.add_argument(
            "--until",
            type=datetime.fromisoformat,
            help="train: only the history before this time (ISO 8601; site time zone if naive)",
        )
        _common(command)
        command.set_defaults(func=cmd_forecast)
    backtest = forecast_sub.add_parser(
        "backtest",
        help="rolling-origin backtest on the shared data sets or another city's footfall CSV",
        add_help=False,  # every option, --help too, is passed on to python -m forecasts.backtest
    )
    backtest.set_defaults(func=cmd_forecast, passes_on=True)

    run = sub.add_parser("run", help="run a pipeline on its configured input")
    run.add_argument("pipeline", help="a module of pipelines/, e.g. gate_flow")
    run.add_argument("--input", type=Path, help="recorded file (CROWDWATCH_INPUT_PATH)")
    run.add_argument("--workers", type=int, help="Bytewax worker threads")
    _recovery(run)
    _common(run)
    run.set_defaults(func=cmd_run)

    listing = sub.add_parser("pipelines", help="list the pipelines")
    listing.add_argument("--debug", action="store_true", help="show tracebacks")
    listing.set_defaults(func=cmd_pipelines)

    demo = sub.add_parser("demo", help="simulate a day with a surge and show what happened")
    demo.add_argument("--day", type=date.fromisoformat, default=_default_day(), help="YYYY-MM-DD")
    demo.add_argument(
        "--lang", choices=("zh-CN", "en"), default="zh-CN", help="the response loop's language"
    )
    _common(demo)
    demo.set_defaults(func=cmd_demo)

    grafana = sub.add_parser("grafana", help="dashboards and alerting on a Grafana server")
    grafana_sub = grafana.add_subparsers(dest="grafana_command", required=True, metavar="COMMAND")
    gpush = grafana_sub.add_parser(
        "push", help="create or update folder, data source, dashboards, alert rules and routing"
    )
    gpush.add_argument("--url", required=True, help="Grafana's URL, e.g. http://localhost:3000")
    gpush.add_argument(
        "--token",
        default=os.environ.get("CROWDWATCH_GRAFANA_TOKEN"),
        help="service account token (default: CROWDWATCH_GRAFANA_TOKEN)",
    )
    gpush.add_argument("--folder", default="crowdwatch", help="folder uid (default crowdwatch)")
    gpush.add_argument(
        "--clickhouse-url",
        help="where Grafana reaches ClickHouse: http(s)://user:pw@host:8123/db "
        "(default http://default@clickhouse:8123/crowdwatch)",
    )
    gpush.add_argument("--site-file", type=Path, help="site YAML (CROWDWATCH_SITE_FILE)")
    gpush.add_argument("--debug", action="store_true", help="show tracebacks")
    gpush.set_defaults(func=cmd_grafana_push)

    publish_cmd = sub.add_parser("publish", help="append a recorded file to a broker")
    publish_sub = publish_cmd.add_subparsers(
        dest="publish_command", required=True, metavar="BROKER"
    )
    to_redis = publish_sub.add_parser(
        "redis", help="to the Redis stream <prefix>:<kind>[:<partition>] (pipelined XADD)"
    )
    to_redis.add_argument("file", type=Path, help="CSV, JSONL or Parquet records")
    to_redis.add_argument(
        "--kind",
        choices=tuple(FIELDS),
        help="record kind (default: detected from the file's columns)",
    )
    to_redis.add_argument("--partition", type=int, help="append :<k> to the stream name")
    to_redis.add_argument("--stream", help="the stream name (default from the kind)")
    to_redis.add_argument("--redis-url", help="redis://host:port/db (CROWDWATCH_REDIS_URL)")
    _common(to_redis)
    to_redis.set_defaults(func=cmd_publish)
    to_kafka = publish_sub.add_parser(
        "kafka", help="to the Kafka topic <prefix>.<kind>, keyed and partitioned by station"
    )
    to_kafka.add_argument("--topic", help="the topic (default from the kind)")
    to_kafka.add_argument("--brokers", help="host:port,… (CROWDWATCH_KAFKA_BROKERS)")
    to_mqtt = publish_sub.add_parser(
        "mqtt", help="to the MQTT topic <prefix>/<kind>[/<partition>] at QoS 1"
    )
    to_mqtt.add_argument("--topic", help="the topic (default from the kind)")
    to_mqtt.add_argument("--mqtt-url", help="mqtt://host:port (CROWDWATCH_MQTT_URL)")
    to_mqtt.add_argument(
        "--sessions",
        action="store_true",
        help="first create the pipeline's persistent sessions, so the broker keeps the records "
        "for a pipeline that has not run yet",
    )
    to_amqp = publish_sub.add_parser(
        "amqp",
        help="to the exchange (amq.topic) with routing key <prefix>.<kind>[.<partition>]; "
        "declares the pipeline's durable queues",
    )
    to_amqp.add_argument("--amqp-url", help="amqp://user:pw@host:port/vhost (CROWDWATCH_AMQP_URL)")
    for broker in (to_kafka, to_mqtt, to_amqp):
        broker.add_argument("file", type=Path, help="CSV, JSONL or Parquet records")
        broker.add_argument(
            "--kind",
            choices=tuple(FIELDS),
            help="record kind (default: detected from the file's columns)",
        )
        broker.add_argument(
            "--partitions",
            type=int,
            help="split stations into N partitions (CROWDWATCH_SOURCE_PARTITION_COUNT)",
        )
        _common(broker)
        broker.set_defaults(func=cmd_publish)

    report = sub.add_parser("report", help="the dashboards' key panels as one HTML page")
    report.add_argument("--zone", help="zone to detail (default: the most severe alert)")
    report.add_argument(
        "--from", dest="start", type=datetime.fromisoformat, help="ISO 8601, site time if naive"
    )
    report.add_argument("--to", dest="end", type=datetime.fromisoformat, help="ISO 8601")
    report.add_argument("--out", type=Path, help="default: <data dir>/report.html")
    _common(report)
    report.set_defaults(func=cmd_report)

    alerts = sub.add_parser("alerts", help="alert handling: list, show, acknowledge, sign off")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    listing_alerts = alerts_sub.add_parser("list", help="open alerts and who has not acknowledged")
    listing_alerts.add_argument("--all", action="store_true", help="closed alerts too")
    show = alerts_sub.add_parser("show", help="one alert: requests and its audit log")
    show.add_argument("alert_id")
    for command in (listing_alerts, show):
        command.add_argument("--json", action="store_true", help="JSON instead of lines")
    ack = alerts_sub.add_parser("ack", help="acknowledge an alert for a role")
    note = alerts_sub.add_parser("note", help="add a note to an alert")
    note.add_argument("--text", required=True)
    measure = alerts_sub.add_parser("measure", help="record a measure of the zone's plan")
    measure.add_argument("measure", help="a measure id of the plan (crowdwatch alerts show)")
    sign_off = alerts_sub.add_parser("sign-off", help="close an alert with an outcome")
    sign_off.add_argument("--outcome", required=True)
    for command in (ack, note, measure, sign_off):
        command.add_argument("alert_id")
        command.add_argument("--role", required=True, help="the role you act as")
        command.add_argument("--name", required=True, help="your name (the audit log's actor)")
        if command is not note:
            command.add_argument("--note", default="")
    audit = alerts_sub.add_parser("audit", help="the audit log as CSV (the monthly ledger)")
    audit.add_argument("--alert", help="one alert only")
    audit.add_argument("--from", dest="start", type=datetime.fromisoformat, help="ISO 8601")
    audit.add_argument("--to", dest="end", type=datetime.fromisoformat, help="ISO 8601")
    audit.add_argument("--out", type=Path, help="default: standard output")
    token = alerts_sub.add_parser("token", help="issue an API token for a role")
    token.add_argument("role")
    token.add_argument("--name", required=True, help="who holds it (the audit log's actor)")
    for command in (listing_alerts, show, ack, note, measure, sign_off, audit, token):
        _common(command)
        command.set_defaults(func=cmd_alerts)

    serve = sub.add_parser(
        "serve", help="the alert API and acknowledge links; reminders and escalations on time"
    )
    serve.add_argument("--host", help="default CROWDWATCH_SERVE_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default CROWDWATCH_SERVE_PORT (8787)")
    _common(serve)
    serve.set_defaults(func=cmd_serve)

    drill = sub.add_parser("drill", help="【演练】a marked exercise alert to the real roles")
    drill.add_argument("--zone", required=True)
    drill.add_argument("--level", choices=("blue", "yellow", "orange", "red"), default="red")
    drill.add_argument(
        "--wait", type=float, default=300.0, help="seconds to wait for acknowledgements"
    )
    drill.add_argument("--out", type=Path, help="the report (default <data dir>/drills/…)")
    _common(drill)
    drill.set_defaults(func=cmd_drill)

    query = sub.add_parser("query", help="run SQL on the warehouse and print a table")
    query.add_argument("sql", help="e.g. 'SELECT * FROM zone_metrics FINAL LIMIT 10'")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument(
        "--write",
        action="store_true",
        help="allow statements that change the warehouse (read-only without it)",
    )
    _common(query)
    query.set_defaults(func=cmd_query)
    return parser


def _default_day() -> date:
    """The most recent weekday before today (a full, ordinary working day)."""
    day = datetime.now(UTC).date()
    while True:
        day = date.fromordinal(day.toordinal() - 1)
        if day.weekday() < 5:
            return day


def error_message(exc: BaseException) -> str | None:
    """One line for a known failure (also when wrapped by Bytewax), or None for a bug."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ValidationError):
            first = seen.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            return f"setting {where}: {first['msg']} (see crowdwatch --help and CROWDWATCH_*)"
        if isinstance(seen, KNOWN_ERRORS):
            text = str(seen).strip()
            return text.splitlines()[0] if text else type(seen).__name__
        seen = seen.__cause__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crowdwatch`` command."""
    parser = build_parser()
    args, passed_on = parser.parse_known_args(argv)
    if passed_on and not getattr(args, "passes_on", False):
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    args.passed_on = passed_on
    console = Console(width=None if sys.stdout.isatty() else 120)
    func: Callable[[argparse.Namespace, Console], None] = args.func
    try:
        func(args, console)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = error_message(exc)
        if message is None or getattr(args, "debug", False):
            raise
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {message}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
