"""Ledger-backed Sailthru operators: deliver a sync's planned deliveries, or plan and deliver one
sync for one Sailthru account.

Every send goes through the delivery ledger: what Sailthru accepted is recorded (a purchase whose
answer was lost is looked up by its extid before anything is resent), so a retry, a cleared task
or a backfill never sends it twice. The account is the connection's (``sailthru_conn_id``): its
extra ``account_id``, else a fingerprint of its API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from storesync.provider.connections import SAILTHRU_CONN_ID
from storesync.provider.operators.base import StoresyncBaseOperator, VendorDeliverMixin
from storesync.provider.operators.sync import plan_job


class SailthruDeliverOperator(VendorDeliverMixin, StoresyncBaseOperator):
    """Send the Sailthru account's due deliveries (planned by ``StoresyncPlanOperator``), within
    its limits, exactly once each. Fails, after sending everything else, when deliveries are held
    with an unknown outcome or stranded under another account key.

    :param sync_name: the sync whose plan this follows (templated).
    :param sailthru_conn_id: the Sailthru connection (templated).
    """

    vendor = "sailthru"
    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "sync_name", "sailthru_conn_id")
    reads_warehouse = False  # sends what the ledger holds

    def __init__(self, *, sync_name: str, sailthru_conn_id: str = SAILTHRU_CONN_ID, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sync_name = sync_name
        self.sailthru_conn_id = sailthru_conn_id

    def run_job(self, run, context: Context) -> dict:
        return self.deliver(run)


class SailthruSyncOperator(VendorDeliverMixin, StoresyncBaseOperator):
    """One sync for one Sailthru account in one task: plan the window (quality gate, ledger), send,
    settle the window.

    :param entity: ``orders``, ``customers``, ``products``, ``checkouts`` or ``ltv_profiles``.
    :param sync_name: the ledger's name for this sync; give each account its own (templated).
    :param sailthru_conn_id: the Sailthru connection (templated).
    :param full_catalog, options: as ``StoresyncPlanOperator``'s.
    """

    vendor = "sailthru"
    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "sync_name", "sailthru_conn_id",
                                      "options")

    def __init__(self, *, entity: str, sync_name: str, sailthru_conn_id: str = SAILTHRU_CONN_ID,
                 full_catalog: bool = False, options: dict[str, Any] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entity = entity
        self.sync_name = sync_name
        self.sailthru_conn_id = sailthru_conn_id
        self.full_catalog = full_catalog
        self.options = options or {}

    def run_job(self, run, context: Context) -> dict:
        from storesync.provider import tasks

        planned = plan_job(run, entity=self.entity, sync_name=self.sync_name, vendors=[self.vendor],
                           full_catalog=self.full_catalog, options=dict(self.options))
        delivered = self.deliver(run)
        finished = tasks.finish(run, sync_name=self.sync_name, full_catalog=self.full_catalog)
        return {"planned": planned.get("planned", {}), "delivered": delivered, **finished}
