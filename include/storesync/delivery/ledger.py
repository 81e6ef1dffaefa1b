"""The delivery ledger: what storesync owes each vendor, and what each vendor confirmed.

Neither Sendlane nor Sailthru has an idempotency key, so exactly-once delivery is the ledger's job.
Every delivery has an identity, ``(vendor, account, event_type, entity_id, version)``, unique in
the ledger: planning the same event twice (a rerun, a backfill, catch-up) is a no-op.

States::

    staged ──quality gate passed──> planned ──claim──> sending ──vendor said yes──> accepted
       ^                  │ ├──retryable (429/5xx/network before sending)──> retry ──> (claimed again)
       │                  │ ├──permanent (validation, bad email)──────────> dead   (replayable)
       │                  │ ├──suppressed (opted out)────────────────────> suppressed
       │                  │ └──no answer after sending──> unknown ──lookup──> accepted | retry
       └── replay ────────┘                                 (or held for reconciliation)

    staged | planned | retry ──a newer version of the same entity was promoted──> superseded
    dead | planned | retry (a status change) ──its re-planned revision was promoted──> superseded

Two kinds of version (``versioning``):
- ``change`` (order events): the warehouse's id of the status change. Every change is owed once.
- ``content`` (products, profiles, carts): a hash of the payload. What is owed is the entity's
  *latest* content: a version equal to the latest one planned for the entity is a no-op, any
  other is planned, even one seen before (a revert A→B→A sends A again, under a key of its own),
  and is sent after the older versions still in flight (``seq``). When it is promoted, older
  versions not yet in flight (staged, planned, retry) become ``superseded``: only the newest is
  sent. ``sending`` and ``unknown`` rows are never superseded (they may have arrived).

Rules that keep it honest:
- success is recorded only from the vendor's answer (``accepted`` is never assumed);
- a claim is committed *before* the request leaves, so a process killed mid-request leaves
  ``sending`` rows owned by a dead process: the next run treats them as outcome unknown;
- a run's deliveries stay ``staged`` (never sent) until its quality gate passes; a failed gate
  leaves them staged, and the rerun of that window adopts them;
- a delivery waits while an earlier one for the same ordering key (an order's placed before its
  fulfilled) is still open or dead-lettered, so status changes reach the vendor once and in order;
- a person's deliveries (``person``: a hash of the payload's email) wait while a ``customer_added``
  of theirs is earlier in line, in flight, or unknown and awaiting its contact read
  (``PERSON_WAIT_EVENTS``, ``_waits_for_person``), for ``PERSON_WAIT_S`` at most: so the read
  finds the contact made by that event or no contact at all (docs/exactly-once.md).

The ledger lives in a database the user controls (SQLite by default; the warehouse's own
PostgreSQL, in its own schema, in production) next to the sync-run table and a per-record log,
so a data engineer can query all of it with SQL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from collections import Counter
from functools import lru_cache
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    event,
    exists,
    func,
    inspect,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, Engine

from storesync.core.errors import StoresyncError

log = logging.getLogger(__name__)

STAGED, PLANNED, SENDING, ACCEPTED, RETRY, DEAD, SUPPRESSED, UNKNOWN, SUPERSEDED = (
    "staged", "planned", "sending", "accepted", "retry", "dead", "suppressed", "unknown", "superseded",
)
OPEN_STATES = (STAGED, PLANNED, SENDING, RETRY, UNKNOWN)
TERMINAL_STATES = (ACCEPTED, DEAD, SUPPRESSED, SUPERSEDED)
CLAIMABLE_STATES = (PLANNED, RETRY)
# On an unknown row: what settles it is a later run's rules and read (``engine.AWAITING_READ``).
AWAITING_READ = "awaiting_read"
# A person's other deliveries wait behind these while they are earlier in line, in flight, or
# unknown and awaiting their read: each makes the contact, and the read of the contact (Sendlane's
# ``contact_read``) can only tell whether the held one made it if nothing else of the person's was
# sent meanwhile. Bounded: a row in line, in flight or awaiting longer than this (since its last
# update) no longer holds anyone back. Two hours: the grace (600 s) and an hourly run's read.
PERSON_WAIT_EVENTS = ("customer_added",)
PERSON_WAIT_S = 2 * 3600.0
# Open but not in flight: what a newer version of the same entity may supersede.
SUPERSEDABLE_STATES = (STAGED, PLANNED, RETRY)
CHANGE, CONTENT = "change", "content"
# A status change's row that fixed warehouse data may replace (``replan_dead``): dead, or still
# waiting unsent (behind a dead row of its order) with the old data. Never one that may have left.
HEALABLE_STATES = (DEAD, PLANNED, RETRY)
_OPEN_SQL = "state IN ('staged', 'planned', 'sending', 'retry', 'unknown')"
_PERSON_WAIT_STATES_SQL = "state IN ('planned', 'retry', 'sending', 'unknown')"
_PERSON_WAIT_EVENT_SQL = "event_type = 'customer_added'"
_PERSON_WAIT_SQL = f"{_PERSON_WAIT_STATES_SQL} AND {_PERSON_WAIT_EVENT_SQL}"

metadata = MetaData()

deliveries = Table(
    "storesync_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_key", String(400), nullable=False, unique=True),
    Column("vendor", String(20), nullable=False),
    Column("account", String(40), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("entity_id", String(200), nullable=False),
    Column("version", String(80), nullable=False),
    Column("ordering_key", String(200), nullable=False),
    Column("seq", Integer, nullable=False, default=0),
    Column("method", String(8), nullable=False, default="POST"),
    Column("endpoint", String(200), nullable=False),
    Column("payload", Text, nullable=False),
    Column("historical", Boolean, nullable=False, default=False),
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error_class", String(20)),
    Column("http_status", Integer),
    Column("vendor_code", String(20)),
    Column("vendor_error", Text),
    Column("claimed_by", String(120)),
    Column("claimed_at", DateTime),
    Column("sync_name", String(80)),
    Column("planned_run_id", String(200)),
    Column("last_run_id", String(200)),
    Column("window_start", DateTime),
    Column("window_end", DateTime),
    Column("occurred_at", DateTime),
    Column("planned_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("accepted_at", DateTime),
    Column("next_attempt_at", DateTime),
    # "content" for content-hash versions (see the module docstring); NULL (older ledgers) and
    # "change" for status-change versions. Nullable: added to older ledgers in place.
    Column("versioning", String(12)),
    # A hash of the payload's email (``person_of``), or NULL: the person a row's wait is scoped to
    # (``_waits_for_person``). Nullable: added to older ledgers in place; their rows have none.
    Column("person", String(40)),
    Index("ix_deliveries_claim", "vendor", "account", "state", "id"),
    # Only open rows are claimed: a partial index keeps the claim cheap however many are accepted.
    Index("ix_deliveries_claimable", "vendor", "account", "id",
          sqlite_where=text("state IN ('planned', 'retry')"),
          postgresql_where=text("state IN ('planned', 'retry')")),
    Index("ix_deliveries_planned_run", "planned_run_id", "state"),
    Index("ix_deliveries_ordering", "vendor", "account", "ordering_key", "seq"),
    Index("ix_deliveries_entity", "vendor", "event_type", "entity_id"),
    Index("ix_deliveries_window", "sync_name", "window_start", "window_end"),
    # Summaries and checks read by state and time (dead letters since, stuck open rows) and by
    # run: indexed, so none of them scans the whole table.
    Index("ix_deliveries_state_updated", "state", "updated_at"),
    Index("ix_deliveries_last_run", "last_run_id", "state"),
    # Open rows are few however large the ledger grows: the watermark's settled prefix reads them.
    Index("ix_deliveries_open_window", "sync_name", "window_start",
          sqlite_where=text(_OPEN_SQL), postgresql_where=text(_OPEN_SQL)),
    # The Storesync view's deliveries by state over the last days, per vendor and account: an
    # index-only range scan of the window (storesync.ui.queries; without it, 2.8 s on 10M rows).
    Index("ix_deliveries_updated", "updated_at", "vendor", "account", "state"),
    # The few rows a person's deliveries may wait behind: a partial index, so the claim's check
    # is one probe of a tiny index (SQLite uses it only when the query names these literals).
    Index("ix_deliveries_person_wait", "vendor", "account", "person",
          sqlite_where=text(_PERSON_WAIT_SQL), postgresql_where=text(_PERSON_WAIT_SQL)),
)

sync_runs = Table(
    "storesync_sync_runs",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("sync_name", String(80), nullable=False),
    Column("window_start", DateTime),
    Column("window_end", DateTime),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("status", String(20), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("counts", Text),
    Column("error", Text),
    Index("ix_sync_runs_name", "sync_name", "window_end"),
)

record_log = Table(
    "storesync_record_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200)),
    Column("delivery_id", Integer, nullable=False),
    Column("vendor", String(20), nullable=False),
    Column("operation", String(40), nullable=False),
    Column("entity_id", String(200), nullable=False),
    Column("status", String(12), nullable=False),
    Column("http_status", Integer),
    Column("error_class", String(20)),
    Column("error", Text),
    Column("logged_at", DateTime, nullable=False),
    Index("ix_record_log_run", "run_id"),
    Index("ix_record_log_delivery", "delivery_id"),
)

watermarks = Table(
    "storesync_watermarks",
    metadata,
    Column("sync_name", String(80), primary_key=True),
    Column("window_end", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)


# Erased people (storesync.privacy): a salted hash per email or customer id, never the value, so
# the audit keeps no personal data and every later plan can still recognise them (_insert_new).
erasures = Table(
    "storesync_erasures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_hash", String(64), nullable=False, unique=True),
    Column("kind", String(12), nullable=False),  # email | customer_id
    Column("source", String(40), nullable=False),  # cli | model
    Column("requested_at", DateTime, nullable=False),
    Column("erased_at", DateTime),
    Column("vendors", Text),  # JSON: each vendor's answer (deleted, not found, failed: why)
    Column("scrubbed", Text),  # JSON: rows scrubbed per table
)
# The salt of those hashes: one row, made by the first erasure (random, never logged).
privacy_salt = Table(
    "storesync_privacy_salt",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("salt", String(64), nullable=False),
)


class LedgerConflict(StoresyncError):
    """The ledger cannot do what was asked without losing or doubling a delivery."""


def person_of(payload) -> str | None:
    """The person a payload is about, as a hash of its email (``email_hash``: ledger keys and
    columns never hold an email): the top-level ``email``, or the one contact of a list upsert.
    None when it names no one (or several)."""
    if not isinstance(payload, dict):
        return None
    email = payload.get("email")
    contacts = payload.get("contacts")
    if email is None and isinstance(contacts, list) and len(contacts) == 1 and isinstance(contacts[0], dict):
        email = contacts[0].get("email")
    if not isinstance(email, str) or "@" not in email:
        return None
    return email_hash(email)


def email_hash(email: str) -> str:
    """A stable key for a person: a hash of the normalised email, never the email (the ``person``
    column; ``pipeline.targets.person_key`` in ledger keys)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:24]


