"""The sync jobs the storesync operators run, given a resolved :class:`SyncRun`.

Operators (``storesync.provider.operators``) turn an Airflow context and their ``*_conn_id``
parameters into a ``SyncRun`` (settings from the connections, the window, the ledger run id) and
call one function here; the pure logic lives in ``storesync.pipeline``. Nothing here reads an
Airflow context, so every function is callable from a test or a user's own ``@task``.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from storesync.core.config import Settings
from storesync.core.windows import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncRun:
    """One task's run: its settings (from the connections), window and ids."""

    settings: Settings
    window: Window | None
    dag_id: str
    run_id: str
    ledger_run_id: str  # the ledger's run key: "<dag_id>/<run_id>[/<sync_name>]"
    params: dict = field(default_factory=dict)

    def require_window(self) -> Window:
        if self.window is None:
            from storesync.core.errors import ConfigurationError

            raise ConfigurationError("this task needs a data interval: trigger it with a logical date or a backfill")
        return self.window


def _open(run: SyncRun, *, sync_name: str, vendors, dry_run: bool = False):
    from storesync.pipeline.jobs import open_context

    return open_context(run.settings, run_id=run.ledger_run_id, sync_name=sync_name, vendors=vendors,
                        dry_run=dry_run)


class SqlClock:
    """Seconds one engine's statements took (from cursor execute to its return), for a task's
    timings line: how much of a task is the warehouse, how much the ledger. Concurrent statements
    (the delivery engine's threads) add up, so the figure can exceed the task's wall time."""

    def __init__(self, engine) -> None:
        from sqlalchemy import event

        self.engine, self.seconds, self._key = engine, 0.0, f"storesync_clock_{id(self)}"
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info.setdefault(self._key, []).append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        started = conn.info.get(self._key)
        if started:
            self.seconds += time.perf_counter() - started.pop()

    def stop(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


@contextmanager
def _sql_clocks(**engines):
    """``{name: SqlClock}`` for the ``with`` block; the listeners go with it (engines are cached
    per process, and a long-lived process must not collect them)."""
    clocks = {name: SqlClock(engine) for name, engine in engines.items()}
    try:
        yield clocks
    finally:
        for clock in clocks.values():
            clock.stop()


def _log_timings(step: str, started: float, opened: float, clocks: dict, **more) -> dict:
    """The task's timings (seconds): opening the context (engines, clients), SQL per database,
    the whole step; logged as one line (the backfill benchmark reads it) and returned."""
    timings = {"open": round(opened - started, 3), "total": round(time.perf_counter() - started, 3),
               **{f"{name}_sql": round(c.seconds, 3) for name, c in clocks.items()}, **more}
    log.info("storesync %s timings: %s", step, timings)
    return timings


def _planned(ctx, entity: str, window: Window, **kwargs) -> dict:
    from storesync.pipeline.jobs import plan_entity

    report = plan_entity(ctx, entity, window, **kwargs)
    log.info("planned %s for %s: %s", entity, window, report["planned"])
    return report


# ---------------------------------------------------------------------------- plan, deliver, finish
def plan(entity: str, run: SyncRun, *, sync_name: str, vendors, full_catalog: bool = False,
         historical: bool = False) -> dict:
    window = run.require_window()
    if full_catalog:
        window = Window.everything_before(window.end)
    started = time.perf_counter()
    ctx = _open(run, sync_name=sync_name, vendors=vendors)
    opened = time.perf_counter()
    kwargs = {"historical": historical} if entity in ("orders", "customers", "products") else {}
    with _sql_clocks(warehouse=ctx.warehouse.engine, ledger=ctx.ledger.engine) as clocks:
        report = _planned(ctx, entity, window, **kwargs)
    report["timings_s"] = _log_timings("plan", started, opened, clocks)
    return report


def deliver(vendor: str, run: SyncRun, *, sync_name: str) -> dict:
    """Send ``vendor``'s due deliveries (of every sync: the ledger keys them by account, and this
    run's account is the connection's). Raises :class:`HeldDeliveries` or
    :class:`OtherAccountsOpen` after everything else was sent."""
    from storesync.pipeline.jobs import deliver_vendor

    started = time.perf_counter()
    ctx = _open(run, sync_name=sync_name, vendors=[vendor])
    opened = time.perf_counter()
    with _sql_clocks(ledger=ctx.ledger.engine) as clocks:
        report = deliver_vendor(ctx, vendor)
    report["timings_s"] = _log_timings(f"deliver_{vendor}", started, opened, clocks, engine=report.get("elapsed_s"))
    log.info("%s: %s", vendor, {k: v for k, v in report.items() if k not in ("by_event", "timings_s")})
    report["open_under_other_accounts"] = _other_accounts_of_this_sync(
        ctx.ledger, vendor, report.get("account"), sync_name, report.get("open_under_other_accounts") or {})
    try:
        raise_if_held(vendor, report, ctx.ledger, run.settings)
    except (HeldDeliveries, OtherAccountsOpen) as exc:
        # The task fails for a person and the finish task will not run: the run's record says so,
        # rather than staying "running" for good.
        from storesync.pipeline.jobs import DELIVERY_FAILED

        ctx.ledger.finish_run(run.ledger_run_id, DELIVERY_FAILED, error=f"{vendor}: {exc}"[:2000])
        raise
    return report


def _other_accounts_of_this_sync(ledger, vendor: str, account: str | None, sync_name: str,
                                 others: dict) -> dict:
    """Of the open rows under other account keys, those this sync planned: a sync sends to one
    account per vendor, so they are stranded (its key changed). Another account's rows planned by
    another sync (a second store or brand of the same vendor, sharing the ledger) are not."""
    if not others:
        return {}
    from sqlalchemy import func, select

    from storesync.delivery.ledger import OPEN_STATES, deliveries

    query = (select(deliveries.c.account, func.count())
             .where(deliveries.c.vendor == vendor, deliveries.c.state.in_(OPEN_STATES),
                    deliveries.c.sync_name == sync_name, deliveries.c.account != (account or ""))
             .group_by(deliveries.c.account))
    with ledger.engine.connect() as conn:
        return {a: n for a, n in conn.execute(query)}


class HeldDeliveries(RuntimeError):
    """Deliveries are held with an unknown outcome: a person reconciles them (retrying cannot)."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


class OtherAccountsOpen(RuntimeError):
    """Open deliveries this sync planned sit under another account key than the one it sends to."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


def held_remedy(vendor: str, ledger=None, account: str | None = None,
                settings: Settings | None = None) -> str:
    """What resolves ``vendor``'s held rows: ``storesync.delivery.remedies``' text for the rows the
    ledger holds for ``account`` (what they are, why nothing automatic settles them, the commands)."""
    fallback = f"list them with `storesync reconcile --list --vendor {vendor}`, then reconcile each"
    if ledger is None:
        return fallback
    from storesync.delivery.ledger import UNKNOWN
    from storesync.delivery.remedies import held_counts
    from storesync.delivery.remedies import held_remedy as remedy_text

    policy = {}
    if settings is not None:
        policy = {"sendlane_unknown_outcome": settings.sendlane.unknown_outcome,
                  "sailthru_unknown_outcome": settings.sailthru.unknown_outcome}
    rows = ledger.in_state(UNKNOWN, vendor=vendor, account=account or None)
    return remedy_text(vendor, held_counts(rows, **policy).get(vendor, {})) or fallback


def raise_if_held(vendor: str, report: dict, ledger=None, settings: Settings | None = None) -> None:
    """Fail the task, after everything else was sent, when deliveries are held with an unknown
    outcome (this run's and those recovered from earlier runs alike), or when open deliveries
    this sync planned sit under another account key than the one sent to. Held deliveries are not
    lost, but a person must reconcile them. (Rows awaiting a later lookup are not held: the next
    run looks them up again.)"""
    others = report.get("open_under_other_accounts") or {}
    if others:
        from storesync.delivery.engine import other_accounts_problem

        raise OtherAccountsOpen(other_accounts_problem(vendor, report.get("account"), others), report)
    held = report.get("held_unknown", 0)
    if held:
        earlier = report.get("held_from_earlier", 0)
        raise HeldDeliveries(
            f"{held} {vendor} deliveries have an unknown outcome and are held ({held - earlier} from this "
            f"run, {earlier} recovered from earlier runs); {report.get('accepted', 0)} accepted, "
            f"{report.get('awaiting_lookup', 0)} awaiting a later lookup.\n"
            f"{held_remedy(vendor, ledger, report.get('account'), settings)}", report)


def finish(run: SyncRun, *, sync_name: str, full_catalog: bool = False) -> dict:
    """Settle the window: the watermark moves as far as every earlier window settled too (the
    contiguous settled prefix). ``full_catalog``: the plan covered the whole past up to the
    interval's end (nightly catalog, LTV profiles), so that is the window to settle."""
    from storesync.delivery.ledger import Ledger

    window = run.require_window()
    if full_catalog:
        window = Window.everything_before(window.end)
    started = time.perf_counter()
    ledger = Ledger(run.settings.ledger_url)
    opened = time.perf_counter()
    with _sql_clocks(ledger=ledger.engine) as clocks:
        settled = ledger.window_is_settled(sync_name, window.start, window.end)
        ledger.advance_watermark(sync_name, window.end, window_start=window.start)
        ledger.finish_run(run.ledger_run_id, "success" if settled else "incomplete")
        report = {"settled": settled, "watermark": str(ledger.watermark(sync_name))}
    report["timings_s"] = _log_timings("finish", started, opened, clocks)
    return report


# ---------------------------------------------------------------------------- products
def plan_products(run: SyncRun, *, sync_name: str, vendors, full_catalog: bool = False,
                  force_full: bool = False) -> dict:
    """The catalog (``full_catalog``: every product updated before the interval's end) or the
    interval's changed products. ``force_full`` salts every version with this run's id, so every
    product goes again, once for this run (its retries included)."""
    window = run.require_window()
    if full_catalog:
        window = Window.everything_before(window.end)
    ctx = _open(run, sync_name=sync_name, vendors=vendors)
    report = _planned(ctx, "products", window, version_salt=run.ledger_run_id if force_full else None)
    report["force_full"] = bool(force_full)
    return report


# ---------------------------------------------------------------------------- customers and consent
def read_vendor_unsubscribes(run: SyncRun) -> dict:
    """Read Sendlane's own unsubscribes into ``storesync_vendor_unsubscribes`` (before anything
    about people is planned), so the Sendlane mappers never send consent for them."""
    from storesync.delivery.ledger import Ledger
    from storesync.pipeline.consent import load_unsubscribed, read_back_sendlane
    from storesync.pipeline.vendor_clients import default_sendlane_client

    current = run.settings
    ledger = Ledger(current.ledger_url)
    account = current.sendlane.account
    client = default_sendlane_client(current.sendlane, account, ledger.engine)
    counts = read_back_sendlane(client, ledger.engine, account)
    counts["active"] = len(load_unsubscribed(ledger.engine, "sendlane", account))
    log.info("sendlane unsubscribes: %s", counts)
    return counts


def latest_ltv_as_of(warehouse_engine):
    """The newest computed LTV day (``storesync_ltv_runs``), or None (no LTV computed yet)."""
    from sqlalchemy import inspect, text

    from storesync.ltv.historic import _as_date
    from storesync.ltv.tables import RUNS_TABLE, VERSIONS_TABLE

    if not inspect(warehouse_engine).has_table(VERSIONS_TABLE):
        return None  # no LTV yet (or only an earlier release's table, moved on the next run)
    with warehouse_engine.connect() as conn:
        value = conn.execute(text(f"SELECT MAX(as_of) FROM {RUNS_TABLE}")).scalar()
    return None if value is None else _as_date(value)


def ltv_lookup(warehouse_engine, as_of):
    """``customer_ids -> {customer_id: LTV profile fields}`` for one ``as_of`` (per chunk)."""
    from storesync.ltv import ltv_profile_fields

    def lookup(customer_ids) -> dict:
        ids = [int(i) if str(i).isdigit() else i for i in customer_ids]
        return dict(ltv_profile_fields(warehouse_engine, as_of, ids))

    return lookup


def plan_customers(run: SyncRun, *, sync_name: str, vendors, full: bool = False, ltv_as_of="latest") -> dict:
    """Customers changed in the interval (``full``: every customer updated before its end) →
    customer added, Sailthru profiles and (with a Sendlane list) contacts, with LTV profile fields
    of ``ltv_as_of`` ("latest": the newest LTV computed). Consent: the Sendlane target reads the
    vendor unsubscribes recorded by ``read_vendor_unsubscribes``.

    Profiles carry the customer's current state (the warehouse keeps only current rows) and so the
    current LTV: a backfilled interval sends what a rerun now would, never an older LTV."""
    window = run.require_window()
    if full:
        window = Window.everything_before(window.end)
    ctx = _open(run, sync_name=sync_name, vendors=vendors)
    as_of = latest_ltv_as_of(ctx.warehouse.engine) if ltv_as_of == "latest" else ltv_as_of
    lookup = ltv_lookup(ctx.warehouse.engine, as_of) if as_of is not None else None
    report = _planned(ctx, "customers", window, ltv_lookup=lookup)
    report["ltv_as_of"] = None if as_of is None else str(as_of)
    return report


# ---------------------------------------------------------------------------- checkouts
def plan_checkouts(run: SyncRun, *, sync_name: str, vendors, reminder_max_age_hours: float = 24,
                   now: datetime | None = None) -> dict:
    """Checkouts changed in the interval. Reminders go only for intervals that ended at most
    ``reminder_max_age_hours`` ago (0: always): a backfill or a long catch-up of old intervals
    sends the clearing calls but does not remind people of carts they left days ago."""
    from datetime import timedelta

    window = run.require_window()
    age = (now or datetime.utcnow()) - window.end
    reminders = not reminder_max_age_hours or age <= timedelta(hours=float(reminder_max_age_hours))
    ctx = _open(run, sync_name=sync_name, vendors=vendors)
    report = _planned(ctx, "checkouts", window, reminders=reminders)
    report["reminders"] = reminders
    return report


# ---------------------------------------------------------------------------- LTV
def compute_ltv(run: SyncRun, *, full_recompute: bool = False, watermark: str = "ltv",
                **predict_options) -> dict:
    """The LTV job (``storesync.ltv.job.run_ltv_job``) for the interval's day (``as_of`` = the data
    interval's start date), from the same models and ``[ltv]`` settings as ``storesync ltv``:
    any date can be rerun or backfilled. Predictions need repeat buyers: when the models cannot
    be fitted the historic figures still stand (logged, not failed). ``predict_options``
    override the ``[ltv]`` prediction settings."""
    from dataclasses import replace

    from storesync.delivery.ledger import Ledger
    from storesync.ltv.job import run_ltv_job

    window = run.require_window()
    as_of = window.start.date()
    settings = run.settings
    if predict_options:
        settings = settings.with_overrides(ltv=replace(settings.ltv, **predict_options))
    report = run_ltv_job(settings, as_of, full=bool(full_recompute))
    Ledger(run.settings.ledger_url).advance_watermark(watermark, window.end, window_start=window.start)
    return report.as_dict()


def push_ltv_profiles(run: SyncRun, *, sync_name: str, vendors) -> dict:
    """Plan the profiles whose LTV changed (every customer, content-hash diffed: unchanged ones are
    no-ops). Only for the newest LTV date: a backfilled day recomputes its numbers but never
    pushes older figures over newer ones."""
    from storesync.warehouse.models import warehouse_engine

    window = run.require_window()
    as_of = window.start.date()
    engine = warehouse_engine(run.settings.warehouse_url)
    try:
        latest = latest_ltv_as_of(engine)
    finally:
        engine.dispose()
    if latest != as_of:
        return {"skipped": f"LTV {as_of} is not the newest ({latest}): profiles keep the newest figures"}
    return plan_customers(run, sync_name=sync_name, vendors=vendors, full=True, ltv_as_of=as_of)


# ---------------------------------------------------------------------------- dead-letter replay
def replay(run: SyncRun, *, vendor: str | None = None, event_type: str | None = None, ids=None,
           dry_run: bool = True) -> dict:
    """Replay dead letters (all, one vendor's, one event type's, chosen ids). A dry run lists what
    would be replayed, by vendor and event type, and changes nothing."""
    from collections import Counter

    from storesync.delivery.ledger import DEAD, Ledger
    from storesync.pipeline.jobs import replay_dead_letters

    vendor = vendor or None
    event_type = event_type or None
    ids = {int(i) for i in (ids or [])}
    current = run.settings
    # This store's accounts only: another store's dead letters (a shared ledger) are its own to replay.
    accounts = _store_accounts(current)
    dead = [d for d in Ledger(current.ledger_url).in_state(DEAD, vendor=vendor)
            if (d.vendor, d.account) in accounts
            and (event_type is None or d.event_type == event_type) and (not ids or d.id in ids)]
    selection = {"matching": len(dead), "by_event": dict(Counter(f"{d.vendor}:{d.event_type}" for d in dead)),
                 "ids": [d.id for d in dead][:200]}
    if dry_run:
        log.info("dry run: would replay %s", selection)
        return {"dry_run": True, **selection}
    if not dead:
        return {"dry_run": False, **selection, "requeued": 0, "deliveries": {}}
    result = replay_dead_letters(current, vendor=vendor, event_type=event_type, ids=[d.id for d in dead],
                                 run_id=run.ledger_run_id)
    for replayed_vendor, report in result["deliveries"].items():
        raise_if_held(replayed_vendor, report, Ledger(current.ledger_url), current)
    return {"dry_run": False, **selection, **result}


def _store_accounts(settings: Settings) -> set[tuple[str, str]]:
    """(vendor, account key) of this store's credentials: the ledger rows it may replay or resolve."""
    return {("sendlane", settings.sendlane.account), ("sailthru", settings.sailthru.account)}


RESOLUTIONS = ("arrived", "resend")


def resolve_held(run: SyncRun, *, ids, resolution: str, dry_run: bool = True) -> dict:
    """Resolve held deliveries a person checked at the vendor (the view's "Mark arrived" and
    "Resend"): ``storesync reconcile --ids ... --arrived|--resend``'s own path
    (``Reconciler.by_hand``), limited to this store's accounts. ``arrived`` marks them accepted
    (nothing is sent); ``resend`` requeues them and sends them now. Ids that are not deliveries of
    this store with an unknown outcome fail the task before anything changes; rows the reconciler
    refuses (a resend of a row still awaiting its own lookup) fail it after the rest were resolved,
    with what was done in the message."""
    from collections import Counter

    from storesync.delivery.ledger import Ledger
    from storesync.delivery.reconcile import Reconciler
    from storesync.provider.failures import HELD, StoresyncTaskFailure

    if resolution not in RESOLUTIONS:
        raise StoresyncTaskFailure(
            f"resolution must be 'arrived' (the vendor has them) or 'resend' (it does not), not {resolution!r}",
            kind=HELD, next_step="trigger again with resolution 'arrived' or 'resend'")
    ids = list(dict.fromkeys(int(i) for i in ids))
    current = run.settings
    ledger = Ledger(current.ledger_url)
    reconciler = Reconciler.from_settings(ledger, current)
    # This store's accounts only: another store's rows (a shared ledger) are its own to resolve.
    accounts = _store_accounts(current)
    ours = {d.id: (d, kind) for d, kind in reconciler.unknown() if (d.vendor, d.account) in accounts}
    foreign = [i for i in ids if i not in ours]
    if foreign:
        raise StoresyncTaskFailure(
            f"{len(foreign)} of the {len(ids)} ids are not deliveries of this store held with an unknown "
            f"outcome (resolved already, never held, or another store's): {', '.join(map(str, foreign[:20]))}. "
            "Nothing was changed.",
            kind=HELD, next_step="choose ids among the held rows the Storesync view or `storesync reconcile "
            "--list` shows")
    chosen = [ours[i][0] for i in ids]
    selection = {"resolution": resolution, "ids": ids,
                 "by_event": dict(Counter(f"{d.vendor}:{d.event_type}" for d in chosen)),
                 "kinds": dict(Counter(ours[i][1] for i in ids))}
    if dry_run:
        log.info("dry run: would resolve %s", selection)
        return {"dry_run": True, **selection}
    result = reconciler.by_hand(ids, arrived=resolution == "arrived")
    log.info("%s", result.text())
    resolved = {"dry_run": False, **selection, "arrived": result.arrived, "requeued": result.requeued,
                "refused": result.refused, "deliveries": {}}
    if result.requeued:
        from storesync.pipeline.jobs import deliver_vendor, open_context

        vendors = sorted({d.vendor for d in chosen})
        ctx = open_context(current, run_id=run.ledger_run_id, sync_name="replay", vendors=vendors)
        ctx.ledger.start_run(run.ledger_run_id, "replay")
        for vendor in vendors:
            resolved["deliveries"][vendor] = deliver_vendor(ctx, vendor)
        ctx.ledger.finish_run(run.ledger_run_id, "success", counts={
            "arrived": result.arrived, "requeued": result.requeued})
    if result.refused:
        raise StoresyncTaskFailure(
            f"{result.text()}", kind=HELD, counts={"arrived": result.arrived, "requeued": result.requeued},
            next_step="leave the refused rows to the next scheduled run (their lookup settles them)")
    # Only the rows resent here can fail this run: other held rows wait for their own decision.
    from storesync.delivery.ledger import UNKNOWN

    chosen_ids = set(ids)
    again = [d.id for d in ledger.in_state(UNKNOWN) if d.id in chosen_ids] if result.requeued else []
    if again:
        raise StoresyncTaskFailure(
            f"{len(again)} resent deliveries got no answer again and are held: {', '.join(map(str, again[:20]))}",
            kind=HELD, counts={"arrived": result.arrived, "requeued": result.requeued},
            next_step="check them at the vendor again, then resolve them from the Storesync view")
    return resolved


# ---------------------------------------------------------------------------- monitor
EXPECTED_INTERVALS_HOURS = {
    # sync name (ledger watermark) -> its schedule interval, for the monitor's "no progress" check
    "order_events": 1, "customers": 1, "checkouts": 1, "products_changed": 1,
    "products": 24, "ltv": 24, "ltv_profiles": 24,
}


def quarantine_spikes(engine, since, until, *, baseline_hours: float = 24, factor: float = 3.0,
                      min_rows: int = 10) -> list[dict]:
    """Entities whose rows quarantined in ``[since, until)`` reach ``min_rows`` and exceed ``factor``
    × their average per interval over the ``baseline_hours`` before ``since``."""
    from datetime import timedelta

    from sqlalchemy import case, func, inspect, select

    from storesync.quality.store import TABLE_NAME, quarantine

    if not inspect(engine).has_table(TABLE_NAME):
        return []
    interval = until - since
    baseline_start = since - timedelta(hours=baseline_hours)
    intervals = max(1.0, (since - baseline_start) / interval)

    def counts(start, end) -> dict:
        # Rows, not records: a still-bad row read again by another run is recorded again.
        q = quarantine.c
        rows = func.count(q.entity_id.distinct()) + func.sum(case((q.entity_id.is_(None), 1), else_=0))
        with engine.connect() as conn:
            return {entity: int(n) for entity, n in conn.execute(
                select(q.entity, rows).where(q.quarantined_at >= start, q.quarantined_at < end)
                .group_by(q.entity)).all()}

    now_counts, before = counts(since, until), counts(baseline_start, since)
    spikes = []
    for entity, n in sorted(now_counts.items()):
        average = before.get(entity, 0) / intervals
        if n >= min_rows and n > factor * average:
            spikes.append({"entity": entity, "quarantined": n, "baseline_per_interval": round(average, 2)})
    return spikes


def monitor(run: SyncRun, *, max_intervals: int = 3, quarantine_factor: float = 3.0,
            quarantine_min_rows: int = 10, expected_intervals_hours: dict | None = None,
            stuck_after_hours: float = 6.0) -> dict:
    """Alert (Slack webhook / e-mail, through the storesync notifier) on the ledger's new dead
    letters, stalled syncs and deliveries stuck in staged/sending/unknown for more than
    ``stuck_after_hours`` (0: not checked), and on quarantine spikes, for the run's data interval:
    each dead letter and each spike is reported by the one run whose interval saw it."""
    from datetime import timedelta

    from storesync.delivery.ledger import Ledger
    from storesync.provider.notifiers import alert_on_ledger, send_alert
    from storesync.provider.notifiers.alert import airflow_base_url
    from storesync.provider.notifiers.messages import QUARANTINE, Alert, run_link

    window = run.require_window()
    engine = Ledger(run.settings.ledger_url).engine
    hours = {**EXPECTED_INTERVALS_HOURS, **(expected_intervals_hours or {})}
    expected = {name: timedelta(hours=float(h)) for name, h in hours.items()}
    alerts = alert_on_ledger(engine, since=window.start, now=window.end, expected_interval=expected,
                             max_intervals=int(max_intervals), dag_id=run.dag_id, run_id=run.run_id,
                             stuck_after=timedelta(hours=float(stuck_after_hours)) if stuck_after_hours else None)
    spikes = quarantine_spikes(engine, window.start, window.end, factor=float(quarantine_factor),
                               min_rows=int(quarantine_min_rows))
    for spike in spikes:
        alert = Alert(QUARANTINE, f"{spike['entity']}: {spike['quarantined']} rows quarantined in one interval",
                      run.dag_id, run.run_id,
                      (("Entity", spike["entity"]), ("Quarantined in interval", str(spike["quarantined"])),
                       ("Trailing average per interval", str(spike["baseline_per_interval"])),
                       ("Interval", str(window)), ("Next step", "look at storesync_quarantine and the Data Docs")),
                      {"quarantined": spike["quarantined"]}, None,
                      run_link(airflow_base_url(), run.dag_id, run.run_id))
        send_alert(alert)
        alerts.append(alert)
    summary = {"window": str(window), "alerts": [a.title for a in alerts],
               "kinds": sorted({a.kind for a in alerts}), "quarantine_spikes": spikes}
    log.info("monitor: %s", summary)
    return summary


# ---------------------------------------------------------------------------- historical sync
HISTORICAL_ORDER = ("products", "customers", "orders")


def historical_entities(params) -> list[str]:
    """Check the run's params (fails the run at once on a bad range) and list its entities, the
    catalog first, then people, then orders."""
    from storesync.pipeline.historical import HistoricalRequest

    request = HistoricalRequest.from_params(params)
    log.info("historical sync: %s .. %s, entities %s, vendors %s, dry run %s, budget share %.0f%%",
             request.start, request.end, list(request.entities), list(request.vendors), request.dry_run,
             request.budget_share * 100)
    return [e for e in HISTORICAL_ORDER if e in request.entities]


def historical(entity: str, run: SyncRun) -> dict:
    """One entity of a historical sync, resuming from its checkpoints (see
    ``storesync.pipeline.historical``)."""
    from storesync.pipeline.historical import HistoricalRequest, run_historical

    request = HistoricalRequest.from_params(run.params)
    return run_historical(run.settings, request, entity, run_id_prefix=run.ledger_run_id)
