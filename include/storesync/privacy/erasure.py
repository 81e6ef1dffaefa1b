"""Erase a person: at the vendors, in every storesync table, and from every later sync.

``erase(settings, emails=..., customer_ids=...)``:

1. **Who.** A customer id's emails are read from the warehouse's ``customers`` model, and an
   email's customer ids the same way. All of them are erased.
2. **Vendors.** Sailthru ``DELETE /user`` (by email, and by extid = customer id): the profile and
   what Sailthru keeps of it. Sendlane: the contact found by ``GET /contacts/search?email=``, then
   ``DELETE /contacts/{id}`` (``SendlaneClient.delete_contact``; undocumented calls, as public
   clients make them: docs/privacy.md). Not found is nothing to delete; a generic 404 (the path
   not routed), a contact still found after its delete answered 404, or none found yet while
   Sendlane accepted an event of theirs under an hour ago (it processes asynchronously), is
   **not confirmed**: never counted as deleted. A vendor without credentials, one that fails or
   one not confirmed is reported (``ok`` False, exit 1) and tried again by the next erasure of
   the same person.
3. **Audit first.** The person's hashes go into ``storesync_erasures`` *before* anything is
   scrubbed: from then on no sync plans anything for them (``subjects.without_erased``).
4. **Scrub.** Ledger rows whose payload or vendor error names them: the payload becomes
   ``{"erased": true}`` (identity, state and version stay: exactly-once still holds), open rows
   become ``suppressed``; the record log's error texts; quarantine rows (row and reasons; open ones
   resolved); the LTV tables' rows of their customer ids.

Nothing personal is logged: counts only.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import NamedTuple
from datetime import datetime, timedelta

from sqlalchemy import MetaData, Table, delete, inspect, or_, select, update
from sqlalchemy.engine import Engine

from storesync.core.errors import ConfigurationError, DeliveryError
from storesync.delivery.ledger import (
    OPEN_STATES,
    SUPPRESSED,
    Ledger,
    deliveries,
    erasures,
    record_log,
    utcnow,
)
from storesync.privacy.subjects import CUSTOMER_ID, EMAIL, identifiers, normalise, salt_of, subject_hash

log = logging.getLogger(__name__)

ERASED_PAYLOAD = json.dumps({"erased": True})
DELETED, NOT_FOUND, NOT_CONFIRMED = "deleted", "not found", "not confirmed"
DONE = (DELETED, NOT_FOUND)
# What to do when Sendlane's deletion could not be confirmed (said without the person's data).
SENDLANE_NOT_CONFIRMED_NEXT = (
    "storesync does not count it as deleted: run the erasure again later (the maintenance DAG does, "
    "daily; it is safe to repeat); if it stays not confirmed, find the contact in Sendlane's app "
    "(Contacts, search the email) and delete it there, or ask Sendlane whether your account's API "
    "serves GET /contacts/search and DELETE /contacts/{id}")
# Sendlane processes writes asynchronously and documents no delay: a contact made by an event
# accepted less than this ago may not be searchable yet, so not finding it proves nothing.
SENDLANE_PROCESSING_GRACE = timedelta(hours=1)
_SEARCH_AGAIN = "search again after"
# Customer-keyed LTV tables (storesync.ltv.tables): their rows of an erased customer are deleted.
LTV_TABLES = ("storesync_customer_ltv_versions", "storesync_ltv_predictions", "storesync_ltv_left_out")
_CHUNK = 500


@dataclass
class Person:
    """One person to erase: every email and customer id known to be theirs."""

    emails: set[str] = field(default_factory=set)
    customer_ids: set[str] = field(default_factory=set)

    def subjects(self) -> list[tuple[str, str]]:
        return ([(EMAIL, e) for e in sorted(self.emails)]
                + [(CUSTOMER_ID, c) for c in sorted(self.customer_ids)])

    def named_in(self, payload) -> bool:
        return any(normalise(kind, value) in (self.emails if kind == EMAIL else self.customer_ids)
                   for kind, value in identifiers(payload))


@dataclass
class ErasureReport:
    people: int = 0
    vendors: dict = field(default_factory=dict)  # vendor -> {"deleted": n, "not found": n, "failed": n}
    scrubbed: dict = field(default_factory=dict)  # table -> rows
    failures: list[str] = field(default_factory=list)  # what to do about each failure (no personal data)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {"ok": self.ok, "people": self.people, "vendors": self.vendors, "scrubbed": self.scrubbed,
                "failures": self.failures}


# ------------------------------------------------------------------------------------ who
def find_people(settings, emails=(), customer_ids=()) -> list[Person]:
    """Group the requested emails and customer ids into people, completed from the warehouse's
    customers (every customer read once: an erasure is rare, a lookup index is not needed)."""
    emails = {normalise(EMAIL, e) for e in emails if e and str(e).strip()}
    customer_ids = {normalise(CUSTOMER_ID, c) for c in customer_ids if c is not None and str(c).strip()}
    if not emails and not customer_ids:  # no request (an empty or absent model): no customers read
        return []
    by_id: dict[str, set[str]] = {}
    by_email: dict[str, set[str]] = {}
    for cid, email in _warehouse_customers(settings):
        by_id.setdefault(cid, set()).add(email)
        by_email.setdefault(email, set()).add(cid)
    people: list[Person] = []
    for cid in sorted(customer_ids):
        people.append(Person(emails=set(by_id.get(cid, ())), customer_ids={cid}))
    for email in sorted(emails):
        person = next((p for p in people if email in p.emails), None)
        if person is None:
            person = Person(emails={email})
            people.append(person)
        person.emails.add(email)
        person.customer_ids |= by_email.get(email, set())
    return people


def _warehouse_customers(settings):
    from storesync.core.windows import Window
    from storesync.warehouse.models import Warehouse

    warehouse = Warehouse(settings.warehouse_url, settings.models_dir, require_models=False)
    if not warehouse.has("customers"):
        return
    everything = Window.everything_before(datetime(9999, 1, 1))
    for frame in warehouse.stream("customers", everything, settings.chunk_size):
        for cid, email in zip(frame["customer_id"], frame["email"]):
            if cid is not None and isinstance(email, str) and email.strip():
                yield normalise(CUSTOMER_ID, cid), normalise(EMAIL, email)


class ModelRequests(NamedTuple):
    """The ``erasure_requests`` model's rows: emails, customer ids, and when each was asked for
    (``(kind, normalised value) -> datetime``, the earliest request; for the audit)."""

    emails: list[str]
    customer_ids: list[str]
    asked_at: dict


def requests_from_model(settings) -> ModelRequests:
    """The ``erasure_requests`` model's requests (none when it has no file)."""
    from storesync.core.windows import Window
    from storesync.warehouse.models import Warehouse

    warehouse = Warehouse(settings.warehouse_url, settings.models_dir, require_models=False)
    found = ModelRequests([], [], {})
    for frame in warehouse.stream("erasure_requests", Window.everything_before(datetime(9999, 1, 1)),
                                  settings.chunk_size):
        times = frame["requested_at"] if "requested_at" in frame else [None] * len(frame)
        for email, cid, when in zip(frame["email"], frame["customer_id"], times):
            subjects = []
            if isinstance(email, str) and email.strip():
                found.emails.append(email)
                subjects.append((EMAIL, normalise(EMAIL, email)))
            if cid is not None and str(cid) not in ("", "nan", "None", "<NA>"):
                found.customer_ids.append(cid)
                subjects.append((CUSTOMER_ID, normalise(CUSTOMER_ID, cid)))
            when = _naive_utc(when)
            for subject in subjects if when else ():
                found.asked_at[subject] = min(when, found.asked_at.get(subject, when))
    return found


