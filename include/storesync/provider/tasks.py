"""What the DAGs' tasks call: the sync jobs, wired to Airflow's connections and run context.

DAG files import this module inside their task functions only, so parsing a DAG file never
imports pandas, SQLAlchemy or GX. Vendor credentials come from the ``sendlane_default`` and
``sailthru_default`` connections when they exist (the hooks build the clients); everything else
from ``storesync.toml`` / ``STORESYNC_*``.
"""

from __future__ import annotations

import logging
from storesync.core.config import Settings, load_settings
from storesync.core.windows import Window

log = logging.getLogger(__name__)


def settings() -> Settings:
    """storesync settings, with vendor credentials from the Airflow connections where they exist,
    so the ledger's account keys always match the account the hooks actually send to."""
    from dataclasses import replace

    base = load_settings()
    sendlane_conn, sailthru_conn = _connection("sendlane_default"), _connection("sailthru_default")
    overrides = {}
    if sendlane_conn is not None:
        extra = sendlane_conn.extra_dejson
        overrides["sendlane"] = replace(
            base.sendlane,
            base_url=_base_url(sendlane_conn, base.sendlane.base_url),
            api_token=sendlane_conn.password or "",
            integration_token=extra.get("integration_token") or "",
            budget_per_minute=int(extra.get("budget_per_minute") or base.sendlane.budget_per_minute),
        )
    if sailthru_conn is not None:
        overrides["sailthru"] = replace(
            base.sailthru, base_url=_base_url(sailthru_conn, base.sailthru.base_url),
            api_key=sailthru_conn.login or "", secret=sailthru_conn.password or "",
        )
    return replace(base, **overrides) if overrides else base


def _connection(conn_id: str):
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - not configured: the settings file applies
        return None


def _base_url(conn, default: str) -> str:
    from storesync.clients.http import base_url_from_parts

    return base_url_from_parts(conn.host, conn.port, conn.schema, default)


def window_from_context(context) -> Window:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        raise ValueError("this task needs a data interval: trigger it with a logical date or a backfill")
    return Window(start, end)


def run_id_from_context(context, suffix: str = "") -> str:
    dag_run = context["dag_run"]
    return f"{dag_run.dag_id}/{dag_run.run_id}{('/' + suffix) if suffix else ''}"


def client_factories(ledger_url: str) -> dict:
    """Vendor clients built by the provider's hooks, for the vendors whose connection exists."""
    from storesync.provider.hooks.sailthru import SailthruHook
    from storesync.provider.hooks.sendlane import SendlaneHook

    factories = {}
    if _connection(SendlaneHook.default_conn_name) is not None:
        factories["sendlane"] = lambda _settings: SendlaneHook(ledger_url=ledger_url).get_conn()
    if _connection(SailthruHook.default_conn_name) is not None:
        factories["sailthru"] = lambda _settings: SailthruHook().get_conn()
    return factories


def _context(context, *, sync_name: str, vendors, dry_run: bool = False):
    from storesync.pipeline.jobs import open_context

    current = settings()
    return open_context(current, run_id=run_id_from_context(context), sync_name=sync_name, vendors=vendors,
                        dry_run=dry_run, client_factories=client_factories(current.ledger_url))


def plan(entity: str, context, *, sync_name: str, vendors, dry_run: bool = False,
         full_catalog: bool = False, historical: bool = False) -> dict:
    from storesync.pipeline.jobs import plan_entity

    window = window_from_context(context)
    if full_catalog:
        window = Window.everything_before(window.end)
    ctx = _context(context, sync_name=sync_name, vendors=vendors, dry_run=dry_run)
    kwargs = {"historical": historical} if entity in ("orders", "customers", "products") else {}
    report = plan_entity(ctx, entity, window, **kwargs)
    log.info("planned %s for %s: %s", entity, window, report["planned"])
    return report


def deliver(vendor: str, context, *, sync_name: str) -> dict:
    from storesync.pipeline.jobs import deliver_vendor

    ctx = _context(context, sync_name=sync_name, vendors=[vendor])
    report = deliver_vendor(ctx, vendor)
    log.info("%s: %s", vendor, {k: v for k, v in report.items() if k != "by_event"})
    if report["unknown"]:
        # Held deliveries are not lost, but a person must reconcile them: fail loudly.
        raise RuntimeError(f"{report['unknown']} {vendor} deliveries have an unknown outcome and are held; "
                           "run `storesync reconcile --list`")
    return report


def finish(context, *, sync_name: str) -> dict:
    from storesync.delivery.ledger import Ledger

    window = window_from_context(context)
    ledger = Ledger(settings().ledger_url)
    settled = ledger.window_is_settled(sync_name, window.start, window.end)
    if settled:
        ledger.advance_watermark(sync_name, window.end)
    ledger.finish_run(run_id_from_context(context), "success" if settled else "incomplete")
    return {"settled": settled, "watermark": str(ledger.watermark(sync_name))}
