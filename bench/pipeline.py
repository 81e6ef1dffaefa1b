"""Pipeline memory and incremental cost: the real planning path on stores of growing size.

pipeline memory
    ``syncs.plan_order_events`` over the whole period of a store (every order's status changes),
    dry run and no vendor targets: the order-changes model streamed in chunks
    (``Warehouse.stream_order_changes``), each chunk's orders and lines (``for_ids``), the
    quality gate (``validate_batch``, GX), ``build.order_events``. One fresh subprocess per size;
    wall time, peak RSS (VmHWM) and RSS sampled through the run.
incremental cost
    An hourly run (``plan_order_events`` with both vendors' targets, staging into a fresh ledger)
    over an hour holding the same ~1k status changes, on a small and a very large warehouse.
    Great Expectations is imported and warmed up before the clock starts (it costs the same on
    any warehouse); the run is repeated and the median kept, the first (cold) run reported too.
    The models' query plans are recorded next to the timings.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Check, Measurement, Skipped, log, run_child
from bench.stores import DAYS, END, INCREMENTAL_WINDOW, add_hourly_changes, pg_available, store

GIB = 1024.0


class _RssSampler:
    """VmRSS of this process every ``interval`` seconds (a thread), for the shape of the curve."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter() - self._started, self.rss_mb()))

    def __enter__(self) -> "_RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def curve(self, points: int = 12) -> list[list[float]]:
        if not self.samples:
            return []
        step = max(1, len(self.samples) // points)
        return [[round(t, 1), round(r, 1)] for t, r in self.samples[::step]]


def _context(url: str, ledger_dir: str, *, chunk_size: int, dry_run: bool, vendors: tuple = ()):
    from storesync.core.config import Settings
    from storesync.delivery.ledger import Ledger
    from storesync.pipeline import syncs
    from storesync.pipeline.targets import targets_for
    from storesync.warehouse.models import Warehouse

    settings = Settings(warehouse_url=url, ledger_url=f"sqlite:///{ledger_dir}/ledger.db", chunk_size=chunk_size)
    return syncs.SyncContext(
        settings=settings, warehouse=Warehouse(url, settings.models_dir), ledger=Ledger(settings.ledger_url),
        targets=targets_for(settings, vendors) if vendors else [], run_id=f"bench-{time.time_ns()}",
        sync_name="order_events", dry_run=dry_run, now=END,
    )


# ============================================================================ pipeline memory
def pipeline_child(url: str, chunk_size: int, max_s: float | None = None) -> dict:
    """Child: extract → validate → build events for the whole period of a store.

    ``max_s``: stop taking new chunks from the order-changes stream after that many seconds
    (each chunk taken still goes through the whole path); the result says how far it got."""
    from storesync.core.windows import Window
    from storesync.pipeline import syncs

    with tempfile.TemporaryDirectory() as tmp:
        ctx = _context(url, tmp, chunk_size=chunk_size, dry_run=True)
        state = {"chunks": 0, "capped": False}
        if max_s:
            stream = ctx.warehouse.stream_order_changes

            def capped(window, size):
                deadline = time.perf_counter() + max_s
                for frame in stream(window, size):
                    if time.perf_counter() > deadline:
                        state["capped"] = True
                        return
                    state["chunks"] += 1
                    yield frame

            ctx.warehouse.stream_order_changes = capped
        with _RssSampler() as sampler:
            started = time.perf_counter()
            report = syncs.plan_order_events(ctx, Window(END.replace(year=END.year - 1), END))
            elapsed = time.perf_counter() - started
    orders = report.entities["orders"]
    return {"elapsed_s": elapsed, "events": sum(report.events.values()), "by_kind": dict(report.events),
            "orders_in": orders.rows_in, "orders_passed": orders.rows_passed,
            "orders_quarantined": orders.rows_quarantined, "capped": state["capped"],
            "lines_in": report.entities["order_lines"].rows_in, "rss_curve_mb": sampler.curve()}


def measure_pipeline(quick: bool, backend: str = "sqlite", cap_s: float | None = None) -> Measurement:
    """``cap_s`` bounds the largest size's run (see ``pipeline_child``) for a shorter bench: the
    whole 10M-order pass takes ~25 min on 2 cores. A capped pass's figures say how many orders it
    processed, and its RSS check is left unproven."""
    sizes = (2_000, 5_000, 10_000) if quick else (100_000, 1_000_000, 10_000_000)
    small, mid, large = sizes
    from storesync.core.config import Settings

    chunk = 1000 if quick else Settings.__dataclass_fields__["chunk_size"].default  # the production default
    m = Measurement("pipeline_memory", "extract → validate → build order events, whole period, chunked",
                    f"peak RSS ≤ 1 GiB at {mid:,} orders; RSS at {large:,} ≤ 1.2× RSS at {mid:,}")
    m.sizes = {"orders": list(sizes), "chunk_size": chunk, "backend": backend, "days": DAYS,
               "largest_size_cap_s": cap_s}
    results = {}
    for orders in sizes:
        st = store(backend, orders)
        cap = cap_s if orders == large else None
        log(f"pipeline memory: {orders:,} orders ({backend}), fresh subprocess"
            + (f", at most {cap:.0f} s" if cap else ""))
        out = run_child("bench.pipeline:pipeline_child", {"url": st.url, "chunk_size": chunk, "max_s": cap},
                        timeout=12 * 3600)
        r = out["result"]
        results[orders] = {"wall_s": r["elapsed_s"], "peak_rss_mb": out["peak_rss_mb"], "events": r["events"],
                           "orders_in": r["orders_in"], "lines_in": r["lines_in"],
                           "orders_quarantined": r["orders_quarantined"],
                           "orders_per_s": r["orders_in"] / r["elapsed_s"] if r["elapsed_s"] else 0.0,
                           "complete": not r["capped"], "rss_curve_mb": r["rss_curve_mb"]}
        if r["capped"]:
            results[orders]["projected_full_s"] = orders / results[orders]["orders_per_s"]
            m.notes.append(f"{orders:,} orders: capped at {cap:.0f} s after {r['orders_in']:,} orders "
                           f"({results[orders]['orders_per_s']:.0f} orders/s; the whole store would take "
                           f"~{results[orders]['projected_full_s'] / 3600:.1f} h); its RSS is over the part streamed")
        log(f"  {r['elapsed_s']:.1f} s, {r['orders_in']:,} orders, peak RSS {out['peak_rss_mb']:.0f} MiB, "
            f"{r['events']:,} events")
    m.figures = {f"{k:,}": v for k, v in results.items()}
    m.baseline = {"peak_rss_mb_at_mid": results[mid]["peak_rss_mb"], "mid_orders": mid}
    growth = results[large]["peak_rss_mb"] / results[mid]["peak_rss_mb"]
    m.ratio = {f"rss {large:,}/{mid:,}": growth,
               f"rss {mid:,}/{small:,}": results[mid]["peak_rss_mb"] / results[small]["peak_rss_mb"],
               f"time {large:,}/{mid:,}": results[large]["wall_s"] / results[mid]["wall_s"]}
    # A capped pass proves nothing about the whole store's RSS: the check has no value then.
    complete = results[large]["complete"]
    m.checks = [Check(f"peak RSS at {mid:,} orders (MiB)", results[mid]["peak_rss_mb"], "<=", GIB),
                Check(f"RSS {large:,} / RSS {mid:,}" + ("" if complete else " (capped pass: not proven)"),
                      growth if complete else None, "<=", 1.2)]
    return m


# ============================================================================ incremental cost
def query_plans(url: str) -> dict:
    """The planner's plan for each model the hourly run uses (EXPLAIN QUERY PLAN / EXPLAIN), with
    the hour's window and (up to 50 of) its order ids, bound the way ``Warehouse`` binds them."""
    from sqlalchemy import bindparam, create_engine, text

    from storesync.core.config import DEFAULT_MODELS_DIR

    engine = create_engine(url)
    start, end = INCREMENTAL_WINDOW
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    plans = {}
    try:
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(text(
                "SELECT DISTINCT order_id FROM order_status_history WHERE changed_at >= :s AND changed_at < :e"),
                {"s": start, "e": end}).fetchmany(50)] or [1]
            for model in ("order_changes", "orders", "order_lines"):
                stmt = text(prefix + (DEFAULT_MODELS_DIR / f"{model}.sql").read_text())
                params = {"window_start": start, "window_end": end}
                if model != "order_changes":
                    stmt = stmt.bindparams(bindparam("order_ids", expanding=True))
                    params = {"order_ids": ids}
                plans[model] = [" | ".join(str(c) for c in row) for row in conn.execute(stmt, params)]
    finally:
        engine.dispose()
    return plans


