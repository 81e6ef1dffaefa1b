"""Consent: the vendors' own unsubscribes, read back into the ledger database, win over the store.

The worst failure of a marketing sync is re-subscribing someone who opted out at the vendor (an
unsubscribe link, a complaint). The store's ``accepts_marketing`` does not know about those, so
before anything about people is sent, the customers sync reads Sendlane's unsubscribed contacts
(``GET /contacts/unsubscribed``, every page) into table ``storesync_vendor_unsubscribes`` in the
ledger database, and the Sendlane mappers get that set as ``unsubscribed=``: an email in it is
always sent as not consenting (``accepts_marketing: false``, ``email_consent: false``).

Table ``storesync_vendor_unsubscribes`` (SQLAlchemy Core; SQLite and PostgreSQL):

| column            | holds                                                                     |
|-------------------|---------------------------------------------------------------------------|
| vendor            | ``sendlane``                                                              |
| account           | the account's fingerprint (``storesync.core.config.fingerprint``), never the token |
| email             | lowercased, trimmed                                                       |
| unsubscribed_at   | when the vendor says the person unsubscribed (naive UTC)                  |
| seen_at           | when storesync last read it back in a listing (naive UTC)                 |
| cleared_at        | set when a *complete* listing no longer has the email (the person re-subscribed at the vendor); NULL while the unsubscribe stands |

Rules:

- a readback that stops part-way (network, 429 after retries) records what it read and clears
  nothing: only a complete listing may clear an entry, so an error can never lift an opt-out;
- an entry the vendor lists again is active again (``cleared_at`` back to NULL);
- the Sendlane target loads the active set lazily from this table
  (``storesync.pipeline.targets.SendlaneTarget.unsubscribed``), so every sync that maps people
  (customers, order events, the nightly CLI run, the historical sync) honours the last readback;
- Sailthru publishes no listing of opt-outs; its mapper never sends ``optout_email: "none"``, so
  an opt-out made at Sailthru cannot be reversed by storesync either.

Memory: the active set is held by the Sendlane target while a sync plans (about 100 bytes an
email: a million unsubscribes are about 100 MB).

Cost: the listing is read whole on every customers run (100 per page, one budgeted Sendlane
request per page): 10,000 unsubscribes are 100 requests an hour out of 12,000 at 200/min.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)

TABLE_NAME = "storesync_vendor_unsubscribes"
_CHUNK = 500

metadata = MetaData()

unsubscribes = Table(
    TABLE_NAME,
    metadata,
    Column("vendor", String(20), nullable=False),
    Column("account", String(40), nullable=False),
    Column("email", String(320), nullable=False),
    Column("unsubscribed_at", DateTime),
    Column("seen_at", DateTime, nullable=False),
    Column("cleared_at", DateTime),
    PrimaryKeyConstraint("vendor", "account", "email", name="pk_storesync_vendor_unsubscribes"),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def normalise_email(email: str | None) -> str | None:
    if not email or not isinstance(email, str):
        return None
    email = email.strip().lower()
    return email or None


def _naive_utc(value) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _engine(engine_or_url) -> Engine:
    if isinstance(engine_or_url, str):
        return create_engine(engine_or_url)
    return getattr(engine_or_url, "engine", engine_or_url)  # a Ledger carries its engine


def ensure_table(engine_or_url) -> Engine:
    engine = _engine(engine_or_url)
    from sqlalchemy.exc import OperationalError, ProgrammingError

    for attempt in range(3):
        try:
            metadata.create_all(engine, checkfirst=True)
            break
        except (OperationalError, ProgrammingError):  # two workers creating it at once
            if attempt == 2:
                raise
    return engine


def record_unsubscribes(engine_or_url, vendor: str, account: str, rows: Iterable[dict], *,
                        seen_at: datetime, complete: bool) -> dict:
    """Upsert the vendor's unsubscribed contacts (``{"email", "unsubscribed_at"}`` dicts).

    ``complete=True`` means ``rows`` is the vendor's whole current listing: entries of this
    vendor and account that were not in it are cleared. Returns ``{"listed", "new",
    "reactivated", "cleared"}``.
    """
    engine = ensure_table(engine_or_url)
    counts = {"listed": 0, "new": 0, "reactivated": 0, "cleared": 0}
    batch: dict[str, datetime | None] = {}

    def flush() -> None:
        if not batch:
            return
        with engine.begin() as conn:
            known = {
                r.email: r for r in conn.execute(
                    select(unsubscribes.c.email, unsubscribes.c.cleared_at)
                    .where(unsubscribes.c.vendor == vendor, unsubscribes.c.account == account,
                           unsubscribes.c.email.in_(list(batch))))
            }
            fresh = [{"vendor": vendor, "account": account, "email": email, "unsubscribed_at": at,
                      "seen_at": seen_at, "cleared_at": None}
                     for email, at in batch.items() if email not in known]
            if fresh:
                conn.execute(insert(unsubscribes), fresh)
            for email, at in batch.items():
                if email not in known:
                    continue
                if known[email].cleared_at is not None:
                    counts["reactivated"] += 1
                values = {"seen_at": seen_at, "cleared_at": None}
                if at is not None:
                    values["unsubscribed_at"] = at
                conn.execute(update(unsubscribes).where(
                    unsubscribes.c.vendor == vendor, unsubscribes.c.account == account,
                    unsubscribes.c.email == email).values(**values))
        counts["new"] += len(fresh)
        batch.clear()

    for row in rows:
        email = normalise_email(row.get("email"))
        if email is None:
            continue
        counts["listed"] += 1
        batch[email] = _naive_utc(row.get("unsubscribed_at"))
        if len(batch) >= _CHUNK:
            flush()
    flush()
    if complete:
        with engine.begin() as conn:
            counts["cleared"] = conn.execute(
                update(unsubscribes).where(
                    unsubscribes.c.vendor == vendor, unsubscribes.c.account == account,
                    unsubscribes.c.seen_at < seen_at, unsubscribes.c.cleared_at.is_(None))
                .values(cleared_at=seen_at)
            ).rowcount
    return counts


def read_back_sendlane(client, engine_or_url, account: str, *, now: datetime | None = None,
                       page_size: int = 100) -> dict:
    """Read every Sendlane unsubscribe (``client.iter_unsubscribed()``) into the table.

    Pages are recorded as they arrive, so a failure part-way keeps what was read (and clears
    nothing) before the error propagates: the sync must not go on without the readback.
    """
    seen_at = now or utcnow()
    buffered: list[dict] = []
    totals = {"listed": 0, "new": 0, "reactivated": 0, "cleared": 0}

    def drain(complete: bool) -> None:
        counts = record_unsubscribes(engine_or_url, "sendlane", account, buffered, seen_at=seen_at,
                                     complete=complete)
        for key in totals:
            totals[key] += counts[key]
        buffered.clear()

    try:
        for row in client.iter_unsubscribed(page_size=page_size):
            buffered.append(row)
            if len(buffered) >= 5 * _CHUNK:
                drain(False)
    except BaseException:
        drain(False)
        raise
    drain(True)
    log.info("sendlane unsubscribes read back: %s", totals)
    return totals


def load_unsubscribed(engine_or_url, vendor: str, account: str | None = None) -> frozenset[str]:
    """The active unsubscribes of a vendor (one account, or all), as lowercased emails.

    Empty when nothing was ever read back: a SQLite ledger file that does not exist yet (it is
    never created here) or a database without the table. Any other error propagates: without
    the set, a sync could re-subscribe someone.
    """
    if isinstance(engine_or_url, str):
        url = make_url(engine_or_url)
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:" or not Path(url.database).exists():
                return frozenset()
    engine = _engine(engine_or_url)
    owns_engine = isinstance(engine_or_url, str)
    try:
        if not inspect(engine).has_table(TABLE_NAME):
            return frozenset()
        query = select(unsubscribes.c.email).where(unsubscribes.c.vendor == vendor,
                                                   unsubscribes.c.cleared_at.is_(None))
        if account is not None:
            query = query.where(unsubscribes.c.account == account)
        with engine.connect() as conn:
            return frozenset(conn.execute(query).scalars())
    finally:
        if owns_engine:
            engine.dispose()


__all__ = [
    "TABLE_NAME",
    "ensure_table",
    "load_unsubscribed",
    "normalise_email",
    "read_back_sendlane",
    "record_unsubscribes",
    "unsubscribes",
]
