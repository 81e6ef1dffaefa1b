"""The fault suite (``make chaos``): faults, a crash and concurrent senders, then ordinary reruns only.

For each vendor, against the emulator, on the demo store, over three daily windows:

1. window 1 synced under 20% 5xx (500/502/503) and 10% drop-after-accept (the vendor records the
   request, the client gets no answer);
2. window 2 synced into a 429 storm (a counted storm: the next N requests get 429);
3. window 3 synced by a real subprocess that is ``kill -9``-ed mid-delivery (once the vendor has
   recorded part of the window), then synced by two subprocesses at once on the same account
   (the order-events and checkouts syncs, as two DAGs would), under the faults of step 1;
4. then only ordinary reruns, as a scheduler makes them: the faults stop, the runs that failed (the
   killed one) are retried, and the next night's nightly sync runs (``run_nightly``, the functions
   the DAGs call; its delivery drains every open row of the account), up to ``max_reruns`` nights
   until nothing is left to send. No reconcile, no move-account, no SQL, no command by hand.

The judge is independent of the ledger: the same windows synced into a second, fault-free
emulator are what the warehouse owes. Per vendor it prints
- duplicates: what the vendor recorded twice by its own semantics (``/_emulator/duplicates``);
- lost: owed and not recorded, and not held either (silently lost): every order event, purchase
  and return; the latest product, profile, checkout and cart;
- held: deliveries left unknown for a person (``storesync.delivery.remedies``);
- manual steps: the commands a person must run to settle them (0 when nothing is held);
and exits 1 unless all four are 0 for every vendor. It prints too how many held rows each rule
settled without a person (``storesync.delivery.settle``: superseded by a newer version or by the
contact's order, a contact read's arrival or resend), and how many of the checkouts superseded by
an order had in fact arrived (not owed either way: docs/exactly-once.md).

    python -m storesync.chaos [--orders 2000] [--days 14] [--seed 7] [--vendors sendlane sailthru]
                              [--contact-read absence|presence|off]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

VENDORS = ("sendlane", "sailthru")
FAULTS = {"error_rate": 0.2, "error_statuses": [500, 502, 503], "drop_after_rate": 0.1}
EMULATOR_LIMIT = 6000  # per minute: the faults are the subject here, not the budget
KILL_LATENCY_MS = 40  # slows window 3's sending so the kill lands mid-delivery
CONTACT_DELAY_S = 0.5  # the emulator finds a contact this long after accepting its event
SENDLANE_GRACE_S = 2.0  # storesync's grace before reading (600 s against the vendor)


@dataclass
class VendorFigures:
    vendor: str
    duplicates: int = 0
    lost: int = 0
    held: int = 0
    manual_steps: int = 0
    still_open: int = 0  # not settled after the reruns (neither accepted nor held)
    owed: int = 0
    recorded: int = 0
    held_by_event: dict = field(default_factory=dict)
    lost_examples: list = field(default_factory=list)
    duplicate_examples: dict = field(default_factory=dict)
    faults_injected: dict = field(default_factory=dict)
    killed_mid_delivery: bool = False
    reruns: int = 0
    # Held rows a rule settled without a person (Sendlane: storesync.delivery.settle), by rule, and
    # of the superseded ones how many the vendor in fact had (judged, never counted as accepted).
    settled: dict = field(default_factory=dict)
    held_arrived: int = 0  # of the held rows, how many the vendor in fact has (a person would find)
    superseded_arrived: int = 0
    superseded_not_arrived: int = 0
    # Deliveries that waited for their person's customer_added to be read (ledger.PERSON_WAIT_EVENTS),
    # and how many people that was.
    person_waits: int = 0
    people_waited: int = 0

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.lost or self.held or self.manual_steps or self.still_open)


@dataclass
class ChaosReport:
    figures: dict[str, VendorFigures]
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.figures.values())

    def text(self) -> str:
        from storesync.delivery.remedies import held_remedy

        lines = [f"{'vendor':<10}{'duplicates':>11}{'lost':>6}{'held':>6}{'manual steps':>14}{'open':>6}"
                 f"{'owed':>7}{'recorded':>10}  faults injected"]
        for f in self.figures.values():
            faults = ", ".join(f"{k} {v}" for k, v in sorted(f.faults_injected.items()))
            lines.append(f"{f.vendor:<10}{f.duplicates:>11}{f.lost:>6}{f.held:>6}{f.manual_steps:>14}"
                         f"{f.still_open:>6}{f.owed:>7}{f.recorded:>10}  {faults}"
                         + ("" if f.killed_mid_delivery else "  (the kill -9 found nothing in flight)"))
        for f in self.figures.values():
            if f.settled:
                rules = ", ".join(f"{rule} {n}" for rule, n in sorted(f.settled.items()))
                lines += ["", f"{f.vendor}: held rows settled by a rule, no person: {rules}"
                          + (f" (of the superseded, {f.superseded_arrived} had arrived, "
                             f"{f.superseded_not_arrived} had not: moot either way, see docs/exactly-once.md)"
                             if f.superseded_arrived + f.superseded_not_arrived else "")]
            if f.person_waits:
                lines += [f"{f.vendor}: {f.person_waits} deliveries of {f.people_waited} people waited for "
                          "their customer_added's read (sent by the run after it), none of anyone else's"]
            if f.held:
                lines += ["", held_remedy(f.vendor, f.held_by_event),
                          f"  ({f.held_arrived} of the {f.held} had in fact arrived)"]
            if f.lost_examples:
                lines += ["", f"{f.vendor}: lost, e.g. {', '.join(map(str, f.lost_examples[:10]))}"]
            if f.duplicate_examples:
                lines += ["", f"{f.vendor}: duplicates {json.dumps(f.duplicate_examples)[:500]}"]
        lines += ["", f"chaos {'passed' if self.ok else 'FAILED'}: duplicates, lost, held and manual steps "
                      f"{'all 0' if self.ok else 'not all 0'} ({self.elapsed_s:.0f} s)"]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- the judge's keys
def _digest(body: dict) -> str:
    body = {k: v for k, v in body.items() if k != "token"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_key(vendor: str, endpoint: str, body: dict) -> tuple[str, tuple, str] | None:
    """``(kind, key, digest)`` of one request's effect at the vendor: ``change`` (each one is owed:
    order events, purchases, returns) or ``latest`` (the entity's latest content is owed)."""
    if endpoint.startswith("/lists/"):
        emails = tuple(sorted(c.get("email", "").lower() for c in body.get("contacts", [])))
        return "latest", ("contacts", emails), _digest(body)
    if vendor == "sendlane":
        if endpoint.startswith("/tracking/order-"):
            return "change", (endpoint, str(body.get("order_id"))), ""
        for id_field in ("product_id", "customer_id", "checkout_id", "cart_id"):
            if id_field in body:
                return "latest", (endpoint, str(body[id_field])), _digest(body)
        return "change", (endpoint, _digest(body)), ""
    if endpoint == "/purchase":
        if body.get("incomplete"):
            return "latest", ("cart", str(body.get("email", "")).lower()), _digest(body)
        extid = (body.get("purchase_keys") or {}).get("extid") or body.get("extid")
        return "change", (endpoint, str(extid)), ""
    if endpoint == "/return":
        return "change", (endpoint, _digest(body)), ""
    if endpoint in ("/content", "/user"):
        return "latest", (endpoint, str(body.get("url") or body.get("id"))), _digest(body)
    return None


def vendor_state(records: list[dict], vendor: str) -> tuple[set, dict]:
    """What the vendor holds: the set of change keys, and each latest key's last digest."""
    changes, latest = set(), {}
    for rec in records:
        if rec["method"] != "POST" or rec.get("skipped") or rec.get("body") is None:
            continue
        key = record_key(vendor, _endpoint(rec), rec["body"])
        if key is None:
            continue
        kind, ident, digest = key
        if kind == "change":
            changes.add(ident)
        else:
            latest[ident] = digest
    return changes, latest


def _endpoint(rec: dict) -> str:
    endpoint = rec["endpoint"]
    return f"/lists/{rec['list_id']}/contacts" if endpoint == "/lists/{list_id}/contacts" else endpoint


# ---------------------------------------------------------------------------- running syncs
def _settings(workdir: Path, emu, name: str, vendors: tuple[str, ...], contact_read: str | None = None):
    from storesync.core.config import SailthruSettings, SendlaneSettings, Settings

    return Settings(
        warehouse_url=f"sqlite:///{workdir / 'store.db'}",
        ledger_url=f"sqlite:///{workdir / f'ledger-{name}.db'}",
        concurrency=8,
        # Sendlane makes a contact CONTACT_DELAY_S after it accepted the event (asynchronous
        # processing): the grace before a held row's rules and contact read run covers that.
        sendlane=SendlaneSettings(base_url=emu.sendlane_url, api_token=emu.sendlane_api_token,
                                  integration_token=emu.sendlane_integration_token,
                                  budget_per_minute=EMULATOR_LIMIT, unknown_grace_s=SENDLANE_GRACE_S,
                                  contact_read=contact_read or SendlaneSettings.contact_read),
        # The emulator records a request before it answers (an injected 502 was never processed), so
        # a lookup finding nothing is final at once; against the vendor the grace is 120 s.
        sailthru=SailthruSettings(base_url=emu.sailthru_url, api_key=emu.sailthru_api_key,
                                  secret=emu.sailthru_secret, budget_per_minute=EMULATOR_LIMIT,
                                  unknown_grace_s=0),
    )


def _settings_spec(settings) -> dict:
    spec = {"warehouse_url": settings.warehouse_url, "ledger_url": settings.ledger_url,
            "concurrency": settings.concurrency}
    for vendor in VENDORS:
        vs = getattr(settings, vendor)
        spec[vendor] = {k: (v.reveal() if hasattr(v, "reveal") else v) for k, v in asdict(vs).items()
                        if k != "event_paths"}
    return spec


def _settings_from_spec(spec: dict):
    from storesync.core.config import SailthruSettings, SendlaneSettings, Settings

    return Settings(warehouse_url=spec["warehouse_url"], ledger_url=spec["ledger_url"],
                    concurrency=spec["concurrency"], sendlane=SendlaneSettings(**spec["sendlane"]),
                    sailthru=SailthruSettings(**spec["sailthru"]))


def _windows(end: datetime, count: int = 3):
    from storesync.core.windows import Window

    day = timedelta(days=1)
    return [Window(end - (count - i) * day, end - (count - i - 1) * day) for i in range(count)]


def _nightly(settings, window, vendor: str | tuple[str, ...], run_id: str) -> dict:
    from storesync.pipeline.jobs import run_nightly

    try:
        vendors = (vendor,) if isinstance(vendor, str) else vendor
        return run_nightly(settings, window, run_id=run_id, vendors=vendors)
    except Exception as exc:  # noqa: BLE001 - a failed run is what a scheduler sees: it reruns
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def _worker(spec: dict) -> int:
    """One sync in its own process (``--worker``): the nightly sync, or one DAG's sync."""
    from storesync.core.windows import Window
    from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity

    settings = _settings_from_spec(spec["settings"])
    window = Window(datetime.fromisoformat(spec["start"]), datetime.fromisoformat(spec["end"]))
    vendor = spec["vendor"]
    if spec["sync"] == "nightly":
        print(json.dumps(_nightly(settings, window, vendor, spec["run_id"]), default=str)[:2000])
        return 0
    ctx = open_context(settings, run_id=spec["run_id"], sync_name=spec["sync"], vendors=(vendor,))
    plan_entity(ctx, spec["entity"], window)
    print(json.dumps(deliver_vendor(ctx, vendor), default=str)[:2000])
    return 0


def _spawn(settings, window, vendor: str, run_id: str, sync: str = "nightly", entity: str | None = None):
    spec = {"settings": _settings_spec(settings), "start": window.start.isoformat(),
            "end": window.end.isoformat(), "vendor": vendor, "run_id": run_id, "sync": sync, "entity": entity}
    return subprocess.Popen([sys.executable, "-m", "storesync.chaos", "--worker", json.dumps(spec)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _recorded(emu, vendor: str) -> int:
    return len(emu.requests(vendor=vendor, method="POST"))


def _kill_mid_delivery(emu, settings, window, vendor: str, owed_in_window: int,
                       timeout_s: float = 300) -> bool:
    """Sync ``window`` in a subprocess and SIGKILL it once the vendor recorded part of it (event
    driven: the emulator's own count, not a timer). True when it died mid-delivery."""
    before = _recorded(emu, vendor)
    target = before + max(3, owed_in_window // 3)
    emu.set_faults(latency_ms=KILL_LATENCY_MS, vendors=[vendor])
    process = _spawn(settings, window, vendor, f"chaos-{vendor}-killed")
    deadline = time.monotonic() + timeout_s
    killed = False
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if _recorded(emu, vendor) >= target:
                process.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)  # polling the vendor's count; the kill point is the count, not the time
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()  # reaped: a zombie would still look alive to the ledger's owner check
        emu.clear_faults()
    return killed


def _concurrent_syncs(emu, settings, window, vendor: str, seed: int) -> bool:
    """The order-events and checkouts syncs sending at once on one account (two DAGs), under
    faults. True when both finished without failing."""
    emu.set_faults(**FAULTS, vendors=[vendor], seed=seed + 1)
    processes = [_spawn(settings, window, vendor, f"chaos-{vendor}-orders", "order_events", "orders"),
                 _spawn(settings, window, vendor, f"chaos-{vendor}-checkouts", "checkouts", "checkouts")]
    codes = [process.wait() for process in processes]
    emu.clear_faults()
    return not any(codes)


# ---------------------------------------------------------------------------- the suite
def run_chaos(workdir: Path, *, orders: int = 2000, days: int = 14, seed: int = 7,
              vendors: tuple[str, ...] = VENDORS, windows: int = 3, storm_requests: int = 40,
              max_reruns: int = 4, contact_read: str | None = None, log=print) -> ChaosReport:
    """The suite (see the module's docstring). ``windows=2`` is the short form: the storm opens
    window 1's faults instead of having a window of its own (the CI test's)."""
    from storesync.delivery.ledger import OPEN_STATES, UNKNOWN, Ledger
    from storesync.core.windows import Window
    from storesync.delivery.remedies import HELD, classify_unknown
    from storesync.emulator.testing import start_emulator
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    if windows not in (2, 3):
        raise ValueError("windows must be 2 or 3")
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    end = datetime(2026, 11, 20)
    generate_demo_store(f"sqlite:///{workdir / 'store.db'}",
                        DemoStoreSpec(orders=orders, seed=seed, end=end, days=days, bad_share=0.0))
    spans = _windows(end, windows)
    storm = {"storm": {"requests": storm_requests, "reset_s": 1}}
    limits = {"sendlane_rate_limit": EMULATOR_LIMIT, "sendlane_contact_delay_s": CONTACT_DELAY_S,
              "sailthru_rate_limits": {method: EMULATOR_LIMIT for method in ("POST", "GET", "DELETE")}}
    figures: dict[str, VendorFigures] = {}
    with start_emulator(in_process=False, **limits) as reference, \
            start_emulator(in_process=False, **limits) as emu:
        log("what the warehouse owes: the windows synced into a second emulator, without faults")
        ref_settings = _settings(workdir, reference, "reference", vendors)
        owed_in_last = {}
        for i, window in enumerate(spans):
            before = {v: _recorded(reference, v) for v in vendors}
            _nightly(ref_settings, window, vendors, f"reference-{i}")
            owed_in_last = {v: _recorded(reference, v) - before[v] for v in vendors}
        for vendor in vendors:
            owed_changes, owed_latest = vendor_state(reference.requests(vendor=vendor), vendor)
            settings = _settings(workdir, emu, f"chaos-{vendor}", (vendor,), contact_read)
            figure = VendorFigures(vendor)
            if windows == 3:
                log(f"[{vendor}] window 1: 20% 5xx, 10% dropped after the vendor accepted")
                emu.set_faults(**FAULTS, vendors=[vendor], seed=seed)
                runs = [_nightly(settings, spans[0], vendor, f"chaos-{vendor}-faults")]
                log(f"[{vendor}] window 2: a 429 storm of {storm_requests} requests")
                emu.set_faults(**storm, vendors=[vendor])
                runs.append(_nightly(settings, spans[1], vendor, f"chaos-{vendor}-storm"))
            else:
                log(f"[{vendor}] window 1: a 429 storm of {storm_requests} requests, then 20% 5xx and 10% "
                    "dropped after the vendor accepted")
                emu.set_faults(**storm, **FAULTS, vendors=[vendor], seed=seed)
                runs = [_nightly(settings, spans[0], vendor, f"chaos-{vendor}-faults")]
            emu.clear_faults()
            failed_windows = {i for i, result in enumerate(runs) if "error" in result}
            log(f"[{vendor}] window {windows}: kill -9 of the sending process mid-delivery")
            figure.killed_mid_delivery = _kill_mid_delivery(emu, settings, spans[-1], vendor,
                                                            owed_in_last[vendor])
            failed_windows.add(len(spans) - 1)  # the killed run failed, as its scheduler saw it
            log(f"[{vendor}] window {windows}: two syncs at once on one account, under the same faults")
            _concurrent_syncs(emu, settings, spans[-1], vendor, seed)  # its window is retried below anyway
            figure.faults_injected = emu.summary()["faults"]["injected_by_vendor"].get(vendor, {})
            ledger = Ledger(settings.ledger_url)
            # What a scheduler does next: retry the runs that failed (the killed one at least), then
            # the next night's run, whose delivery drains every open row of the account.
            failed = [spans[i] for i in sorted(failed_windows)]
            for rerun in range(1, max_reruns + 1):
                log(f"[{vendor}] ordinary rerun {rerun}: {len(failed)} failed run(s) retried, then the next "
                    "night's run; no faults")
                for window in failed:
                    _nightly(settings, window, vendor, f"chaos-{vendor}-retry{rerun}-{window.start:%d}")
                night_end = spans[-1].end + timedelta(days=rerun)
                night = Window(night_end - timedelta(days=1), night_end)
                result = _nightly(settings, night, vendor, f"chaos-{vendor}-night{rerun}")
                failed = [night] if "error" in result else []
                figure.reruns = rerun
                open_rows = ledger.counts(vendor=vendor, states=OPEN_STATES)
                unknown = ledger.in_state(UNKNOWN, vendor=vendor)
                held = sum(1 for d in unknown if classify_unknown(d) == HELD)
                if not failed and sum(open_rows.values()) == held:
                    break
            _judge(figure, emu, ledger, vendor, owed_changes, owed_latest)
            figures[vendor] = figure
            emu.reset()
    return ChaosReport(figures, time.monotonic() - started)


# Why a held row was settled, from its record-log line (storesync.delivery.settle, senders).
SETTLED_BY = {
    "superseded: version": "superseded, newer version",
    "superseded: the contact placed order": "superseded, contact ordered",
    "arrived: Sendlane holds the contact": "contact read: arrived",
    "resent: the contact is not found": "contact read: not found, resent",
}


def _settled_by_rule(ledger, vendor: str) -> tuple[Counter, list[int]]:
    """How many held rows each rule settled (record-log lines), and the ids of those superseded
    because the contact ordered (the only rule that may leave an event the vendor never got)."""
    from sqlalchemy import select

    from storesync.delivery.ledger import record_log

    counts: Counter = Counter()
    ordered: list[int] = []
    query = select(record_log.c.delivery_id, record_log.c.error).where(
        record_log.c.vendor == vendor, record_log.c.error.is_not(None))
    with ledger.engine.connect() as conn:
        for delivery_id, error in conn.execute(query):
            for prefix, rule in SETTLED_BY.items():
                if error.startswith(prefix):
                    counts[rule] += 1
                    if rule == "superseded, contact ordered":
                        ordered.append(delivery_id)
    return counts, ordered


def _person_waits(ledger, vendor: str) -> tuple[int, int]:
    """``(deliveries, people)`` that waited for a person's customer_added to be read: rows of the
    person planned before its read settled it and first claimed after (``ledger._waits_for_person``)."""
    from sqlalchemy import func, select

    from storesync.delivery.ledger import PERSON_WAIT_EVENTS, deliveries, record_log

    awaited = (select(record_log.c.delivery_id)
               .where(record_log.c.vendor == vendor,
                      record_log.c.error.like("no answer; settled by a later run%"))
               .distinct().subquery())
    held = (select(deliveries.c.id, deliveries.c.person)
            .join(awaited, awaited.c.delivery_id == deliveries.c.id)
            .where(deliveries.c.event_type.in_(PERSON_WAIT_EVENTS), deliveries.c.person.is_not(None)))
    rows, people = 0, 0
    with ledger.engine.connect() as conn:
        for held_id, person in conn.execute(held).all():
            read_at = conn.execute(select(func.max(record_log.c.logged_at))
                                   .where(record_log.c.delivery_id == held_id)).scalar()
            waited = conn.execute(select(func.count()).where(
                deliveries.c.vendor == vendor, deliveries.c.person == person, deliveries.c.id != held_id,
                deliveries.c.planned_at < read_at, deliveries.c.claimed_at >= read_at)).scalar()
            rows += waited
            people += bool(waited)
    return rows, people


def _judge(figure: VendorFigures, emu, ledger, vendor: str, owed_changes: set, owed_latest: dict) -> None:
    from storesync.delivery.ledger import OPEN_STATES, SUPERSEDED, UNKNOWN
    from storesync.delivery.remedies import HELD, classify_unknown

    records = emu.requests(vendor=vendor)
    got_changes, got_latest = vendor_state(records, vendor)

    def at_vendor(delivery) -> tuple[tuple, bool]:
        kind, ident, digest = record_key(vendor, delivery.endpoint, delivery.payload) or ("", (), "")
        return ident, (ident in got_changes if kind == "change" else got_latest.get(ident) == digest)

    held_keys, arrived, missing = set(), 0, 0
    held_by_event: Counter = Counter()
    for d in ledger.in_state(UNKNOWN, vendor=vendor):
        if classify_unknown(d) != HELD:
            continue
        held_by_event[d.event_type] += 1
        ident, there = at_vendor(d)
        held_keys.add(ident)
        arrived += there
        missing += not there
    # A checkout superseded because the contact ordered after it is not owed any more (Sendlane's
    # checkout data targets contacts who "do not place an order"): not lost, whether it arrived or
    # not; counted apart. Superseded by a newer version: the newer one is owed, and judged.
    settled, ordered = _settled_by_rule(ledger, vendor)
    moot_keys = set()
    for d in ledger.in_state(SUPERSEDED, vendor=vendor):
        if d.id in ordered:
            ident, there = at_vendor(d)
            moot_keys.add(ident)
            figure.superseded_arrived += there
            figure.superseded_not_arrived += not there
    lost = [k for k in owed_changes - got_changes if k not in held_keys]
    lost += [k for k, digest in owed_latest.items()
             if got_latest.get(k) != digest and k not in held_keys and k not in moot_keys]
    duplicates = emu.duplicates().get(vendor, {})
    figure.duplicates = sum(entry["count"] for entry in duplicates.values())
    figure.duplicate_examples = {endpoint: entry["entities"][:5] for endpoint, entry in duplicates.items()}
    figure.lost, figure.lost_examples = len(lost), lost[:10]
    figure.held, figure.held_by_event = sum(held_by_event.values()), dict(held_by_event)
    figure.held_arrived = arrived
    figure.settled = dict(settled)
    figure.person_waits, figure.people_waited = _person_waits(ledger, vendor)
    # A person lists them, then marks arrived those the vendor has and resends the others.
    figure.manual_steps = (1 + bool(arrived) + bool(missing)) if figure.held else 0
    figure.still_open = sum(ledger.counts(vendor=vendor, states=OPEN_STATES).values()) - figure.held
    figure.owed = len(owed_changes) + len(owed_latest)
    figure.recorded = len(got_changes) + len(got_latest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storesync.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000,
                        help="demo store orders (default 2000: ~430 in the 72 h synced)")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--vendors", nargs="+", choices=VENDORS, default=list(VENDORS))
    parser.add_argument("--storm-requests", type=int, default=40)
    parser.add_argument("--windows", type=int, choices=(2, 3), default=3,
                        help="3 (default): a window per fault; 2: the short form (storm and faults together)")
    parser.add_argument("--contact-read", choices=("absence", "presence", "off"), default=None,
                        help="Sendlane's contact_read setting (default: the setting's default, presence: a "
                             "found contact proves arrival when it was made while the held event could have "
                             "made it and nothing else of the person's was sent; absence: only a not-found "
                             "settles)")
    parser.add_argument("--workdir", help="where the store and ledgers go (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(json.loads(args.worker))
    import logging

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="storesync-chaos-") as tmp:
        workdir = Path(args.workdir or tmp)
        began = time.monotonic()
        report = run_chaos(workdir, orders=args.orders, days=args.days, seed=args.seed,
                           vendors=tuple(args.vendors), storm_requests=args.storm_requests,
                           windows=args.windows, contact_read=args.contact_read,
                           log=lambda m: print(f"{time.monotonic() - began:6.1f}s {m}", file=sys.stderr,
                                               flush=True))
    if args.json:
        figures = {v: {**asdict(f), "ok": f.ok} for v, f in report.figures.items()}
        print(json.dumps(figures, indent=2, default=str))
    else:
        print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