def incremental_child(url: str, repeats: int, chunk_size: int = 5000) -> dict:
    """Child: the hourly order-events plan (both vendors) over ``INCREMENTAL_WINDOW``, into a fresh
    ledger each time; GX warmed up first."""
    from storesync.core.windows import Window
    from storesync.pipeline import syncs
    from storesync.quality.gate import gx_runtime

    gx_runtime()  # warm-up: Great Expectations imported and its context built (no warehouse involved)
    window = Window(*INCREMENTAL_WINDOW)
    runs = []
    stream_s = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            ctx = _context(url, tmp, chunk_size=chunk_size, dry_run=False, vendors=("sendlane", "sailthru"))
            started = time.perf_counter()
            report = syncs.plan_order_events(ctx, window)
            runs.append(time.perf_counter() - started)
            # The order-changes model alone (the query whose cost grows with the warehouse).
            started = time.perf_counter()
            n_changes = sum(len(f) for f in ctx.warehouse.stream_order_changes(window, chunk_size))
            stream_s.append(time.perf_counter() - started)
            ctx.ledger.engine.dispose()
    return {"runs_s": runs, "median_s": statistics.median(runs), "first_s": runs[0], "changes": n_changes,
            "order_changes_query_s": stream_s, "events": dict(report.events), "planned": dict(report.planned),
            "orders_in": report.entities["orders"].rows_in}


