"""The exactly-once proof shared by the end-to-end tests: what the warehouse owes each vendor for
a window's order changes, against what the vendor (the emulator) recorded.

``assert_orders_delivered_exactly_once(emulator, warehouse_url, window)`` checks both vendors for
both halves of the promise:

- no duplicates: nothing the vendors recorded twice by their own semantics
  (``emulator.duplicates()``), every Sailthru purchase recorded once per order;
- complete: every order event the window's status changes owe reached Sendlane (by event and
  order id: Sendlane de-duplicates on exactly that), every placed order is one Sailthru purchase
  (by ``extid``), every cancellation or refund one Sailthru return; and nothing arrived that the
  window does not owe.

What is owed comes from the warehouse's own model (``order_changes``) and the documented rule
(the first change of an order is its placement; fulfilled/completed, cancelled and refunded are
events), not from the ledger: a delivery the ledger never planned is a loss too. The window's
orders must all pass the quality gate (a demo store with ``bad_share=0``).

Importable from any test (``tests/`` is on the path through its conftest):
``from exactly_once_proof import assert_orders_delivered_exactly_once``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from storesync.core.config import DEFAULT_MODELS_DIR, DEFAULT_SENDLANE_EVENT_PATHS
from storesync.core.windows import Window

# The documented status rule (``storesync.pipeline.build.DEFAULT_STATUS_EVENTS``), spelt out here
# so the proof does not borrow the code it judges.
STATUS_EVENTS = {"fulfilled": "fulfilled", "completed": "fulfilled", "cancelled": "cancelled",
                 "refunded": "refunded"}
ORDER_EVENT_PATHS = {kind: DEFAULT_SENDLANE_EVENT_PATHS[f"order_{kind}"]
                     for kind in ("placed", "fulfilled", "cancelled", "refunded")}


@dataclass
class Owed:
    """What one window's order changes owe the vendors."""

    sendlane_events: set = field(default_factory=set)  # (path, order id)
    sailthru_purchases: set = field(default_factory=set)  # order ids (extid)
    sailthru_returns: Counter = field(default_factory=Counter)  # order id -> returns owed

    @property
    def total(self) -> int:
        return len(self.sendlane_events) + len(self.sailthru_purchases) + sum(self.sailthru_returns.values())


def owed_by_warehouse(warehouse_url: str, window: Window, models_dir=DEFAULT_MODELS_DIR) -> Owed:
    from storesync.warehouse.models import Warehouse

    owed = Owed()
    for frame in Warehouse(warehouse_url, models_dir).stream("order_changes", window, 50_000):
        for order_id, status, seq in zip(frame["order_id"], frame["status"], frame["seq"]):
            kind = "placed" if int(seq) == 1 else STATUS_EVENTS.get(status)
            if kind is None:
                continue
            order_id = str(order_id)
            owed.sendlane_events.add((ORDER_EVENT_PATHS[kind], order_id))
            if kind == "placed":
                owed.sailthru_purchases.add(order_id)
            elif kind in ("cancelled", "refunded"):
                owed.sailthru_returns[order_id] += 1
    return owed


@dataclass
class Recorded:
    """What the vendors recorded (repeats a vendor skipped are not records)."""

    sendlane_events: Counter
    sailthru_purchases: Counter
    sailthru_returns: Counter
    duplicates: dict


def recorded_by_vendors(emulator) -> Recorded:
    order_paths = set(ORDER_EVENT_PATHS.values())
    sendlane = Counter((r["endpoint"], str(r["entity_id"]))
                       for r in emulator.requests(vendor="sendlane", method="POST", recorded=True)
                       if r["endpoint"] in order_paths)
    purchases, returns = Counter(), Counter()
    for r in emulator.requests(vendor="sailthru", method="POST", recorded=True):
        body = r.get("body") or {}
        extid = str((body.get("purchase_keys") or {}).get("extid") or body.get("extid") or r["entity_id"])
        if r["endpoint"] == "/purchase" and not body.get("incomplete"):
            purchases[extid] += 1
        elif r["endpoint"] == "/return":
            returns[extid] += 1
    return Recorded(sendlane, purchases, returns, emulator.duplicates())


def exactly_once_problems(owed: Owed, recorded: Recorded,
                          vendors: tuple[str, ...] = ("sendlane", "sailthru")) -> list[str]:
    """Every way the vendors' records differ from what is owed (empty: exactly once)."""
    problems = []
    duplicates = {v: d for v, d in recorded.duplicates.items() if v in vendors}
    if duplicates:
        problems.append(f"recorded twice by the vendors: {duplicates}")
    if "sendlane" in vendors:
        problems += _sendlane_problems(owed, recorded)
    if "sailthru" in vendors:
        problems += _sailthru_problems(owed, recorded)
    return problems


def _sendlane_problems(owed: Owed, recorded: Recorded) -> list[str]:
    problems = []
    lost = owed.sendlane_events - set(recorded.sendlane_events)
    extra = set(recorded.sendlane_events) - owed.sendlane_events
    if lost:
        problems.append(f"{len(lost)} Sendlane order events lost, e.g. {sorted(lost)[:5]}")
    if extra:
        problems.append(f"{len(extra)} Sendlane order events not owed, e.g. {sorted(extra)[:5]}")
    twice = {e: n for e, n in recorded.sendlane_events.items() if n > 1}
    if twice:
        problems.append(f"Sendlane recorded order events more than once: {list(twice.items())[:5]}")
    return problems


def _sailthru_problems(owed: Owed, recorded: Recorded) -> list[str]:
    problems = []
    purchases_owed = Counter({order: 1 for order in owed.sailthru_purchases})
    for name, want, got in (("purchases", purchases_owed, recorded.sailthru_purchases),
                            ("returns", owed.sailthru_returns, recorded.sailthru_returns)):
        if want - got:
            problems.append(f"{sum((want - got).values())} Sailthru {name} lost, e.g. {sorted(want - got)[:5]}")
        if got - want:
            problems.append(f"{sum((got - want).values())} Sailthru {name} too many (duplicated or not owed), "
                            f"e.g. {sorted(got - want)[:5]}")
    return problems


def assert_orders_delivered_exactly_once(emulator, warehouse_url: str, window: Window, *,
                                         at_least: int = 1,
                                         vendors: tuple[str, ...] = ("sendlane", "sailthru")) -> Owed:
    """Both vendors (or ``vendors``), duplicates and completeness, for the window's order changes;
    ``at_least`` deliveries must be owed (a proof over nothing proves nothing). Returns what was
    owed."""
    owed = owed_by_warehouse(warehouse_url, window)
    assert owed.total >= at_least, f"the window owes only {owed.total} order deliveries"
    problems = exactly_once_problems(owed, recorded_by_vendors(emulator), vendors)
    assert not problems, "\n".join(problems)
    return owed