def utcnow() -> datetime:
    return datetime.utcnow()


# A claim older than this is presumed dead whoever holds it (a worker on another host that
# vanished): far longer than one request with all its in-line retries can take.
CLAIM_LEASE_S = 15 * 60


def process_identity() -> str:
    """Who holds a claim: host, pid and a token unique to this engine, so a later run can tell a
    dead owner from a live one, and two engines in one process never share claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_alive(claimed_by: str | None, claimed_at: datetime | None = None,
                   lease_s: float = CLAIM_LEASE_S) -> bool:
    """Whether the claim's owner may still be sending: on this host, its process still runs; on
    another host, its lease has not run out."""
    if not claimed_by:
        return False
    if claimed_at is not None and (utcnow() - claimed_at).total_seconds() > lease_s:
        return False
    host, pid = (claimed_by.split(":") + ["", ""])[:2]
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(payload) -> str:
    return json.dumps(payload, default=_json_default, separators=(",", ":"), sort_keys=True)


@dataclass(slots=True)
class PlannedDelivery:
    """One request storesync owes a vendor, before it is in the ledger."""

    vendor: str
    account: str
    event_type: str
    entity_id: str
    version: str
    endpoint: str
    payload: dict
    ordering_key: str = ""
    seq: int = 0
    method: str = "POST"
    historical: bool = False
    occurred_at: datetime | None = None
    versioning: str = CHANGE  # CONTENT: the latest version of the entity is what is owed
    # Versions this delivery was known by in older ledgers (order events were versioned by
    # ``seq``): when a row with one of them exists, the delivery is already in the ledger.
    legacy_versions: tuple[str, ...] = ()

    @property
    def delivery_key(self) -> str:
        return f"{self.vendor}|{self.account}|{self.event_type}|{self.entity_id}|{self.version}"

    def key_for(self, version: str) -> str:
        return f"{self.vendor}|{self.account}|{self.event_type}|{self.entity_id}|{version}"


@dataclass(slots=True)
class Delivery:
    """A ledger row, as the delivery engine sees it."""

    id: int
    delivery_key: str
    vendor: str
    account: str
    event_type: str
    entity_id: str
    version: str
    ordering_key: str
    seq: int
    method: str
    endpoint: str
    payload: dict
    state: str
    attempts: int
    historical: bool = False
    claimed_by: str | None = None
    versioning: str | None = None
    # When its outcome became unknown (unknown rows only; nothing else writes an unknown row):
    # the request was sent at or before this.
    unknown_since: datetime | None = None
    # The vendor's error code, or on an unknown row what settles it next (``engine.AWAITING_READ``).
    vendor_code: str | None = None


class ClaimCandidate(NamedTuple):
    """A row the next claim would take: enough to secure its rate-limit admission first."""

    id: int
    method: str
    endpoint: str


@dataclass
class Outcome:
    """What came back for one delivery."""

    state: str
    http_status: int | None = None
    error_class: str | None = None
    vendor_code: str | None = None
    vendor_error: str | None = None
    next_attempt_at: datetime | None = None
    extra: dict = field(default_factory=dict)


class Ledger:
    def __init__(self, url_or_engine: str | Engine, *, schema: str | None = None) -> None:
        if isinstance(url_or_engine, str):
            kwargs = {}
            if url_or_engine.startswith("sqlite"):
                # Several processes share one SQLite ledger: wait for locks instead of failing.
                kwargs["connect_args"] = {"timeout": 60}
            # hide_parameters: a failed statement's message must not carry payloads (emails) to logs
            url_or_engine = create_engine(url_or_engine, hide_parameters=True, **kwargs)
        self.engine = url_or_engine
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        if schema:
            # The ledger in its own schema of the user's database (e.g. "storesync" in the warehouse).
            if self.engine.dialect.name == "postgresql":
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            self.engine = self.engine.execution_options(schema_translate_map={None: schema})
        self.schema = schema
        self._claim_statements: dict[tuple, tuple] = {}
        _create_tables(self.engine, schema)

    # ------------------------------------------------------------------ planning
    def plan(self, items: Iterable[PlannedDelivery], *, sync_name: str, run_id: str,
             window_start: datetime | None = None, window_end: datetime | None = None,
             batch_size: int = 2000) -> int:
        """Stage deliveries not yet in the ledger (adopting this window's earlier staged ones);
        returns how many were new. Nothing staged is sent until ``promote(run_id)``.

        Content-versioned items are diffed against the latest version planned for their entity
        (see the module docstring), in batches: one indexed read per batch and vendor/event type,
        bounded to the batch's entities."""
        created = 0
        batch: list[PlannedDelivery] = []
        for item in items:
            batch.append(item)
            if len(batch) >= batch_size:
                created += self._plan_batch(batch, sync_name, run_id, window_start, window_end)
                batch = []
        if batch:
            created += self._plan_batch(batch, sync_name, run_id, window_start, window_end)
        return created

    def _plan_batch(self, items: list[PlannedDelivery], sync_name, run_id, window_start, window_end) -> int:
        # Two versions of one content entity in a batch: the last one is the entity's content.
        last_content = {(i.vendor, i.account, i.event_type, str(i.entity_id)): n
                        for n, i in enumerate(items) if i.versioning == CONTENT}
        items = [i for n, i in enumerate(items) if i.versioning != CONTENT
                 or last_content[(i.vendor, i.account, i.event_type, str(i.entity_id))] == n]
        content = [i for i in items if i.versioning == CONTENT]
        legacy_keys = [i.key_for(v) for i in items for v in i.legacy_versions]
        with self.engine.connect() as conn:
            latest = self._latest_rows(conn, content)
            known_legacy = self._existing_keys(conn, legacy_keys)
            taken = self._existing_keys(conn, [i.delivery_key for i in content])
        rows = []
        for item in items:
            if any(item.key_for(v) in known_legacy for v in item.legacy_versions):
                continue  # planned by an older storesync under its old version
            row = self._row(item, sync_name, run_id, window_start, window_end)
            if item.versioning == CONTENT:
                last = latest.get((item.vendor, item.account, item.event_type, str(item.entity_id)))
                if last is not None and same_content(row["version"], last["version"]):
                    # Unchanged: a no-op, or the adoption of a staged row (the conflict rule).
                    row["delivery_key"] = last["delivery_key"]
                else:
                    if row["delivery_key"] in taken:
                        # A version seen before (a revert): a key of its own, the same for any
                        # planner that sees the same latest row, so a race still plans it once.
                        row["delivery_key"] = f"{row['delivery_key']}#{last['id'] if last else 0}"
                    if last is not None:
                        row["seq"] = max(row["seq"], last["seq"] + 1)
            rows.append(row)
        return self._insert_new(rows) if rows else 0

    def _latest_rows(self, conn, items: Sequence[PlannedDelivery]) -> dict[tuple, dict]:
        """The newest non-superseded row of each item's entity (vendor, account, event type, id)."""
        groups: dict[tuple, set[str]] = {}
        for item in items:
            groups.setdefault((item.vendor, item.account, item.event_type), set()).add(str(item.entity_id))
        found: dict[tuple, dict] = {}
        for (vendor, account, event_type), ids in groups.items():
            ids = sorted(ids)
            for start in range(0, len(ids), 1000):
                newest = (select(func.max(deliveries.c.id))
                          .where(deliveries.c.vendor == vendor, deliveries.c.event_type == event_type,
                                 deliveries.c.entity_id.in_(ids[start:start + 1000]),
                                 deliveries.c.account == account, deliveries.c.state != SUPERSEDED)
                          .group_by(deliveries.c.entity_id))
                rows = conn.execute(
                    select(deliveries.c.id, deliveries.c.entity_id, deliveries.c.version, deliveries.c.seq,
                           deliveries.c.delivery_key, deliveries.c.state)
                    .where(deliveries.c.id.in_(newest))
                ).mappings()
                for row in rows:
                    found[(vendor, account, event_type, row["entity_id"])] = dict(row)
        return found

    @staticmethod
    def _existing_keys(conn, keys: Sequence[str]) -> set[str]:
        keys = sorted(set(keys))
        known: set[str] = set()
        for start in range(0, len(keys), 1000):
            known.update(conn.execute(select(deliveries.c.delivery_key)
                                      .where(deliveries.c.delivery_key.in_(keys[start:start + 1000]))).scalars())
        return known

    def _row(self, item: PlannedDelivery, sync_name, run_id, window_start, window_end) -> dict:
        now = utcnow()
        return {
            "delivery_key": item.delivery_key, "vendor": item.vendor, "account": item.account,
            "event_type": item.event_type, "entity_id": str(item.entity_id), "version": str(item.version),
            "ordering_key": item.ordering_key or f"{item.event_type}:{item.entity_id}", "seq": item.seq,
            "method": item.method, "endpoint": item.endpoint, "payload": dumps(item.payload),
            "historical": item.historical, "state": STAGED, "attempts": 0, "sync_name": sync_name,
            "planned_run_id": run_id, "last_run_id": run_id, "window_start": window_start,
            "window_end": window_end, "occurred_at": item.occurred_at, "planned_at": now, "updated_at": now,
            "versioning": item.versioning, "person": person_of(item.payload),
        }

    def _insert_new(self, rows: list[dict]) -> int:
        # Every plan passes here: an erased person's deliveries are never planned again.
        from storesync.privacy.subjects import without_erased

        rows = without_erased(self.engine, rows)
        if not rows:
            return 0
        # Duplicates within the batch too: the first wins, as it would across batches.
        unique: dict[str, dict] = {}
        for row in rows:
            unique.setdefault(row["delivery_key"], row)
        rows = list(unique.values())
        dialect = self.engine.dialect.name
        with self.engine.begin() as conn:
            if dialect in ("postgresql", "sqlite"):
                if dialect == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert as dialect_insert
                else:
                    from sqlalchemy.dialects.sqlite import insert as dialect_insert
                stmt = dialect_insert(deliveries)
                # A row still staged belongs to a run whose gate failed: this run adopts it.
                stmt = stmt.on_conflict_do_update(
                    index_elements=["delivery_key"],
                    set_={"planned_run_id": stmt.excluded.planned_run_id, "payload": stmt.excluded.payload,
                          "updated_at": stmt.excluded.updated_at},
                    where=deliveries.c.state == STAGED,
                ).returning(deliveries.c.id)
                return len(conn.execute(stmt, rows).all())
            keys = [r["delivery_key"] for r in rows]
            known = set(conn.execute(select(deliveries.c.delivery_key)
                                     .where(deliveries.c.delivery_key.in_(keys))).scalars())
            fresh = [r for r in rows if r["delivery_key"] not in known]
            if fresh:
                conn.execute(insert(deliveries), fresh)
            return len(fresh)

    def promote(self, run_id: str) -> int:
        """The run's quality gate passed: its staged deliveries may now be sent, and older
        versions of the same entities that are not in flight are superseded by them."""
        with self.engine.begin() as conn:
            promoted = conn.execute(
                update(deliveries).where(deliveries.c.planned_run_id == run_id, deliveries.c.state == STAGED)
                .values(state=PLANNED, updated_at=utcnow())
            ).rowcount
            if promoted:
                self._supersede(conn, run_id=run_id, promoted_run=run_id)
                self._supersede_healed(conn, run_id)
        return promoted

    # ------------------------------------------------------------------ healing dead letters
    # A status change's delivery that died for its data (it could not be mapped, or the vendor
    # rejected it) is owed again once the warehouse's data changes: the re-planned payload gets a
    # revision of the change's version, ``<change id>~<hash of endpoint and payload>``, the same
    # for every planner that reads the same data, so a race still plans it once. Only a family
    # (one change of one entity: its base version and revisions) whose newest row is dead is
    # re-planned, and only with a payload other than that row's: nothing the vendor accepted, and
    # nothing in flight, is ever sent again. The dead row is superseded when the revision is
    # promoted (its run's gate passed), releasing what waited behind it.

    def dead_order_entities(self, vendor: str, account: str) -> dict[str, set[bool]]:
        """Entities (order ids) with a dead status-change delivery of ``vendor``/``account``, each
        with whether its dead deliveries were historical ({False}, {True} or both). Reads the dead
        rows only (state index)."""
        query = (select(deliveries.c.entity_id, deliveries.c.historical).distinct()
                 .where(deliveries.c.state == DEAD, deliveries.c.vendor == vendor,
                        deliveries.c.account == account, deliveries.c.ordering_key.like("order:%"),
                        or_(deliveries.c.versioning.is_(None), deliveries.c.versioning != CONTENT)))
        found: dict[str, set[bool]] = {}
        with self.engine.connect() as conn:
            for entity_id, historical in conn.execute(query):
                found.setdefault(entity_id, set()).add(bool(historical))
        return found

    def replan_dead(self, items: Iterable[PlannedDelivery], *, sync_name: str, run_id: str,
                    window_start: datetime | None = None, window_end: datetime | None = None) -> Counter:
        """Plan ``items`` (an entity's deliveries re-built from the warehouse's current data):
        a status change whose newest delivery is dead, with a payload other than that one's, is
        planned again as a revision (staged, like any plan); every other item is planned as usual
        (a no-op when it is in the ledger). Returns the revisions staged per ``vendor:event_type``."""
        items = list(items)
        changes = [i for i in items if i.versioning != CONTENT]
        families = self._change_families(changes)
        revisions, ordinary, healed = [], [i for i in items if i.versioning == CONTENT], Counter()
        for item in changes:
            family = families.get((item.vendor, item.account, item.event_type, str(item.entity_id), str(item.version)))
            # A revision still staged (its run's gate failed) is not the newest word: planned
            # again under the same key below, this run adopts it.
            live = [r for r in family or () if r["state"] not in (SUPERSEDED, STAGED)]
            latest = max(live, key=lambda r: r["id"]) if live else None
            if latest is None or latest["state"] not in HEALABLE_STATES or bool(latest["historical"]) != item.historical:
                # Never planned (owed as usual), accepted, in flight, or of the other kind (a live
                # row is re-planned from a live event only): planned as usual.
                ordinary.append(item)
                continue
            payload = dumps(item.payload)
            if (latest["endpoint"], latest["payload"]) == (item.endpoint, payload):
                continue  # the same data that died: it stays dead (replay it if the cause was elsewhere)
            digest = hashlib.sha256(f"{item.endpoint}\n{payload}".encode()).hexdigest()[:12]
            version = f"{item.version}~{digest}"
            if any(r["version"] == version and r["state"] != STAGED for r in family):
                version = f"{version}.{latest['id']}"  # back to data seen before: a key of its own
            row = self._row(item, sync_name, run_id, window_start, window_end)
            row.update(version=version, delivery_key=item.key_for(version), seq=latest["seq"])
            revisions.append(row)
            healed[f"{item.vendor}:{item.event_type}"] += 1
        if revisions:
            self._insert_new(revisions)
        if ordinary:
            self.plan(ordinary, sync_name=sync_name, run_id=run_id, window_start=window_start,
                      window_end=window_end)
        return healed

    def _change_families(self, items: Sequence[PlannedDelivery]) -> dict[tuple, list[dict]]:
        """Every row of these items' entities (one indexed read per thousand per kind), grouped by
        (vendor, account, event type, entity id, base version)."""
        groups: dict[tuple, set[str]] = {}
        for item in items:
            groups.setdefault((item.vendor, item.account, item.event_type), set()).add(str(item.entity_id))
        families: dict[tuple, list[dict]] = {}
        d = deliveries.c
        with self.engine.connect() as conn:
            for (vendor, account, event_type), ids in groups.items():
                ids = sorted(ids)
                for start in range(0, len(ids), 1000):
                    rows = conn.execute(
                        select(d.id, d.entity_id, d.version, d.state, d.endpoint, d.payload, d.seq, d.historical)
                        .where(d.vendor == vendor, d.event_type == event_type, d.entity_id.in_(ids[start:start + 1000]),
                               d.account == account)).mappings()
                    for row in rows:
                        base = row["version"].split("~", 1)[0]
                        families.setdefault((vendor, account, event_type, row["entity_id"], base), []).append(dict(row))
        return families

    def _supersede_healed(self, conn, run_id: str) -> int:
        """Settle the revisions ``run_id`` just promoted, in the promote's transaction: the older
        rows of the same change (dead, or waiting unsent with the old data) are superseded by
        them. Should an older one have gone out meanwhile (claimed since it was read: ``sending``,
        ``unknown``, ``accepted``), the revision is superseded instead: never both."""
        d = deliveries.c
        revisions = conn.execute(
            select(d.id, d.vendor, d.account, d.event_type, d.entity_id, d.version)
            .where(d.planned_run_id == run_id, d.state == PLANNED, d.version.like("%~%"),
                   or_(d.versioning.is_(None), d.versioning != CONTENT))).all()
        now, superseded = utcnow(), []
        replaced = "re-planned from the warehouse's changed data (a newer revision)"
        sent_meanwhile = "its change went out under an older revision meanwhile"
        for rev in revisions:
            base = rev.version.split("~", 1)[0]
            older = [r for r in conn.execute(
                select(d.id, d.version, d.state).where(d.vendor == rev.vendor, d.event_type == rev.event_type,
                                                       d.entity_id == rev.entity_id, d.account == rev.account,
                                                       d.id < rev.id, d.state != SUPERSEDED)).all()
                     if r.version.split("~", 1)[0] == base]
            if any(r.state not in HEALABLE_STATES for r in older):
                ids, reason = [rev.id], sent_meanwhile
            else:
                ids, reason = [r.id for r in older], replaced
            if ids:
                conn.execute(update(deliveries).where(d.id.in_(ids)).values(
                    state=SUPERSEDED, vendor_error=reason, claimed_by=None, next_attempt_at=None,
                    updated_at=now, last_run_id=run_id))
                superseded += [(i, rev, reason) for i in ids]
        if superseded:
            conn.execute(insert(record_log), [
                {"run_id": run_id, "delivery_id": i, "vendor": rev.vendor, "operation": rev.event_type,
                 "entity_id": rev.entity_id, "status": SUPERSEDED, "http_status": None, "error_class": None,
                 "error": reason, "logged_at": now} for i, rev, reason in superseded])
        return len(superseded)

    def waiting_behind_dead(self, vendor: str, account: str) -> int:
        """Deliveries of this account that wait behind a dead letter of their ordering key (an
        order's later events behind its dead purchase): nothing sends them until it is healed or
        replayed. Reads the account's claimable rows (few) through the claim index."""
        dead = deliveries.alias("dead")
        blocked = exists().where(
            dead.c.vendor == deliveries.c.vendor, dead.c.account == deliveries.c.account,
            dead.c.ordering_key == deliveries.c.ordering_key, dead.c.state == DEAD,
            or_(dead.c.versioning.is_(None), dead.c.versioning != CONTENT),
            or_(dead.c.seq < deliveries.c.seq, and_(dead.c.seq == deliveries.c.seq, dead.c.id < deliveries.c.id)))
        query = select(func.count()).select_from(deliveries).where(
            deliveries.c.vendor == vendor, deliveries.c.account == account, _claimable_state(), blocked)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def supersede_stale(self, vendor: str, account: str, *, run_id: str | None = None) -> int:
        """Content rows waiting to be (re)sent (planned, retry) while a newer version of their
        entity is already promoted: superseded. Catches what promotion could not (an older row
        that was in flight then and came back as a retry, or a lookup's "not found")."""
        with self.engine.begin() as conn:
            return self._supersede(conn, run_id=run_id, vendor=vendor, account=account)

    def _supersede(self, conn, *, run_id: str | None, promoted_run: str | None = None,
                   vendor: str | None = None, account: str | None = None) -> int:
        now = utcnow()
        newer = deliveries.alias("newer")
        same_entity = [newer.c.vendor == deliveries.c.vendor, newer.c.event_type == deliveries.c.event_type,
                       newer.c.entity_id == deliveries.c.entity_id, newer.c.account == deliveries.c.account,
                       newer.c.id > deliveries.c.id]
        condition = []
        if promoted_run is not None:
            same_entity += [newer.c.planned_run_id == promoted_run, newer.c.state.concat("") == PLANNED]
            states = SUPERSEDABLE_STATES
            # Only the entities the promoted run planned (read through ix_deliveries_planned_run,
            # then looked up by entity), never every open content row of the ledger.
            mine = deliveries.alias("mine")
            condition.append(tuple_(deliveries.c.vendor, deliveries.c.event_type, deliveries.c.entity_id,
                                    deliveries.c.account).in_(
                select(mine.c.vendor, mine.c.event_type, mine.c.entity_id, mine.c.account)
                .where(mine.c.planned_run_id == promoted_run, mine.c.state == PLANNED,
                       mine.c.versioning == CONTENT)))
        else:
            same_entity += [newer.c.state.notin_((STAGED, SUPERSEDED))]
            states = CLAIMABLE_STATES
        # The state through an expression no index covers when the run's entities drive the read:
        # on the bare column SQLite walks the state (or claim) index, every open row of the account.
        state = deliveries.c.state.concat("") if promoted_run is not None else deliveries.c.state
        condition += [state.in_(states), deliveries.c.versioning == CONTENT, exists().where(*same_entity)]
        if vendor is not None:
            condition += [deliveries.c.vendor == vendor, deliveries.c.account == account]
        reason = "superseded by a newer version of this entity before it was sent"
        rows = conn.execute(
            update(deliveries).where(*condition)
            .values(state=SUPERSEDED, claimed_by=None, next_attempt_at=None, updated_at=now,
                    vendor_error=reason, last_run_id=run_id)
            .returning(deliveries.c.id, deliveries.c.vendor, deliveries.c.event_type, deliveries.c.entity_id)
        ).all()
        if rows:
            conn.execute(insert(record_log), [
                {"run_id": run_id, "delivery_id": r.id, "vendor": r.vendor, "operation": r.event_type,
                 "entity_id": r.entity_id, "status": SUPERSEDED, "http_status": None, "error_class": None,
                 "error": reason, "logged_at": now}
                for r in rows
            ])
        return len(rows)

    def known_versions(self, vendor: str, account: str, event_type: str,
                       entity_ids: Sequence[str]) -> dict[str, str]:
        """The latest planned version per entity, for these entities only (one indexed read per
        thousand): content-hash diffing compares with it."""
        if not entity_ids:
            return {}
        probe = [PlannedDelivery(vendor, account, event_type, str(e), "", "", {}) for e in entity_ids]
        with self.engine.connect() as conn:
            latest = self._latest_rows(conn, probe)
        return {key[3]: row["version"] for key, row in latest.items()}

    # ------------------------------------------------------------------ claiming
    def claim(self, vendor: str, account: str, limit: int, owner: str) -> list[Delivery]:
        """Take up to ``limit`` sendable deliveries: open, due, and first in their ordering key."""
        with self.engine.begin() as conn:
            return self._claim_in(conn, vendor, account, limit, owner)

    def record_and_claim(self, results: Sequence[tuple[Delivery, Outcome]], *, run_id: str | None,
                         owner: str, vendor: str, account: str, limit: int,
                         ids: Sequence[int] | None = None) -> list[Delivery]:
        """``record(results, owner=owner)`` and ``claim(vendor, account, limit, owner)`` in one
        transaction: what the delivery engine does as answers come back, so each batch of answers
        costs one ledger transaction, not two. Claims at most ``limit`` (none when it is 0);
        with ``ids``, only those of them still claimable (see ``next_claimable``)."""
        with self.engine.begin() as conn:
            self._record_in(conn, results, run_id=run_id, owner=owner)
            if ids is not None and not ids:
                return []
            return self._claim_in(conn, vendor, account, limit, owner, ids=ids)

    def next_claimable(self, vendor: str, account: str, limit: int) -> list[ClaimCandidate]:
        """The rows ``claim`` would take next, in its order, without taking them: the delivery
        engine first secures each one's rate-limit admission, then claims (``record_and_claim``
        with ``ids``) only those it can send at once, so no claimed row waits for budget."""
        if limit <= 0:
            return []
        now = utcnow()
        key, conditions, params = self._claim_filter(vendor, now)
        statement = self._claim_statements.get((key, "peek"))
        if statement is None:
            statement = self._claim_statements[(key, "peek")] = (
                select(deliveries.c.id, deliveries.c.method, deliveries.c.endpoint)
                .where(*_candidate_conditions(conditions)).order_by(deliveries.c.id)
                .limit(bindparam("c_limit", type_=Integer)))
        params = {**params, "c_vendor": vendor, "c_account": account, "c_limit": limit, "c_now": now,
                  "c_person_since": now - timedelta(seconds=PERSON_WAIT_S)}
        with self.engine.connect() as conn:
            return [ClaimCandidate(*row) for row in conn.execute(statement, params)]

    def _claim_filter(self, vendor: str, now: datetime, **scope) -> tuple[tuple, list, dict]:
        """What makes a claimable row due for this ledger's claim, as ``(cache key, conditions,
        their parameters)``; the conditions use bound parameters only (``c_now`` is always
        given), so the statement is built once per cache key. The live claim: no retry delay
        pending. (``HistoricalLedger`` claims its parked range instead, scoped by event type.)"""
        due = or_(deliveries.c.next_attempt_at.is_(None),
                  deliveries.c.next_attempt_at <= bindparam("c_now", type_=DateTime))
        return ("live",), [due], {}

    def _claim_in(self, conn, vendor: str, account: str, limit: int, owner: str, *,
                  claimed_at: datetime | None = None, ids: Sequence[int] | None = None,
                  **scope) -> list[Delivery]:
        """The claim, inside ``conn``'s transaction: the first ``limit`` due rows (by id) not
        waiting on an earlier row of their ordering key become ``sending``, owned by ``owner``.
        ``ids``: of these rows only. ``scope`` goes to ``_claim_filter`` (what a subclass's
        claim may be narrowed to)."""
        if limit <= 0:
            return []
        now = utcnow()
        key, conditions, params = self._claim_filter(vendor, now, **scope)
        if ids is not None:
            key, conditions = (*key, "ids"), [*conditions, deliveries.c.id.in_(bindparam("c_only", expanding=True))]
            params = {**params, "c_only": list(ids)}
        params = {**params, "c_vendor": vendor, "c_account": account, "c_limit": limit, "c_now": now,
                  "c_owner": owner, "c_claimed_at": claimed_at or now,
                  "c_person_since": now - timedelta(seconds=PERSON_WAIT_S)}
        returning = self.engine.dialect.update_returning
        statements = self._claim_statements.get((key, returning))
        if statements is None:
            statements = self._claim_statements[(key, returning)] = _claim_statements(conditions, returning)
        candidates, claim, reread = statements
        if reread is None:
            # One statement: the candidates' ids, claimed, and the claimed rows returned.
            rows = conn.execute(claim, params).mappings().all()
            return [self._delivery(row) for row in sorted(rows, key=lambda r: r["id"])]
        ids = list(conn.execute(candidates, params).scalars())
        if not ids:
            return []
        conn.execute(claim, {**params, "c_ids": ids})
        rows = conn.execute(reread, {**params, "c_ids": ids}).mappings().all()
        return [self._delivery(row) for row in rows]

    @staticmethod
    def _delivery(row) -> Delivery:
        return Delivery(
            id=row["id"], delivery_key=row["delivery_key"], vendor=row["vendor"], account=row["account"],
            event_type=row["event_type"], entity_id=row["entity_id"], version=row["version"],
            ordering_key=row["ordering_key"], seq=row["seq"], method=row["method"],
            endpoint=row["endpoint"], payload=json.loads(row["payload"]), state=row["state"],
            attempts=row["attempts"], historical=bool(row["historical"]), claimed_by=row["claimed_by"],
            versioning=row.get("versioning"),
            unknown_since=row["updated_at"] if row["state"] == UNKNOWN else None,
            vendor_code=row.get("vendor_code"),
        )

    def record(self, results: Sequence[tuple[Delivery, Outcome]], *, run_id: str | None,
               owner: str | None = None) -> None:
        """Write what each vendor answered, and one record-log line per answer, in one transaction.
        With ``owner``, only rows this owner still holds are written (a claim recovered by another
        run after its lease ran out is that run's to settle)."""
        if not results:
            return
        with self.engine.begin() as conn:
            self._record_in(conn, results, run_id=run_id, owner=owner)

    def _record_in(self, conn, results: Sequence[tuple[Delivery, Outcome]], *, run_id: str | None,
                   owner: str | None) -> None:
        """``record``, inside ``conn``'s transaction: one executemany per statement shape (owner
        guard or not; a ``sending`` outcome keeps its claim), however many answers."""
        if not results:
            return
        now = utcnow()
        shapes: dict[bool, list[dict]] = {}
        for delivery, outcome in results:
            shapes.setdefault(outcome.state == SENDING, []).append({
                "r_id": delivery.id, "r_state": outcome.state, "r_http_status": outcome.http_status,
                "r_error_class": outcome.error_class, "r_vendor_code": outcome.vendor_code,
                "r_vendor_error": outcome.vendor_error, "r_now": now, "r_run_id": run_id,
                "r_next_attempt_at": outcome.next_attempt_at,
                "r_accepted_at": now if outcome.state == ACCEPTED else None, "r_owner": owner,
            })
        for keep_claim, params in shapes.items():
            conn.execute(_record_statement(owner is not None, keep_claim), params)
        conn.execute(insert(record_log), [
            {"run_id": run_id, "delivery_id": d.id, "vendor": d.vendor, "operation": d.event_type,
             "entity_id": d.entity_id, "status": o.state, "http_status": o.http_status,
             "error_class": o.error_class, "error": o.vendor_error, "logged_at": now}
            for d, o in results
        ])

    def release(self, items: Sequence[Delivery]) -> None:
        """Give back claims that were never sent (a run stopping early): they are plainly pending."""
        if not items:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(deliveries).where(deliveries.c.id.in_([d.id for d in items]),
                                         deliveries.c.state == SENDING)
                .values(state=RETRY, claimed_by=None, attempts=deliveries.c.attempts - 1, updated_at=utcnow())
            )

    # ------------------------------------------------------------------ recovery
    def orphaned(self, vendor: str, account: str) -> list[Delivery]:
        """``sending`` rows whose owner died: sent or not, nobody knows. Marked ``unknown``."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(deliveries).where(deliveries.c.vendor == vendor, deliveries.c.account == account,
                                         deliveries.c.state == SENDING)
            ).mappings().all()
            dead = [self._delivery(r) for r in rows if not owner_is_alive(r["claimed_by"], r["claimed_at"])]
            if dead:
                conn.execute(
                    update(deliveries).where(deliveries.c.id.in_([d.id for d in dead]),
                                             deliveries.c.state == SENDING)
                    .values(state=UNKNOWN, claimed_by=None, error_class="unknown_outcome",
                            vendor_error="the sending process died before the vendor answered",
                            updated_at=utcnow())
                )
        for d in dead:
            d.state = UNKNOWN
        return dead

    def open_by_account(self, vendor: str) -> dict[str, int]:
        """Open deliveries of ``vendor`` per account (read through the claim index)."""
        query = (select(deliveries.c.account, func.count()).where(
            deliveries.c.vendor == vendor, deliveries.c.state.in_(OPEN_STATES)).group_by(deliveries.c.account))
        with self.engine.connect() as conn:
            return {account: n for account, n in conn.execute(query)}

    def move_account(self, vendor: str, old: str, new: str, *,
                     also: Callable[[Connection, str, str, str], dict[str, int]] | None = None,
                     merge_unsent: bool = False) -> dict[str, int]:
        """Re-key ``vendor``'s deliveries under account ``old`` to ``new``: the same vendor
        account under a new key (an API key rotated while the account key was its fingerprint,
        an ``account_id`` set later). Every row moves, accepted ones too, so what was sent is
        not sent again under the new key. One transaction; refuses (changing nothing) while
        any of them is in flight (``sending``) or when ``new`` already holds a delivery of the
        same identity. With ``merge_unsent``, such a twin of ``old`` that never left (planned,
        never claimed) is dropped instead (``new`` owes the same delivery), one record-log line
        each (``dropped_unsent`` counts them); a twin that could have left still refuses the move.
        ``also(conn, vendor, old, new)``: the caller's own per-account rows, moved in the same
        transaction (``storesync.pipeline.accounts.move_account``: the historical sync's and the
        unsubscribes'). Returns the rows moved per table."""
        if old == new:
            raise ValueError("the old and new account are the same")
        old_prefix, new_prefix = f"{vendor}|{old}|", f"{vendor}|{new}|"
        d = deliveries.c
        mine = (d.vendor == vendor) & (d.account == old)
        moved_key = literal(new_prefix) + func.substr(d.delivery_key, len(old_prefix) + 1)
        taken = deliveries.alias("taken")
        twin = and_(mine, exists().where(taken.c.delivery_key == moved_key))
        # Never left: planned and never claimed (no attempt, no answer). Only these may be dropped.
        unsent = and_(twin, d.state == PLANNED, d.claimed_at.is_(None), d.attempts == 0,
                      d.http_status.is_(None))
        with self.engine.begin() as conn:
            in_flight = conn.execute(select(func.count()).where(mine, d.state == SENDING)).scalar_one()
            if in_flight:
                raise LedgerConflict(f"{in_flight} {vendor} deliveries of account {old!r} are in flight (sending): "
                                     "let their run finish (or its process die) first")
            clashes = conn.execute(select(func.count()).where(twin)).scalar_one()
            droppable = conn.execute(select(func.count()).where(unsent)).scalar_one() if clashes else 0
            if clashes and (not merge_unsent or droppable < clashes):
                if merge_unsent:
                    detail = (f"{clashes - droppable} of them may have left (claimed, sent or answered): "
                              "nothing moved; reconcile them first")
                elif droppable == clashes:
                    detail = ("nothing moved; none of them ever left (planned, never claimed): "
                              "--merge-unsent drops them and moves the rest")
                else:
                    detail = f"nothing moved ({droppable} never left, {clashes - droppable} may have)"
                raise LedgerConflict(f"account {new!r} already holds {clashes} {vendor} deliveries that account "
                                     f"{old!r} holds too: {detail}")
            dropped = []
            if droppable:
                dropped = conn.execute(select(d.id, d.event_type, d.entity_id).where(unsent)).all()
                now = utcnow()
                conn.execute(insert(record_log), [
                    {"run_id": f"move-account {vendor} {old} -> {new}", "delivery_id": row.id,
                     "vendor": vendor, "operation": row.event_type, "entity_id": row.entity_id,
                     "status": "dropped", "error": f"never sent under account {old}; account {new} holds the same delivery",
                     "logged_at": now} for row in dropped])
                conn.execute(deliveries.delete().where(d.id.in_([row.id for row in dropped])))
            moved = {"storesync_deliveries": conn.execute(
                update(deliveries).where(mine).values(account=new, delivery_key=moved_key)).rowcount}
            if dropped:
                moved["dropped_unsent"] = len(dropped)
            if also is not None:
                moved.update(also(conn, vendor, old, new))
        if dropped:
            log.info("%s: %d deliveries of account %s that never left were dropped: account %s holds the "
                     "same ones", vendor, len(dropped), old, new)
        return moved

    def adopt_unproven_accounts(self, vendor: str, account: str, *, sync_name: str,
                                also: Callable[[Connection, str, str, str], dict[str, int]] | None = None
                                ) -> dict[str, int]:
        """Bring the open deliveries of ``sync_name`` planned for ``vendor`` under another account
        key that was never proven to be a real account into ``account``, the key this sync now
        sends under: the fix for a mistyped credential corrected in its connection (the rows were
        keyed by the wrong token's fingerprint), with no command. A key is unproven when the vendor
        refused its credentials (a row failed on auth) and never answered anything else under it:
        nothing accepted, suppressed, in flight or of unknown outcome, no answer but an auth error.
        Such a key never reached an account, so the sync's rows are still owed to the account it
        sends to now. Only the sync's own rows move: another account of the vendor (another sync,
        its credential mistyped) keeps its rows. A key the vendor answered is a real, different
        account: left alone (the engine refuses it loudly). A row the current key already holds
        (planned again since, under the right key) is superseded, not moved. ``also``: the
        caller's per-account rows, moved in the same transaction. Returns rows moved per old key."""
        d = deliveries.c
        candidates = (select(d.account).distinct()
                      .where(d.vendor == vendor, d.sync_name == sync_name, d.account != account, _open_state()))
        with self.engine.connect() as conn:
            olds = sorted(conn.execute(candidates).scalars())
        adopted: dict[str, int] = {}
        for old in olds:
            with self.engine.begin() as conn:
                if not self._unproven(conn, vendor, old):
                    continue
                adopted[old] = self._adopt(conn, vendor, old, account, sync_name, also)
            log.warning("%s %s: %d open deliveries planned under account key %s, whose credentials the vendor "
                        "refused and which never reached an account, continue under %s (the corrected credential)",
                        sync_name, vendor, adopted[old], old, account)
        return adopted

    @staticmethod
    def _unproven(conn, vendor: str, key: str) -> bool:
        d = deliveries.c
        mine = and_(d.vendor == vendor, d.account == key)
        refused = conn.execute(select(exists().where(mine, d.error_class == "auth"))).scalar()
        answered = conn.execute(select(exists().where(mine, or_(
            d.state.in_((ACCEPTED, SUPPRESSED, SENDING, UNKNOWN)), d.accepted_at.is_not(None),
            and_(d.http_status.is_not(None), or_(d.error_class.is_(None), d.error_class != "auth")))))).scalar()
        return bool(refused) and not answered

    def _adopt(self, conn, vendor: str, old: str, new: str, sync_name: str, also) -> int:
        old_prefix, new_prefix = f"{vendor}|{old}|", f"{vendor}|{new}|"
        d = deliveries.c
        mine = (d.vendor == vendor) & (d.account == old) & (d.sync_name == sync_name)
        moved_key = literal(new_prefix) + func.substr(d.delivery_key, len(old_prefix) + 1)
        taken = deliveries.alias("taken")
        now, reason = utcnow(), f"owed under account {new} too (planned again under the corrected credential)"
        conn.execute(update(deliveries).where(mine, d.state.in_(OPEN_STATES), exists().where(
            taken.c.delivery_key == moved_key)).values(state=SUPERSEDED, vendor_error=reason, updated_at=now))
        moved = conn.execute(update(deliveries).where(mine, ~exists().where(taken.c.delivery_key == moved_key))
                             .values(account=new, delivery_key=moved_key, updated_at=now)).rowcount
        if also is not None:
            also(conn, vendor, old, new)
        return moved

    def in_state(self, state: str, *, vendor: str | None = None, account: str | None = None,
                 limit: int | None = None) -> list[Delivery]:
        query = select(deliveries).where(deliveries.c.state == state).order_by(deliveries.c.id)
        if vendor:
            query = query.where(deliveries.c.vendor == vendor)
        if account:
            query = query.where(deliveries.c.account == account)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [self._delivery(r) for r in conn.execute(query).mappings()]

    def requeue(self, ids: Sequence[int], *, reset_attempts: bool = True) -> int:
        """Put dead or held deliveries back in line (replay, reconciliation)."""
        if not ids:
            return 0
        values = {"state": RETRY, "claimed_by": None, "next_attempt_at": None, "updated_at": utcnow()}
        if reset_attempts:
            values["attempts"] = 0
        with self.engine.begin() as conn:
            return conn.execute(
                update(deliveries).where(deliveries.c.id.in_(list(ids)),
                                         deliveries.c.state.in_((DEAD, UNKNOWN, RETRY)))
                .values(**values)
            ).rowcount

    def mark_accepted(self, ids: Sequence[int], *, reason: str) -> int:
        """Reconciliation found these at the vendor: record them accepted, with why."""
        if not ids:
            return 0
        now = utcnow()
        with self.engine.begin() as conn:
            return conn.execute(
                update(deliveries).where(deliveries.c.id.in_(list(ids)), deliveries.c.state == UNKNOWN)
                .values(state=ACCEPTED, accepted_at=now, updated_at=now, vendor_error=reason, claimed_by=None)
            ).rowcount

    def settle_unknown(self, settled: Sequence[tuple[int, str, str]], *, run_id: str | None) -> int:
        """Settle held rows by a rule of the vendor's contract (``storesync.delivery.settle``):
        ``(id, state, reason)`` with state ``accepted`` (a read proved arrival), ``superseded``
        (moot: what the vendor accepted since makes it so) or ``retry`` (a read proved it did not
        arrive: sent again). Only rows still ``unknown``; each gets a record-log line saying why."""
        if not settled:
            return 0
        now = utcnow()
        done = 0
        with self.engine.begin() as conn:
            for delivery_id, state, reason in settled:
                values = {"state": state, "vendor_error": reason[:2000], "claimed_by": None, "updated_at": now,
                          "last_run_id": run_id, "next_attempt_at": None}
                if state == ACCEPTED:
                    values["accepted_at"] = now
                row = conn.execute(
                    update(deliveries).where(deliveries.c.id == delivery_id, deliveries.c.state == UNKNOWN)
                    .values(**values).returning(deliveries.c.vendor, deliveries.c.event_type,
                                                deliveries.c.entity_id)).first()
                if row is None:
                    continue
                done += 1
                conn.execute(insert(record_log).values(
                    run_id=run_id, delivery_id=delivery_id, vendor=row.vendor, operation=row.event_type,
                    entity_id=row.entity_id, status=state, http_status=None, error_class="unknown_outcome",
                    error=reason[:2000], logged_at=now))
        return done

    def mark_unknown_code(self, ids: Sequence[int], code: str | None) -> None:
        """Note on held rows what settles them next (``vendor_code``), leaving ``updated_at`` (their
        ``unknown_since``) as it is."""
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id.in_(list(ids)), deliveries.c.state == UNKNOWN)
                         .values(vendor_code=code))

    # ------------------------------------------------------------------ reporting
    def counts(self, *, vendor: str | None = None, sync_name: str | None = None,
               run_id: str | None = None, states: Sequence[str] | None = None) -> dict[str, int]:
        """Deliveries by state. ``states`` (say, the open ones and dead letters) and ``run_id``
        are indexed predicates: use them where a whole-ledger count is not needed."""
        query = select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
        if states is not None:
            query = query.where(deliveries.c.state.in_(list(states)))
        if vendor:
            query = query.where(deliveries.c.vendor == vendor)
        if sync_name:
            query = query.where(deliveries.c.sync_name == sync_name)
        if run_id:
            query = query.where(deliveries.c.last_run_id == run_id)
        with self.engine.connect() as conn:
            return {state: n for state, n in conn.execute(query)}

    def window_is_settled(self, sync_name: str, window_start: datetime, window_end: datetime) -> bool:
        """True when every delivery planned for this window reached a terminal state. Reads the
        window's open rows only (``ix_deliveries_open_window``), not every row it ever sent."""
        # The states inline (a partial index is used only for a query naming its literals) and
        # window_end as an expression: a plain equality on it made SQLite read the whole window
        # through ``ix_deliveries_window`` or, once analyzed, scan the ledger.
        with self.engine.connect() as conn:
            return not conn.execute(
                select(exists().where(and_(deliveries.c.sync_name == sync_name,
                                           deliveries.c.window_start == window_start,
                                           func.coalesce(deliveries.c.window_end, deliveries.c.window_end) == window_end,
                                           _open_state())))
            ).scalar()

    # ------------------------------------------------------------------ runs and watermarks
    def start_run(self, run_id: str, sync_name: str, *, window_start=None, window_end=None,
                  dry_run: bool = False) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            known = conn.execute(select(sync_runs.c.run_id).where(sync_runs.c.run_id == run_id)).first()
            values = {"sync_name": sync_name, "window_start": window_start, "window_end": window_end,
                      "dry_run": dry_run, "status": "running", "started_at": now, "finished_at": None,
                      "error": None}
            if known:
                conn.execute(update(sync_runs).where(sync_runs.c.run_id == run_id).values(**values))
            else:
                conn.execute(insert(sync_runs).values(run_id=run_id, **values))

    def finish_run(self, run_id: str, status: str, counts: dict | None = None, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(sync_runs).where(sync_runs.c.run_id == run_id).values(
                status=status, finished_at=utcnow(), counts=dumps(counts or {}), error=error))

    def settled_until(self, sync_name: str, window_start: datetime, window_end: datetime) -> datetime | None:
        """The end of the contiguous settled prefix, for a run of the sync that just planned its
        window ``[window_start, window_end)``: from the watermark (or the earliest window known),
        window after window that ran (this one, or a recorded run that is neither a dry run nor
        failed), as far as no delivery of the sync is still open. A window that never ran stops
        it: its orders were never read, and the mark must not say they were sent. None when the
        prefix is empty. Reads open rows only (a partial index) and the sync's runs since the mark."""
        with self.engine.connect() as conn:
            current = conn.execute(select(watermarks.c.window_end)
                                   .where(watermarks.c.sync_name == sync_name)).scalar()
            first_open = conn.execute(
                select(func.min(deliveries.c.window_start)).where(deliveries.c.sync_name == sync_name, _open_state())
            ).scalar()
            ran = select(sync_runs.c.window_start, sync_runs.c.window_end).where(
                sync_runs.c.sync_name == sync_name, sync_runs.c.window_start.is_not(None),
                sync_runs.c.window_end.is_not(None), sync_runs.c.dry_run.is_(False),
                sync_runs.c.status.not_in(("failed", "dry_run")))
            if current is not None:
                ran = ran.where(sync_runs.c.window_end > current)
            windows = sorted([(window_start, window_end), *((s, e) for s, e in conn.execute(ran))])
        origin = current if current is not None else windows[0][0]
        mark = origin
        for start, end in windows:
            if start > mark:
                break  # a gap: a window never ran (or failed) there
            if first_open is None or end <= first_open:
                mark = max(mark, end)
        return None if current is None and mark == origin else mark

    def advance_watermark(self, sync_name: str, window_end: datetime, *, window_start: datetime) -> datetime | None:
        """Move the sync's progress mark forward after a run of the window ``[window_start,
        window_end)``, only as far as ``settled_until``: a window left open, or one that never
        ran, stops it at its start even when later windows settled. Never back: backfills of old
        windows keep it. Returns the watermark."""
        now = utcnow()
        window_end = self.settled_until(sync_name, window_start, window_end)
        if window_end is None:
            return self.watermark(sync_name)
        with self.engine.begin() as conn:
            current = conn.execute(select(watermarks.c.window_end)
                                   .where(watermarks.c.sync_name == sync_name)).scalar()
            if current is None:
                conn.execute(insert(watermarks).values(sync_name=sync_name, window_end=window_end, updated_at=now))
            elif window_end > current:
                conn.execute(update(watermarks).where(watermarks.c.sync_name == sync_name)
                             .values(window_end=window_end, updated_at=now))
            else:
                return current
        return window_end

    def watermark(self, sync_name: str) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(select(watermarks.c.window_end)
                                .where(watermarks.c.sync_name == sync_name)).scalar()

    def next_due(self, vendor: str, account: str, *, after: datetime | None = None) -> datetime | None:
        """When the earliest waiting retry of this account comes due (with ``after``: the earliest
        one due later than that; retries already due but not claimable wait on something else)."""
        query = (select(func.min(deliveries.c.next_attempt_at))
                 .where(deliveries.c.vendor == vendor, deliveries.c.account == account,
                        deliveries.c.state == RETRY))
        if after is not None:
            query = query.where(deliveries.c.next_attempt_at > after)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()


