"""What the Storesync view reads from a ledger database, as plain dicts ready for JSON.

Every statement is bounded so that the page stays fast on a ledger of tens of millions of
deliveries (``bench/ui.py`` measures it on 10M, with the plans):

* deliveries by state over time read only the window's rows through ``ix_deliveries_updated``
  (``updated_at, vendor, account, state``: an index-only range scan);
* the vendor accounts are found by a loose index scan of ``ix_deliveries_claim`` (one index probe
  per account, not a pass over the table);
* dead letters and held rows are read newest first through ``ix_deliveries_state_updated``,
  counted through ``ix_deliveries_claim``; unknown rows are told apart (held for a person, or
  settling on the next run) by ``storesync.delivery.remedies.classify_unknown`` in Python, over
  the newest ``UNKNOWN_CLASSIFIED_MAX`` of them (one bounded indexed read; a ledger with more says
  so on the page and in the JSON);
* budgets come from ``storesync_rate_slots`` (only the current window's slots are kept there).

A table that does not exist yet (a fresh ledger, LTV never computed) reads as empty. Personal data
never leaves this module unmasked: payloads, quarantined rows and vendor errors go through
:func:`storesync.ui.masking.mask`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta

from sqlalchemy import and_, case, false, func, inspect, literal_column, or_, select, text
from sqlalchemy.engine import Engine

from storesync.core.throttle import rate_slots
from storesync.delivery.ledger import DEAD, UNKNOWN, Ledger, deliveries, sync_runs, watermarks
from storesync.delivery.remedies import AWAITING_LOOKUP, AWAITING_RESEND, HELD, classify_unknown, held_remedy
from storesync.ui.filters import MAX_DAYS, BadRequest, Filters, StoreScope
from storesync.ui.masking import mask, mask_text

# The order states are shown in, in charts and tables: done first, then open, then trouble.
STATE_ORDER = ("accepted", "suppressed", "superseded", "staged", "planned", "sending", "retry",
               "unknown", "dead")
# A vendor answered these (or may have: unknown): what counts as "sent" against a budget.
SENT_STATES = ("accepted", "dead", "suppressed", "unknown")
PROBLEM_STATES = {"dead": DEAD, "held": UNKNOWN}
MAX_PAGE = 200
# Unknown rows are few (a request that left and got no answer); classifying them is a Python call
# per row (remedies.classify_unknown) after reading the row, payload included, so the view reads
# at most this many, newest first: 0.2 s on the 10M bench at a load of ~6 on 2 cores (its 20k
# unknown rows took 0.4-0.6 s to read and classify, 3x the rest of the page). A ledger holding
# more is said to (``complete: false``): ``storesync reconcile --list`` reads all.
UNKNOWN_CLASSIFIED_MAX = 5_000
# What settles an unknown row that is not held, as the page names it: the next run's Sailthru
# lookup, its safe Sendlane resend, or (Sendlane checkouts and customers noted awaiting_read) its
# rules and contact read.
SETTLING_KINDS = ("lookup", "resend", "read")
# The columns storesync.delivery.ledger.Ledger._delivery reads (classify_unknown takes a Delivery).
_DELIVERY_COLUMNS = ("id", "delivery_key", "vendor", "account", "event_type", "entity_id", "version",
                     "ordering_key", "seq", "method", "endpoint", "payload", "state", "attempts",
                     "historical", "claimed_by", "versioning", "updated_at", "vendor_code")
_SHOWN_COLUMNS = ("error_class", "http_status", "vendor_error", "sync_name", "last_run_id", "occurred_at")
# LTV buckets (currency units): a log-like scale reads a skewed distribution at a glance.
LTV_EDGES = (0, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_TABLE_RECHECK_S = 30.0

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.utcnow()


class LedgerReader:
    """Reads one store's ledger database for the view. Thread-safe (an Engine and a clock)."""

    def __init__(self, engine: Engine, *, scope: StoreScope | None = None,
                 budgets: dict[str, tuple[int, float]] | None = None,
                 clock: Callable[[], datetime] = _utcnow, wall_clock: Callable[[], float] = time.time,
                 unknown_outcome: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.scope = scope or StoreScope()
        # vendor -> (requests allowed per window, window seconds): Sendlane's per account,
        # Sailthru's per account, endpoint and method.
        self.budgets = dict(budgets or {})
        # The store's [sendlane|sailthru].unknown_outcome, as classify_unknown takes them
        # (``{"sendlane_unknown_outcome": "resend", "sailthru_unknown_outcome": "lookup"}``).
        self.unknown_outcome = dict(unknown_outcome or {})
        self.clock = clock
        self.wall_clock = wall_clock
        self._tables: set[str] = set()
        self._tables_read_at = float("-inf")

    # ---- helpers ---------------------------------------------------------------------------------
    def has_table(self, name: str) -> bool:
        """Whether ``name`` exists; a missing table is looked for again at most every 30 s."""
        if name not in self._tables and time.monotonic() - self._tables_read_at > _TABLE_RECHECK_S:
            inspector = inspect(self.engine)
            self._tables = set(inspector.get_table_names()) | set(inspector.get_view_names())
            self._tables_read_at = time.monotonic()
        return name in self._tables

    def _where(self, filters: Filters) -> list:
        """The store's rows (its vendor accounts) narrowed by the filters."""
        clauses = filters.where(deliveries)
        if self.scope.accounts is not None:
            pairs = [and_(deliveries.c.vendor == v, deliveries.c.account == a) for v, a in self.scope.accounts]
            clauses.append(or_(*pairs) if pairs else false())
        return clauses

    def _pinned(self, filters: Filters) -> tuple[str, str] | None:
        """The one (vendor, account) the filters and the store's scope leave, if only one."""
        if self.scope.accounts is not None:
            left = [(v, a) for v, a in self.scope.accounts
                    if (not filters.vendor or v == filters.vendor) and (not filters.account or a == filters.account)]
            return left[0] if len(left) == 1 else None
        if filters.vendor and filters.account:
            return filters.vendor, filters.account
        return None

    def _sync_where(self, column) -> list:
        prefix = self.scope.sync_prefix
        if prefix is None:
            return []
        if prefix == "":
            return [~column.contains(".")]
        return [column.startswith(prefix, autoescape=True)]

    def _bucket(self, column, width: str):
        """``column`` truncated to the day or the minute; read back through :meth:`_label`.
        PostgreSQL: ``date_trunc`` (to_char per row costs twice as much over a window's rows)."""
        if self.dialect == "postgresql":
            return func.date_trunc(width, column)
        return func.substr(column, 1, 10 if width == "day" else 16)  # SQLite keeps ISO text

    @staticmethod
    def _label(value, width: str) -> str:
        """A bucket as ``YYYY-MM-DD`` (day) or ``YYYY-MM-DD HH:MM`` (minute)."""
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d" if width == "day" else "%Y-%m-%d %H:%M")
        return str(value)

    # ---- accounts --------------------------------------------------------------------------------
    def accounts(self, limit: int = 100) -> list[dict]:
        """Every (vendor, account) in the ledger: a loose index scan (a min() probe per account)."""
        if self.scope.accounts is not None:
            return [{"vendor": v, "account": a} for v, a in self.scope.accounts]
        if not self.has_table(deliveries.name):
            return []
        found: list[dict] = []
        with self.engine.connect() as conn:
            vendor = conn.execute(select(func.min(deliveries.c.vendor))).scalar()
            while vendor is not None and len(found) < limit:
                account = conn.execute(select(func.min(deliveries.c.account))
                                       .where(deliveries.c.vendor == vendor)).scalar()
                while account is not None and len(found) < limit:
                    found.append({"vendor": vendor, "account": account})
                    account = conn.execute(select(func.min(deliveries.c.account)).where(
                        deliveries.c.vendor == vendor, deliveries.c.account > account)).scalar()
                vendor = conn.execute(select(func.min(deliveries.c.vendor))
                                      .where(deliveries.c.vendor > vendor)).scalar()
        return found

    # ---- deliveries over time --------------------------------------------------------------------
    def states_by_day(self, filters: Filters) -> dict:
        """Deliveries by the day they reached their current state, per state, over ``days``."""
        now = self.clock()
        first = (now - timedelta(days=filters.days - 1)).date()
        days = [(first + timedelta(days=i)).isoformat() for i in range(filters.days)]
        series = {state: [0] * len(days) for state in STATE_ORDER}
        if self.has_table(deliveries.name):
            day = self._bucket(deliveries.c.updated_at, "day").label("day")
            query = (select(day, deliveries.c.state, func.count().label("n"))
                     .where(deliveries.c.updated_at >= datetime.combine(first, datetime.min.time()),
                            *self._where(filters))
                     .group_by(day, deliveries.c.state))
            position = {d: i for i, d in enumerate(days)}
            with self.engine.connect() as conn:
                for row in conn.execute(query):
                    label = self._label(row.day, "day")
                    if label in position:
                        series.setdefault(row.state, [0] * len(days))[position[label]] += row.n
        totals = {state: sum(counts) for state, counts in series.items()}
        return {"days": days, "series": series, "totals": totals}

    def sent_per_minute(self, filters: Filters, minutes: int = 60) -> dict:
        """Deliveries a vendor answered, per minute over the last ``minutes``, per account, with
        the account's budget per minute where storesync keeps one (Sendlane)."""
        now = self.clock().replace(second=0, microsecond=0)
        first = now - timedelta(minutes=minutes - 1)
        labels = [(first + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M") for i in range(minutes)]
        position = {m: i for i, m in enumerate(labels)}
        per_account: dict[tuple[str, str], list[int]] = {}
        if self.has_table(deliveries.name):
            minute = self._bucket(deliveries.c.updated_at, "minute").label("minute")
            # Grouped minute first: grouped by (vendor, account) first, SQLite walks the whole
            # (vendor, account, ...) index for its order instead of seeking the last hour.
            query = (select(deliveries.c.vendor, deliveries.c.account, minute, func.count().label("n"))
                     .where(deliveries.c.updated_at >= first, deliveries.c.state.in_(SENT_STATES),
                            *self._where(filters))
                     .group_by(minute, deliveries.c.vendor, deliveries.c.account))
            with self.engine.connect() as conn:
                for row in conn.execute(query):
                    label = self._label(row.minute, "minute")
                    if label in position:
                        counts = per_account.setdefault((row.vendor, row.account), [0] * minutes)
                        counts[position[label]] += row.n
        accounts = []
        for (vendor, account), counts in sorted(per_account.items()):
            limit, window_s = self.budgets.get(vendor, (None, 60.0))
            # Sailthru budgets each endpoint: no one line for the account.
            per_minute = round(limit * 60.0 / window_s) if limit and vendor == "sendlane" else None
            accounts.append({"vendor": vendor, "account": account, "counts": counts, "sent": sum(counts),
                             "peak_per_minute": max(counts), "limit_per_minute": per_minute})
        return {"minutes": labels, "accounts": accounts}

    def budgets_now(self) -> list[dict]:
        """Each shared budget's use in its current window (``storesync_rate_slots``) and pauses.
        Keys: ``sendlane:<account>`` (per account), ``sendlane:<account>:historical`` (the
        historical sync's share), ``sailthru:<account>:<METHOD> /<endpoint>`` (per endpoint)."""
        if not self.has_table(rate_slots.name):
            return []
        now = self.wall_clock()
        longest = max((window for _, window in self.budgets.values()), default=60.0)
        paused = literal_column("'%#paused'")
        with self.engine.connect() as conn:
            slots = conn.execute(
                select(rate_slots.c.key, rate_slots.c.slot_at).where(
                    rate_slots.c.slot_at >= now - longest, ~rate_slots.c.key.like(paused))).all()
            pauses = dict(conn.execute(
                select(rate_slots.c.key, func.max(rate_slots.c.slot_at)).where(
                    rate_slots.c.key.like(paused), rate_slots.c.slot_at > now)
                .group_by(rate_slots.c.key)).all())
        mine = None if self.scope.accounts is None else set(self.scope.accounts)
        keys = {key for key, _ in slots} | {k.removesuffix("#paused") for k in pauses}
        budgets = []
        for key in sorted(keys):
            vendor, _, rest = key.partition(":")
            account, _, part = rest.partition(":")
            if mine is not None and (vendor, account) not in mine:
                continue
            limit, window_s = self.budgets.get(vendor, (None, 60.0))
            if part == "historical":
                limit = None  # a share of the account's budget, set per historical run
            used = sum(1 for k, at in slots if k == key and at >= now - window_s)
            until = pauses.get(key + "#paused")
            budgets.append({"key": key, "vendor": vendor, "account": account, "budget": part or "account",
                            "used": used, "limit": limit, "window_s": window_s,
                            "paused_for_s": round(until - now, 1) if until else None})
        return budgets

    # ---- syncs -----------------------------------------------------------------------------------
    def watermarks(self) -> list[dict]:
        if not self.has_table(watermarks.name):
            return []
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(select(watermarks).where(*self._sync_where(watermarks.c.sync_name))
                                .order_by(watermarks.c.sync_name)).all()
        return [{"sync_name": r.sync_name, "window_end": _iso(r.window_end), "updated_at": _iso(r.updated_at),
                 "lag_s": round((now - r.window_end).total_seconds())} for r in rows]

    def last_runs(self, limit: int = 20) -> list[dict]:
        if not self.has_table(sync_runs.name):
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(sync_runs).where(*self._sync_where(sync_runs.c.sync_name))
                                .order_by(sync_runs.c.started_at.desc())
                                .limit(min(limit, MAX_PAGE))).all()
        runs = []
        for r in rows:
            duration = (r.finished_at - r.started_at).total_seconds() if r.finished_at else None
            runs.append({"run_id": r.run_id, "sync_name": r.sync_name, "status": r.status, "dry_run": r.dry_run,
                         "window_start": _iso(r.window_start), "window_end": _iso(r.window_end),
                         "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at),
                         "duration_s": round(duration, 1) if duration is not None else None,
                         "counts": mask(_json_or_text(r.counts)),
                         "error": mask_text(r.error[:2000]) if r.error else None})
        return runs

    # ---- dead letters and held rows --------------------------------------------------------------
    def problems(self, kind: str, filters: Filters, *, event_type: str | None = None, limit: int = 50,
                 offset: int = 0) -> dict:
        """Dead letters (``kind="dead"``) or held rows (``"held"``: an unknown outcome no rule
        settles, a person decides), newest first, with the vendor's error and the payload masked;
        how many there are; and the errors of those that reached that state in the filters' days,
        counted by class (over every one of them, a grouping read each row: 2 s for 100k dead
        letters). Held: see :meth:`_held` (the unknown rows the next run settles are counted
        apart, per kind, and not listed)."""
        if kind not in PROBLEM_STATES:
            raise BadRequest(f"kind must be one of {', '.join(PROBLEM_STATES)}, not {kind!r}")
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise BadRequest(f"limit must be 1..{MAX_PAGE} and offset not negative")
        state = PROBLEM_STATES[kind]
        empty = {"kind": kind, "state": state, "total": 0, "rows": [], "by_error": [], "limit": limit,
                 "offset": offset}
        if kind == "held":
            empty.update(_no_unknown_rows())
        if not self.has_table(deliveries.name):
            return empty
        where = [deliveries.c.state == state, *self._where(filters)]
        if event_type:
            where.append(deliveries.c.event_type == event_type)
        d = deliveries.c
        newest_first = self._newest_first(filters, where)
        first_day = (self.clock() - timedelta(days=filters.days - 1)).date()
        since = datetime.combine(first_day, datetime.min.time())
        if kind == "held":
            return {**empty, **self._held(where, newest_first, since, limit=limit, offset=offset)}
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(deliveries).where(*where)).scalar()
            rows = conn.execute(
                select(*(d[c] for c in _SHOWN_COLUMNS + ("id", "vendor", "account", "event_type", "entity_id",
                                                         "method", "endpoint", "payload", "attempts",
                                                         "vendor_code", "updated_at")))
                .where(*where).order_by(*newest_first).limit(limit).offset(offset)).all()
            by_error = conn.execute(
                select(d.vendor, d.event_type, d.error_class, func.count().label("n"))
                .where(*where, d.updated_at >= since).group_by(d.vendor, d.event_type, d.error_class)
                .order_by(func.count().desc()).limit(20)).all()
        return {**empty, "total": total, "rows": [_shown(r) for r in rows],
                "by_error": [{"vendor": r.vendor, "event_type": r.event_type, "error_class": r.error_class,
                              "count": r.n} for r in by_error]}

    def _newest_first(self, filters: Filters, where: list) -> tuple:
        """The order to read a state's rows in (appends the pinned account to ``where``)."""
        d = deliveries.c
        pinned = self._pinned(filters)
        if pinned:
            # One account: newest first by id, through (vendor, account, state, id). By updated_at,
            # PostgreSQL walks every row of the state backwards for the account's: 0.9 s on 10M
            # when the account has none.
            where += [d.vendor == pinned[0], d.account == pinned[1]]
            return (d.id.desc(),)
        return (d.updated_at.desc(), d.id.desc())

    def _held(self, where: list, newest_first: tuple, since: datetime, *, limit: int, offset: int) -> dict:
        """The unknown rows told apart by ``classify_unknown`` with the store's unknown_outcome
        settings: the held ones (paged, masked, with ``held_remedy``'s text per vendor) and how
        many settle on the next run, per kind (``SETTLING_KINDS``). One count through the index,
        then one read of the newest ``UNKNOWN_CLASSIFIED_MAX`` unknown rows, classified here."""
        d = deliveries.c
        with self.engine.connect() as conn:
            unknown_total = conn.execute(select(func.count()).select_from(deliveries).where(*where)).scalar()
            rows = conn.execute(select(*(d[c] for c in _DELIVERY_COLUMNS + _SHOWN_COLUMNS))
                                .where(*where).order_by(*newest_first).limit(UNKNOWN_CLASSIFIED_MAX)).all()
        now = self.clock()
        held, settling = [], Counter()
        settling_by_event: Counter = Counter()
        for row in rows:
            kind = self.settling_kind(row, now)
            if kind is None:
                held.append(row)
            else:
                settling[kind] += 1
                settling_by_event[(row.vendor, row.event_type, kind)] += 1
        in_window = [r for r in held if _naive(r.updated_at) >= since]
        by_error = Counter((r.vendor, r.event_type, r.error_class) for r in in_window)
        held_by_vendor: dict[str, Counter] = defaultdict(Counter)
        for r in held:
            held_by_vendor[r.vendor][r.event_type] += 1
        complete = len(rows) == unknown_total
        return {
            "total": len(held), "rows": [_shown(r) for r in held[offset:offset + limit]],
            "by_error": [{"vendor": v, "event_type": e, "error_class": c, "count": n}
                         for (v, e, c), n in by_error.most_common(20)],
            "held_in_window": len(in_window),
            "settling": {"total": sum(settling.values()), **{k: settling.get(k, 0) for k in SETTLING_KINDS},
                         "by_event": [{"vendor": v, "event_type": e, "kind": k, "count": n}
                                      for (v, e, k), n in sorted(settling_by_event.items())]},
            "remedy": {vendor: held_remedy(vendor, dict(events))
                       for vendor, events in sorted(held_by_vendor.items())},
            "unknown_total": unknown_total, "classified": len(rows), "complete": complete,
            "classified_at": _iso(now)}

    def settling_kind(self, row, now: datetime) -> str | None:
        """None for an unknown row a person must decide (``HELD``), else what settles it on the
        next run: ``lookup`` (Sailthru's read), ``resend`` (a repeat the vendor's contract makes
        harmless) or ``read`` (a Sendlane checkout or customer noted awaiting_read: the rules and
        the contact read). ``row``: a result row with ``_DELIVERY_COLUMNS``."""
        verdict = classify_unknown(Ledger._delivery(row._mapping), now=now, **self.unknown_outcome)
        if verdict == AWAITING_RESEND:
            return "resend"
        if verdict == AWAITING_LOOKUP:
            return "lookup" if row.vendor == "sailthru" else "read"
        if verdict != HELD:
            log.warning("classify_unknown answered %r: shown as held", verdict)
        return None  # held, or a verdict this view does not know: a person looks at it

    def unknown_rows(self, ids: list[int]) -> dict[int, str | None]:
        """``{id: settling kind or None (held)}`` of the store's unknown rows among ``ids`` (the
        resolve route's, at most 1000: one read by primary key); ids that are not are left out."""
        if not ids or not self.has_table(deliveries.name):
            return {}
        d = deliveries.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(*(d[c] for c in _DELIVERY_COLUMNS))
                                .where(d.id.in_(ids), d.state == UNKNOWN, *self._where(Filters()))).all()
        now = self.clock()
        return {r.id: self.settling_kind(r, now) for r in rows}

    # ---- quarantine ------------------------------------------------------------------------------
    def quarantine(self, days: int = 14, *, limit: int = 50) -> dict:
        """Quarantined rows: open and fixed per entity, reasons (the check names) per day over
        ``days``, and the newest records with the row masked. Open and fixed count rows (distinct
        entity ids; a row without one counts once per record): every run that reads a still-bad
        row records it again, so records would count one row many times (``open_records`` keeps
        that count). A row with an open record is open, whatever older records were resolved."""
        from storesync.quality.store import quarantine  # imports the checks (pandas): only when asked

        if not 1 <= days <= MAX_DAYS:
            raise BadRequest(f"days must be a whole number from 1 to {MAX_DAYS}")
        now = self.clock()
        first = (now - timedelta(days=days - 1)).date()
        labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
        result = {"days": labels, "reasons": {}, "entities": [], "rows": []}
        if not self.has_table(quarantine.name):
            return result
        q = quarantine.c
        is_open = case((q.resolved_at.is_(None), 1), else_=0)
        day = self._bucket(q.quarantined_at, "day").label("day")
        position = {d: i for i, d in enumerate(labels)}
        reasons: dict[str, list[int]] = defaultdict(lambda: [0] * days)
        with self.engine.connect() as conn:
            no_id = case((q.entity_id.is_(None), 1), else_=0)
            ids, no_ids = func.count(q.entity_id.distinct()).label("ids"), func.sum(no_id).label("no_id")
            entities = conn.execute(select(q.entity, ids, no_ids, func.sum(is_open).label("open_records"))
                                    .group_by(q.entity).order_by(q.entity)).all()
            still_open = {r.entity: r for r in conn.execute(
                select(q.entity, ids, no_ids).where(q.resolved_at.is_(None)).group_by(q.entity))}
            for row in conn.execute(select(day, q.reasons).where(
                    q.quarantined_at >= datetime.combine(first, datetime.min.time()))):
                label = self._label(row.day, "day")
                if label in position:
                    for check in _check_names(row.reasons):
                        reasons[check][position[label]] += 1
            recent = conn.execute(select(q.id, q.run_id, q.entity, q.entity_id, q.reasons, q.row,
                                         q.quarantined_at, q.resolved_at, q.resolved_run_id)
                                  .order_by(q.id.desc()).limit(min(limit, MAX_PAGE))).all()
        result["entities"] = []
        for r in entities:
            now_open = still_open.get(r.entity)
            open_ids, open_no_id = (now_open.ids, int(now_open.no_id or 0)) if now_open else (0, 0)
            result["entities"].append({
                "entity": r.entity, "open": open_ids + open_no_id,
                "fixed": r.ids - open_ids + int(r.no_id or 0) - open_no_id,
                "open_records": int(r.open_records or 0)})
        result["reasons"] = dict(sorted(reasons.items(), key=lambda kv: -sum(kv[1])))
        result["rows"] = [{"id": r.id, "run_id": r.run_id, "entity": r.entity, "entity_id": r.entity_id,
                           "reasons": _json_or_text(r.reasons), "row": mask(_json_or_text(r.row)),
                           "quarantined_at": _iso(r.quarantined_at), "resolved_at": _iso(r.resolved_at),
                           "status": "open" if r.resolved_at is None else "fixed"} for r in recent]
        return result

    # ---- LTV -------------------------------------------------------------------------------------
    def ltv(self) -> dict:
        """The latest computed day's LTV: customers per historic net revenue bucket with the
        average predicted CLV beside it, and customers per predicted CLV bucket."""
        from storesync.ltv.tables import LTV_TABLE, RUNS_TABLE

        result = {"as_of": None, "edges": list(LTV_EDGES), "historic": [], "predicted": [], "customers": 0}
        if not (self.has_table(LTV_TABLE) and self.has_table(RUNS_TABLE)):
            return result
        with self.engine.connect() as conn:
            as_of = conn.execute(text(f"SELECT MAX(as_of) FROM {RUNS_TABLE}")).scalar()
            if as_of is None:
                return result
            if isinstance(as_of, str):
                as_of = date.fromisoformat(as_of[:10])
            hist_bucket, pred_bucket = _bucket_case("net_revenue"), _bucket_case("predicted_clv")
            historic = conn.execute(text(
                f"SELECT {hist_bucket} AS bucket, COUNT(*) AS n, AVG(net_revenue) AS historic, "
                f"AVG(predicted_clv) AS predicted, COUNT(predicted_clv) AS n_predicted "
                f"FROM {LTV_TABLE} WHERE as_of = :as_of GROUP BY 1 ORDER BY 1"), {"as_of": as_of}).all()
            predicted = conn.execute(text(
                f"SELECT {pred_bucket} AS bucket, COUNT(*) AS n FROM {LTV_TABLE} "
                f"WHERE as_of = :as_of AND predicted_clv IS NOT NULL GROUP BY 1 ORDER BY 1"),
                {"as_of": as_of}).all()
        result["as_of"] = as_of.isoformat()
        result["historic"] = [{"bucket": int(r.bucket), "label": _bucket_label(int(r.bucket)), "customers": r.n,
                               "avg_historic": _money(r.historic), "avg_predicted": _money(r.predicted),
                               "predicted_customers": r.n_predicted} for r in historic]
        result["predicted"] = [{"bucket": int(r.bucket), "label": _bucket_label(int(r.bucket)),
                                "customers": r.n} for r in predicted]
        result["customers"] = sum(r.n for r in historic)
        return result

    # ---- the whole page --------------------------------------------------------------------------
    def overview(self, filters: Filters) -> dict:
        """What the page's first screen shows (one call, one set of numbers)."""
        return {"generated_at": _iso(self.clock()), "filters": {"vendor": filters.vendor, "account": filters.account,
                                                                 "days": filters.days},
                "accounts": self.accounts(), "states": self.states_by_day(filters),
                "sent": self.sent_per_minute(filters), "budgets": self.budgets_now(),
                "watermarks": self.watermarks(), "runs": self.last_runs(),
                "dead": self.problems("dead", filters, limit=20),
                "held": self.problems("held", filters, limit=20)}


