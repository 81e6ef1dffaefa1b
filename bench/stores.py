"""Demo stores for the benchmarks, generated once and cached.

SQLite stores are files ``bench/cache/store-<orders>-s<seed>-<version>.db``; PostgreSQL stores are
databases ``storesync_bench_<orders>_s<seed>_<version>`` on ``STORESYNC_BENCH_PG_URL`` (default:
``STORESYNC_TEST_PG_URL``, else ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``), with a
marker file in ``bench/cache/``. ``<version>`` hashes the generator's source (demo.py, bulk.py,
schema.py): change the generator and the stores are made again; stale ones of the same size and
seed are removed. Every store ends at the same fixed instant (``END``), so a cached store is
the same store whenever it was made.

The incremental-cost measurement needs the same number of changed orders in an hour on stores
of very different sizes: ``add_hourly_changes`` inserts ``n`` status changes (fulfilled orders
refunded) spread over ``INCREMENTAL_WINDOW``, one hour after ``END`` (idempotent). Nothing else
reads that hour: the other measurements use windows ending at ``END``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from bench.common import CACHE, ChildError, Skipped, log, run_child

END = datetime(2026, 1, 1)
DAYS = 90
SEED = 42
INCREMENTAL_WINDOW = (END + timedelta(hours=1), END + timedelta(hours=2))
GENERATOR_FILES = ("warehouse/demo.py", "warehouse/bulk.py", "warehouse/schema.py")
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def generator_version() -> str:
    import storesync

    root = Path(storesync.__file__).resolve().parent
    digest = hashlib.sha256()
    for name in GENERATOR_FILES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:10]


@dataclass
class Store:
    url: str
    backend: str
    orders: int
    seed: int
    meta: dict
    generated_now: bool

    def describe(self) -> dict:
        return {"backend": self.backend, "orders": self.orders, "seed": self.seed,
                "generated_in_this_run": self.generated_now, **self.meta}


# ------------------------------------------------------------------------------ generation
def generate_child(url: str, orders: int, seed: int) -> dict:
    """Child: write one store; returns its row counts and the generation time."""
    import logging

    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    stats = generate_demo_store(url, DemoStoreSpec(orders=orders, seed=seed, end=END, days=DAYS))
    return {"stats": stats.as_dict(), "generate_s": time.perf_counter() - started}


def _generate(url: str, orders: int, seed: int, backend: str) -> dict:
    log(f"generating a {orders:,}-order {backend} store (seed {seed}); cached for later runs")
    out = run_child("bench.stores:generate_child", {"url": url, "orders": orders, "seed": seed},
                    timeout=4 * 3600)
    meta = {"version": generator_version(), "end": END.isoformat(), "days": DAYS,
            "rows": out["result"]["stats"], "generate_s": round(out["result"]["generate_s"], 1),
            "generate_peak_rss_mb": round(out["peak_rss_mb"], 1),
            "generated_at": datetime.now().isoformat(timespec="seconds")}
    log(f"  {orders:,} orders ({backend}) in {meta['generate_s']:.0f} s, peak RSS {meta['generate_peak_rss_mb']:.0f} MiB")
    return meta


def sqlite_store(orders: int, seed: int = SEED) -> Store:
    CACHE.mkdir(parents=True, exist_ok=True)
    version = generator_version()
    path = CACHE / f"store-{orders}-s{seed}-{version}.db"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return Store(f"sqlite:///{path}", "sqlite", orders, seed, json.loads(meta_path.read_text()), False)
    for stale in CACHE.glob(f"store-{orders}-s{seed}-*"):
        stale.unlink()
    tmp = CACHE / f"store-{orders}-s{seed}-{version}.partial.db"
    tmp.unlink(missing_ok=True)
    meta = _generate(f"sqlite:///{tmp}", orders, seed, "sqlite")
    meta["file_mb"] = round(tmp.stat().st_size / 2**20, 1)
    tmp.rename(path)
    meta_path.write_text(json.dumps(meta, indent=2))
    return Store(f"sqlite:///{path}", "sqlite", orders, seed, meta, True)


def pg_admin_url() -> str:
    return os.environ.get("STORESYNC_BENCH_PG_URL") or os.environ.get("STORESYNC_TEST_PG_URL") or DEFAULT_PG_URL


def pg_available() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_admin_url())
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return None
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {pg_admin_url()}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()


def _pg_admin(statement: str, **params) -> list:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def pg_store(orders: int, seed: int = SEED) -> Store:
    from sqlalchemy.engine import make_url

    problem = pg_available()
    if problem:
        raise Skipped(problem)
    CACHE.mkdir(parents=True, exist_ok=True)
    version = generator_version()
    name = f"storesync_bench_{orders}_s{seed}_{version}"
    url = make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)
    marker = CACHE / f"pg-{name}.json"
    exists = bool(_pg_admin("SELECT 1 FROM pg_database WHERE datname = :n", n=name))
    if exists and marker.exists():
        return Store(url, "postgresql", orders, seed, json.loads(marker.read_text()), False)
    for (stale,) in _pg_admin("SELECT datname FROM pg_database WHERE datname LIKE :p",
                              p=f"storesync_bench_{orders}_s{seed}_%"):
        _pg_admin(f'DROP DATABASE IF EXISTS "{stale}"')
        (CACHE / f"pg-{stale}.json").unlink(missing_ok=True)
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        meta = _generate(url, orders, seed, "postgresql")
    except (ChildError, Exception):
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
        raise
    marker.write_text(json.dumps(meta, indent=2))
    return Store(url, "postgresql", orders, seed, meta, True)


def store(backend: str, orders: int, seed: int = SEED) -> Store:
    return sqlite_store(orders, seed) if backend == "sqlite" else pg_store(orders, seed)


# ------------------------------------------------------------------------------ hourly changes
def add_hourly_changes(url: str, n: int) -> dict:
    """Make ``INCREMENTAL_WINDOW`` hold exactly ``n`` status changes (fulfilled → refunded), spread
    over the hour and over the order ids. Idempotent; returns what the hour holds."""
    from sqlalchemy import DateTime, bindparam, create_engine, text

    start, end = INCREMENTAL_WINDOW
    window = [bindparam("s", type_=DateTime), bindparam("e", type_=DateTime)]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            have = conn.execute(text("SELECT COUNT(*) FROM order_status_history "
                                     "WHERE changed_at >= :s AND changed_at < :e").bindparams(*window),
                                {"s": start, "e": end}).scalar()
            if have == n:
                return {"changes": n, "inserted": 0}
            if have:
                conn.execute(text("DELETE FROM order_status_history WHERE changed_at >= :s AND changed_at < :e")
                             .bindparams(*window), {"s": start, "e": end})
            total = conn.execute(text("SELECT MAX(order_id) FROM orders")).scalar()
            step = max(1, total // (2 * n))
            ids = [r[0] for r in conn.execute(text(
                "SELECT order_id FROM orders WHERE status = 'fulfilled' AND order_id % :step = 0 "
                "ORDER BY order_id LIMIT :n"), {"step": step, "n": n})]
            if len(ids) < n:
                raise RuntimeError(f"only {len(ids)} fulfilled orders to refund, {n} wanted")
            next_id = conn.execute(text("SELECT MAX(history_id) FROM order_status_history")).scalar() + 1
            rows = [{"h": next_id + i, "o": oid, "at": start + timedelta(seconds=3600.0 * i / n)}
                    for i, oid in enumerate(ids)]
            conn.execute(text("INSERT INTO order_status_history (history_id, order_id, status, changed_at) "
                              "VALUES (:h, :o, 'refunded', :at)").bindparams(bindparam("at", type_=DateTime)),
                         rows)
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE order_status_history"))
        return {"changes": n, "inserted": n}
    finally:
        engine.dispose()