def _blocked_by_earlier():
    """An earlier row of the same ordering key that a row must wait for: one still open, or a
    dead one — a return must never reach a vendor before its purchase; replaying the dead letter
    releases what waits behind it. Not so for content versions: a newer version replaces a dead
    older one. (Read through ``ix_deliveries_ordering``: vendor, account, ordering key, seq.)"""
    earlier = deliveries.alias("earlier")
    not_content = or_(deliveries.c.versioning.is_(None), deliveries.c.versioning != CONTENT)
    # An older version of this row's own content entity, not in flight, is never sent once this
    # (newer, promoted) row exists (``_not_superseded_by_newer``): waiting for it would wait forever.
    not_an_older_version = or_(not_content, earlier.c.versioning.is_(None), earlier.c.versioning != CONTENT,
                               earlier.c.event_type != deliveries.c.event_type,
                               earlier.c.entity_id != deliveries.c.entity_id)
    return exists().where(
        earlier.c.vendor == deliveries.c.vendor,
        earlier.c.account == deliveries.c.account,
        earlier.c.ordering_key == deliveries.c.ordering_key,
        # Ordered by (seq, id): two planners of one entity that read the same latest row give
        # their versions the same seq, and the later row must still wait for the earlier one.
        or_(earlier.c.seq < deliveries.c.seq,
            and_(earlier.c.seq == deliveries.c.seq, earlier.c.id < deliveries.c.id)),
        or_(earlier.c.state.in_((SENDING, UNKNOWN)),
            and_(earlier.c.state.in_(SUPERSEDABLE_STATES), not_an_older_version),
            and_(earlier.c.state == DEAD, not_content)),
    )