def _shown(r) -> dict:
    """A dead or held row as the page and the JSON show it (payload and vendor message masked)."""
    return {"id": r.id, "vendor": r.vendor, "account": r.account, "event_type": r.event_type,
            "entity_id": r.entity_id, "request": f"{r.method} {r.endpoint}", "attempts": r.attempts,
            "error_class": r.error_class, "http_status": r.http_status, "vendor_code": r.vendor_code,
            "vendor_error": mask_text(r.vendor_error) if r.vendor_error else None,
            "payload": mask(_json_or_text(r.payload)), "sync_name": r.sync_name, "last_run_id": r.last_run_id,
            "updated_at": _iso(r.updated_at), "occurred_at": _iso(r.occurred_at)}


def _no_unknown_rows() -> dict:
    return {"held_in_window": 0, "settling": {"total": 0, **dict.fromkeys(SETTLING_KINDS, 0), "by_event": []},
            "remedy": {}, "unknown_total": 0, "classified": 0, "complete": True}


def _naive(value) -> datetime:
    """SQLite may hand back ISO text; compare datetimes."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _bucket_case(column: str) -> str:
    """A CASE numbering ``column``'s bucket by LTV_EDGES (0: below the second edge... last: above)."""
    arms = " ".join(f"WHEN {column} < {edge} THEN {i}" for i, edge in enumerate(LTV_EDGES[1:]))
    return f"CASE {arms} ELSE {len(LTV_EDGES) - 1} END"


