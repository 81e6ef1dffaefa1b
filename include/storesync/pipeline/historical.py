"""Historical sync: the store's past, day by day, flagged as history, resumable, on a small budget.

What it sends (``run_historical``, one entity at a time, one UTC day per chunk):

| entity    | Sendlane (one event per POST)                  | Sailthru                                       |
|-----------|------------------------------------------------|------------------------------------------------|
| orders    | order placed/fulfilled/cancelled/refunded with ``initial_sync: true`` and the past ``time`` | purchases in ``purchase_import`` jobs; returns one by one |
| products  | product added with ``initial_sync``/``time``   | catalog items in ``content_update`` jobs       |
| customers | customer added with ``initial_sync``/``time``  | user profiles one by one (``POST /user``; no import job) |

Checkouts have no historical form: reminding people about last month's carts is the spam the
vendors' historical flags exist to prevent.

Exactly once, shared with the live syncs
----------------------------------------
Historical deliveries are planned by the same plan functions (``historical=True``) into the same
ledger, so their identity ``(vendor, account, event type, entity id, version)`` is the one the
live syncs use: an order the hourly DAG already sent is a no-op here, and an order sent here is a
no-op for a later live run. A purchase therefore goes *either* in a job *or* singly, never both.

Parking: historical deliveries never ride on the live budget
------------------------------------------------------------
The live delivery engine drains every open delivery of an account. Historical ones must not be
among them (they would spend the live budget, and queue ahead of live events), so
``HistoricalLedger`` promotes a historical chunk's deliveries with ``next_attempt_at`` moved
into a *parked* range (year 9000 onwards, ``park()``): the live claim (``next_attempt_at <=
now``) never sees them, while the historical claim takes exactly those whose parked due time has
come. A retry is re-parked with its delay (``park(due)``), so it stays historical too.

Sailthru jobs
-------------
Parked purchases (and catalog items) are claimed for a job: marked ``sending`` with the owner
``storesync-job:<batch key>:0``. That owner is never "a dead local process" to the live engine's
recovery, so nobody else touches them while the job is open. A job record in
``storesync_historical_jobs`` holds the batch's delivery ids, in file order, *before* the job is
submitted, then the job id. The deliveries are recorded ``accepted`` only once ``GET /job``
reports ``completed``; the rows the job lists as failed are dead-lettered with Sailthru's error
(replayable); rows beyond the 100 errors Sailthru lists are looked up one by one (``GET
/purchase`` by extid, ``GET /content``). A job still running at the poll timeout is polled again
on resume, never submitted again. A submission whose answer never came (``submit_unknown``) is
resolved after ``unknown_submit_grace_s`` by looking each row up: found → accepted, not found →
parked again for a new job (content is an upsert: re-parked at once).

Checkpoints and resume
----------------------
Table ``storesync_historical_chunks`` holds one row per (entity, day, vendor, account):
``planned`` once the chunk's deliveries are in the ledger, ``done`` once all of them reached a
final state. A restarted task (an Airflow retry, a worker that died, a new run with the same
range) skips done chunks, delivers planned ones without extracting them again, and finishes open
jobs first. ``restart=True`` ignores the checkpoints (the ledger still sends nothing twice).

Budget policy: the historical share
-----------------------------------
- **Sendlane** (240/min per account, no headers): historical requests take a slot from a second
  shared window, ``sendlane:<account>:historical``, limited to ``share × budget_per_minute``
  (default 25%: 50 of 200/min), *and* from the account's own window. So history never goes above
  its share, the account never above its budget, and live syncs always keep at least
  ``(1 - share) × budget`` per minute, across every process and host.
- **Sailthru** (limits per endpoint, announced in headers): bulk goes through ``POST /job``,
  which the live syncs never call. Historical single calls (returns, profiles) are admitted only
  while the vendor-announced remaining budget of that endpoint's window stays above
  ``(1 - share) × limit``: history uses at most ``share`` of each window and backs off as soon
  as live traffic has used the rest.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from storesync.core.config import Settings, account_of
from storesync.core.errors import (
    AuthError,
    DeliveryError,
    PermanentError,
    RetryableError,
    UnknownOutcomeError,
)
from storesync.core.throttle import Permit, SharedWindowLimiter, StackedLimiter
from storesync.core.windows import Window
from storesync.delivery.engine import DeliveryEngine, RedrivePolicy
from storesync.delivery.ledger import (
    ACCEPTED,
    DEAD,
    OPEN_STATES,
    PLANNED,
    RETRY,
    SENDING,
    STAGED,
    UNKNOWN,
    Delivery,
    Ledger,
    Outcome,
    deliveries,
    utcnow,
)

log = logging.getLogger(__name__)

SYNC_NAME = "historical"
HISTORICAL_ENTITIES = ("orders", "customers", "products")
VENDORS = ("sendlane", "sailthru")
# Which parked deliveries go to a Sailthru bulk job instead of a single call.
JOB_EVENT_TYPES: dict[tuple[str, str], str] = {
    ("sailthru", "purchase"): "purchase_import",
    ("sailthru", "content"): "content_update",
}
DEFAULT_BUDGET_SHARE = 0.25

# Parked due times: a real time t is stored as PARK_BASE + (t - REAL_BASE); freshly planned
# historical deliveries get PARK_BASE itself (due at once, for the historical claim only).
PARK_BASE = datetime(9000, 1, 1)
REAL_BASE = datetime(2000, 1, 1)

PLANNED_CHUNK, DONE_CHUNK = "planned", "done"
JOB_CLAIMING, JOB_SUBMITTING, JOB_SUBMITTED, JOB_SUBMIT_UNKNOWN = (
    "claiming", "submitting", "submitted", "submit_unknown")
JOB_COMPLETED, JOB_FAILED, JOB_REJECTED, JOB_RELEASED = "completed", "failed", "rejected", "released"
UNFINISHED_JOB_STATES = (JOB_CLAIMING, JOB_SUBMITTING, JOB_SUBMITTED, JOB_SUBMIT_UNKNOWN)
JOB_OWNER_PREFIX = "storesync-job"


def park(due: datetime | None = None) -> datetime:
    """The parked form of a due time (None: due at once)."""
    if due is None or due <= REAL_BASE:
        return PARK_BASE
    return PARK_BASE + (due - REAL_BASE)


def unpark(value: datetime | None) -> datetime | None:
    if value is None or value < PARK_BASE:
        return value
    return REAL_BASE + (value - PARK_BASE)


def job_owner(batch_key: str) -> str:
    # rpartition(":") gives host "storesync-job:<key>", never this host: the live engine's
    # recovery treats the claim as another worker's and leaves it alone.
    return f"{JOB_OWNER_PREFIX}:{batch_key}:0"


class HistoricalIncomplete(RuntimeError):
    """Some of the range is not settled yet (a job still running, retries due later, outcomes held):
    the task fails so Airflow retries it, and the retry resumes from the checkpoints."""


# ---------------------------------------------------------------------------- checkpoint tables
metadata = MetaData()

chunks = Table(
    "storesync_historical_chunks",
    metadata,
    Column("entity", String(40), nullable=False),
    Column("day", Date, nullable=False),
    Column("vendor", String(20), nullable=False),
    Column("account", String(40), nullable=False),
    Column("status", String(12), nullable=False),
    Column("run_id", String(250)),
    Column("planned", Integer, nullable=False, default=0),
    Column("updated_at", DateTime, nullable=False),
    PrimaryKeyConstraint("entity", "day", "vendor", "account", name="pk_storesync_historical_chunks"),
)

jobs = Table(
    "storesync_historical_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_key", String(64), nullable=False, unique=True),
    Column("vendor", String(20), nullable=False),
    Column("account", String(40), nullable=False),
    Column("job", String(40), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("job_id", String(80)),
    Column("delivery_ids", Text),  # JSON list, in the order of the job file's rows
    Column("rows", Integer),
    Column("imported", Integer),
    Column("failed", Integer),
    Column("error", Text),
    Column("run_id", String(250)),
    Column("created_at", DateTime, nullable=False),
    Column("submitted_at", DateTime),
    Column("finished_at", DateTime),
)


# ---------------------------------------------------------------------------- the parked ledger
class HistoricalLedger(Ledger):
    """The delivery ledger, as the historical sync uses it: promote into the parked range, claim
    only parked deliveries, re-park retries; plus checkpoints and job records."""

    def __init__(self, url_or_engine, *, schema: str | None = None,
                 job_event_types: Mapping[tuple[str, str], str] = JOB_EVENT_TYPES) -> None:
        super().__init__(url_or_engine, schema=schema)
        self.job_event_types = dict(job_event_types)
        from sqlalchemy.exc import OperationalError, ProgrammingError

        for attempt in range(3):
            try:
                metadata.create_all(self.engine, checkfirst=True)
                break
            except (OperationalError, ProgrammingError):
                if attempt == 2:
                    raise

    # ------------------------------------------------------------------ parking
    def promote(self, run_id: str) -> int:
        """The chunk's gate passed: its deliveries become sendable, by the historical drain only."""
        with self.engine.begin() as conn:
            return conn.execute(
                update(deliveries).where(deliveries.c.planned_run_id == run_id, deliveries.c.state == STAGED)
                .values(state=PLANNED, next_attempt_at=PARK_BASE, updated_at=utcnow())
            ).rowcount

    def _claim_filter(self, vendor: str, now: datetime, *, only: Sequence[str] | None = None):
        """The historical claim: parked rows whose parked due time has come (never the live
        claim's), of the event types ``only`` (a bulk job's), else of every event type of the
        vendor except those that go in bulk jobs. Otherwise the live claim's rule (the ledger's
        ``_claim_in``): claimable, first in their ordering key, ``limit`` at most."""
        conditions = [deliveries.c.next_attempt_at >= bindparam("c_park_base", type_=DateTime),
                      deliveries.c.next_attempt_at <= bindparam("c_park_now", type_=DateTime)]
        params = {"c_park_base": PARK_BASE, "c_park_now": park(now)}
        if only is not None:
            conditions.append(deliveries.c.event_type.in_(bindparam("c_types", expanding=True)))
            params["c_types"] = list(only)
            return ("parked", "only"), conditions, params
        exclude = [event_type for (v, event_type) in self.job_event_types if v == vendor]
        if not exclude:
            return ("parked", "all"), conditions, params
        conditions.append(deliveries.c.event_type.not_in(bindparam("c_types", expanding=True)))
        params["c_types"] = exclude
        return ("parked", "exclude"), conditions, params

    def claim(self, vendor: str, account: str, limit: int, owner: str) -> list[Delivery]:
        """Parked deliveries for single calls (what the delivery engine drains): everything of the
        account except the event types that go in bulk jobs."""
        return super().claim(vendor, account, limit, owner)

    def claim_for_job(self, vendor: str, account: str, event_type: str, limit: int,
                      owner: str) -> list[Delivery]:
        """Rows for one bulk job. Their claim never expires (``claimed_at`` in the parked range):
        no live engine's recovery may take a job's rows for lost while the job may still import
        them, however long it runs; only the historical resume settles them."""
        with self.engine.begin() as conn:
            return self._claim_in(conn, vendor, account, limit, owner, only=[event_type], claimed_at=PARK_BASE)

    def _record_in(self, conn, results, *, run_id: str | None, owner: str | None) -> None:
        """As the ledger's, but a retry stays parked (with its delay); ``record`` and
        ``record_and_claim`` both write through here."""
        reparked = [(d, replace(o, next_attempt_at=park(o.next_attempt_at)) if o.state == RETRY else o)
                    for d, o in results]
        super()._record_in(conn, reparked, run_id=run_id, owner=owner)

    def next_parked_due(self, vendor: str, account: str) -> datetime | None:
        """When the account's earliest parked retry comes due (real time), or None."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.min(deliveries.c.next_attempt_at))
                .where(deliveries.c.vendor == vendor, deliveries.c.account == account,
                       deliveries.c.state == RETRY, deliveries.c.next_attempt_at >= PARK_BASE)
            ).scalar()
        return unpark(value)

    def open_in_window(self, window: Window, vendor: str, account: str,
                       sync_name: str = SYNC_NAME) -> Counter:
        """Open deliveries of a historical chunk, by state."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.state, func.count())
                .where(deliveries.c.sync_name == sync_name, deliveries.c.window_start == window.start,
                       deliveries.c.window_end == window.end, deliveries.c.vendor == vendor,
                       deliveries.c.account == account, deliveries.c.state.in_(OPEN_STATES))
                .group_by(deliveries.c.state)
            ).all()
        return Counter({state: n for state, n in rows})

    def dead_in_window(self, window: Window, vendor: str, account: str, sync_name: str = SYNC_NAME) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(deliveries)
                .where(deliveries.c.sync_name == sync_name, deliveries.c.window_start == window.start,
                       deliveries.c.window_end == window.end, deliveries.c.vendor == vendor,
                       deliveries.c.account == account, deliveries.c.state == DEAD)
            ).scalar_one()

    def by_ids(self, ids: Sequence[int]) -> dict[int, Delivery]:
        if not ids:
            return {}
        found: dict[int, Delivery] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start:start + 500])
                for row in conn.execute(select(deliveries).where(deliveries.c.id.in_(chunk))).mappings():
                    found[row["id"]] = self._delivery(row)
        return found

    # ------------------------------------------------------------------ chunk checkpoints
    def chunk_status(self, entity: str, day: date, vendor: str, account: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(chunks.c.status).where(chunks.c.entity == entity, chunks.c.day == day,
                                              chunks.c.vendor == vendor, chunks.c.account == account)
            ).scalar()

    def mark_chunk(self, entity: str, day: date, vendor: str, account: str, status: str, *,
                   run_id: str | None = None, planned: int | None = None) -> None:
        now = utcnow()
        key = and_(chunks.c.entity == entity, chunks.c.day == day, chunks.c.vendor == vendor,
                   chunks.c.account == account)
        with self.engine.begin() as conn:
            known = conn.execute(select(chunks.c.status).where(key)).first()
            values = {"status": status, "updated_at": now}
            if run_id is not None:
                values["run_id"] = run_id
            if planned is not None:
                values["planned"] = planned
            if known is None:
                conn.execute(insert(chunks).values(entity=entity, day=day, vendor=vendor, account=account,
                                                   **{"planned": 0, **values}))
            else:
                conn.execute(update(chunks).where(key).values(**values))

    def chunk_rows(self, entity: str | None = None) -> list[dict]:
        query = select(chunks).order_by(chunks.c.entity, chunks.c.day, chunks.c.vendor)
        if entity:
            query = query.where(chunks.c.entity == entity)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # ------------------------------------------------------------------ job records
    def new_job(self, vendor: str, account: str, job: str, event_type: str, run_id: str | None) -> dict:
        record = {"batch_key": uuid.uuid4().hex, "vendor": vendor, "account": account, "job": job,
                  "event_type": event_type, "status": JOB_CLAIMING, "run_id": run_id, "created_at": utcnow()}
        with self.engine.begin() as conn:
            record["id"] = conn.execute(insert(jobs).values(**record)).inserted_primary_key[0]
        return record

    def update_job(self, job_row_id: int, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_row_id).values(**values))

    def drop_job(self, job_row_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(jobs).where(jobs.c.id == job_row_id))

    def unfinished_jobs(self, vendor: str, account: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(
                select(jobs).where(jobs.c.vendor == vendor, jobs.c.account == account,
                                   jobs.c.status.in_(UNFINISHED_JOB_STATES)).order_by(jobs.c.id)
            ).mappings()]

    def job_rows(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(jobs).order_by(jobs.c.id)).mappings()]

    def claimed_by_owner(self, owner: str) -> list[Delivery]:
        with self.engine.connect() as conn:
            return [self._delivery(r) for r in conn.execute(
                select(deliveries).where(deliveries.c.claimed_by == owner, deliveries.c.state == SENDING)
                .order_by(deliveries.c.id)).mappings()]


