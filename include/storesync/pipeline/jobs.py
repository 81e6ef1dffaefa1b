"""Whole jobs built from the syncs: what the CLI runs, and what each Airflow task calls.

``open_context`` wires settings → warehouse, ledger and vendor targets; the job functions return
plain dicts (JSON-able: they become XComs and the CLI's summary).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import datetime, timedelta

from storesync.core.config import Settings
from storesync.core.errors import ConfigurationError
from storesync.core.windows import Window
from storesync.delivery.ledger import ACCEPTED, DEAD, SUPPRESSED, UNKNOWN, Ledger
from storesync.pipeline import syncs
from storesync.pipeline.senders import INVALID_ENDPOINT
from storesync.pipeline.site_events import plan_site_events
from storesync.pipeline.targets import targets_for
from storesync.warehouse.models import Warehouse

log = logging.getLogger(__name__)

# A run whose plan went through but whose delivery raised: its deliveries wait in the ledger.
DELIVERY_FAILED = "delivery_failed"

ENTITY_SYNCS = {
    "orders": syncs.plan_order_events,
    "customers": syncs.plan_customers,
    "products": syncs.plan_products,
    "checkouts": syncs.plan_checkouts,
    "site_events": plan_site_events,
}


# Each vendor's credentials: (setting under [vendor], what it is, where an Airflow connection keeps it).
CREDENTIALS = {
    "sendlane": (("api_token", "API v2 token", "password"),
                 ("integration_token", "custom integration token", "extra integration_token")),
    "sailthru": (("api_key", "API key", "login"), ("secret", "shared secret", "password")),
}


def require_credentials(settings: Settings, vendors, client_factories: dict | None = None) -> None:
    """Refuse to run for a vendor whose credentials are not set, before anything is extracted or
    planned: a delivery's account key is its credential's fingerprint (``core.config.account_key``),
    so rows planned without one sit under ``unconfigured`` and never go. The one check, for the
    CLI and the Airflow tasks (``open_context``) and the historical sync; a vendor given its own
    client factory (tests, the demo) brings its own client. The message says where each goes."""
    problems, failing = [], []
    for vendor in vendors:
        if (client_factories or {}).get(vendor):
            continue
        vendor_settings = getattr(settings, vendor)
        missing = [c for c in CREDENTIALS.get(vendor, ()) if not getattr(vendor_settings, c[0])]
        if not missing:
            continue
        name = vendor.capitalize()
        failing.append(vendor)
        problems.append(
            f"{name} has no {' and no '.join(what for _, what, _ in missing)}: set "
            + " and ".join(f"{key}" for key, _, _ in missing) + f" under [{vendor}] in storesync.toml, or "
            + " and ".join(f"STORESYNC_{vendor.upper()}_{key.upper()}" for key, _, _ in missing)
            + f" (in Airflow: the {name} connection's " + " and ".join(f for _, _, f in missing) + ")")
    if problems:
        others = [v for v in vendors if v not in failing]
        leave_out = f"; or sync without it (--vendors {' '.join(others)})" if others else ""
        raise ConfigurationError("; ".join(problems) + f". Nothing was extracted or planned{leave_out}")


def open_context(settings: Settings, *, run_id: str, sync_name: str, vendors=("sendlane", "sailthru"),
                 dry_run: bool = False, client_factories: dict | None = None,
                 now: datetime | None = None) -> syncs.SyncContext:
    if not dry_run:  # a dry run sends nothing and keeps no delivery: it may run before credentials are set
        require_credentials(settings, vendors, client_factories)
    return syncs.SyncContext(
        settings=settings,
        warehouse=Warehouse(settings.warehouse_url, settings.models_dir),
        ledger=Ledger(settings.ledger_url),
        targets=targets_for(settings, tuple(vendors), client_factories),
        run_id=run_id, sync_name=sync_name, dry_run=dry_run, now=now or datetime.utcnow(),
    )


def plan_entity(ctx: syncs.SyncContext, entity: str, window: Window, **kwargs) -> dict:
    try:
        report = ENTITY_SYNCS[entity](ctx, window, **kwargs)
    except Exception as exc:
        ctx.ledger.finish_run(ctx.run_id, "failed", error=str(exc)[:2000])
        raise
    return report.as_dict()


def deliver_vendor(ctx: syncs.SyncContext, vendor: str) -> dict:
    """Deliver ``vendor``'s open work; the report says, too, how many deliveries wait behind a dead
    letter of their order (``waiting_behind_dead``): nothing sends them until the data is fixed
    (the next run re-plans it) or the dead letter is replayed, so a count above 0 is alerted."""
    try:
        report = syncs.deliver(ctx, vendor).as_dict()
    except Exception as exc:
        # The run's record says so (else it stays "running" for good); its planned deliveries wait
        # in the ledger, and the window counts as read (``Ledger.settled_until``): not "failed".
        ctx.ledger.finish_run(ctx.run_id, DELIVERY_FAILED, error=f"delivery to {vendor} failed: {exc}"[:2000])
        raise
    report["waiting_behind_dead"] = ctx.ledger.waiting_behind_dead(vendor, report["account"])
    if report["waiting_behind_dead"]:
        log.warning("%d %s deliveries wait behind a dead letter of their order: fix the data in the warehouse "
                    "(the next run re-plans it) or `storesync replay`", report["waiting_behind_dead"], vendor)
    return report


def run_nightly(settings: Settings, window: Window, *, run_id: str, vendors=("sendlane", "sailthru"),
                dry_run: bool = False, client_factories: dict | None = None) -> dict:
    """The nightly job: full product catalog, then the window's customers, orders and checkouts,
    then delivery to every vendor. Returns the summary the CLI prints."""
    from storesync.quality.errors import QualityGateError

    ctx = open_context(settings, run_id=run_id, sync_name="nightly", vendors=vendors, dry_run=dry_run,
                       client_factories=client_factories)
    windows = {"products": Window.everything_before(window.end), "customers": window, "orders": window,
               "checkouts": window}
    plans, gate_failures = {}, []
    for entity, entity_window in windows.items():
        try:
            plans[entity] = plan_entity(ctx, entity, entity_window)
        except QualityGateError as exc:
            if not dry_run or getattr(exc, "report", None) is None:
                raise
            # A dry run goes on: it is there to show everything that is wrong, in one go.
            plans[entity] = exc.report
            gate_failures.append(gate_failure(exc))
    deliveries = {}
    if not dry_run:
        for vendor in vendors:
            deliveries[vendor] = deliver_vendor(ctx, vendor)
        ctx.ledger.finish_run(run_id, "success", counts={"deliveries": deliveries})
        if ctx.ledger.window_is_settled("nightly", window.start, window.end):
            ctx.ledger.advance_watermark("nightly", window.end, window_start=window.start)
    summary = summarise(ctx, plans, deliveries)
    if dry_run:
        summary["gate_failures"] = gate_failures
        # A dry run's record is finished too (dry_run marks it: it never counts as a run of its window).
        counts = {"planned": dict(summary["planned"]), "changes": dict(summary["changes"])}
        ctx.ledger.finish_run(run_id, "failed" if gate_failures else "success", counts=counts,
                              error="; ".join(f["message"] for f in gate_failures)[:2000] or None)
    return summary


def gate_failure(error) -> dict:
    """A quality-gate failure as JSON-able facts (no row values)."""
    entity = getattr(error, "entity", None)
    stats = ((getattr(error, "report", None) or {}).get("entities") or {}).get(entity) or {}
    return {"entity": entity, "share": getattr(error, "share", None),
            "threshold": getattr(error, "threshold", None), "rows_in": stats.get("rows_in"),
            "quarantined": stats.get("quarantined"),
            "top_reasons": [list(r) for r in getattr(error, "top_reasons", [])], "message": str(error)}


# "order 4923: item SKU-10 has no product URL": the entity's own prefix, left out so like counts with like.
_ENTITY_PREFIX = re.compile(r"^(?:order|checkout|cart|product|customer|contact|line|event) [^\s:]+: ")
DEAD_REASONS_SCANNED = 2000  # dead letters read per vendor account for the summary's top reasons


# What happens to dead letters the mapper refused once their data is fixed (the summary and replay say it).
REPLANNED_ONCE_FIXED = ("the next run re-plans the orders among them; a product or cart is planned again "
                        "when it next changes")


def dead_letter_next_step(vendor: str, *, unmappable: bool) -> str:
    """What to do about dead letters (the run summary's line; ``storesync replay`` says the same)."""
    if unmappable:  # the mapper refused the warehouse's data: nothing was sent
        return (f"fix the data in the warehouse: {REPLANNED_ONCE_FIXED}; "
                f"`storesync replay --vendor {vendor}` re-maps orders at once")
    return (f"the vendor refused them or its retries ran out: fix what its answer names, then "
            f"`storesync replay --vendor {vendor}`")


def dead_letter_reasons(ledger: Ledger, vendor: str, account: str, *, top: int = 3) -> dict:
    """The top reasons of ``vendor``'s dead letters under ``account`` (emails masked), with counts,
    and the next step for the most common kind (unmappable data, or the vendor's refusal)."""
    from sqlalchemy import select

    from storesync.delivery.ledger import deliveries
    from storesync.pipeline.targets import mask_email

    d = deliveries.c
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(d.endpoint, d.vendor_error, d.error_class)
                            .where(d.state == DEAD, d.vendor == vendor, d.account == account)
                            .order_by(d.id.desc()).limit(DEAD_REASONS_SCANNED)).all()
    reasons, unmappable = Counter(), 0
    for endpoint, error, error_class in rows:
        unmappable += endpoint == INVALID_ENDPOINT
        reason = _ENTITY_PREFIX.sub("", (error or error_class or "no reason recorded").strip())
        reasons[mask_email(reason)[:160]] += 1
    return {"reasons": [[r, n] for r, n in reasons.most_common(top)],
            "next_step": dead_letter_next_step(vendor, unmappable=unmappable * 2 >= len(rows))}