def _waits_for_person():
    """A ``customer_added`` of the same person (``PERSON_WAIT_EVENTS``, same vendor and account)
    that this row must wait for: earlier in line (planned or retry, a lower id, due), in flight, or
    unknown and awaiting its read (``vendor_code = AWAITING_READ``), updated within
    ``PERSON_WAIT_S`` (bound ``c_person_since``). While it waits, nothing else of the person's
    reaches the vendor, so the next run's contact read finds the contact that event made or
    none (``storesync.pipeline.senders``). Never another person's rows; never one without a
    person. (Read through the partial ``ix_deliveries_person_wait``.)"""
    held = deliveries.alias("held")
    since = bindparam("c_person_since", type_=DateTime)
    return and_(deliveries.c.person.is_not(None), exists().where(
        held.c.vendor == deliveries.c.vendor,
        held.c.account == deliveries.c.account,
        held.c.person == deliveries.c.person,
        # The partial index's own terms, verbatim, so SQLite uses it.
        text(f"held.{_PERSON_WAIT_STATES_SQL}"), text(f"held.{_PERSON_WAIT_EVENT_SQL}"),
        held.c.id != deliveries.c.id,
        held.c.updated_at >= since,
        or_(held.c.state == SENDING,
            # In line: due now (a retry waiting out its delay, or a parked historical row, is not).
            and_(held.c.state.in_((PLANNED, RETRY)), held.c.id < deliveries.c.id,
                 or_(held.c.next_attempt_at.is_(None),
                     held.c.next_attempt_at <= bindparam("c_now", type_=DateTime))),
            and_(held.c.state == UNKNOWN, held.c.vendor_code == AWAITING_READ)),
    ))


