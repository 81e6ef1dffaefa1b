"""The quarantine: every row the gate held back, why, and when it was fixed.

Table ``storesync_quarantine`` (SQLAlchemy Core; SQLite and PostgreSQL), created if missing. One
record per quarantined row per run, so a run's counts stay exact and the history stays readable.
A record is *open* until a later run passes a row with the same entity id: then ``resolved_at``
(and ``resolved_run_id``) are set on every open record of that id, which is how "a quarantined row
that is fixed in the warehouse passes on a later run" shows. (The pipeline resolves only after that
run has passed its gate: ``record(outcome, resolve=False)``, then ``resolve_passed``.) A row that a
later run merely re-checks and finds still bad is not recorded again: its record stays the one of
the run that quarantined it.

``row`` holds the row as the warehouse gave it (JSON; Decimals as exact strings, datetimes as ISO
8601): it contains personal data (emails, names), like the warehouse itself; ``reasons`` never do.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from storesync.quality.checks import REGISTRY
from storesync.quality.serialize import dumps, native

if TYPE_CHECKING:
    from storesync.quality.gate import QuarantinedRow, ValidationOutcome

TABLE_NAME = "storesync_quarantine"
_CHUNK = 500
_OPEN_SQL = "resolved_at IS NULL"

metadata = MetaData()

quarantine = Table(
    TABLE_NAME,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(250), nullable=False),
    Column("batch_id", String(250), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("entity_id", String(250)),  # NULL when the row had no id (itself a reason)
    Column("reasons", Text, nullable=False),  # JSON list of "check: detail"
    Column("row", Text, nullable=False),  # JSON object, the row as extracted
    Column("quarantined_at", DateTime, nullable=False),  # naive UTC
    Column("resolved_at", DateTime),  # naive UTC; NULL while open
    Column("resolved_run_id", String(250)),
    Index("ix_storesync_quarantine_entity_id", "entity", "entity_id"),
    Index("ix_storesync_quarantine_run_id", "run_id"),
    # Every run reads (and resolves) the open records of an entity: a partial index on them keeps
    # that to the few open rows, however long the entity's quarantine history grows. resolved_at
    # is a key column (always NULL here) so that SQLite's planner, which has no statistics, sees
    # ``resolved_at IS NULL`` as one more equality and prefers this index to (entity, entity_id);
    # on (entity, entity_id) alone the two tie and the older index may win.
    Index("ix_storesync_quarantine_open", "entity", "resolved_at", "entity_id",
          sqlite_where=text(_OPEN_SQL), postgresql_where=text(_OPEN_SQL)),
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def entity_key(entity_id: Any) -> str | None:
    """Entity ids as text, the same for 42, 42.0, numpy 42 and "42" (how the store keys them)."""
    entity_id = native(entity_id)
    if entity_id is None:
        return None
    if isinstance(entity_id, float) and entity_id.is_integer():
        entity_id = int(entity_id)
    return str(entity_id)


_key = entity_key


class QuarantineStore:
    """Records quarantined rows and resolves them when they pass later."""

    def __init__(self, engine: Engine, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self._ready = False

    # -- schema -------------------------------------------------------------------------------

    def ensure_table(self) -> None:
        """Create the table (with its indexes) if missing; add the indexes a table created by an
        older storesync lacks. Idempotent, and a concurrent worker doing the same is tolerated."""
        if self._ready:
            return
        if not inspect(self.engine).has_table(TABLE_NAME):
            try:
                metadata.create_all(self.engine, checkfirst=True)
            except (OperationalError, ProgrammingError, IntegrityError):
                # Another worker created it between our check and our CREATE.
                if not inspect(self.engine).has_table(TABLE_NAME):
                    raise
        self._ensure_indexes()
        self._ready = True

    def _ensure_indexes(self) -> None:
        # checkfirst looks in the schema the engine maps the table to (a ledger in a schema).
        for index in quarantine.indexes:
            try:
                with self.engine.begin() as conn:
                    index.create(conn, checkfirst=True)
            except (OperationalError, ProgrammingError, IntegrityError):
                # Another worker created it between our check and our CREATE.
                with self.engine.connect() as conn:
                    schema = conn.schema_for_object(quarantine)
                    if not self.engine.dialect.has_index(conn, TABLE_NAME, index.name, schema=schema):
                        raise

    # -- writing ------------------------------------------------------------------------------

    def record(self, outcome: ValidationOutcome, *, resolve: bool = True) -> dict[str, int]:
        """Store the outcome's quarantined rows; with ``resolve`` (the default), also resolve the
        open records of ids that passed in this outcome. Returns ``{"recorded", "resolved"}``."""
        recorded = self.record_rows(outcome.quarantined, run_id=outcome.run_id, batch_id=outcome.batch_id)
        resolved = self.resolve_passed(outcome.entity, outcome.passed_ids(), outcome.run_id) if resolve else 0
        return {"recorded": recorded, "resolved": resolved}

    def record_rows(self, rows: Iterable[QuarantinedRow], *, run_id: str, batch_id: str) -> int:
        """Store quarantined rows built elsewhere (an order held back because one of its lines
        failed, say). Returns how many were stored."""
        self.ensure_table()
        rows = list(rows)
        if not rows:  # most batches quarantine nothing: no read of the erasures either
            return 0
        now = self.clock()
        from storesync.privacy.subjects import ErasedSet

        erased = ErasedSet.load_if_present(self.engine)  # an erased person's rows are not kept again
        records = [
            {
                "run_id": run_id,
                "batch_id": batch_id,
                "entity": q.entity,
                "entity_id": _key(q.entity_id),
                "reasons": json.dumps(list(q.reasons), ensure_ascii=False),
                "row": dumps(q.row, sort_keys=True),
                "quarantined_at": now,
                "resolved_at": None,
                "resolved_run_id": None,
            }
            for q in rows
            if not erased.names_erased(q.row)
        ]
        if records:
            with self.engine.begin() as conn:
                for start in range(0, len(records), 5000):
                    conn.execute(quarantine.insert(), records[start : start + 5000])
        return len(records)

    def resolve_passed(self, entity: str, entity_ids: Iterable[Any], run_id: str) -> int:
        """Close every open record of ``entity`` whose id is in ``entity_ids`` (rows that passed in
        ``run_id``). Returns how many records were resolved."""
        self.ensure_table()
        with self.engine.begin() as conn:
            open_ids = set(
                conn.execute(
                    select(quarantine.c.entity_id)
                    .where(quarantine.c.entity == entity)
                    .where(quarantine.c.resolved_at.is_(None))
                    .where(quarantine.c.entity_id.is_not(None))
                    .distinct()
                ).scalars()
            )
            if not open_ids:
                return 0
            fixed = sorted(open_ids.intersection(k for k in map(_key, entity_ids) if k is not None))
            resolved = 0
            now = self.clock()
            for start in range(0, len(fixed), _CHUNK):
                result = conn.execute(
                    update(quarantine)
                    .where(quarantine.c.entity == entity)
                    .where(quarantine.c.resolved_at.is_(None))
                    .where(quarantine.c.entity_id.in_(fixed[start : start + _CHUNK]))
                    .values(resolved_at=now, resolved_run_id=run_id)
                )
                resolved += result.rowcount
            return resolved

    # -- reading ------------------------------------------------------------------------------

    def open_rows(self, entity: str | None = None, *, latest_only: bool = True) -> list[dict[str, Any]]:
        """Unresolved records, oldest first. With ``latest_only`` (the default) one per entity id,
        its most recent record (records without an id are all listed)."""
        self.ensure_table()
        q = quarantine.c
        query = select(quarantine).where(q.resolved_at.is_(None))
        if entity is not None:
            query = query.where(q.entity == entity)
        if latest_only:
            latest = (
                select(func.max(q.id))
                .where(q.resolved_at.is_(None))
                .where(q.entity_id.is_not(None))
                .group_by(q.entity, q.entity_id)
            )
            if entity is not None:
                latest = latest.where(q.entity == entity)  # not every entity's open records
            query = query.where((q.entity_id.is_(None)) | (q.id.in_(latest)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(q.id)).mappings().all()
        return [self._decode(row) for row in rows]

    def open_ids(self, entity: str) -> set[str]:
        """The ids (as ``entity_key`` text) of ``entity`` with an open record."""
        self.ensure_table()
        q = quarantine.c
        query = (
            select(q.entity_id)
            .where(q.entity == entity, q.resolved_at.is_(None), q.entity_id.is_not(None))
            .distinct()
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def counts_by_reason(self, run_id: str, entity: str | None = None) -> dict[str, int]:
        """Rows quarantined in ``run_id`` per failed check (a row failing two checks counts under
        both), most frequent first."""
        self.ensure_table()
        query = select(quarantine.c.reasons).where(quarantine.c.run_id == run_id)
        if entity is not None:
            query = query.where(quarantine.c.entity == entity)
        counts: Counter[str] = Counter()
        with self.engine.connect() as conn:
            for reasons in conn.execute(query).scalars():
                counts.update({reason.split(":", 1)[0] for reason in json.loads(reasons)})
        return dict(counts.most_common())

    def history(self, entity: str, entity_id: Any) -> list[dict[str, Any]]:
        """Every record of one entity id, oldest first (open and resolved)."""
        self.ensure_table()
        q = quarantine.c
        query = (
            select(quarantine)
            .where(and_(q.entity == entity, q.entity_id == _key(entity_id)))
            .order_by(q.id)
        )
        with self.engine.connect() as conn:
            return [self._decode(row) for row in conn.execute(query).mappings().all()]

    @staticmethod
    def _decode(row: Any) -> dict[str, Any]:
        record = dict(row)
        record["reasons"] = json.loads(record["reasons"])
        record["row"] = json.loads(record["row"])
        # The id column is text; give back the id as the row held it (42, not "42"), so it can
        # go straight back into a warehouse query.
        spec = REGISTRY.get(record["entity"])
        if spec is not None and record["entity_id"] is not None:
            held = record["row"].get(spec.id_column)
            if held is not None and _key(held) == record["entity_id"]:
                record["entity_id"] = held
        return record