def _naive_utc(value) -> datetime | None:
    """A model's timestamp (text, pandas or Python, naive = UTC) as a naive UTC datetime, or None."""
    import pandas as pd

    stamp = pd.to_datetime(value, errors="coerce", utc=True) if value is not None else None
    return None if stamp is None or pd.isna(stamp) else stamp.tz_convert(None).to_pydatetime()


# ------------------------------------------------------------------------------------ erase
def erase(settings, *, emails=(), customer_ids=(), source: str = "cli", vendors=("sailthru", "sendlane"),
          ledger: Ledger | None = None, skip_done: bool = False,
          asked_at: dict | None = None) -> ErasureReport:
    """Erase these people everywhere (module docstring). ``skip_done``: leave out people whose
    every subject was already erased at every vendor (the model's requests, run after run).
    ``asked_at``: when each subject was asked for (``ModelRequests.asked_at``), the audit's
    ``requested_at`` (default: now)."""
    ledger = ledger or Ledger(settings.ledger_url)
    people = find_people(settings, emails, customer_ids)
    salt = salt_of(ledger.engine, create=True)
    if skip_done:
        people = [p for p in people if not _already_done(ledger.engine, salt, p)]
    report = ErasureReport(people=len(people))
    if not people:
        return report
    now = utcnow()
    for person in people:  # audit first: from here on no sync plans anything for them
        asked = [t for t in map((asked_at or {}).get, person.subjects()) if t is not None]
        _audit(ledger.engine, salt, person, source, min(asked, default=now), vendors_result=None,
               scrubbed=None)
    results = {person_index: {} for person_index in range(len(people))}
    for vendor in vendors:
        counts = report.vendors.setdefault(vendor, {DELETED: 0, NOT_FOUND: 0, NOT_CONFIRMED: 0, "failed": 0})
        try:
            delete_one = _vendor_deleter(settings, vendor, ledger.engine)
        except ConfigurationError as exc:
            counts["failed"] += len(people)
            report.failures.append(f"{vendor}: {exc}; set its credentials and run the erasure again")
            for i in results:
                results[i][vendor] = "failed: not configured"
            continue
        for i, person in enumerate(people):
            status = delete_one(person)
            results[i][vendor] = status
            if status in DONE:
                counts[status] += 1
            elif status.startswith(NOT_CONFIRMED):
                counts[NOT_CONFIRMED] += 1
                report.failures.append(f"{vendor}: {status}; {SENDLANE_NOT_CONFIRMED_NEXT}")
            else:
                counts["failed"] += 1
                report.failures.append(f"{vendor}: {status}; run the erasure again (it is safe to repeat)")
    scrubbed = scrub_people(ledger, people, ltv_engine=_ltv_engine(settings))
    report.scrubbed = scrubbed
    for i, person in enumerate(people):
        _audit(ledger.engine, salt, person, source, now, vendors_result=results[i], scrubbed=scrubbed,
               finished=all(s in DONE for s in results[i].values()))
    log.info("erased %d people: vendors %s, scrubbed %s", len(people), report.vendors, scrubbed)
    return report


