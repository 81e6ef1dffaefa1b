"""Ledger checks behind the alerts: new dead letters, stalled syncs, stuck deliveries, a run's counts.

Pure SQLAlchemy Core over the delivery ledger's own tables (``storesync_deliveries``,
``storesync_watermarks``); no Airflow. Each takes an ``Engine`` (a ``Ledger`` or a URL also work,
so a ledger in its own schema keeps its ``schema_translate_map``). The ledger stores naive UTC
times; aware datetimes passed in are converted to UTC first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from storesync.delivery.ledger import DEAD, SENDING, STAGED, UNKNOWN, deliveries, watermarks

# Open states that do not settle by themselves within a run: a failed gate (staged), a dead or
# hung sender (sending), an unresolved outcome (unknown).
STUCK_STATES = (STAGED, SENDING, UNKNOWN)

UNCLASSIFIED = "unclassified"


@dataclass(frozen=True)
class DeadLetters:
    """The dead letters one vendor gained in a time span."""

    vendor: str
    count: int
    top_error_classes: list[tuple[str, int]]
    sync_names: tuple[str, ...]
    run_ids: tuple[str, ...]  # the ledger's run ids (``<dag_id>/<run_id>``), most recent first
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class StalledSync:
    """A sync whose watermark is further behind than ``max_intervals`` expected intervals."""

    sync_name: str
    watermark: datetime | None  # None: the sync never advanced (reported with include_missing)
    updated_at: datetime | None
    expected_interval: timedelta
    max_intervals: int
    behind: timedelta | None
    intervals_behind: int | None


@dataclass(frozen=True)
class StuckDeliveries:
    """Open deliveries of one vendor and state unchanged for longer than the threshold."""

    vendor: str
    state: str
    count: int
    oldest_at: datetime  # the oldest row's last change (``updated_at``)
    sync_names: tuple[str, ...]


def _engine(engine_or_url) -> Engine:
    if isinstance(engine_or_url, str):
        return create_engine(engine_or_url)
    return getattr(engine_or_url, "engine", engine_or_url)  # a Ledger carries its engine


def naive_utc(value: datetime) -> datetime:
    """The ledger's form of a time: UTC, without tzinfo."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def split_ledger_run_id(ledger_run_id: str | None) -> tuple[str | None, str | None]:
    """``"<dag_id>/<run_id>[/suffix]"`` (as the provider's tasks write it) → ``(dag_id, run_id)``."""
    if not ledger_run_id or "/" not in ledger_run_id:
        return None, ledger_run_id
    dag_id, _, rest = ledger_run_id.partition("/")
    return dag_id, rest.split("/", 1)[0]


def find_new_dead_letters(engine, since: datetime, *, until: datetime | None = None,
                          top: int = 3) -> list[DeadLetters]:
    """Deliveries that became dead letters at or after ``since`` (before ``until``), per vendor.

    A dead letter's ``updated_at`` is when it died (the state is terminal until a replay moves it
    back to ``retry``), so polling with ``since`` = the previous check's time reports each once.
    """
    engine = _engine(engine)
    conditions = [deliveries.c.state == DEAD, deliveries.c.updated_at >= naive_utc(since)]
    if until is not None:
        conditions.append(deliveries.c.updated_at < naive_utc(until))
    by_class = (
        select(deliveries.c.vendor, deliveries.c.error_class, func.count().label("n"),
               func.min(deliveries.c.updated_at).label("first_at"),
               func.max(deliveries.c.updated_at).label("last_at"))
        .where(*conditions)
        .group_by(deliveries.c.vendor, deliveries.c.error_class)
    )
    where_from = (
        select(deliveries.c.vendor, deliveries.c.sync_name, deliveries.c.last_run_id,
               func.max(deliveries.c.updated_at).label("at"))
        .where(*conditions)
        .group_by(deliveries.c.vendor, deliveries.c.sync_name, deliveries.c.last_run_id)
    )
    with engine.connect() as conn:
        class_rows = conn.execute(by_class).all()
        origin_rows = conn.execute(where_from).all()

    classes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    spans: dict[str, list[datetime]] = {}
    for vendor, error_class, n, first_at, last_at in class_rows:
        classes[vendor][error_class or UNCLASSIFIED] += n
        span = spans.setdefault(vendor, [first_at, last_at])
        span[0], span[1] = min(span[0], first_at), max(span[1], last_at)
    origins: dict[str, list[tuple[datetime, str | None, str | None]]] = defaultdict(list)
    for vendor, sync_name, run_id, at in origin_rows:
        origins[vendor].append((at, sync_name, run_id))

    found = []
    for vendor in sorted(classes):
        ranked = sorted(classes[vendor].items(), key=lambda kv: (-kv[1], kv[0]))
        recent = sorted(origins[vendor], key=lambda o: o[0], reverse=True)
        found.append(DeadLetters(
            vendor=vendor,
            count=sum(classes[vendor].values()),
            top_error_classes=ranked[:top],
            sync_names=tuple(dict.fromkeys(s for _, s, _ in recent if s)),
            run_ids=tuple(dict.fromkeys(r for _, _, r in recent if r)),
            first_at=spans[vendor][0],
            last_at=spans[vendor][1],
        ))
    return found


