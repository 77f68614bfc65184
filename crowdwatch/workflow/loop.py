"""The loop that runs beside a dataflow or the API: escalations on time, actions exported.

`Responder` opens the workflow store once and holds everything that handles alerts in one
process: the `Workflow`, the outbox and its `Dispatcher`, and the `Escalator` — a thread that
sleeps until the next reminder or deadline falls due (or it is woken), sends what is due
through the outbox, and exports the audit log to the warehouse's ``alert_actions``.
`WorkflowSink` is the alert sink of the zone risk dataflow: alert events are recorded in the
workflow store (alerts, incidents, who must acknowledge) and then written to the outbox with
each role's notice, before anyone is told.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from crowdwatch.risk.notify import AlertEvent
from crowdwatch.risk.outbox import (
    DeliveryLog,
    Dispatcher,
    Notice,
    NotifyMode,
    Outbox,
    WarehouseDeliveryLog,
    dispatcher_for,
)
from crowdwatch.settings import Settings
from crowdwatch.site import Site
from crowdwatch.store import Store, wall_ms
from crowdwatch.workflow.service import Workflow

log = logging.getLogger(__name__)


class Escalator:
    """Sends due reminders and escalations on time, and exports the audit log.

    Args:
        workflow: The workflow.
        outbox: Where the reminders and escalations are written.
        dispatcher: Woken for what was written.
        mode: The notify mode (``log``: written down, not sent).
        action_log: Where the audit log is exported (``alert_actions``); None: not exported.
        poll_s: The longest sleep (requests another process wrote are found this late).
        export_every_s: How often the audit log is exported.
        language: The language of the messages, over the contacts' and the site's.
    """

    def __init__(
        self,
        workflow: Workflow,
        outbox: Outbox,
        dispatcher: Dispatcher | None,
        *,
        mode: NotifyMode,
        action_log: DeliveryLog | None = None,
        poll_s: float = 1.0,
        export_every_s: float = 1.0,
        language: str | None = None,
    ) -> None:
        self.workflow = workflow
        self.language = language
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.mode = mode
        self.action_log = action_log
        self.poll_s = poll_s
        self.export_every_s = export_every_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="crowdwatch-escalator", daemon=True)
        self._export_lock = threading.Lock()

    def start(self) -> Escalator:
        """Start the thread."""
        self._thread.start()
        return self

    def wake(self) -> None:
        """New requests were written: look again at what falls due next."""
        self._wake.set()

    def step(self, now: int | None = None) -> list[tuple[AlertEvent, str, Notice]]:
        """Send what is due at ``now`` (the workflow's clock if None); return what was sent."""
        items = self.workflow.run_due(now)
        if items:
            targets = self.outbox.enqueue_to(
                items,
                self.workflow.site,
                mode=self.mode,
                max_age_s=float("inf"),
                language=self.language,
            )
            if self.dispatcher is not None:
                self.dispatcher.wake(targets)
        return items

    def export(self) -> int:
        """Write the audit rows not yet exported to the action log; return how many."""
        if self.action_log is None:
            return 0
        written = 0
        with self._export_lock:
            while True:
                frame = self.workflow.unexported_actions()
                if frame.height == 0:
                    return written
                self.action_log.write(frame)
                self.workflow.mark_exported(frame)
                written += frame.height

    def close(self) -> None:
        """Stop the thread and export what is left."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.export()
        except Exception as exc:  # the warehouse may be down: the rows stay, go out next time
            log.warning("alert actions not exported yet (%s); they will be next time", exc)
        if self.action_log is not None:
            self.action_log.close()

    def _loop(self) -> None:
        clock = self.workflow.clock
        next_export = clock()
        while not self._stopping.is_set():
            self._wake.clear()
            wait_s = self.poll_s
            try:
                self.step()
                due = self.workflow.next_due_ms()
                if due is not None:
                    wait_s = min(wait_s, max(0.0, (due - clock()) / 1000))
            except Exception:  # the store failed (disk, database): wait, try again
                log.exception("the escalation loop failed; retrying")
            now = clock()
            if now >= next_export:
                next_export = now + int(self.export_every_s * 1000)
                try:
                    self.export()
                except Exception as exc:  # the warehouse may be down: the rows wait
                    log.warning("alert actions not exported yet (%s); will retry", exc)
            wait_s = min(wait_s, max(0.0, (next_export - clock()) / 1000))
            self._wake.wait(wait_s)


class Responder:
    """Everything that handles alerts in one process, on one workflow store.

    Opens the store at ``settings.outbox_dsn()`` (migrating it), the workflow for ``site``, the
    outbox, and — unless ``settings.notify_mode`` is ``off`` or ``start`` is False — starts the
    dispatcher and (unless ``escalate`` is False: call ``escalator.step`` yourself) the
    escalator. ``clock`` is the store's (tests move their own). A context manager; `close`
    drains what is pending for up to ``settings.notify_drain_s``.
    """

    def __init__(
        self,
        settings: Settings,
        site: Site,
        *,
        start: bool = True,
        escalate: bool = True,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = settings
        self.site = site
        self.mode: NotifyMode = settings.notify_mode
        self.store = Store(settings.outbox_dsn(), clock=clock)
        key = settings.ack_link_key
        self.workflow = Workflow(
            self.store,
            site,
            public_url=settings.public_url,
            link_key=key.get_secret_value().encode("utf-8") if key else None,
        )
        self.outbox = Outbox(self.store)
        self.dispatcher: Dispatcher | None = None
        running = start and self.mode != "off"
        if running:
            self.dispatcher = dispatcher_for(settings, self.outbox, site).start()
        self.escalator = Escalator(
            self.workflow,
            self.outbox,
            self.dispatcher,
            mode=self.mode,
            action_log=WarehouseDeliveryLog(
                settings.dsn(), settings.clickhouse_database, table="alert_actions"
            ),
            poll_s=settings.escalate_every_s,
            language=settings.language,
        )
        if running and escalate:
            self.escalator.start()

    def raise_events(self, events: Sequence[AlertEvent], *, drill: bool = False) -> None:
        """Record ``events`` in the workflow, write them to the outbox, and wake the senders."""
        if self.mode == "off" or not events:
            return
        max_age = self.settings.notify_max_age_s
        notices = self.workflow.record(events, mode=self.mode, max_age_s=max_age, drill=drill)
        targets = self.outbox.enqueue(
            events,
            self.site,
            mode=self.mode,
            max_age_s=max_age,
            notices=notices,
            language=self.settings.language,
        )
        if self.dispatcher is not None:
            self.dispatcher.wake(targets)
        self.escalator.wake()

    def close(self) -> None:
        """Stop the escalator, drain and stop the dispatcher, export, close the store."""
        try:
            self.escalator.close()
            if self.dispatcher is not None:
                self.dispatcher.close(self.settings.notify_drain_s)
        finally:
            self.store.close()

    def __enter__(self) -> Responder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class WorkflowSink(DynamicSink[AlertEvent]):
    """The alert events of a dataflow: recorded in the workflow, sent through the outbox.

    One `Responder` per worker. ``settings.notify_mode`` decides whether events are sent
    (``on``), only written down and logged (``log``) or ignored (``off``).
    """

    def __init__(self, settings: Settings, site: Site) -> None:
        self.settings = settings
        self.site = site

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WorkflowPartition:
        """Open the workflow store and start the senders (nothing at all in ``off`` mode)."""
        if self.settings.notify_mode == "off":
            return _WorkflowPartition(None)
        return _WorkflowPartition(Responder(self.settings, self.site))


class _WorkflowPartition(StatelessSinkPartition[AlertEvent]):
    def __init__(self, responder: Responder | None) -> None:
        self.responder = responder

    def write_batch(self, items: list[AlertEvent]) -> None:
        if self.responder is not None:
            self.responder.raise_events(items)

    def close(self) -> None:
        if self.responder is not None:
            self.responder.close()
