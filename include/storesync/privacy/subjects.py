"""Who has been erased, recognised without keeping who they were.

An erased person is kept as salted hashes (HMAC-SHA256) of their normalised email and of their
customer id, in ``storesync_erasures``; the salt is one random row of ``storesync_privacy_salt``
made by the first erasure. Every delivery the ledger is asked to plan is checked against them
(``without_erased``, from ``Ledger._insert_new``, the one place every sync plans through): a
payload naming an erased email or customer id anywhere is dropped, so a rerun or a backfill of
their old orders sends nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Iterable

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from storesync.delivery.ledger import erasures, privacy_salt

log = logging.getLogger(__name__)

EMAIL, CUSTOMER_ID = "email", "customer_id"
# Payload keys that name a customer by id (Sendlane events; Sailthru /user sends ``id`` with
# ``key: "extid"``, read below). ``purchase_keys.extid`` is an order id, never a person.
_CUSTOMER_ID_KEYS = ("customer_id",)


def normalise(kind: str, value) -> str:
    text = str(value).strip()
    if kind == EMAIL:
        return text.lower()
    if text.endswith(".0") and text[:-2].isdigit():  # 42.0 from a float column is customer 42
        text = text[:-2]
    return text


def subject_hash(salt: str, kind: str, value) -> str:
    return hmac.new(salt.encode(), f"{kind}:{normalise(kind, value)}".encode(), hashlib.sha256).hexdigest()


def salt_of(engine: Engine, *, create: bool = False) -> str | None:
    """The ledger's salt; with ``create``, made on first use (two erasures at once agree)."""
    with engine.connect() as conn:
        salt = conn.execute(select(privacy_salt.c.salt).where(privacy_salt.c.id == 1)).scalar()
    if salt is not None or not create:
        return salt
    try:
        with engine.begin() as conn:
            conn.execute(insert(privacy_salt).values(id=1, salt=secrets.token_hex(32)))
    except IntegrityError:
        pass  # another process made it first: use theirs
    return salt_of(engine)


def identifiers(payload) -> Iterable[tuple[str, str]]:
    """Every (kind, value) in a payload that names a person: strings that look like an email,
    wherever they are, and customer ids under the keys that carry them."""
    stack = [payload]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _CUSTOMER_ID_KEYS and value is not None and not isinstance(value, (dict, list)):
                    yield CUSTOMER_ID, str(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
                elif isinstance(value, str) and "@" in value:
                    yield EMAIL, value
            if node.get("key") == "extid" and node.get("id") is not None:
                yield CUSTOMER_ID, str(node["id"])
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and "@" in node:
            yield EMAIL, node


class ErasedSet:
    """The erased subjects' hashes, read once; ``names_erased(payload)`` checks one payload."""

    def __init__(self, salt: str | None, hashes: set[str]) -> None:
        self.salt = salt
        self.hashes = hashes

    @classmethod
    def load(cls, engine: Engine) -> ErasedSet:
        with engine.connect() as conn:
            hashes = set(conn.execute(select(erasures.c.subject_hash)).scalars())
        return cls(salt_of(engine) if hashes else None, hashes)

    @classmethod
    def load_if_present(cls, engine: Engine) -> ErasedSet:
        """``load``, or nobody erased where the ledger's tables were never made (a quarantine
        store on a database of its own)."""
        from sqlalchemy.exc import OperationalError, ProgrammingError

        try:
            return cls.load(engine)
        except (OperationalError, ProgrammingError):
            return cls(None, set())

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def names_erased(self, payload) -> bool:
        if not self.hashes:
            return False
        return any(subject_hash(self.salt, kind, value) in self.hashes
                   for kind, value in identifiers(payload))


def without_erased(engine: Engine, rows: list[dict]) -> list[dict]:
    """Ledger rows (``payload`` as JSON text) less those naming an erased person. One indexed
    read of the erasures per call; nothing parsed while nobody has been erased."""
    erased = ErasedSet.load(engine)
    if not erased:
        return rows
    kept = [row for row in rows if not erased.names_erased(json.loads(row["payload"]))]
    if len(kept) < len(rows):
        log.info("left out %d deliveries of erased people", len(rows) - len(kept))
    return kept