def find_stalled_syncs(engine, expected_interval: timedelta | Mapping[str, timedelta], max_intervals: int,
                       now: datetime, *, include_missing: bool = False) -> list[StalledSync]:
    """Syncs whose watermark is older than ``max_intervals`` × their expected interval at ``now``.

    ``expected_interval`` is one interval for every sync in ``storesync_watermarks``, or a mapping
    ``{sync_name: interval}`` that checks only those syncs; with a mapping and
    ``include_missing=True`` a listed sync that never advanced its watermark is reported too.
    """
    if max_intervals < 1:
        raise ValueError("max_intervals must be at least 1")
    engine = _engine(engine)
    now = naive_utc(now)
    query = select(watermarks.c.sync_name, watermarks.c.window_end, watermarks.c.updated_at)
    per_sync = expected_interval if isinstance(expected_interval, Mapping) else None
    if per_sync is not None:
        query = query.where(watermarks.c.sync_name.in_(list(per_sync)))
    with engine.connect() as conn:
        result = conn.execute(query.order_by(watermarks.c.sync_name))
        rows = {name: (end, updated) for name, end, updated in result}

    stalled = []
    for name in sorted(set(rows) | (set(per_sync) if per_sync is not None and include_missing else set())):
        interval = per_sync[name] if per_sync is not None else expected_interval
        if interval.total_seconds() <= 0:
            raise ValueError(f"expected interval of {name!r} must be positive")
        if name not in rows:
            stalled.append(StalledSync(name, None, None, interval, max_intervals, None, None))
            continue
        watermark, updated_at = rows[name]
        behind = now - watermark
        if behind > interval * max_intervals:
            stalled.append(StalledSync(name, watermark, updated_at, interval, max_intervals,
                                       behind, int(behind / interval)))
    return stalled


def find_stuck_deliveries(engine, older_than: timedelta, now: datetime, *,
                          states: tuple[str, ...] = STUCK_STATES) -> list[StuckDeliveries]:
    """Deliveries still ``staged``, ``sending`` or ``unknown`` whose last change is more than
    ``older_than`` before ``now``, per vendor and state: a gate that keeps failing, a claim whose
    owner hangs, an outcome nobody reconciled. Indexed (state, updated_at): cheap however large
    the ledger. Reported on every check until resolved."""
    if older_than.total_seconds() <= 0:
        raise ValueError("older_than must be positive")
    engine = _engine(engine)
    cutoff = naive_utc(now) - older_than
    query = (
        select(deliveries.c.vendor, deliveries.c.state, deliveries.c.sync_name, func.count(),
               func.min(deliveries.c.updated_at))
        .where(deliveries.c.state.in_(list(states)), deliveries.c.updated_at < cutoff)
        .group_by(deliveries.c.vendor, deliveries.c.state, deliveries.c.sync_name)
    )
    grouped: dict[tuple[str, str], list] = {}
    with engine.connect() as conn:
        for vendor, state, sync_name, n, oldest in conn.execute(query):
            entry = grouped.setdefault((vendor, state), [0, oldest, []])
            entry[0] += n
            entry[1] = min(entry[1], oldest)
            if sync_name:
                entry[2].append(sync_name)
    return [StuckDeliveries(vendor, state, n, oldest, tuple(sorted(set(names))))
            for (vendor, state), (n, oldest, names) in sorted(grouped.items())]


def run_counts(engine, ledger_run_id: str) -> dict[str, int]:
    """Deliveries by state that a run touched last (``last_run_id``): what a failure alert reports.
    The run's per-sync ids (``<dag_id>/<run_id>/<sync_name>``, as the operators write them) count too."""
    engine = _engine(engine)
    escaped = ledger_run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    query = (select(deliveries.c.state, func.count())
             .where((deliveries.c.last_run_id == ledger_run_id)
                    | deliveries.c.last_run_id.like(escaped + "/%", escape="\\"))
             .group_by(deliveries.c.state).order_by(deliveries.c.state))
    with engine.connect() as conn:
        return {state: n for state, n in conn.execute(query)}


__all__ = [
    "DeadLetters",
    "STUCK_STATES",
    "StalledSync",
    "StuckDeliveries",
    "find_new_dead_letters",
    "find_stalled_syncs",
    "find_stuck_deliveries",
    "naive_utc",
    "run_counts",
    "split_ledger_run_id",
]
