"""Ledger-backed storesync operators that are not about one vendor: plan, finish, LTV, replay,
monitor, historical sync.

A sync is plan -> deliver (per vendor) -> finish, every step through the delivery ledger, so any
task can be retried or cleared and nothing is sent twice::

    plan = StoresyncPlanOperator(task_id="plan", entity="orders", sync_name="order_events",
                                 sendlane_conn_id="sendlane_default", sailthru_conn_id="sailthru_default")
    to_sendlane = SendlaneDeliverOperator(task_id="deliver_sendlane", sync_name="order_events")
    to_sailthru = SailthruDeliverOperator(task_id="deliver_sailthru", sync_name="order_events")
    done = StoresyncFinishOperator(task_id="finish", sync_name="order_events")
    plan >> [to_sendlane, to_sailthru] >> done

or one vendor account in one task: ``SendlaneSyncOperator`` / ``SailthruSyncOperator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from storesync.provider.connections import SAILTHRU_CONN_ID, SENDLANE_CONN_ID
from storesync.provider.operators.base import StoresyncBaseOperator

PLANNABLE = ("orders", "customers", "products", "checkouts", "ltv_profiles", "site_events")


def as_flag(value) -> bool:
    """A templated boolean: rendered Jinja gives "True"/"False" strings."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def plan_job(run, *, entity: str, sync_name: str, vendors: list[str], full_catalog: bool, options: dict) -> dict:
    """One plan, by entity (shared by the plan operator and the per-vendor sync operators)."""
    from storesync.provider import tasks

    if entity == "products":
        return tasks.plan_products(run, sync_name=sync_name, vendors=vendors, full_catalog=full_catalog,
                                   force_full=as_flag(options.get("force_full", False)))
    if entity == "customers":
        return tasks.plan_customers(run, sync_name=sync_name, vendors=vendors, full=full_catalog)
    if entity == "checkouts":
        hours = options.get("reminder_max_age_hours", 24)
        return tasks.plan_checkouts(run, sync_name=sync_name, vendors=vendors,
                                    reminder_max_age_hours=float(24 if hours in (None, "", "None") else hours))
    if entity == "ltv_profiles":
        return tasks.push_ltv_profiles(run, sync_name=sync_name, vendors=vendors)
    return tasks.plan(entity, run, sync_name=sync_name, vendors=vendors, full_catalog=full_catalog)


class StoresyncPlanOperator(StoresyncBaseOperator):
    """Extract the window's rows, pass them through the quality gate and plan each vendor's
    deliveries in the ledger (nothing is sent: the deliver operators send).

    :param entity: ``orders``, ``customers``, ``products``, ``checkouts``, ``site_events`` or
        ``ltv_profiles`` (the newest LTV day's profiles; nothing for an older day).
    :param sync_name: the ledger's name for this sync: its watermark and window settlement
        (templated). Two accounts of one vendor need two sync names.
    :param sendlane_conn_id: the Sendlane account to plan for; None: not Sendlane.
    :param sailthru_conn_id: the Sailthru account to plan for; None: not Sailthru.
    :param full_catalog: plan everything updated before the window's end, not only the window.
    :param options: ``force_full`` (products: resend every product once), ``reminder_max_age_hours``
        (checkouts; 0: no limit) (templated).
    """

    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "sync_name", "sendlane_conn_id",
                                      "sailthru_conn_id", "options")

    def __init__(self, *, entity: str, sync_name: str, sendlane_conn_id: str | None = SENDLANE_CONN_ID,
                 sailthru_conn_id: str | None = SAILTHRU_CONN_ID, full_catalog: bool = False,
                 options: dict[str, Any] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(entity, str) or not entity.isidentifier():
            raise ValueError(f"entity must be one of {PLANNABLE} (or another sync's entity), not {entity!r}")
        self.entity = entity
        self.sync_name = sync_name
        self.sendlane_conn_id = sendlane_conn_id
        self.sailthru_conn_id = sailthru_conn_id
        self.full_catalog = full_catalog
        self.options = options or {}

    def run_job(self, run, context: Context) -> dict:
        vendors = self.conn_ids.vendors
        if not vendors:
            from storesync.core.errors import ConfigurationError

            raise ConfigurationError(f"{self.task_id}: no vendor connection given (sendlane_conn_id, sailthru_conn_id)")
        return plan_job(run, entity=self.entity, sync_name=self.sync_name, vendors=vendors,
                        full_catalog=self.full_catalog, options=dict(self.options))


class StoresyncFinishOperator(StoresyncBaseOperator):
    """Settle the window: the sync's watermark moves once every delivery of the window (and of
    every earlier one) reached a final state.

    :param sync_name: the sync to settle (templated).
    :param full_catalog: the plan covered everything before the window's end.
    """

    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "sync_name")
    reads_warehouse = False  # settling reads and writes the ledger only (and names no vendor)

    def __init__(self, *, sync_name: str, full_catalog: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sync_name = sync_name
        self.full_catalog = full_catalog

    def run_job(self, run, context: Context) -> dict:
        from storesync.provider import tasks

        return tasks.finish(run, sync_name=self.sync_name, full_catalog=self.full_catalog)


class StoresyncLtvOperator(StoresyncBaseOperator):
    """Compute customer LTV in the warehouse for the window's start date (see ``storesync.ltv``).

    :param full_recompute: recompute every customer, not only those with news since the day
        before (templated: ``"{{ params.full_recompute }}"``).
    :param ltv_sync_name: the watermark it advances (default ``ltv``).
    """

    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "full_recompute")

    def __init__(self, *, full_recompute: Any = False, ltv_sync_name: str = "ltv", **kwargs) -> None:
        super().__init__(**kwargs)
        self.full_recompute = full_recompute
        self.ltv_sync_name = ltv_sync_name

    def run_job(self, run, context: Context) -> dict:
        from storesync.provider import tasks

        return tasks.compute_ltv(run, full_recompute=as_flag(self.full_recompute), watermark=self.ltv_sync_name)


