"""The syncs: extract a window, pass the quality gate, plan vendor deliveries, deliver them.

Each sync is two steps, which are also the Airflow tasks:

``plan_*(ctx, window)``
    streams the window's rows from the warehouse models in chunks, validates each chunk
    (quarantining bad rows with their reasons), builds canonical events from the good rows and
    stages one delivery per vendor and event in the ledger. Only when every entity's quarantine
    share is under its threshold are the run's deliveries promoted to ``planned``; otherwise the
    run fails with ``QualityGateError`` and nothing of it is sent. Memory is one chunk.

``deliver(ctx, vendor)``
    drains that vendor account's open deliveries (this run's and any earlier run's retries).

Quarantined rows are resolved (closed in ``storesync_quarantine``) only once the run that passed
them has passed its gate and released their deliveries: a run that fails leaves them open, so the
next run still owes, and plans, their events. So does a row whose staged deliveries another run
planned too, and so took over, before this one's gate (a backfill beside the hourly run): this
run's promote leaves them staged, and the row stays open until a run releases them.

Orders quarantined by earlier runs are looked at again on every run (``plan_order_events``). Those
ids are read *before* the window pass, and each such order is planned from its whole status
history up to ``max(window end, now)``: whether it comes back through this window (a new status
change) or only through the re-check, every event it owes (its placement and each change of the
windows it was held back in) is planned, once, in order. A row that is re-checked and still bad is
neither recorded again nor counted in this run's quarantine share: it belongs to the run that
quarantined it. (An open order that changes in this window is part of this window's batch, and is
counted and recorded as such.)

A dry run does everything but write deliveries: it counts what would be created, updated or
skipped per vendor and keeps a few sample payloads, personal data masked (``mask_sample``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from storesync.core.config import Settings
from storesync.core.windows import Window, to_naive_utc
from storesync.delivery.engine import DeliveryEngine, DeliveryReport
from storesync.delivery.ledger import Ledger, PlannedDelivery
from storesync.pipeline import build
from storesync.pipeline.targets import Target, mask_payload
from storesync.warehouse.models import Warehouse

log = logging.getLogger(__name__)

SAMPLES_PER_EVENT = 3


@dataclass
class EntityStats:
    rows_in: int = 0
    rows_passed: int = 0
    rows_quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)

    @property
    def share(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0


@dataclass
class RecheckStats:
    """Rows of earlier runs' quarantine looked at again: never part of this run's share."""

    checked: int = 0
    passed: int = 0
    quarantined: int = 0


@dataclass
class PlanReport:
    sync_name: str
    run_id: str
    window: Window
    dry_run: bool
    entities: dict[str, EntityStats] = field(default_factory=lambda: defaultdict(EntityStats))
    events: Counter = field(default_factory=Counter)  # canonical events built, by kind
    planned: Counter = field(default_factory=Counter)  # "vendor:event_type" -> new deliveries
    changes: Counter = field(default_factory=Counter)  # "vendor:create|update|unchanged"
    samples: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    # Dry runs: a few quarantined rows per entity, masked, with their reasons.
    quarantine_samples: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    promoted: int = 0
    rechecked: dict[str, RecheckStats] = field(default_factory=lambda: defaultdict(RecheckStats))
    resolved: Counter = field(default_factory=Counter)  # quarantine records closed, by entity
    # Dead status-change deliveries re-planned from the warehouse's changed data, "vendor:event_type".
    healed: Counter = field(default_factory=Counter)
    # Ids open in the quarantine when the run first looked (entity_key text), and those of them
    # that passed in this run, each with the id its deliveries carry (an order line's: its
    # order's): resolved once the gate has passed and none of those deliveries is still staged.
    open_keys: dict[str, set] = field(default_factory=dict, repr=False)
    fixed: dict[str, dict] = field(default_factory=lambda: defaultdict(dict), repr=False)
    # (vendor, account, event type) of every delivery this run staged.
    staged_kinds: set = field(default_factory=set, repr=False)

    def as_dict(self) -> dict:
        return {
            "sync": self.sync_name, "run_id": self.run_id, "window": str(self.window), "dry_run": self.dry_run,
            "entities": {name: {"rows_in": s.rows_in, "passed": s.rows_passed, "quarantined": s.rows_quarantined,
                                "share": round(s.share, 4), "reasons": dict(s.reasons.most_common(10))}
                         for name, s in self.entities.items()},
            "events": dict(self.events), "planned": dict(self.planned), "changes": dict(self.changes),
            "samples": dict(self.samples) if self.dry_run else {}, "promoted": self.promoted,
            "quarantine_samples": dict(self.quarantine_samples) if self.dry_run else {},
            "rechecked": {name: {"checked": s.checked, "passed": s.passed, "quarantined": s.quarantined}
                          for name, s in self.rechecked.items()},
            "resolved": dict(self.resolved), "healed": dict(self.healed),
        }


@dataclass
class SyncContext:
    settings: Settings
    warehouse: Warehouse
    ledger: Ledger
    targets: list[Target]
    run_id: str
    sync_name: str
    dry_run: bool = False
    now: datetime = field(default_factory=datetime.utcnow)
    quarantine: object | None = None  # storesync.quality.QuarantineStore, built lazily
    # False for a run that may plan for some vendors only (a historical day, still owed to one
    # vendor and done for the other): it records the rows it quarantines, but neither re-checks
    # earlier ones nor closes a record, which is owed to every vendor. The live syncs do both.
    owns_quarantine: bool = True

    def quarantine_store(self):
        if self.quarantine is None:
            from storesync.quality import QuarantineStore

            self.quarantine = QuarantineStore(self.ledger.engine)
        return self.quarantine


# ---------------------------------------------------------------------------- the quality gate
def _validate(ctx: SyncContext, entity: str, frame: pd.DataFrame, batch_id: str):
    from storesync.quality import validate_batch

    return validate_batch(entity, frame, run_id=ctx.run_id, batch_id=batch_id, now=ctx.now)


def _account(ctx: SyncContext, report: PlanReport, outcome) -> pd.DataFrame:
    """Count a validated chunk of this run's batch and store its quarantine; return what passed.
    Earlier quarantine records of rows that passed are resolved after the gate (``_gate``)."""
    stats = report.entities[outcome.entity]
    stats.rows_in += outcome.rows_in
    stats.rows_passed += outcome.rows_passed
    stats.rows_quarantined += outcome.rows_quarantined
    stats.reasons.update(outcome.reason_counts())
    if not ctx.dry_run:
        _note_fixed(ctx, report, outcome)
        ctx.quarantine_store().record(outcome, resolve=False)
    else:
        kept = report.quarantine_samples[outcome.entity]
        for row in outcome.quarantined[:max(0, SAMPLES_PER_EVENT - len(kept))]:
            kept.append({"entity_id": str(row.entity_id), "reasons": [mask_sample(r) for r in row.reasons],
                         "row": mask_row(outcome.entity, row.row)})
    return outcome.passed


def _account_recheck(ctx: SyncContext, report: PlanReport, outcome) -> pd.DataFrame:
    """A re-checked chunk of earlier runs' quarantine: counted apart from this run's batch (its
    share is not this run's), still-bad rows left as they are recorded; return what passed."""
    stats = report.rechecked[outcome.entity]
    stats.checked += outcome.rows_in
    stats.passed += outcome.rows_passed
    stats.quarantined += outcome.rows_quarantined
    if not ctx.dry_run:
        _note_fixed(ctx, report, outcome)
    return outcome.passed


def _note_fixed(ctx: SyncContext, report: PlanReport, outcome) -> None:
    """Remember the passed rows that have open quarantine records, to resolve after the gate."""
    from storesync.quality.store import entity_key

    entity = outcome.entity
    if entity not in report.open_keys:
        report.open_keys[entity] = ctx.quarantine_store().open_ids(entity)
    open_keys = report.open_keys[entity]
    if open_keys and outcome.rows_passed:
        keys = [entity_key(i) for i in outcome.passed_ids()]
        column = DELIVERED_AS.get(entity)
        owners = ([entity_key(o) for o in outcome.passed[column].tolist()]
                  if column in outcome.passed.columns else keys)
        report.fixed[entity].update((k, o) for k, o in zip(keys, owners, strict=True) if k in open_keys)


# Rows whose deliveries carry another entity's id: an order line is sent as part of its order.
DELIVERED_AS = {"order_lines": "order_id"}


def _resolve_fixed(ctx: SyncContext, report: PlanReport) -> None:
    """Close the quarantine records of the rows that passed in this run, once none of their
    deliveries is still staged. Another run may have planned the same delivery keys after this one
    and taken the staged rows over (the adoption rule): this run's promote leaves them staged, and
    the record stays open so that a later run re-checks the row and plans (adopts) them again."""
    if not ctx.owns_quarantine:
        return
    store = ctx.quarantine_store()
    for entity, owners in report.fixed.items():
        if not owners:
            continue
        waiting = _still_staged(ctx, report, set(owners.values()))
        keys = sorted(k for k, owner in owners.items() if owner not in waiting)
        if len(keys) < len(owners):
            log.info("%s: %d fixed row(s) left open, their deliveries are staged by another run",
                     entity, len(owners) - len(keys))
        if keys:
            report.resolved[entity] += store.resolve_passed(entity, keys, ctx.run_id)


def _still_staged(ctx: SyncContext, report: PlanReport, entity_ids: set) -> set:
    """Which of ``entity_ids`` (delivery entity ids) have a delivery of a kind this run staged
    that is still ``staged``: one indexed read per kind and chunk (ix_deliveries_entity)."""
    from sqlalchemy import select

    from storesync.delivery.ledger import STAGED, deliveries

    ids = sorted(i for i in entity_ids if i is not None)
    if not ids or not report.staged_kinds:
        return set()
    d = deliveries.c
    found: set = set()
    with ctx.ledger.engine.connect() as conn:
        for vendor, account, event_type in sorted(report.staged_kinds):
            for chunk in _chunks(ids, 500):
                found.update(conn.execute(
                    select(d.entity_id).distinct()
                    .where(d.vendor == vendor, d.event_type == event_type, d.entity_id.in_(chunk),
                           d.account == account, d.state == STAGED)
                ).scalars())
    return found


def _validated(ctx: SyncContext, report: PlanReport, entity: str, frame: pd.DataFrame, batch_id: str):
    return _account(ctx, report, _validate(ctx, entity, frame, batch_id))


def _gate(ctx: SyncContext, report: PlanReport) -> None:
    """Fail the run when an entity's quarantine share passes its threshold; else release it.

    The share is over the whole run (every chunk), so a bad chunk in a large run is judged the
    same as in a small one. The error names entity, share and threshold, never row values."""
    from storesync.quality import DEFAULT_MAX_SHARE, QualityGateError

    thresholds = ctx.settings.quarantine_thresholds
    breaches = []
    for entity, stats in report.entities.items():
        threshold = float(thresholds.get(entity, thresholds.get("*", DEFAULT_MAX_SHARE)))
        if stats.rows_in and stats.share > threshold:
            breaches.append((stats.share - threshold, entity, stats, threshold))
    if breaches:
        _, entity, stats, threshold = max(breaches, key=lambda b: b[0])
        described = "; ".join(
            f"{e}: {s.rows_quarantined}/{s.rows_in} rows quarantined ({s.share:.1%} > {t:.1%}), top reasons: "
            + ", ".join(f"{r} ×{n}" for r, n in s.reasons.most_common(3))
            for _, e, s, t in breaches)
        error = QualityGateError(f"quality gate failed, nothing of run {ctx.run_id} is sent; {described}",
                                 entity=entity, share=stats.share, threshold=threshold,
                                 top_reasons=stats.reasons.most_common(5))
        error.report = report.as_dict()  # what a dry run still shows (counts, reasons, masked samples)
        raise error
    if not ctx.dry_run:
        report.promoted = ctx.ledger.promote(ctx.run_id)
        # Only now: had the run failed, its fixed rows would stay open and the next run would
        # still plan (and so adopt) their staged deliveries. Likewise a row whose deliveries another
        # run took over since (they are still staged): ``_resolve_fixed`` leaves it open.
        _resolve_fixed(ctx, report)


# ---------------------------------------------------------------------------- planning
def _stage(ctx: SyncContext, report: PlanReport, window: Window, planned: Iterable[PlannedDelivery]) -> None:
    planned = list(planned)
    if not planned:
        return
    if ctx.dry_run:
        _count_dry_run(ctx, report, planned)
        return
    _count_changes(ctx, report, planned)
    report.staged_kinds.update((p.vendor, p.account, p.event_type) for p in planned)
    ctx.ledger.plan(planned, sync_name=ctx.sync_name, run_id=ctx.run_id,
                    window_start=window.start, window_end=window.end)


def _count_changes(ctx: SyncContext, report: PlanReport, planned: list[PlannedDelivery]) -> None:
    """Create, update or unchanged, per vendor, from what the ledger already holds for the entity."""
    by_kind: dict[tuple, list[PlannedDelivery]] = defaultdict(list)
    for item in planned:
        by_kind[(item.vendor, item.account, item.event_type)].append(item)
    for (vendor, account, event_type), items in by_kind.items():
        known = ctx.ledger.known_versions(vendor, account, event_type, [i.entity_id for i in items])
        for item in items:
            previous = known.get(str(item.entity_id))
            if previous is None:
                kind = "create"
            elif previous == str(item.version):
                kind = "unchanged"
            else:
                kind = "update"
            report.changes[f"{vendor}:{kind}"] += 1
            if kind != "unchanged":
                report.planned[f"{vendor}:{event_type}"] += 1


def _count_dry_run(ctx: SyncContext, report: PlanReport, planned: list[PlannedDelivery]) -> None:
    _count_changes(ctx, report, planned)
    for item in planned:
        key = f"{item.vendor}:{item.event_type}"
        if len(report.samples[key]) < SAMPLES_PER_EVENT:
            report.samples[key].append({"endpoint": item.endpoint, "payload": mask_sample(item.payload)})


# ---------------------------------------------------------------------------- masking samples
MASK = "***"

# Keys (lowercased, without "_", "-" or spaces) whose values are personal data: names, phone
# numbers, street addresses and postcodes, IP addresses, birthdays. Product names (``title``,
# ``product_name``), cities, countries, amounts and ids stay visible.
PERSONAL_KEYS = frozenset({
    "name", "fullname", "firstname", "lastname", "middlename", "customername", "billingname",
    "shippingname", "phone", "phonenumber", "mobile", "mobilephone", "mobilenumber", "cell",
    "cellphone", "telephone", "tel", "sms", "smsnumber", "fax", "address", "address1", "address2",
    "addressline1", "addressline2", "street", "streetaddress", "line1", "line2", "postalcode",
    "postcode", "zip", "zipcode", "ip", "ipaddress", "clientip", "browserip", "remoteip", "userip",
    "birthday", "birthdate", "dateofbirth", "dob",
})
# A labelled value, as in Sendlane's custom fields: ``{"key": "phone", "value": "..."}``.
FIELD_LABELS = ("key", "name", "field")

_IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6_RE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")


def _norm(key) -> str:
    return re.sub(r"[\s_\-]", "", str(key)).lower()


def _mask_ip(match: re.Match) -> str:
    try:
        ipaddress.ip_address(match.group(0))
    except ValueError:
        return match.group(0)  # 12:30:45, a version number: not an address
    return MASK


def _mask_text(text: str) -> str:
    return _IPV6_RE.sub(_mask_ip, _IPV4_RE.sub(_mask_ip, text))


def _mask_personal(value, personal: bool = False):
    if isinstance(value, dict):
        label = next((value[k] for k in FIELD_LABELS if isinstance(value.get(k), str)), None)
        labelled = "value" in value and label is not None and _norm(label) in PERSONAL_KEYS
        out = {}
        for key, item in value.items():
            if labelled and key in FIELD_LABELS and item == label:
                out[key] = item  # the field's name is structure, not data
            else:
                out[key] = _mask_personal(item, personal or _norm(key) in PERSONAL_KEYS
                                          or (labelled and key == "value"))
        return out
    if isinstance(value, list | tuple):
        return [_mask_personal(item, personal) for item in value]
    if value is None or isinstance(value, bool):
        return value
    if personal:
        return MASK
    return _mask_text(value) if isinstance(value, str) else value


def mask_sample(payload):
    """A payload for people to look at (dry-run samples): credentials never shown, emails
    masked (``b***@example.com``), and the other personal data (names, phone numbers, street
    addresses and postcodes, IP addresses, birthdays) replaced by ``***``. Keys, nesting, ``None``
    values and the non-personal fields (products, amounts, ids, dates, cities, countries) stay as
    they are, so the sample still shows what would be sent."""
    return _mask_personal(mask_payload(payload))


def mask_row(model: str, row: dict) -> dict:
    """A warehouse row for people to look at (a dry run's quarantined rows): ``mask_sample``, and
    every column the models contract calls personal masked whatever it holds (a malformed email,
    which is why such a row is quarantined, is no email to the patterns)."""
    from storesync.warehouse.check import MASK as MASKED, mask_email
    from storesync.warehouse.contract import CONTRACTS

    masked = mask_sample(row)
    spec = CONTRACTS.get(model)
    for name, value in masked.items():
        column = spec.column(name) if spec is not None else None
        if column is not None and column.personal and value is not None:
            masked[name] = mask_email(value) if isinstance(value, str) else MASKED
    return masked


def _new_report(ctx: SyncContext, window: Window) -> PlanReport:
    ctx.ledger.start_run(ctx.run_id, ctx.sync_name, window_start=window.start, window_end=window.end,
                         dry_run=ctx.dry_run)
    return PlanReport(ctx.sync_name, ctx.run_id, window, ctx.dry_run)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _checked_orders(ctx: SyncContext, order_ids: list, batch: str):
    """Orders and their lines for a chunk, through the gate (outcomes, not yet accounted). An order
    with a bad line is held back whole (its line items and totals would be wrong), with the
    line's reason."""
    from dataclasses import replace

    from storesync.quality import QuarantinedRow

    wh = ctx.warehouse
    orders = _validate(ctx, "orders", wh.for_ids("orders", order_ids), batch)
    lines = _validate(ctx, "order_lines", wh.for_ids("order_lines", order_ids), batch)
    bad_line_orders = {row.row.get("order_id") for row in lines.quarantined}
    if bad_line_orders:
        held = orders.passed["order_id"].isin(bad_line_orders)
        if held.any():
            held_rows = [QuarantinedRow("orders", r["order_id"],
                                        ["order_line_quarantined: a line of this order failed the gate"], r)
                         for r in orders.passed[held].to_dict("records")]
            orders = replace(orders, passed=orders.passed[~held].reset_index(drop=True),
                             quarantined=[*orders.quarantined, *held_rows])
    return orders, lines


def plan_order_events(ctx: SyncContext, window: Window, *, historical: bool = False) -> PlanReport:
    """Orders whose status changed in the window → placed/fulfilled/cancelled/refunded events;
    then the orders earlier runs quarantined, re-checked (see the module's docstring)."""
    from storesync.quality.store import entity_key

    report = _new_report(ctx, window)
    size = ctx.settings.chunk_size
    # Before the window pass: an open order that passes in it must be planned from its whole
    # history too, and it is no longer open once it has passed.
    owed = {entity_key(i): i for i in _open_quarantine_ids(ctx, "orders")} if ctx.owns_quarantine else {}
    # Up to now, not to the window's end: a late rerun of an old window must not leave the
    # changes of the windows after it behind (the order will not be re-checked again).
    history_end = max(window.end, to_naive_utc(ctx.now))
    held_lines: set = set()  # line ids quarantined through their order's chunk in this run
    for n, changes in enumerate(ctx.warehouse.stream_order_changes(window, size)):
        order_ids = changes["order_id"].unique().tolist()
        reopened = [owed.pop(k) for k in dict.fromkeys(map(entity_key, order_ids)) if k in owed]
        if reopened:
            changes = _with_history(ctx, changes, reopened, history_end)
        orders, lines = _checked_orders(ctx, order_ids, f"orders-{n}")
        held_lines.update(entity_key(row.entity_id) for row in lines.quarantined)
        _plan_orders(ctx, report, window, changes, _account(ctx, report, orders),
                     _account(ctx, report, lines), historical)
    _quarantine_orphan_lines(ctx, report, window, held_lines)
    # The rest of them get another look: fixed ones pass and are sent now; the others stay as
    # their own runs recorded them, outside this run's share.
    for n, ids in enumerate(_chunks(list(owed.values()), size)):
        changes = ctx.warehouse.for_ids("order_history", ids, window_end=history_end)
        orders, lines = _checked_orders(ctx, ids, f"orders-recheck-{n}")
        _plan_orders(ctx, report, window, changes, _account_recheck(ctx, report, orders),
                     _account_recheck(ctx, report, lines), historical)
    if ctx.owns_quarantine and not ctx.dry_run:
        heal_dead_orders(ctx, report, window, history_end)
    _gate(ctx, report)
    return report


def heal_dead_orders(ctx: SyncContext, report: PlanReport, window: Window, history_end: datetime, *,
                     order_ids: Iterable | None = None) -> None:
    """Orders with a dead delivery (it could not be mapped, or the vendor rejected its data) are
    re-built from the warehouse's current data and planned again (``Ledger.replan_dead``): a
    delivery whose payload changed gets a revision that supersedes the dead one once the gate
    passes; an unchanged one stays dead. Reads only the orders with dead rows (``order_ids``:
    only these of them). Each is checked by the gate; one that fails it now is left as it is."""
    dead: dict[str, set] = defaultdict(set)  # order id -> whether its dead rows were live, historical
    for target in ctx.targets:
        for entity_id, flags in ctx.ledger.dead_order_entities(target.vendor, target.account).items():
            dead[entity_id] |= flags
    if order_ids is not None:
        wanted = {str(i) for i in order_ids}
        dead = {i: f for i, f in dead.items() if i in wanted}
    # A dead historical event is re-built as historical (its payload carries the past time), a
    # live one as live: the ledger re-plans a dead row only from an event of its own kind.
    for historical in (False, True):
        ids = sorted((int(i) if i.isdigit() else i for i, f in dead.items() if historical in f), key=str)
        for n, chunk in enumerate(_chunks(ids, ctx.settings.chunk_size)):
            changes = ctx.warehouse.for_ids("order_history", chunk, window_end=history_end)
            orders, lines = _checked_orders(ctx, chunk, f"orders-heal-{n}")
            events = list(build.order_events(changes, orders.passed, lines.passed, historical=historical))
            planned = [p for e in events for t in ctx.targets for p in t.plan_order(e)]
            healed = ctx.ledger.replan_dead(planned, sync_name=ctx.sync_name, run_id=ctx.run_id,
                                            window_start=window.start, window_end=window.end)
            report.healed.update(healed)
            report.planned.update(healed)
    if report.healed:
        log.info("re-planned %d dead deliveries from the warehouse's changed data: %s",
                 sum(report.healed.values()), dict(report.healed))


def _quarantine_orphan_lines(ctx: SyncContext, report: PlanReport, window: Window, held: set) -> None:
    """Lines recorded in the window whose order does not exist: never read through an order, so
    read on their own (the bounded ``orphan_order_lines`` model) and quarantined with their reason,
    counted in the run's ``order_lines``. A line already held through its order's chunk (a status
    change of an order with no header) is not counted twice."""
    from storesync.quality.store import entity_key

    for n, frame in enumerate(ctx.warehouse.stream("orphan_order_lines", window, ctx.settings.chunk_size)):
        if held:
            frame = frame[~frame["line_id"].map(entity_key).isin(held)].reset_index(drop=True)
        if len(frame):
            _validated(ctx, report, "order_lines", frame, f"orphan-lines-{n}")


def _with_history(ctx: SyncContext, changes: pd.DataFrame, order_ids: list, end) -> pd.DataFrame:
    """The chunk's changes, with these orders' whole history (up to ``end``) in place of their
    changes of the window, ordered by order and position in its history."""
    from storesync.quality.store import entity_key

    keys = {entity_key(i) for i in order_ids}
    history = ctx.warehouse.for_ids("order_history", order_ids, window_end=end)
    kept = changes[~changes["order_id"].map(entity_key).isin(keys)]
    frames = [frame for frame in (kept, history) if len(frame)]
    merged = pd.concat(frames, ignore_index=True) if frames else changes.iloc[0:0]
    return merged.sort_values(["order_id", "seq"], kind="stable", ignore_index=True)


def _plan_orders(ctx, report, window, changes, orders, lines, historical) -> None:
    events = list(build.order_events(changes, orders, lines, historical=historical))
    report.events.update(f"order_{e.kind}" for e in events)
    _stage(ctx, report, window, (p for e in events for t in ctx.targets for p in t.plan_order(e)))


def _open_quarantine_ids(ctx: SyncContext, entity: str) -> list:
    """Ids of ``entity`` with open quarantine records, whichever run recorded them (a retry of
    this very run included: its earlier attempt may have re-recorded an order owed from before)."""
    if ctx.dry_run:
        return []
    ids = {row["entity_id"] for row in ctx.quarantine_store().open_rows(entity)
           if row.get("entity_id") is not None}
    return sorted((int(i) if str(i).isdigit() else i for i in ids), key=str)


def plan_customers(ctx: SyncContext, window: Window, *, ltv_vars: dict | None = None,
                   historical: bool = False, ltv_lookup=None) -> PlanReport:
    """Customers changed in the window → customer added / profiles (and list contacts).

    Profile fields (LTV) come from ``ltv_vars`` (``{customer_id: {name: value}}``) and/or
    ``ltv_lookup``, a callable ``customer_ids -> {customer_id: {name: value}}`` called once per
    chunk, so a large customer base never has to sit in memory."""
    report = _new_report(ctx, window)
    for n, frame in enumerate(ctx.warehouse.stream("customers", window, ctx.settings.chunk_size)):
        passed = _validated(ctx, report, "customers", frame, f"customers-{n}")
        chunk_vars = ltv_vars
        if ltv_lookup is not None and len(passed):
            chunk_vars = {**(ltv_vars or {}), **ltv_lookup(passed["customer_id"].tolist())}
        events = list(build.customer_events(passed, vars_by_customer=chunk_vars, historical=historical))
        report.events["customer"] += len(events)
        _stage(ctx, report, window, (p for e in events for t in ctx.targets for p in t.plan_customer(e)))
    _gate(ctx, report)
    return report


def plan_products(ctx: SyncContext, window: Window, *, historical: bool = False,
                  version_salt: str | None = None) -> PlanReport:
    """Products changed in the window; the nightly full sync passes ``Window.everything_before``.

    ``version_salt`` (a forced full resend) gives every delivery a version of its own, so even
    unchanged products are sent again, once per salt."""
    report = _new_report(ctx, window)
    for n, frame in enumerate(ctx.warehouse.stream("products", window, ctx.settings.chunk_size)):
        passed = _validated(ctx, report, "products", frame, f"products-{n}")
        variants = ctx.warehouse.for_ids("product_variants", passed["product_id"].tolist()) if len(passed) \
            else pd.DataFrame()
        events = list(build.product_events(passed, variants, historical=historical))
        report.events["product"] += len(events)
        planned = (p for e in events for t in ctx.targets for p in t.plan_product(e))
        if version_salt:
            planned = (_salted(p, version_salt) for p in planned)
        _stage(ctx, report, window, planned)
    _gate(ctx, report)
    return report


def _salted(item: PlannedDelivery, salt: str) -> PlannedDelivery:
    import hashlib

    item.version = f"{item.version}~{hashlib.sha256(salt.encode()).hexdigest()[:12]}"
    return item


def plan_checkouts(ctx: SyncContext, window: Window, *, reminders: bool = True) -> PlanReport:
    """Checkouts changed in the window: open ones become reminders, completed ones clear them.

    ``reminders=False`` plans only the clearing calls (a backfill of carts too old to remind)."""
    report = _new_report(ctx, window)
    for n, frame in enumerate(ctx.warehouse.stream("checkouts", window, ctx.settings.chunk_size)):
        passed = _validated(ctx, report, "checkouts", frame, f"checkouts-{n}")
        lines = ctx.warehouse.for_ids("checkout_lines", passed["checkout_id"].tolist()) if len(passed) \
            else pd.DataFrame()
        events = list(build.checkout_events(passed, lines))
        if not reminders:
            report.events["checkout_open_too_old"] += sum(1 for e in events if not e.completed)
            events = [e for e in events if e.completed]
        report.events.update("checkout_completed" if e.completed else "checkout_open" for e in events)
        _stage(ctx, report, window, (p for e in events for t in ctx.targets for p in t.plan_checkout(e)))
    _gate(ctx, report)
    return report


# ---------------------------------------------------------------------------- delivery
def deliver(ctx: SyncContext, vendor: str) -> DeliveryReport:
    target = next((t for t in ctx.targets if t.vendor == vendor), None)
    if target is None:
        raise ValueError(f"no target configured for vendor {vendor!r}")
    # A credential corrected in its connection: this sync's rows planned under the wrong one's key
    # (refused by the vendor, never an account) continue under the right one, with no command.
    ctx.ledger.adopt_unproven_accounts(vendor, target.account, sync_name=ctx.sync_name)
    engine = DeliveryEngine(ctx.ledger, target.sender(limiter_engine=ctx.ledger.engine), run_id=ctx.run_id,
                            concurrency=ctx.settings.concurrency)
    return engine.run()