def _bucket_label(bucket: int) -> str:
    if bucket >= len(LTV_EDGES) - 1:
        return f"{LTV_EDGES[-1]:,}+"
    return f"{LTV_EDGES[bucket]:,}–{LTV_EDGES[bucket + 1]:,}" if bucket > 0 else f"<{LTV_EDGES[1]:,}"


def _money(value) -> float | None:
    return None if value is None else round(float(value), 2)


def _iso(value) -> str | None:
    if value is None:
        return None
    return value.isoformat(sep=" ", timespec="seconds") if isinstance(value, datetime) else str(value)


def _json_or_text(value):
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _check_names(reasons_json: str) -> list[str]:
    """The check names of a record's reasons (``"email_well_formed: ..."`` → ``email_well_formed``)."""
    try:
        reasons = json.loads(reasons_json)
    except (TypeError, ValueError):
        return ["unreadable reasons"]
    names = Counter(str(r).split(":", 1)[0].strip() for r in reasons if str(r).strip())
    return list(names) or ["no reason given"]


def problem_counts(reader: LedgerReader, filters: Filters) -> dict[str, int]:
    """How many dead letters and held rows the filters cover (for headers and tests)."""
    return {kind: reader.problems(kind, filters, limit=1)["total"] for kind in PROBLEM_STATES}


__all__ = ["BadRequest", "Filters", "LedgerReader", "STATE_ORDER", "SENT_STATES", "problem_counts"]