def _not_superseded_by_newer():
    """Not a content row with a newer version of its entity (higher ``seq``, or the same ``seq`` and a
    higher id) that is neither staged nor superseded: what is owed is that newer version, so the
    older one must never be sent, whatever its own state says. Catches a dead older row replayed
    (``requeue``) after a newer one was promoted or accepted while an engine is already past its
    ``supersede_stale``: the next run supersedes it. (Read through ``ix_deliveries_entity``.)"""
    newer = deliveries.alias("newer")
    # Spelt as an OR, not NOT(versioning = 'content' AND ...): a NULL versioning (older ledgers)
    # would make the negation NULL and hide the row.
    return or_(
        deliveries.c.versioning.is_(None),
        deliveries.c.versioning != CONTENT,
        ~exists().where(
            newer.c.vendor == deliveries.c.vendor,
            newer.c.event_type == deliveries.c.event_type,
            newer.c.entity_id == deliveries.c.entity_id,
            newer.c.account == deliveries.c.account,
            or_(newer.c.seq > deliveries.c.seq,
                and_(newer.c.seq == deliveries.c.seq, newer.c.id > deliveries.c.id)),
            newer.c.state.notin_((STAGED, SUPERSEDED)),
        ),
    )


def _open_state():
    # Inline, as ``_claimable_state``: ``ix_deliveries_open_window`` is partial on these literals.
    return deliveries.c.state.in_(bindparam("c_open", list(OPEN_STATES), expanding=True, literal_execute=True))