def _vendor_deleter(settings, vendor: str, engine: Engine):
    """A function person -> status, for one vendor (ConfigurationError: no credentials)."""
    from storesync.pipeline import vendor_clients

    if vendor == "sailthru":
        client = vendor_clients.default_sailthru_client(settings.sailthru, engine)

        def delete_sailthru(person: Person) -> str:
            try:
                found = [client.delete_user(e, "email") for e in sorted(person.emails)]
                found += [client.delete_user(c, "extid") for c in sorted(person.customer_ids)]
            except DeliveryError as exc:
                return f"failed: {exc.error_class} (HTTP {exc.http_status})"
            return DELETED if any(found) else NOT_FOUND

        return delete_sailthru
    if vendor == "sendlane":
        client = vendor_clients.default_sendlane_client(settings.sendlane, settings.sendlane.account, engine)

        def delete_sendlane(person: Person) -> str:
            statuses = [sendlane_contact_erasure(client, e) for e in sorted(person.emails)]
            if NOT_FOUND in statuses:
                searchable_after = _sendlane_searchable_after(engine, person)
                if searchable_after is not None and searchable_after > utcnow():
                    statuses.append(
                        f"{NOT_CONFIRMED}: no contact found yet, but Sendlane accepted an event of theirs "
                        "under an hour before (it processes asynchronously); "
                        f"{_SEARCH_AGAIN} {searchable_after:%Y-%m-%d %H:%M} UTC")
            for worst in ("failed", NOT_CONFIRMED, DELETED):
                found = next((st for st in statuses if st.startswith(worst)), None)
                if found:
                    return found
            return NOT_FOUND

        return delete_sendlane
    raise ConfigurationError(f"unknown vendor {vendor!r}: sailthru or sendlane")


