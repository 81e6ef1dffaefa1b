"""What the DAGs' tasks call: the sync jobs, wired to Airflow's connections and run context.

DAG files import this module inside their task functions only, so parsing a DAG file never
imports pandas, SQLAlchemy or GX. Vendor credentials come from the ``sendlane_default`` and
``sailthru_default`` connections when they exist (the hooks build the clients); everything else
from ``storesync.toml`` / ``STORESYNC_*``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from storesync.core.config import Settings, load_settings
from storesync.core.windows import Window

log = logging.getLogger(__name__)


def settings() -> Settings:
    return load_settings()


def window_from_context(context) -> Window:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        raise ValueError("this task needs a data interval: trigger it with a logical date or a backfill")
    return Window(start, end)


def run_id_from_context(context, suffix: str = "") -> str:
    dag_run = context["dag_run"]
    return f"{dag_run.dag_id}/{dag_run.run_id}{('/' + suffix) if suffix else ''}"


def client_factories() -> dict:
    """Vendor clients from Airflow connections, when configured; else from settings."""
    factories = {}
    for vendor, module, hook_name in (("sendlane", "sendlane", "SendlaneHook"),
                                      ("sailthru", "sailthru", "SailthruHook")):
        try:
            hook_module = __import__(f"storesync.provider.hooks.{module}", fromlist=[hook_name])
            hook_cls = getattr(hook_module, hook_name)
            hook = hook_cls()
            hook.get_connection(hook.default_conn_name)
        except Exception as exc:  # noqa: BLE001 - no connection configured: settings apply
            log.info("no %s connection (%s): using storesync settings", vendor, type(exc).__name__)
            continue
        factories[vendor] = lambda _settings, hook=hook: hook.get_conn()
    return factories


def plan(entity: str, context, *, sync_name: str, vendors, dry_run: bool = False,
         full_catalog: bool = False, historical: bool = False) -> dict:
    from storesync.pipeline.jobs import open_context, plan_entity

    window = window_from_context(context)
    if full_catalog:
        window = Window.everything_before(window.end)
    ctx = open_context(settings(), run_id=run_id_from_context(context), sync_name=sync_name,
                       vendors=vendors, dry_run=dry_run, client_factories=client_factories())
    kwargs = {"historical": historical} if entity in ("orders", "customers", "products") else {}
    report = plan_entity(ctx, entity, window, **kwargs)
    log.info("planned %s for %s: %s", entity, window, report["planned"])
    return report


def deliver(vendor: str, context, *, sync_name: str) -> dict:
    from storesync.pipeline.jobs import deliver_vendor, open_context

    ctx = open_context(settings(), run_id=run_id_from_context(context), sync_name=sync_name,
                       vendors=[vendor], client_factories=client_factories())
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


def logical_now(context) -> datetime:
    return context.get("data_interval_end") or datetime.utcnow()