def summarise(ctx: syncs.SyncContext, plans: dict, deliveries: dict) -> dict:
    rows = {e: s for p in plans.values() for e, s in p["entities"].items()}
    # Only the states the summary shows (an indexed predicate): never a count of every accepted row.
    ledger_counts = {t.vendor: ctx.ledger.counts(vendor=t.vendor, states=(DEAD, SUPPRESSED, UNKNOWN))
                     for t in ctx.targets}
    dead = {t.vendor: dead_letter_reasons(ctx.ledger, t.vendor, t.account)
            for t in ctx.targets if deliveries and ledger_counts[t.vendor].get(DEAD)}
    return {
        "run_id": ctx.run_id,
        "dry_run": ctx.dry_run,
        "rows": rows,
        # Rows of earlier runs' quarantine looked at again (not in ``rows``: not this run's share).
        "rechecked": {e: s for p in plans.values() for e, s in p.get("rechecked", {}).items()},
        "planned": sum((Counter(p["planned"]) for p in plans.values()), Counter()),
        "changes": sum((Counter(p["changes"]) for p in plans.values()), Counter()),
        "healed": sum((Counter(p.get("healed", {})) for p in plans.values()), Counter()),
        "deliveries": deliveries,
        "ledger": ledger_counts,
        "dead_letters": dead,
        "samples": {k: v for p in plans.values() for k, v in p.get("samples", {}).items()},
        "quarantine_samples": {k: v for p in plans.values()
                               for k, v in p.get("quarantine_samples", {}).items()},
    }