def _claimable_state():
    # Rendered inline, not bound: SQLite uses a partial index only when the query's WHERE names
    # its literals, and ``ix_deliveries_claimable`` (open rows only, by id) is what lets the claim
    # stop at ``limit`` rows in id order instead of sorting every claimable row of the account.
    return deliveries.c.state.in_(bindparam("c_claimable", list(CLAIMABLE_STATES), expanding=True,
                                            literal_execute=True))


def _candidate_conditions(conditions: list) -> list:
    """What makes a row claimable now, given the due ``conditions`` (bound parameters ``c_*``)."""
    return [deliveries.c.vendor == bindparam("c_vendor"), deliveries.c.account == bindparam("c_account"),
            _claimable_state(), *conditions, ~_blocked_by_earlier(), _not_superseded_by_newer(),
            ~_waits_for_person()]


def _claim_statements(conditions: list, returning: bool) -> tuple:
    """The claim's statements for one set of due conditions (bound parameters ``c_*``):
    ``(candidates, claim, reread)``. With UPDATE ... RETURNING (SQLite >= 3.35, PostgreSQL) the
    claim is one statement and ``reread`` is None; otherwise the candidates' ids are read, claimed
    and read back. Either way the state condition on the UPDATE makes the claim atomic: rows a
    concurrent run claimed first are not claimed again, and only rows this owner claimed return."""
    candidates = (
        select(deliveries.c.id)
        .where(*_candidate_conditions(conditions))
        .order_by(deliveries.c.id)
        .limit(bindparam("c_limit", type_=Integer))
    )
    values = {"state": SENDING, "claimed_by": bindparam("c_owner", type_=String),
              "claimed_at": bindparam("c_claimed_at", type_=DateTime), "attempts": deliveries.c.attempts + 1,
              "updated_at": bindparam("c_now", type_=DateTime)}
    if returning:
        # The guard reads the state through an expression no index covers: on the bare column,
        # SQLite walks the state index (every claimable row of the ledger) instead of looking
        # the few candidates up by id.
        claim = (update(deliveries)
                 .where(deliveries.c.id.in_(candidates), deliveries.c.state.concat("").in_(CLAIMABLE_STATES))
                 .values(**values)
                 .returning(*deliveries.c))
        return candidates, claim, None
    ids = bindparam("c_ids", expanding=True)
    claim = update(deliveries).where(deliveries.c.id.in_(ids), deliveries.c.state.in_(CLAIMABLE_STATES)).values(**values)
    reread = (select(deliveries)
              .where(deliveries.c.id.in_(ids), deliveries.c.claimed_by == bindparam("c_owner", type_=String),
                     deliveries.c.state == SENDING)
              .order_by(deliveries.c.id))
    return candidates, claim, reread