def measure_incremental(quick: bool) -> Measurement:
    small, large = (5_000, 20_000) if quick else (100_000, 10_000_000)
    changes = 200 if quick else 1000
    repeats = 2 if quick else 5
    m = Measurement("incremental_cost", f"hourly run with ~{changes:,} changed orders: small vs large warehouse",
                    "large-warehouse run ≤ 2× the small-warehouse run")
    m.sizes = {"small_orders": small, "large_orders": large, "changes_in_hour": changes,
               "window": [t.isoformat() for t in INCREMENTAL_WINDOW], "repeats": repeats}
    # Quick: SQLite only (the LTV measurement exercises PostgreSQL in the quick run).
    backends = ["sqlite"] + ([] if quick or pg_available() else ["postgresql"])
    results: dict = {}
    for backend in backends:
        for orders in (small, large):
            try:
                st = store(backend, orders)
            except Skipped as exc:
                m.notes.append(f"{backend} {orders:,}: skipped ({exc})")
                continue
            add_hourly_changes(st.url, changes)
            log(f"incremental: {orders:,}-order {backend} warehouse, {changes} changes in the hour")
            out = run_child("bench.pipeline:incremental_child", {"url": st.url, "repeats": repeats}, timeout=3600)
            r = out["result"]
            results.setdefault(backend, {})[orders] = {
                "median_s": r["median_s"], "first_s": r["first_s"], "runs_s": r["runs_s"],
                "order_changes_query_s": r["order_changes_query_s"], "changes": r["changes"],
                "events": r["events"], "planned": r["planned"], "peak_rss_mb": out["peak_rss_mb"],
                "query_plans": query_plans(st.url)}
            log(f"  median {r['median_s']:.2f} s (first {r['first_s']:.2f} s)")
    m.figures = {backend: {f"{k:,}": v for k, v in per.items()} for backend, per in results.items()}
    for backend, per in results.items():
        if small in per and large in per:
            ratio = per[large]["median_s"] / per[small]["median_s"]
            m.ratio[f"{backend} {large:,}/{small:,}"] = ratio
            m.baseline[f"{backend}_{small}_median_s"] = per[small]["median_s"]
            m.checks.append(Check(f"{backend}: large / small hourly run time", ratio, "<=", 2.0))
            m.ratio[f"{backend} first run {large:,}/{small:,}"] = per[large]["first_s"] / per[small]["first_s"]
    return m