def _sendlane_searchable_after(engine: Engine, person: Person) -> datetime | None:
    """When a Sendlane search can be trusted to find the person's contact: an hour after the last
    event of theirs Sendlane accepted (from the ledger, while their payloads are there), or the
    time an earlier erasure of theirs said (their payloads are erased by then)."""
    times = []
    needles = sorted(person.emails)
    with engine.connect() as conn:
        if needles:
            rows = conn.execute(select(deliveries.c.payload, deliveries.c.accepted_at).where(
                deliveries.c.vendor == "sendlane", deliveries.c.accepted_at.is_not(None),
                _contains_any(deliveries.c.payload, needles))).all()
            times += [r.accepted_at + SENDLANE_PROCESSING_GRACE for r in rows
                      if person.named_in(_json(r.payload))]
        salt = salt_of(engine)
        if salt is not None:
            digests = [subject_hash(salt, kind, value) for kind, value in person.subjects()]
            for vendors_json in conn.execute(select(erasures.c.vendors)
                                             .where(erasures.c.subject_hash.in_(digests))).scalars():
                said = re.search(rf"{_SEARCH_AGAIN} (\d{{4}}-\d\d-\d\d \d\d:\d\d) UTC", vendors_json or "")
                if said:
                    times.append(datetime.strptime(said.group(1), "%Y-%m-%d %H:%M") + timedelta(minutes=1))
    return max(times, default=None)


def sendlane_contact_erasure(client, email: str) -> str:
    """Delete one email's Sendlane contact: ``deleted``, ``not found`` (nothing to delete),
    ``not confirmed: ...`` or ``failed: ...``. ``delete_contact`` searches, then deletes by id;
    its False (the search found nobody, or the delete answered 404) is checked by searching
    again: a contact still there was not deleted, whatever the 404 said."""
    try:
        if client.delete_contact(email):
            return DELETED
        if client.find_contact(email) is None:
            return NOT_FOUND
        return (f"{NOT_CONFIRMED}: DELETE /contacts/{{id}} answered 404 for a contact the search "
                "still finds (the path may not be routed for this account)")
    except DeliveryError as exc:
        if exc.http_status == 404:  # not the search's not-found (a 422): the path itself
            return (f"{NOT_CONFIRMED}: GET /contacts/search answered a generic 404 (the path is not "
                    "routed for this account or API version)")
        return f"failed: {exc.error_class} (HTTP {exc.http_status})"


def _audit(engine: Engine, salt: str, person: Person, source: str, requested_at: datetime, *,
           vendors_result, scrubbed, finished: bool = False) -> None:
    """One row per subject (email or customer id), by its salted hash: inserted (asked for at
    ``requested_at``), or updated on a repeated erasure."""
    with engine.begin() as conn:
        for kind, value in person.subjects():
            digest = subject_hash(salt, kind, value)
            values = {"kind": kind, "source": source}
            if vendors_result is not None:
                values.update(vendors=json.dumps(vendors_result, sort_keys=True),
                              scrubbed=json.dumps(scrubbed, sort_keys=True),
                              erased_at=utcnow() if finished else None)
            existing = conn.execute(select(erasures.c.id).where(erasures.c.subject_hash == digest)).scalar()
            if existing is None:
                conn.execute(erasures.insert().values(subject_hash=digest, requested_at=requested_at,
                                                      **values))
            else:
                conn.execute(update(erasures).where(erasures.c.id == existing).values(**values))


def _already_done(engine: Engine, salt: str, person: Person) -> bool:
    digests = [subject_hash(salt, kind, value) for kind, value in person.subjects()]
    with engine.connect() as conn:
        done = conn.execute(select(erasures.c.subject_hash).where(
            erasures.c.subject_hash.in_(digests), erasures.c.erased_at.is_not(None))).scalars().all()
    return bool(digests) and len(set(done)) == len(set(digests))


# ------------------------------------------------------------------------------------ scrub
def _ltv_engine(settings) -> Engine | None:
    """LTV writes its tables into the warehouse's database (storesync.ltv.job)."""
    from storesync.warehouse.models import warehouse_engine

    return warehouse_engine(settings.warehouse_url)