@lru_cache(maxsize=None)
def _record_statement(guarded: bool, keep_claim: bool):
    """One answer's UPDATE, with bound parameters ``r_*`` (run as an executemany). ``guarded``:
    only if ``r_owner`` still holds the row (``sending``). ``keep_claim``: a ``sending`` outcome
    keeps its owner; any other clears it. ``accepted_at`` is written only when given."""
    condition = [deliveries.c.id == bindparam("r_id", type_=Integer)]
    if guarded:
        condition += [deliveries.c.claimed_by == bindparam("r_owner", type_=String), deliveries.c.state == SENDING]
    values = {
        "state": bindparam("r_state", type_=String), "http_status": bindparam("r_http_status", type_=Integer),
        "error_class": bindparam("r_error_class", type_=String),
        "vendor_code": bindparam("r_vendor_code", type_=String),
        "vendor_error": bindparam("r_vendor_error", type_=Text),
        "updated_at": bindparam("r_now", type_=DateTime), "last_run_id": bindparam("r_run_id", type_=String),
        "next_attempt_at": bindparam("r_next_attempt_at", type_=DateTime),
        "accepted_at": func.coalesce(bindparam("r_accepted_at", type_=DateTime), deliveries.c.accepted_at),
    }
    if not keep_claim:
        values["claimed_by"] = None
    return update(deliveries).where(*condition).values(**values)