# ---------------------------------------------------------------------------- budget shares
class HeaderReserve:
    """Admits a request only while the vendor-announced remaining budget of the current window
    stays at or above ``ceil(limit × (1 - share))``: the reserve left for the live syncs.

    Until a response announced the window (or after it ended) it admits: the vendor's own
    throttle stacked with it paces those first requests."""

    def __init__(self, share: float, *, margin_s: float = 1.0, clock=time.time, sleep=time.sleep) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.margin_s = margin_s
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._limit: int | None = None
        self._remaining = 0
        self._reset_at = float("-inf")
        self._paused_until = float("-inf")

    def reserve(self) -> int:
        return 0 if self._limit is None else math.ceil(self._limit * (1 - self.share))

    def _take(self, cost: int) -> float:
        """0.0 once admitted, else how long to wait."""
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            if self._limit is None or now >= self._reset_at + self.margin_s:
                return 0.0
            if self._remaining - cost >= self.reserve():
                self._remaining -= cost
                return 0.0
            return max(self._reset_at + self.margin_s - now, 0.01)

    def acquire(self, cost: int = 1) -> float:
        started = self._clock()
        while (wait := self._take(cost)) > 0:
            self._sleep(wait)
        return self._clock() - started

    def try_reserve(self, cost: int = 1) -> tuple[Permit | None, float]:
        """An admission ahead of the request (the delivery engine claims a row only once it has
        one: ``storesync.core.throttle.Permit``); the stack spends or hands back its own permit."""
        wait = self._take(cost)
        return (Permit(self), 0.0) if wait <= 0 else (None, wait)

    def penalize(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def observe(self, headers) -> None:
        try:
            limit = int(headers["X-Rate-Limit-Limit"])
            remaining = int(headers["X-Rate-Limit-Remaining"])
            reset_at = float(headers["X-Rate-Limit-Reset"])
        except (KeyError, TypeError, ValueError):
            return
        with self._lock:
            if reset_at == self._reset_at:
                self._remaining = min(self._remaining, remaining)
            elif reset_at > self._reset_at:
                self._remaining, self._reset_at = remaining, reset_at
            else:
                return
            self._limit = max(limit, 1)


def sendlane_share_limiter(settings: Settings, account: str, engine, share: float) -> SharedWindowLimiter:
    limit = max(1, int(settings.sendlane.budget_per_minute * share))
    return SharedWindowLimiter(engine, f"sendlane:{account}:historical", limit,
                               window_s=settings.sendlane.budget_window_s,
                               margin_s=min(1.0, settings.sendlane.budget_window_s / 20))


def apply_budget_share(sender, settings: Settings, engine, share: float) -> None:
    """Put a vendor client (inside a sender) on the historical share of its budget."""
    client = sender.client
    if sender.vendor == "sendlane":
        if settings.sendlane.budget_per_minute <= 0:
            log.warning("sendlane budget_per_minute is 0 (no client-side budget, a sandbox only): "
                        "the historical sync runs without a share of its own")
            return
        client.limiter = StackedLimiter(sendlane_share_limiter(settings, sender.account, engine, share),
                                        client.limiter)
    elif sender.vendor == "sailthru":
        original = client.limiters
        stacks: dict[tuple[str, str], StackedLimiter] = {}
        lock = threading.Lock()

        def limiters(endpoint: str, method: str):
            # One stack per endpoint and method, the same object each time: the delivery engine
            # reserves an admission from it before the claim, and the client spends that one.
            key = (endpoint.strip("/"), method.upper())
            with lock:
                stack = stacks.get(key)
                if stack is None:
                    stack = stacks[key] = StackedLimiter(HeaderReserve(share), original(endpoint, method))
            return stack

        client.limiters = limiters


# ---------------------------------------------------------------------------- Sailthru jobs
@dataclass(frozen=True)
class JobPolicy:
    rows_per_job: int = 5000
    poll_interval_s: float = 15.0
    timeout_s: float = 3600.0
    unknown_submit_grace_s: float = 3600.0


@dataclass
class JobReport:
    jobs: int = 0
    rows: int = 0
    accepted: int = 0
    dead: int = 0
    reparked: int = 0
    held: int = 0
    pending: list[str] = field(default_factory=list)  # job ids still running / unresolved batches

    def as_dict(self) -> dict:
        return {"jobs": self.jobs, "rows": self.rows, "accepted": self.accepted, "dead": self.dead,
                "reparked": self.reparked, "held": self.held, "pending": list(self.pending)}


class SailthruJobRunner:
    """Sends the parked purchases / catalog items of one Sailthru account as bulk jobs."""

    RETRY_SUBMIT_AFTER_S = 60.0

    def __init__(self, ledger: HistoricalLedger, sender, *, run_id: str | None, policy: JobPolicy,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ledger = ledger
        self.sender = sender  # SailthruSender: its client submits, its resolve_unknown looks up
        self.client = sender.client
        self.account = sender.account
        self.run_id = run_id
        self.policy = policy
        self.sleep = sleep

    def run(self) -> JobReport:
        """Finish (or resume) the account's open jobs, then submit new ones until nothing parked is
        left, or a job is left running / unresolved (the next attempt resumes it)."""
        report = JobReport()
        for record in self.ledger.unfinished_jobs("sailthru", self.account):
            self._resume(record, report)
        if report.pending:
            return report
        for (vendor, event_type), job in self.ledger.job_event_types.items():
            if vendor != "sailthru":
                continue
            while True:
                record = self.ledger.new_job("sailthru", self.account, job, event_type, self.run_id)
                claimed = self.ledger.claim_for_job("sailthru", self.account, event_type,
                                                    self.policy.rows_per_job, job_owner(record["batch_key"]))
                if not claimed:
                    self.ledger.drop_job(record["id"])
                    break
                self._submit(record, claimed, report)
                if record["status"] not in (JOB_COMPLETED, JOB_FAILED, JOB_REJECTED):
                    return report  # running, unresolved or to be retried later
        return report

    # ------------------------------------------------------------------ one job
    def _set(self, record: dict, **values) -> None:
        record.update(values)
        self.ledger.update_job(record["id"], **values)

    def _submit(self, record: dict, claimed: list[Delivery], report: JobReport) -> None:
        ids = [d.id for d in claimed]
        # The rows and their file order are on record before the request leaves.
        self._set(record, status=JOB_SUBMITTING, delivery_ids=json.dumps(ids), rows=len(ids))
        report.rows += len(ids)
        try:
            job_id = self.client.submit_job(record["job"], rows=[d.payload for d in claimed])
        except UnknownOutcomeError as exc:
            # The job may exist: never submit these rows again blindly (see _resume).
            self._set(record, status=JOB_SUBMIT_UNKNOWN, submitted_at=utcnow(), error=str(exc)[:2000])
            report.pending.append(f"batch {record['batch_key']} (submission outcome unknown)")
            return
        except AuthError:
            self._release(record, claimed, "credentials refused")
            raise
        except RetryableError as exc:
            self._record(claimed, RETRY, exc, next_attempt_at=utcnow() + timedelta(seconds=self.RETRY_SUBMIT_AFTER_S))
            self._set(record, status=JOB_RELEASED, error=str(exc)[:2000], finished_at=utcnow())
            report.reparked += len(claimed)
            report.pending.append(f"batch {record['batch_key']} (submission failed, retried later)")
            return
        except PermanentError as exc:
            self._record(claimed, DEAD, exc)
            self._set(record, status=JOB_REJECTED, error=str(exc)[:2000], finished_at=utcnow())
            report.dead += len(claimed)
            return
        report.jobs += 1
        self._set(record, status=JOB_SUBMITTED, job_id=job_id, submitted_at=utcnow())
        self._await(record, claimed, {d.id for d in claimed}, report)

    def _await(self, record: dict, ordered: list[Delivery], open_ids: set[int], report: JobReport) -> None:
        """Poll the job to its end and settle the rows still open (``ordered`` is the file order)."""
        still_open = [d for d in ordered if d.id in open_ids]
        try:
            body = self.client.wait_job(record["job_id"], poll_interval_s=self.policy.poll_interval_s,
                                        timeout_s=self.policy.timeout_s, sleep=self.sleep)
        except UnknownOutcomeError:
            report.pending.append(f"job {record['job_id']} still running")
            return  # polled again on resume, never submitted again
        except PermanentError as exc:
            # The job ended failed/expired: some rows may have been imported. Look each one up.
            self._settle_by_lookup(still_open, report, reason=f"job {record['job_id']} ended: {exc}")
            self._set(record, status=JOB_FAILED, error=str(exc)[:2000], finished_at=utcnow())
            return
        errors = {int(e["row"]): e for e in body.get("errors") or [] if str(e.get("row", "")).isdigit()}
        failed = int(body.get("failed") or 0)
        results, unlisted = [], []
        for number, delivery in enumerate(ordered, start=1):
            if delivery.id not in open_ids:
                continue
            error = errors.get(number)
            if error is not None:
                results.append((delivery, Outcome(
                    DEAD, error_class="permanent", vendor_code=str(error.get("error")),
                    vendor_error=f"job {record['job_id']} row {number}: {error.get('errormsg')}"[:2000])))
            elif failed > len(errors):
                unlisted.append(delivery)  # Sailthru lists at most 100 row errors: ambiguous
            else:
                results.append((delivery, Outcome(ACCEPTED, http_status=200)))
        self.ledger.record(results, run_id=self.run_id, owner=job_owner(record["batch_key"]))
        report.accepted += sum(1 for _, o in results if o.state == ACCEPTED)
        report.dead += sum(1 for _, o in results if o.state == DEAD)
        if unlisted:
            self._settle_by_lookup(unlisted, report,
                                   reason=f"job {record['job_id']} reported {failed} failed rows")
        self._set(record, status=JOB_COMPLETED, finished_at=utcnow(),
                  imported=int(body.get("imported") or 0), failed=failed)

    def _settle_by_lookup(self, items: list[Delivery], report: JobReport, *, reason: str,
                          not_found: str = DEAD) -> None:
        """Ask the vendor about each row: found → accepted; not found → ``not_found``; no answer → held."""
        results = []
        for delivery in items:
            try:
                verdict = self.sender.resolve_unknown(delivery)
            except AuthError:
                raise
            except DeliveryError:
                verdict = None
            if verdict is True:
                outcome = Outcome(ACCEPTED, http_status=200, vendor_error=f"found at the vendor after {reason}"[:2000])
            elif verdict is False and not_found == RETRY:
                outcome = Outcome(RETRY, vendor_error=f"not found after {reason}"[:2000])
            elif verdict is False:
                outcome = Outcome(DEAD, error_class="permanent", vendor_error=f"not imported: {reason}"[:2000])
            else:
                outcome = Outcome(UNKNOWN, error_class="unknown_outcome",
                                  vendor_error=f"cannot tell after {reason}"[:2000])
            results.append((delivery, outcome))
        self.ledger.record(results, run_id=self.run_id, owner=_holder(items))
        states = Counter(o.state for _, o in results)
        report.accepted += states[ACCEPTED]
        report.dead += states[DEAD]
        report.reparked += states[RETRY]
        report.held += states[UNKNOWN]

    def _record(self, claimed: list[Delivery], state: str, exc: DeliveryError, **extra) -> None:
        fields = exc.as_record()
        self.ledger.record([(d, Outcome(state, http_status=fields["http_status"],
                                        error_class=fields["error_class"], vendor_code=fields["vendor_code"],
                                        vendor_error=fields["vendor_error"], **extra)) for d in claimed],
                           run_id=self.run_id, owner=_holder(claimed))

    def _release(self, record: dict, claimed: list[Delivery], why: str) -> None:
        self.ledger.record([(d, Outcome(RETRY, vendor_error=why)) for d in claimed], run_id=self.run_id,
                           owner=_holder(claimed))
        self._set(record, status=JOB_RELEASED, error=why, finished_at=utcnow())

    # ------------------------------------------------------------------ resume
    def _resume(self, record: dict, report: JobReport) -> None:
        owner = job_owner(record["batch_key"])
        status = record["status"]
        if status == JOB_CLAIMING:
            # Died before the ids were written, so before anything was submitted: give the rows back.
            claimed = self.ledger.claimed_by_owner(owner)
            self._release(record, claimed, "job was never submitted")
            report.reparked += len(claimed)
            return
        ids = json.loads(record.get("delivery_ids") or "[]")
        found = self.ledger.by_ids(ids)
        ordered = [found[i] for i in ids if i in found]
        open_ids = {d.id for d in ordered if d.state == SENDING and d.claimed_by == owner}
        if not open_ids:  # everything was recorded before the job record moved on
            self._set(record, status=JOB_COMPLETED if record.get("job_id") else JOB_RELEASED,
                      finished_at=utcnow())
            return
        if status == JOB_SUBMITTED and record.get("job_id"):
            self._await(record, ordered, open_ids, report)
            return
        # JOB_SUBMITTING (died while the request was out) or JOB_SUBMIT_UNKNOWN: the job may exist.
        submitted_at = record.get("submitted_at") or record["created_at"]
        if status == JOB_SUBMITTING:
            self._set(record, status=JOB_SUBMIT_UNKNOWN, submitted_at=submitted_at)
        waited = (utcnow() - submitted_at).total_seconds()
        if waited < self.policy.unknown_submit_grace_s:
            report.pending.append(f"batch {record['batch_key']}: submission outcome unknown, resolved by "
                                  f"lookup {self.policy.unknown_submit_grace_s:g}s after it was sent")
            return
        # Found → accepted; not found → parked again for a new job (content is an upsert anyway).
        self._settle_by_lookup([d for d in ordered if d.id in open_ids], report,
                               reason="a job submission without an answer", not_found=RETRY)
        self._set(record, status=JOB_FAILED, finished_at=utcnow(),
                  error="submission outcome unknown; resolved by lookup")


def _holder(items: Sequence[Delivery]) -> str | None:
    """The job owner holding these rows (records are written only while it still holds them)."""
    return items[0].claimed_by if items else None


# ---------------------------------------------------------------------------- the request
@dataclass(frozen=True)
class HistoricalRequest:
    """What a person asked for: entities, an inclusive range of UTC days, vendors, dry run."""

    entities: tuple[str, ...]
    start: date
    end: date  # inclusive
    vendors: tuple[str, ...] = VENDORS
    dry_run: bool = True
    budget_share: float = DEFAULT_BUDGET_SHARE
    restart: bool = False
    jobs: JobPolicy = JobPolicy()
    max_rounds: int = 3  # delivery rounds per chunk before leaving the rest to a retry

    def __post_init__(self) -> None:
        unknown = [e for e in self.entities if e not in HISTORICAL_ENTITIES]
        if unknown or not self.entities:
            raise ValueError(f"entities must be among {list(HISTORICAL_ENTITIES)}, got {list(self.entities)}")
        bad = [v for v in self.vendors if v not in VENDORS]
        if bad or not self.vendors:
            raise ValueError(f"vendors must be among {list(VENDORS)}, got {list(self.vendors)}")
        if self.end < self.start:
            raise ValueError(f"end_date {self.end} is before start_date {self.start}")
        if not 0 < self.budget_share <= 0.5:
            raise ValueError("budget_share must be in (0, 0.5]: live syncs keep at least half the budget")

    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]

    @staticmethod
    def window(day: date) -> Window:
        start = datetime(day.year, day.month, day.day)
        return Window(start, start + timedelta(days=1))

    @classmethod
    def from_params(cls, params: Mapping, *, today: date | None = None) -> "HistoricalRequest":
        """From a DAG run's params (strings from the trigger form or JSON conf)."""
        def as_list(value, default):
            if value in (None, "", []):
                return tuple(default)
            if isinstance(value, str):
                value = [v for v in value.replace(";", ",").split(",")]
            return tuple(dict.fromkeys(str(v).strip().lower() for v in value if str(v).strip()))

        def as_day(name):
            value = params.get(name)
            if value in (None, ""):
                raise ValueError(f"{name} is required (YYYY-MM-DD)")
            if isinstance(value, datetime):
                return value.date()
            if isinstance(value, date):
                return value
            return date.fromisoformat(str(value)[:10])

        start, end = as_day("start_date"), as_day("end_date")
        today = today or datetime.now(timezone.utc).date()
        if end >= today:
            raise ValueError(f"end_date {end} is not in the past: the historical sync covers whole days "
                             "before today; live syncs own the present")
        jobs = JobPolicy(rows_per_job=int(params.get("job_rows") or JobPolicy.rows_per_job),
                         poll_interval_s=float(params.get("job_poll_seconds") or JobPolicy.poll_interval_s),
                         timeout_s=float(params.get("job_timeout_seconds") or JobPolicy.timeout_s))
        return cls(entities=as_list(params.get("entities"), HISTORICAL_ENTITIES), start=start, end=end,
                   vendors=as_list(params.get("vendors"), VENDORS), dry_run=bool(params.get("dry_run", True)),
                   budget_share=float(params.get("budget_share") or DEFAULT_BUDGET_SHARE),
                   restart=bool(params.get("restart", False)), jobs=jobs)


# ---------------------------------------------------------------------------- the runner
def run_historical(settings: Settings, request: HistoricalRequest, entity: str, *, run_id_prefix: str,
                   client_factories: dict | None = None, on_chunk: Callable[[str, date], None] | None = None,
                   sleep: Callable[[float], None] = time.sleep) -> dict:
    """Sync one entity's days of ``request``; returns counts. Raises ``HistoricalIncomplete`` when
    something is left for a retry (which resumes from the checkpoints)."""
    from storesync.pipeline.accounts import move_bookkeeping
    from storesync.pipeline.jobs import ENTITY_SYNCS, require_credentials
    from storesync.pipeline.syncs import SyncContext
    from storesync.pipeline.targets import targets_for
    from storesync.warehouse.models import Warehouse

    if entity not in request.entities:
        raise ValueError(f"{entity!r} is not one of this request's entities {list(request.entities)}")
    if not request.dry_run:  # rows planned without credentials would sit under account "unconfigured"
        require_credentials(settings, request.vendors, client_factories)
    ledger = HistoricalLedger(settings.ledger_url)
    warehouse = Warehouse(settings.warehouse_url, settings.models_dir)
    accounts = {v: account_of(settings, v) for v in request.vendors}
    summary = {"entity": entity, "dry_run": request.dry_run, "days": 0, "skipped_days": 0,
               "planned": Counter(), "events": Counter(), "rows": Counter(), "quarantined": Counter(),
               "deliveries": {}, "jobs": {}, "samples": {}}
    senders: dict[str, object] = {}
    all_targets = {t.vendor: t for t in targets_for(settings, request.vendors, client_factories)}

    def sender_for(vendor: str):
        if vendor not in senders:
            sender = all_targets[vendor].sender(limiter_engine=ledger.engine)
            apply_budget_share(sender, settings, ledger.engine, request.budget_share)
            senders[vendor] = sender
        return senders[vendor]

    incomplete: list[str] = []
    for day in request.days():
        window = request.window(day)
        statuses = {v: (None if request.restart else ledger.chunk_status(entity, day, v, accounts[v]))
                    for v in request.vendors}
        todo = [v for v in request.vendors if statuses[v] != DONE_CHUNK]
        if not todo:
            summary["skipped_days"] += 1
            continue
        summary["days"] += 1
        run_id = f"{run_id_prefix}/{entity}/{day.isoformat()}"
        to_plan = [v for v in todo if request.restart or statuses[v] != PLANNED_CHUNK]
        if to_plan:
            ctx = SyncContext(settings=settings, warehouse=warehouse, ledger=ledger,
                              targets=[all_targets[v] for v in to_plan], run_id=run_id, sync_name=SYNC_NAME,
                              dry_run=request.dry_run, owns_quarantine=False)
            try:
                report = ENTITY_SYNCS[entity](ctx, window, historical=True)
            except Exception as exc:
                ledger.finish_run(run_id, "failed", error=str(exc)[:2000])
                raise
            plan = report.as_dict()
            summary["planned"].update(plan["planned"])
            summary["events"].update(plan["events"])
            for name, stats in plan["entities"].items():
                summary["rows"][name] += stats["rows_in"]
                summary["quarantined"][name] += stats["quarantined"]
            if request.dry_run:
                for key, samples in plan["samples"].items():
                    summary["samples"].setdefault(key, samples)
                ledger.finish_run(run_id, "dry_run", counts={"planned": plan["planned"]})
                continue
            for vendor in to_plan:
                planned = sum(n for key, n in plan["planned"].items() if key.startswith(f"{vendor}:"))
                ledger.mark_chunk(entity, day, vendor, accounts[vendor], PLANNED_CHUNK, run_id=run_id,
                                  planned=planned)
        elif request.dry_run:
            continue
        # Deliver: jobs first (a return waits for its purchase), then single calls; a few rounds.
        pending_jobs: list[str] = []
        for round_ in range(request.max_rounds):
            for vendor in todo:
                sender = sender_for(vendor)
                if vendor == "sailthru":
                    jobs_report = SailthruJobRunner(ledger, sender, run_id=run_id, policy=request.jobs,
                                                    sleep=sleep).run()
                    pending_jobs = jobs_report.pending
                    _merge(summary["jobs"], {k: v for k, v in jobs_report.as_dict().items() if k != "pending"})
                # A credential corrected since a run failed on auth: the day's rows continue
                # under the right key, with their checkpoints.
                ledger.adopt_unproven_accounts(vendor, accounts[vendor], sync_name=SYNC_NAME, also=move_bookkeeping)
                engine = DeliveryEngine(ledger, sender, run_id=run_id, concurrency=settings.concurrency,
                                        policy=RedrivePolicy(max_wait_in_run_s=0))
                report = engine.run().as_dict()
                _merge(summary["deliveries"].setdefault(vendor, {}), report)
                if report["unknown"] and round_ == 0:
                    incomplete.append(f"{report['unknown']} {vendor} deliveries held with an unknown outcome "
                                      "(storesync reconcile)")
            open_now = {v: ledger.open_in_window(window, v, accounts[v]) for v in todo}
            if not any(open_now.values()):
                break
            waiting_only = all(set(c) <= {RETRY} for c in open_now.values())
            if round_ + 1 < request.max_rounds and waiting_only:
                due = min((ledger.next_parked_due(v, accounts[v]) or utcnow()) for v in todo)
                sleep(min(30.0, max(0.0, (due - utcnow()).total_seconds())) + 0.01)
        incomplete += [f"sailthru {p}" for p in pending_jobs]
        for vendor in todo:
            left = ledger.open_in_window(window, vendor, accounts[vendor])
            if left:
                dead = ledger.dead_in_window(window, vendor, accounts[vendor])
                hint = (f" ({dead} dead letters in this day may block what follows them: fix the cause and "
                        "replay them with storesync_dead_letter_replay)") if dead else ""
                incomplete.append(f"{entity} {day} {vendor}: {dict(left)} still open{hint}")
            else:
                ledger.mark_chunk(entity, day, vendor, accounts[vendor], DONE_CHUNK, run_id=run_id)
        ledger.finish_run(run_id, "success" if not incomplete else "incomplete")
        if on_chunk is not None:
            on_chunk(entity, day)
        if incomplete:
            break  # keep order: the next attempt resumes at this chunk
    summary = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in summary.items()}
    if incomplete:
        raise HistoricalIncomplete("historical sync not finished, resume by retrying: " + "; ".join(incomplete))
    return summary


def _merge(into: dict, report: Mapping) -> None:
    for key, value in report.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            into[key] = round(into.get(key, 0) + value, 3)
        elif isinstance(value, list):
            into.setdefault(key, []).extend(value)
        elif isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)


__all__ = [
    "HISTORICAL_ENTITIES",
    "JOB_EVENT_TYPES",
    "HeaderReserve",
    "HistoricalIncomplete",
    "HistoricalLedger",
    "HistoricalRequest",
    "JobPolicy",
    "SailthruJobRunner",
    "StackedLimiter",
    "apply_budget_share",
    "park",
    "run_historical",
    "unpark",
]