class StoresyncReplayOperator(StoresyncBaseOperator):
    """Replay dead letters once their cause is fixed (a dry run lists them and changes nothing), or
    resolve held rows a person checked at the vendor (``held_ids`` with ``resolution``: the path of
    ``storesync reconcile --ids ... --arrived|--resend``).

    :param vendor, event_type, ids, dry_run: which dead letters (templated).
    :param held_ids, resolution: held delivery ids and ``arrived`` or ``resend`` (templated); with
        ``held_ids`` no dead letter is replayed.
    """

    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "vendor_filter", "event_type",
                                      "ids", "dry_run", "held_ids", "resolution")

    def __init__(self, *, vendor_filter: Any = None, event_type: Any = None, ids: Any = None, dry_run: Any = True,
                 held_ids: Any = None, resolution: Any = None,
                 sendlane_conn_id: str | None = SENDLANE_CONN_ID, sailthru_conn_id: str | None = SAILTHRU_CONN_ID,
                 **kwargs) -> None:
        kwargs.setdefault("window_start", None)
        kwargs.setdefault("window_end", None)
        super().__init__(**kwargs)
        self.vendor_filter = vendor_filter
        self.event_type = event_type
        self.ids = ids
        self.dry_run = dry_run
        self.held_ids = held_ids
        self.resolution = resolution
        self.sendlane_conn_id = sendlane_conn_id
        self.sailthru_conn_id = sailthru_conn_id

    def run_job(self, run, context: Context) -> dict:
        from storesync.provider import tasks

        def blank(value):
            return None if value in (None, "", "None") else value

        ids, held_ids = _id_list(self.ids), _id_list(self.held_ids)
        if held_ids:
            if ids:
                from storesync.core.errors import ConfigurationError

                raise ConfigurationError("give either ids (dead letters to replay) or held_ids (held rows to "
                                         "resolve), not both in one run")
            return tasks.resolve_held(run, ids=held_ids, resolution=blank(self.resolution),
                                      dry_run=as_flag(self.dry_run))
        return tasks.replay(run, vendor=blank(self.vendor_filter), event_type=blank(self.event_type),
                            ids=ids or [], dry_run=as_flag(self.dry_run))


def _id_list(value) -> list[int]:
    """A templated list of ids: rendered Jinja gives "[1, 2]" (or "None", "")."""
    if isinstance(value, str):
        return [int(i) for i in value.strip("[]").replace(" ", "").split(",") if i and i != "None"]
    return [int(i) for i in value or []]


class StoresyncMonitorOperator(StoresyncBaseOperator):
    """Check the ledger for new dead letters, stalled syncs, stuck deliveries and quarantine
    spikes in the window, and alert on each (``storesync_slack`` / ``storesync_smtp``).

    :param max_intervals, quarantine_factor, quarantine_min_rows: thresholds (templated).
    :param expected_intervals_hours: sync name -> its schedule in hours (adds to the shipped syncs').
    """

    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "max_intervals",
                                      "quarantine_factor", "quarantine_min_rows")

    def __init__(self, *, max_intervals: Any = 3, quarantine_factor: Any = 3.0, quarantine_min_rows: Any = 10,
                 expected_intervals_hours: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_intervals = max_intervals
        self.quarantine_factor = quarantine_factor
        self.quarantine_min_rows = quarantine_min_rows
        self.expected_intervals_hours = expected_intervals_hours

    def run_job(self, run, context: Context) -> dict:
        from storesync.provider import tasks

        return tasks.monitor(run, max_intervals=int(float(self.max_intervals)),
                             quarantine_factor=float(self.quarantine_factor),
                             quarantine_min_rows=int(float(self.quarantine_min_rows)),
                             expected_intervals_hours=self.expected_intervals_hours)


class StoresyncHistoricalRequestOperator(StoresyncBaseOperator):
    """Check a historical sync's params (failing at once on a bad range) and return its entities,
    catalog first."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("window_start", None)
        kwargs.setdefault("window_end", None)
        super().__init__(**kwargs)

    def run_job(self, run, context: Context) -> list[str]:
        from storesync.core.errors import ConfigurationError
        from storesync.provider import tasks

        try:
            return tasks.historical_entities(run.params)
        except ValueError as exc:
            raise ConfigurationError(f"historical sync params: {exc}") from exc


class StoresyncHistoricalOperator(StoresyncBaseOperator):
    """One entity of a historical sync (the run's params), resuming from its checkpoints.

    :param entity: ``products``, ``customers`` or ``orders`` (templated; map it over the request's).
    """

    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "entity")

    def __init__(self, *, entity: str, sendlane_conn_id: str | None = SENDLANE_CONN_ID,
                 sailthru_conn_id: str | None = SAILTHRU_CONN_ID, **kwargs) -> None:
        kwargs.setdefault("window_start", None)
        kwargs.setdefault("window_end", None)
        super().__init__(**kwargs)
        self.entity = entity
        self.sendlane_conn_id = sendlane_conn_id
        self.sailthru_conn_id = sailthru_conn_id

    def run_job(self, run, context: Context) -> dict:
        from storesync.provider import tasks

        return tasks.historical(self.entity, run)
