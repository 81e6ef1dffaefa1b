"""What every storesync operator shares: its connections, its window, and failing clearly.

An operator's ``__init__`` only stores its arguments (no connection is read, nothing is imported
beyond this module): DAG files parse in milliseconds. ``execute`` resolves the settings from the
connections (``storesync.provider.connections``), runs one job of ``storesync.provider.tasks``, and
turns failures a retry cannot fix into :class:`~storesync.provider.failures.StoresyncTaskFailure`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from storesync.provider.connections import LEDGER_CONN_ID, WAREHOUSE_CONN_ID, ConnectionIds

log = logging.getLogger(__name__)

DATA_INTERVAL_START = "{{ data_interval_start }}"
DATA_INTERVAL_END = "{{ data_interval_end }}"


def quiet_great_expectations() -> None:
    """GX logs ~200 "Skipping registering function" lines per task at INFO: keep its warnings only."""
    for name in ("great_expectations", "great_expectations.expectations", "great_expectations.core",
                 "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.WARNING)


class StoresyncBaseOperator(BaseOperator):
    """Base of the storesync operators.

    :param warehouse_conn_id: the warehouse's database connection (templated).
    :param ledger_conn_id: the delivery ledger's database connection (templated).
    :param window_start: start of the window to sync (templated; default: the data interval's).
    :param window_end: end of the window (templated; default: the data interval's).
    """

    template_fields: Sequence[str] = ("warehouse_conn_id", "ledger_conn_id", "window_start", "window_end")
    ui_color = "#e8f4ea"
    vendor: str | None = None  # the per-vendor operators name theirs (alerts and failures show it)
    # False: the task never reads the warehouse (it sends or settles what the ledger holds), so its
    # connection is not looked up (a round trip to Airflow's Execution API per task).
    reads_warehouse: bool = True

    def __init__(self, *, warehouse_conn_id: str | None = WAREHOUSE_CONN_ID,
                 ledger_conn_id: str | None = LEDGER_CONN_ID, window_start: Any = DATA_INTERVAL_START,
                 window_end: Any = DATA_INTERVAL_END, **kwargs) -> None:
        super().__init__(**kwargs)
        self.warehouse_conn_id = warehouse_conn_id
        self.ledger_conn_id = ledger_conn_id
        self.window_start = window_start
        self.window_end = window_end

    # ------------------------------------------------------------------ what the subclasses say
    sync_name: str | None = None

    @property
    def conn_ids(self) -> ConnectionIds:
        return ConnectionIds(warehouse=self.warehouse_conn_id if self.reads_warehouse else None,
                             ledger=self.ledger_conn_id,
                             sendlane=getattr(self, "sendlane_conn_id", None),
                             sailthru=getattr(self, "sailthru_conn_id", None))

    @property
    def vendor_conn_id(self) -> str | None:
        return self.conn_ids.for_vendor(self.vendor) if self.vendor else None

    def run_job(self, run, context: Context):
        raise NotImplementedError

    # ------------------------------------------------------------------ Airflow entry point
    def execute(self, context: Context):
        from storesync.provider.failures import StoresyncTaskFailure, explain

        quiet_great_expectations()
        run = None
        modules, started = len(sys.modules), time.perf_counter()
        try:
            run = self.sync_run(context)
            resolved = time.perf_counter()
            result = self.run_job(run, context)
            # One line per task, for the backfill benchmark and for anyone asking where a task's
            # time went: a warm task process (StoresyncLocalExecutor) imports nothing here.
            log.info("storesync task timings: connections %.3f s, job %.3f s, modules imported %d",
                     resolved - started, time.perf_counter() - resolved, len(sys.modules) - modules)
            return result
        except StoresyncTaskFailure:
            raise
        except Exception as error:
            account = self._account(run)
            failure = explain(error, vendor=self.vendor, conn_id=self.vendor_conn_id, account=account,
                              waiting=self._waiting(run, account), databases=self._databases(run))
            if failure is None:
                raise
            raise failure from error

    def sync_run(self, context: Context):
        from storesync.core.windows import Window
        from storesync.provider.connections import resolve_settings
        from storesync.provider.tasks import SyncRun

        dag_run = context.get("dag_run")
        dag_id = getattr(dag_run, "dag_id", None) or self.dag_id
        run_id = context.get("run_id") or getattr(dag_run, "run_id", "manual")
        start, end = _interval_value(self.window_start), _interval_value(self.window_end)
        window = Window(start, end) if start is not None and end is not None else None
        ledger_run_id = f"{dag_id}/{run_id}" + (f"/{self.sync_name}" if self.sync_name else "")
        return SyncRun(settings=resolve_settings(self.conn_ids), window=window, dag_id=dag_id, run_id=run_id,
                       ledger_run_id=ledger_run_id, params=dict(context.get("params") or {}))

    def _databases(self, run) -> str | None:
        """The warehouse and ledger this task used (connection ids, URLs without passwords) and its
        models folder, for a database error's message."""
        if run is None:
            return None
        from storesync.warehouse.errors import where

        settings = run.settings
        return where(settings.warehouse_url, settings.ledger_url, settings.models_dir,
                     warehouse_conn_id=self.warehouse_conn_id, ledger_conn_id=self.ledger_conn_id)

    def _account(self, run) -> str | None:
        if run is None or self.vendor not in ("sendlane", "sailthru"):
            return None
        return getattr(run.settings, self.vendor).account

    def _waiting(self, run, account: str | None) -> int | None:
        """Open deliveries of this vendor account in the ledger (for the failure's message)."""
        if run is None or account is None:
            return None
        try:
            from storesync.delivery.ledger import Ledger

            return Ledger(run.settings.ledger_url).open_by_account(self.vendor).get(account, 0)
        except Exception:  # noqa: BLE001 - a count for the message only
            return None


def _interval_value(value):
    """A rendered window bound: a datetime, an ISO string, or nothing ("None" when rendered from
    a run without a data interval)."""
    if value in (None, "", "None"):
        return None
    return value


class VendorDeliverMixin:
    """Deliver one vendor's due deliveries for one account (the connection's)."""

    def deliver(self, run) -> dict:
        from storesync.provider import tasks

        report = tasks.deliver(self.vendor, run, sync_name=self.sync_name)
        alert_on_waiting_behind_dead(self, run, report)
        return report


def alert_on_waiting_behind_dead(operator, run, report: dict) -> None:
    """Deliveries blocked behind a dead letter (an order's later events behind its refused
    purchase) wait for a person: alert, without failing the task (the rest was delivered)."""
    waiting = report.get("waiting_behind_dead") or 0
    if not waiting:
        return
    from storesync.provider.connections import known_secrets
    from storesync.provider.notifiers import send_alert
    from storesync.provider.notifiers.alert import airflow_base_url
    from storesync.provider.notifiers.messages import waiting_behind_dead_message

    alert = waiting_behind_dead_message(
        run.dag_id, run.run_id, task_id=operator.task_id, vendor=operator.vendor, account=report.get("account"),
        conn_id=operator.vendor_conn_id, waiting=int(waiting), dead=int(report.get("dead") or 0),
        base_url=airflow_base_url())
    log.warning("%s", alert.plain)
    try:
        send_alert(alert, secrets=known_secrets(operator.conn_ids))
    except Exception as exc:  # noqa: BLE001 - the alert failing must not fail a delivery that worked
        log.error("storesync alert not delivered: %s", exc)