def same_content(new: str, latest: str) -> bool:
    """Is content version ``new`` what ``latest`` already holds? A salted version (``hash~salt``,
    a forced resend) holds its hash's content; a salted ``new`` is always owed once."""
    return new == latest or ("~" not in new and latest.split("~", 1)[0] == new)


def _create_tables(engine: Engine, schema: str | None = None) -> None:
    """Create the ledger's tables; two processes starting at once may race, and that is fine.
    Then bring an older ledger up to date in place (``_migrate``). A ledger whose recorded schema
    fingerprint is this code's skips both: one SELECT instead of a dozen catalog queries per task."""
    import random
    import time

    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    if _recorded_fingerprint(engine) == schema_fingerprint():
        return
    attempts = 10
    for attempt in range(attempts):
        try:
            metadata.create_all(engine, checkfirst=True)
            _migrate(engine, schema)
            _record_fingerprint(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError):  # PostgreSQL: UniqueViolation
            if attempt == attempts - 1:
                raise
            # The other process is creating the tables one by one: retried at once, in step
            # with it, three attempts could each meet a table it had just made (a CI run did).
            time.sleep(random.uniform(0.05, 0.25))


# Columns added after the first release: nullable, so older rows need no backfill.
_ADDED_COLUMNS = {"storesync_deliveries": {"versioning": "VARCHAR(12)", "person": "VARCHAR(40)"}}

# The schema a ledger was last brought up to date to, as a fingerprint of this code's tables,
# columns and indexes (so a change to ``metadata`` needs no hand-kept version number). Its own
# MetaData: ``metadata`` stays the ledger's data tables.
_schema_marker = Table("storesync_ledger_schema", MetaData(), Column("fingerprint", String(64), nullable=False))


@lru_cache(maxsize=1)
def schema_fingerprint() -> str:
    parts = [repr(sorted(_ADDED_COLUMNS.items()))]
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        parts.append(table.name)
        parts.extend(f"{c.name} {c.type!r} {c.nullable}" for c in table.columns)
        parts.extend(sorted(f"{i.name} {[str(c) for c in i.expressions]} {i.unique}" for i in table.indexes))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _recorded_fingerprint(engine: Engine) -> str | None:
    """The fingerprint the ledger was last migrated to; None when it has none (new or older ledger)."""
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as conn:
            return conn.execute(select(_schema_marker.c.fingerprint)).scalar()
    except DBAPIError:  # no marker table yet: the full check creates it
        return None


def _record_fingerprint(engine: Engine) -> None:
    _schema_marker.create(engine, checkfirst=True)
    with engine.begin() as conn:
        conn.execute(_schema_marker.delete())
        conn.execute(_schema_marker.insert().values(fingerprint=schema_fingerprint()))


def _migrate(engine: Engine, schema: str | None) -> None:
    """Add the columns and indexes a ledger created by an older storesync lacks (``create_all``
    creates missing tables only). Idempotent; a concurrent migrator's work is tolerated."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    inspector = inspect(engine)
    for table_name, added in _ADDED_COLUMNS.items():
        have = {c["name"] for c in inspector.get_columns(table_name, schema=schema)}
        qualified = f'"{schema}".{table_name}' if schema else table_name
        for column, ddl_type in added.items():
            if column not in have:
                try:
                    with engine.begin() as conn:
                        conn.exec_driver_sql(f"ALTER TABLE {qualified} ADD COLUMN {column} {ddl_type}")
                except (OperationalError, ProgrammingError):
                    if column not in {c["name"] for c in inspect(engine).get_columns(table_name, schema=schema)}:
                        raise
    for table in (deliveries,):
        have = {i["name"] for i in inspector.get_indexes(table.name, schema=schema)}
        invalid = set()
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                invalid = _invalid_pg_indexes(conn, table.name, schema)
        for index in table.indexes:
            if index.name not in have or index.name in invalid:
                try:
                    _create_index(engine, index, schema, rebuild=index.name in invalid)
                except (OperationalError, ProgrammingError):
                    names = {i["name"] for i in inspect(engine).get_indexes(table.name, schema=schema)}
                    if index.name not in names:
                        raise


def _create_index(engine: Engine, index: Index, schema: str | None, *, rebuild: bool = False) -> None:
    """Build ``index`` on a table that may already hold millions of rows. On PostgreSQL
    CONCURRENTLY, outside a transaction: a plain CREATE INDEX blocks every write to the ledger
    while it builds, and deliveries keep running through an upgrade. ``rebuild``: an INVALID
    index of that name is there (a build that failed half way): dropped first."""
    if engine.dialect.name != "postgresql":
        index.create(engine)
        return
    from sqlalchemy.schema import CreateIndex

    ddl = str(CreateIndex(index).compile(dialect=engine.dialect))
    head, sep, rest = ddl.partition("INDEX ")
    qualified = f'"{schema}".{index.name}' if schema else index.name
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if rebuild:
            conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}")
        conn.exec_driver_sql(f"{head}{sep}CONCURRENTLY {rest}")


def _invalid_pg_indexes(conn, table_name: str, schema: str | None) -> set[str]:
    """Names of the INVALID indexes on ``table_name`` (what a failed CREATE INDEX CONCURRENTLY
    leaves): they exist, and no query uses them."""
    rows = conn.execute(text(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE t.relname = :table AND n.nspname = COALESCE(:schema, current_schema()) AND NOT i.indisvalid"),
        {"table": table_name, "schema": schema})
    return {name for (name,) in rows}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers work while a writer commits; NORMAL sync is durable enough with WAL.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()
