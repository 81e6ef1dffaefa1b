"""The maintenance operators (dags/storesync_maintenance.py): erasure requests, then retention.
Nothing heavy at import (DAG files parse in milliseconds): the work is imported in ``run_job``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from storesync.provider.connections import SAILTHRU_CONN_ID, SENDLANE_CONN_ID
from storesync.provider.operators.base import StoresyncBaseOperator


class StoresyncErasureOperator(StoresyncBaseOperator):
    """Erase the people of the ``erasure_requests`` model not erased yet: at Sailthru and
    Sendlane, in every storesync table, and from every later sync (``storesync.privacy.erasure``).
    Fails (no retry can fix it) when a vendor could not delete someone, or Sendlane's deletion
    could not be confirmed; the next run tries again.
    """

    def __init__(self, *, sendlane_conn_id: str | None = SENDLANE_CONN_ID,
                 sailthru_conn_id: str | None = SAILTHRU_CONN_ID, **kwargs) -> None:
        kwargs.setdefault("window_start", None)
        kwargs.setdefault("window_end", None)
        super().__init__(**kwargs)
        self.sendlane_conn_id = sendlane_conn_id
        self.sailthru_conn_id = sailthru_conn_id

    def run_job(self, run, context: Context) -> dict:
        from storesync.privacy.erasure import erase, requests_from_model
        from storesync.provider.failures import StoresyncTaskFailure

        requests = requests_from_model(run.settings)
        conns = (("sailthru", self.sailthru_conn_id), ("sendlane", self.sendlane_conn_id))
        vendors = tuple(vendor for vendor, conn in conns if conn)
        report = erase(run.settings, emails=requests.emails, customer_ids=requests.customer_ids,
                       source="model", vendors=vendors, skip_done=True, asked_at=requests.asked_at)
        result = report.as_dict()
        self.log.info("erasure: %d people; vendors %s; scrubbed %s", report.people, report.vendors,
                      report.scrubbed)
        if not report.ok:
            raise StoresyncTaskFailure(
                f"erasure incomplete: {'; '.join(report.failures)}", kind="other",
                next_step="do what each vendor's line above says; the next run erases the rest "
                          "(it is safe to repeat)",
                counts={"people": report.people})
        return result


class StoresyncRetentionOperator(StoresyncBaseOperator):
    """Scrub personal data older than ``[retention] days`` (or ``days``) from accepted deliveries'
    payloads and resolved quarantine rows (``storesync.privacy.retention``).

    :param days: override ``[retention] days`` (templated; None: the settings').
    """

    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "days")

    def __init__(self, *, days: Any = None, **kwargs) -> None:
        kwargs.setdefault("window_start", None)
        kwargs.setdefault("window_end", None)
        super().__init__(**kwargs)
        self.days = days

    def run_job(self, run, context: Context) -> dict:
        from storesync.delivery.ledger import Ledger
        from storesync.privacy.retention import scrub_expired

        days = int(self.days) if self.days not in (None, "", "None") else run.settings.retention.days
        return scrub_expired(Ledger(run.settings.ledger_url), days=days).as_dict()