def format_summary(summary: dict) -> str:
    lines = [f"storesync run {summary['run_id']}" + (" (dry run: nothing sent)" if summary["dry_run"] else "")]
    lines.append("")
    lines.append(f"{'entity':<12}{'extracted':>10}{'passed':>10}{'quarantined':>13}  top reasons")
    for entity, s in summary["rows"].items():
        reasons = ", ".join(f"{r} ×{n}" for r, n in list(s["reasons"].items())[:3])
        lines.append(f"{entity:<12}{s['rows_in']:>10}{s['passed']:>10}{s['quarantined']:>13}  {reasons}")
    for entity, s in summary.get("rechecked", {}).items():
        lines.append(f"{entity:<12} re-checked from earlier runs' quarantine: {s['checked']}, fixed "
                     f"{s['passed']}, still quarantined {s['quarantined']}")
    lines.append("")
    if summary["dry_run"]:
        lines.append("would send (new or changed):")
        for key, n in sorted(summary["planned"].items()):
            lines.append(f"  {key:<36}{n:>8}")
        lines.append("changes: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["changes"].items())))
        return "\n".join(lines)
    lines.append(f"{'vendor':<12}{'sent':>8}{'accepted':>10}{'dead letters':>14}{'suppressed':>12}"
                 f"{'held':>7}{'ev/s':>9}")
    for vendor, d in summary["deliveries"].items():
        ledger = summary["ledger"].get(vendor, {})
        rate = d["accepted"] / d["elapsed_s"] if d["elapsed_s"] else 0
        lines.append(f"{vendor:<12}{d['requests']:>8}{d['accepted']:>10}{ledger.get(DEAD, 0):>14}"
                     f"{ledger.get(SUPPRESSED, 0):>12}{ledger.get(UNKNOWN, 0):>7}{rate:>9.1f}")
    for vendor, dead in (summary.get("dead_letters") or {}).items():
        lines.append(f"{vendor} dead letters: " + ", ".join(f"{reason} ×{n}" for reason, n in dead["reasons"])
                     + f"; next: {dead['next_step']}")
    for vendor, d in summary["deliveries"].items():
        if d.get("waiting_behind_dead"):
            lines.append(f"{vendor}: {d['waiting_behind_dead']} deliveries wait behind a dead letter of their order: "
                         "fix the data in the warehouse (the next run re-plans it) or `storesync replay`")
        if d.get("settled"):  # held rows a rule settled without a person (storesync.delivery.settle)
            lines.append(f"{vendor}: held rows settled by a rule: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(d["settled"].items())))
    healed = summary.get("healed") or {}
    if healed:
        lines.append("re-planned from fixed warehouse data: " + ", ".join(f"{k} {v}" for k, v in sorted(healed.items())))
    lines.append("")
    for vendor, d in summary["deliveries"].items():
        events = Counter({k.split(":")[0]: v for k, v in d["by_event"].items() if k.endswith(f":{ACCEPTED}")})
        lines.append(f"{vendor} accepted: " + ", ".join(f"{k} {v}" for k, v in sorted(events.items())))
    return "\n".join(lines)


def replay_dead_letters(settings: Settings, *, vendor: str | None = None, event_type: str | None = None,
                        ids: list[int] | None = None, run_id: str, deliver_now: bool = True,
                        client_factories: dict | None = None) -> dict:
    """Replay dead letters (all, one vendor's, one event type's, or chosen ids), then send.

    An order's dead deliveries are re-mapped from the warehouse's current data first
    (``syncs.heal_dead_orders``): one whose payload changed is planned again as a revision that
    replaces the dead one; one whose data is unchanged is put back in line as it is (the cause was
    elsewhere: a vendor outage that exhausted the retries, a setting since corrected), unless it
    still cannot be mapped: then it stays dead, and the reason is returned. Other dead letters
    (products, profiles, carts) are put back in line; a newer version of their entity, planned by
    its sync since, is sent instead of them."""
    from storesync.core.windows import to_naive_utc

    ledger = Ledger(settings.ledger_url)
    dead = [d for d in ledger.in_state(DEAD, vendor=vendor)
            if (event_type is None or d.event_type == event_type) and (not ids or d.id in ids)]
    result = {"selected": len(dead), "remapped": {}, "requeued": 0, "still_invalid": [], "deliveries": {}}
    if not dead:
        return result
    vendors = sorted({d.vendor for d in dead})
    ctx = open_context(settings, run_id=run_id, sync_name="replay", vendors=vendors,
                       client_factories=client_factories)
    orders = {d.entity_id for d in dead if d.ordering_key.startswith("order:") and d.versioning != "content"}
    if orders:
        now = to_naive_utc(ctx.now)
        window = Window(now - timedelta(seconds=1), now)  # the replay's moment: rows need a window
        report = syncs.PlanReport("replay", run_id, window, False)
        ctx.ledger.start_run(run_id, "replay")
        syncs.heal_dead_orders(ctx, report, window, now, order_ids=orders)
        ctx.ledger.promote(run_id)
        result["remapped"] = dict(report.healed)
    still_dead = {d.id: d for d in ctx.ledger.in_state(DEAD, vendor=vendor)}
    again, invalid = [], []
    for d in dead:
        current = still_dead.get(d.id)
        if current is None:
            continue  # replaced by its re-mapped revision
        (invalid if current.endpoint == INVALID_ENDPOINT else again).append(current)
    result["still_invalid"] = [{"id": d.id, "vendor": d.vendor, "event_type": d.event_type,
                                "entity_id": d.entity_id, "reason": d.payload.get("_invalid")} for d in invalid]
    result["requeued"] = ledger.requeue([d.id for d in again])
    if deliver_now and (result["requeued"] or result["remapped"]):
        for v in vendors:
            result["deliveries"][v] = deliver_vendor(ctx, v)
    ctx.ledger.finish_run(run_id, "success", counts={k: v for k, v in result.items() if k != "still_invalid"})
    return result