def scrub_people(ledger: Ledger, people: list[Person], *, ltv_engine: Engine | None = None) -> dict[str, int]:
    """Scrub these people from the ledger, the record log, the quarantine and the LTV tables
    (in ``ltv_engine``'s database: the warehouse's; default the ledger's)."""
    engine, schema = ledger.engine, ledger.schema
    emails = sorted({e for p in people for e in p.emails})
    ids = sorted({c for p in people for c in p.customer_ids})
    named = Person(emails=set(emails), customer_ids=set(ids))
    counts = {"storesync_deliveries": _scrub_deliveries(engine, named, emails + ids),
              "storesync_record_log": _scrub_record_log(engine, emails)}
    counts["storesync_quarantine"] = _scrub_quarantine(engine, schema, named, emails + ids)
    if ltv_engine is None:
        counts.update(_delete_ltv(engine, schema, ids))
    else:
        counts.update(_delete_ltv(ltv_engine, None, ids))
    return counts


def _contains_any(column, needles: list[str]):
    """A prefilter: the column's text holds one of the needles (confirmed in Python after)."""
    from sqlalchemy import func

    return or_(*[func.lower(column).contains(n.lower(), autoescape=True) for n in needles])


def _scrub_deliveries(engine: Engine, person: Person, needles: list[str]) -> int:
    if not needles:
        return 0
    scrubbed = 0
    for start in range(0, len(needles), _CHUNK):
        chunk = needles[start:start + _CHUNK]
        with engine.begin() as conn:
            rows = conn.execute(select(deliveries.c.id, deliveries.c.payload, deliveries.c.vendor_error,
                                       deliveries.c.state)
                                .where(or_(_contains_any(deliveries.c.payload, chunk),
                                           _contains_any(deliveries.c.vendor_error, chunk)))).all()
            for row in rows:
                payload = _json(row.payload)
                error_names = any(n.lower() in (row.vendor_error or "").lower() for n in person.emails)
                if not (person.named_in(payload) or error_names):
                    continue  # a customer id that only appears as part of another number
                # A note in vendor_error also keeps the row out of Sailthru's lookup evidence.
                values = {"payload": ERASED_PAYLOAD, "vendor_error": "payload erased (storesync erase)"}
                if row.state in OPEN_STATES:
                    values.update(state=SUPPRESSED, error_class="erased", claimed_by=None)
                conn.execute(update(deliveries).where(deliveries.c.id == row.id).values(**values))
                scrubbed += 1
    return scrubbed


def _scrub_record_log(engine: Engine, emails: list[str]) -> int:
    if not emails:
        return 0
    with engine.begin() as conn:
        return conn.execute(update(record_log).where(_contains_any(record_log.c.error, emails))
                            .values(error="(erased)")).rowcount


def _scrub_quarantine(engine: Engine, schema: str | None, person: Person, needles: list[str]) -> int:
    from storesync.quality.store import quarantine

    if not needles or not inspect(engine).has_table(quarantine.name, schema=schema):
        return 0
    scrubbed = 0
    now = utcnow()
    with engine.begin() as conn:
        rows = conn.execute(select(quarantine.c.id, quarantine.c.row, quarantine.c.reasons,
                                   quarantine.c.resolved_at)
                            .where(or_(_contains_any(quarantine.c.row, needles),
                                       _contains_any(quarantine.c.reasons, needles)))).all()
        for row in rows:
            in_reasons = any(n.lower() in (row.reasons or "").lower() for n in person.emails)
            if not (person.named_in(_json(row.row)) or in_reasons):
                continue
            values = {"row": ERASED_PAYLOAD, "reasons": json.dumps(["erased"])}
            if row.resolved_at is None:
                values.update(resolved_at=now, resolved_run_id="erased")
            conn.execute(update(quarantine).where(quarantine.c.id == row.id).values(**values))
            scrubbed += 1
    return scrubbed


def _delete_ltv(engine: Engine, schema: str | None, customer_ids: list[str]) -> dict[str, int]:
    counts = {}
    existing = set(inspect(engine).get_table_names(schema=schema))
    for name in LTV_TABLES:
        if name not in existing or not customer_ids:
            continue
        table = Table(name, MetaData(), autoload_with=engine, schema=schema)
        column = table.c.customer_id
        try:
            python_type = column.type.python_type
        except NotImplementedError:
            python_type = str
        values = [python_type(c) if python_type is int and c.lstrip("-").isdigit() else c
                  for c in customer_ids]
        values = [v for v in values if isinstance(v, python_type)]
        with engine.begin() as conn:
            counts[name] = conn.execute(delete(table).where(column.in_(values))).rowcount if values else 0
    return counts


def _json(text):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text
