"""UI: the Storesync view's answers on a large ledger (10M deliveries; 100k with ``--quick``).

The ledger is generated in the database itself (one ``INSERT ... SELECT`` over
``generate_series`` on PostgreSQL, a recursive CTE on SQLite; the secondary indexes built after
the rows), spread over a year ending at ``END`` like a store's live syncs: 70% Sendlane over two
accounts, 30% Sailthru; 97.5% accepted, 1% dead letters (payloads with emails), 0.2% held, the
newest 0.1% still open; a run per sync and hour; a quarantine of 20k rows. It is cached
(``bench/cache/ui-ledger-*.json`` with the database ``storesync_bench_ui_<n>_<version>`` or the
file ``ui-ledger-<n>-<version>.db``); indexes the ledger gained since are built on it before
measuring.

Measured in a fresh interpreter, through the view's own FastAPI app (``storesync.ui.app``, the
auth check faked: Airflow is not started), the clock at ``END``:

* the page (``GET /``: overview, dead letters, held rows, quarantine, LTV; HTML with its charts),
  the overview JSON, the dead letters of one account, the held rows' JSON (the newest 5,000 of
  the ledger's ~20k unknown rows at full size, classified by ``remedies.classify_unknown`` in
  Python: the view's bound), each: the first answer (cold) and the median of five after it;
* the plan of every statement the page runs (``EXPLAIN``), captured as the page runs them: the
  indexes used, and whether any reads the whole deliveries table;
* baseline: what a naive dashboard runs instead, ``SELECT state, count(*) ... GROUP BY state``
  over the whole ledger (the all-time totals), timed the same way.

Target (full size, PostgreSQL): the page and the JSON answer in < 1 s warm, no statement scans
the deliveries table.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

from bench.common import CACHE, Check, Measurement, log, run_child
from bench.stores import pg_admin_url, pg_available

END = datetime(2026, 1, 1)
SPAN_DAYS = 365
FULL, QUICK = 10_000_000, 100_000
# Bump when the generated rows change (cached ledgers of another version are made again).
GENERATOR_VERSION = "u1"  # the 10M ledger's rows; a quick ledger's side tables are its own size
REPEATS = 5


# ------------------------------------------------------------------------------ the ledger
def _rows_sql(dialect: str, n: int) -> str:
    """``INSERT INTO storesync_deliveries ... SELECT`` of ``n`` generated rows (see the module doc)."""
    if dialect == "postgresql":
        source = f"generate_series(1, {n}) AS g(i)"
        i = "g.i::bigint"
        at = f"(TIMESTAMP '{END:%Y-%m-%d %H:%M:%S}' - make_interval(secs => ({n} - {i}) * {SPAN_DAYS * 86400.0} / {n}))"
        text_of = "({})::text"
        concat = " || "
    else:
        source = "seq"
        i = "seq.i"
        at = (f"strftime('%Y-%m-%d %H:%M:%f', '{END:%Y-%m-%d %H:%M:%S}', "
              f"'-' || (({n} - {i}) * {SPAN_DAYS * 86400.0} / {n}) || ' seconds')")
        text_of = "CAST({} AS TEXT)"
        concat = " || "
    h = f"(({i} * 2654435761) % 1000003)"
    vendor = f"(CASE WHEN {h} % 10 < 7 THEN 'sendlane' ELSE 'sailthru' END)"
    account = f"(CASE WHEN {h} % 10 < 7 THEN 'sl-acct-' {concat} {text_of.format(f'({h} / 10) % 2')} ELSE 'st-acct-0' END)"
    state = (f"(CASE WHEN {i} > {int(n * 0.999)} THEN (CASE WHEN {h} % 2 = 0 THEN 'planned' ELSE 'retry' END) "
             f"WHEN {h} % 1000 < 975 THEN 'accepted' WHEN {h} % 1000 < 985 THEN 'dead' "
             f"WHEN {h} % 1000 < 987 THEN 'unknown' WHEN {h} % 1000 < 992 THEN 'suppressed' "
             f"WHEN {h} % 1000 < 995 THEN 'superseded' ELSE 'accepted' END)")
    ident = text_of.format(i)
    dead = f"{h} % 1000 BETWEEN 975 AND 984"
    columns = ("delivery_key, vendor, account, event_type, entity_id, version, ordering_key, seq, method, endpoint, "
               "payload, historical, state, attempts, error_class, http_status, vendor_code, vendor_error, "
               "sync_name, planned_run_id, last_run_id, window_start, window_end, occurred_at, planned_at, "
               "updated_at, accepted_at, versioning")
    select = (
        f"SELECT {vendor}{concat}'|'{concat}{account}{concat}'|order_placed|'{concat}{ident}{concat}'|v1', "
        f"{vendor}, {account}, 'order_placed', {ident}, 'v1', 'order:'{concat}{ident}, 0, 'POST', "
        f"CASE WHEN {h} % 10 < 7 THEN '/tracking/order-placed' ELSE '/purchase' END, "
        f"'{{\"order_id\": '{concat}{ident}{concat}', \"email\": \"buyer'{concat}{ident}"
        f"{concat}'@example.com\", \"first_name\": \"Ann\", \"total\": \"19.60\"}}', "
        f"{'false' if dialect == 'postgresql' else '0'}, {state}, 1, "
        f"CASE WHEN {dead} THEN 'validation' END, CASE WHEN {dead} THEN 400 END, CASE WHEN {dead} THEN 'E1' END, "
        f"CASE WHEN {dead} THEN 'invalid email address buyer'{concat}{ident}{concat}'@example.com' END, "
        f"'order_events', 'run-'{concat}{text_of.format(f'{i} * 8760 / {n}')}, "
        f"'run-'{concat}{text_of.format(f'{i} * 8760 / {n}')}, {at}, {at}, {at}, {at}, {at}, {at}, 'change' "
        f"FROM {source}")
    prefix = "" if dialect == "postgresql" else (
        f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) ")
    if dialect == "postgresql":
        return f"INSERT INTO storesync_deliveries ({columns}) {select}"
    return f"INSERT INTO storesync_deliveries ({columns}) {prefix}{select}"


def build_child(url: str, n: int, side_days: int = SPAN_DAYS) -> dict:
    """Child: create the ledger's tables and fill them (see the module doc); returns the timings."""
    import json as _json

    from sqlalchemy import create_engine, text

    from storesync.core.throttle import rate_slots_metadata
    from storesync.delivery import ledger
    from storesync.quality import store

    engine = create_engine(url)
    dialect = engine.dialect.name
    timings = {}
    started = time.perf_counter()
    for metadata in (ledger.metadata, store.metadata, rate_slots_metadata):
        metadata.create_all(engine, checkfirst=True)
    secondary = [i for i in ledger.deliveries.indexes]
    with engine.begin() as conn:
        for index in secondary:  # built after the rows: ~5x faster than maintained row by row
            conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    with engine.begin() as conn:
        conn.execute(text(_rows_sql(dialect, n)))
    timings["insert_s"] = time.perf_counter() - started
    t = time.perf_counter()
    for index in secondary:
        index.create(engine)
    timings["indexes_s"] = time.perf_counter() - t
    # A run per sync and hour, the watermarks, a quarantine.
    syncs = ("order_events", "customers", "products", "checkouts")
    runs = []  # the last ``side_days`` of runs (a quick run makes fewer: their inserts dominate it)
    for hour in range(SPAN_DAYS * 24 - side_days * 24, SPAN_DAYS * 24):
        start = END - timedelta(hours=SPAN_DAYS * 24 - hour)
        for sync in syncs:
            runs.append({"run_id": f"scheduled__{sync}__{hour}", "sync_name": sync, "window_start": start,
                         "window_end": start + timedelta(hours=1), "dry_run": False,
                         "status": "failed" if hour % 97 == 0 else "succeeded", "started_at": start + timedelta(hours=1),
                         "finished_at": start + timedelta(hours=1, seconds=40),
                         "counts": _json.dumps({"planned": 30, "sent": {"sendlane": 20, "sailthru": 10}}),
                         "error": "quarantine share over threshold" if hour % 97 == 0 else None})
    quarantined = [{"run_id": f"run-{q}", "batch_id": "orders-0", "entity": "orders", "entity_id": str(q),
                    "reasons": _json.dumps(["email_well_formed: not an email address"]),
                    "row": _json.dumps({"order_id": q, "email": f"bad{q}@", "first_name": "Ann"}),
                    "quarantined_at": END - timedelta(minutes=q * 26),
                    "resolved_at": END if q % 3 == 0 else None} for q in range(20_000 * side_days // SPAN_DAYS)]
    with engine.begin() as conn:
        conn.execute(ledger.sync_runs.insert(), runs)
        conn.execute(ledger.watermarks.insert(), [{"sync_name": s, "window_end": END - timedelta(hours=1 + k),
                                                   "updated_at": END} for k, s in enumerate(syncs)])
        conn.execute(store.quarantine.insert(), quarantined)
    t = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))
    timings["analyze_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT COUNT(*) FROM storesync_deliveries")).scalar()
    engine.dispose()
    return {"deliveries": rows, **timings}


def ledger_for(backend: str, n: int) -> tuple[str, dict, bool]:
    """(url, meta, built now): the cached ledger of ``n`` deliveries on ``backend``, built if missing."""
    from sqlalchemy.engine import make_url

    from bench.stores import _pg_admin

    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"storesync_bench_ui_{n}_{GENERATOR_VERSION}"
    marker = CACHE / f"ui-ledger-{backend}-{n}-{GENERATOR_VERSION}.json"
    if backend == "postgresql":
        url = make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)
        exists = bool(_pg_admin("SELECT 1 FROM pg_database WHERE datname = :n", n=name))
        if exists and marker.exists():
            return url, json.loads(marker.read_text()), False
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
        _pg_admin(f'CREATE DATABASE "{name}"')
    else:
        path = CACHE / f"ui-ledger-{n}-{GENERATOR_VERSION}.db"
        url = f"sqlite:///{path}"
        if path.exists() and marker.exists():
            return url, json.loads(marker.read_text()), False
        path.unlink(missing_ok=True)
    log(f"ui: generating a ledger of {n:,} deliveries ({backend}); cached for later runs")
    try:
        side_days = SPAN_DAYS if n >= FULL else 30
        meta = run_child("bench.ui:build_child", {"url": url, "n": n, "side_days": side_days},
                         timeout=4 * 3600)["result"]
    except Exception:
        if backend == "postgresql":
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
        raise
    log(f"  {meta['deliveries']:,} deliveries in {meta['total_s']:.0f} s (rows {meta['insert_s']:.0f} s, "
        f"indexes {meta['indexes_s']:.0f} s)")
    marker.write_text(json.dumps(meta, indent=2))
    return url, meta, True


# ------------------------------------------------------------------------------ the measurement
def measure_child(url: str, repeats: int = REPEATS) -> dict:
    """Child: the view's answers, timed through its app, with the plans of what the page runs."""
    import logging

    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine, event, text

    from storesync.core.throttle import rate_slots
    from storesync.delivery import ledger
    from storesync.ui.app import StoreConfig, UIConfig, create_app
    from storesync.ui.queries import LedgerReader

    logging.getLogger("httpx").setLevel(logging.WARNING)
    engine = create_engine(url)
    for index in ledger.deliveries.indexes:  # indexes the ledger gained since the cache was built
        index.create(engine, checkfirst=True)
    now_wall = time.time()
    with engine.begin() as conn:  # the current budget window: 150 admissions on one account
        conn.execute(rate_slots.delete())
        conn.execute(rate_slots.insert(), [{"key": "sendlane:sl-acct-0", "slot_at": now_wall - i * 0.2}
                                           for i in range(150)])

    class Auth:
        async def user(self, token):
            return "bench"

        def can_read(self, user, dag_id):
            return True

        def can_trigger(self, user, dag_id):
            return True

        def login_url(self, next_url):
            return "/login"

    app_engines = []

    def fixed_clock_reader(engine, **kwargs):
        app_engines.append(engine)  # the app's own engine: its statements are the ones to explain
        return LedgerReader(engine, clock=lambda: END, **kwargs)

    import storesync.ui.queries as queries_module

    original = queries_module.LedgerReader
    queries_module.LedgerReader = fixed_clock_reader  # the app builds its reader through this name
    try:
        config = UIConfig(static_dir=Path(__file__).resolve().parents[1] / "plugins" / "storesync_ui" / "static",
                          stores={"default": StoreConfig("default", url, budgets={"sendlane": (200, 60.0)})})
        client = TestClient(create_app(config, auth=Auth()))
        headers = {"Authorization": "Bearer bench"}
        requests_timed = {
            "page": ("/", {}),
            "overview_json": ("/api/overview", {}),
            "page_one_account": ("/", {"vendor": "sendlane", "account": "sl-acct-1"}),
            "dead_letters_json": ("/api/deliveries/dead", {"vendor": "sendlane", "account": "sl-acct-0",
                                                            "limit": 50, "offset": 200}),
            "page_90_days": ("/", {"days": 90}),
            "held_json": ("/api/deliveries/held", {}),
        }
        figures, sizes = {}, {}
        statements: list[tuple[str, object]] = []
        capture = {"on": False}

        for name, (path, params) in requests_timed.items():
            times = []
            for _ in range(repeats + 1):
                t = time.perf_counter()
                response = client.get(path, params=params, headers=headers)
                times.append(time.perf_counter() - t)
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
            figures[f"{name}_cold_s"] = times[0]
            figures[f"{name}_warm_median_s"] = statistics.median(times[1:])
            sizes[f"{name}_bytes"] = len(response.content)
        overview = client.get("/api/overview", headers=headers).json()

        # The plans: run the page once more with the app's engine recording its statements.
        app_engine = app_engines[-1]

        def record(conn, cursor, statement, parameters, context, executemany):
            if capture["on"] and statement.lstrip().upper().startswith("SELECT"):
                statements.append((statement, parameters))

        event.listen(app_engine, "before_cursor_execute", record)
        capture["on"] = True
        client.get("/", headers=headers)
        capture["on"] = False
        plans = _plans(app_engine, statements)

        t = time.perf_counter()
        with engine.connect() as conn:
            naive = dict(conn.execute(text("SELECT state, COUNT(*) FROM storesync_deliveries GROUP BY state")).all())
        naive_s = time.perf_counter() - t
        t = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(text("SELECT state, COUNT(*) FROM storesync_deliveries GROUP BY state")).all()
        naive_warm_s = time.perf_counter() - t
    finally:
        queries_module.LedgerReader = original
    return {"figures": figures, "sizes": sizes, "plans": plans, "naive_cold_s": naive_s,
            "naive_warm_s": naive_warm_s, "naive_total": sum(naive.values()),
            "window_totals": overview["states"]["totals"], "dead_total": overview["dead"]["total"],
            "held_total": overview["held"]["total"], "budget_used": [b["used"] for b in overview["budgets"]],
            "unknown": {k: overview["held"].get(k)
                        for k in ("unknown_total", "classified", "complete", "settling")}}


def _plans(engine, statements) -> list[dict]:
    """EXPLAIN of each statement: the plan text, the indexes it names, and whether it reads the
    whole deliveries table."""
    import re

    plans = []
    dialect = engine.dialect.name
    with engine.connect() as conn:
        for statement, parameters in statements:
            if dialect == "postgresql":
                rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
                plan = "\n".join(r[0] for r in rows)
                full_scan = _pg_reads_whole_table(plan)
                took = re.search(r"Execution Time: ([\d.]+) ms", plan)
                ms = float(took.group(1)) if took else None
            else:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
                plan = "\n".join(str(r[-1]) for r in rows)
                # SCAN (not SEARCH) walks every row, of the table or of one of its indexes.
                full_scan = "SCAN storesync_deliveries" in plan
                ms = None
            plans.append({"sql": " ".join(statement.split())[:300], "plan": plan[:3000],
                          "indexes": sorted(set(re.findall(r"\b(ix_\w+|pk_\w+|storesync_\w+_pkey)", plan))),
                          "reads_whole_deliveries_table": full_scan, "execution_ms": ms})
    return plans


def _pg_reads_whole_table(plan: str) -> bool:
    """A Seq Scan of the deliveries, or an index scan of them with no Index Cond (every entry)."""
    lines = plan.splitlines()
    for number, line in enumerate(lines):
        if "on storesync_deliveries" not in line or "Scan" not in line:
            continue
        if "Seq Scan" in line:
            return True
        node = []
        for following in lines[number + 1:]:
            if "->" in following:
                break
            node.append(following)
        if not any("Index Cond" in detail for detail in node):
            return True
    return False


def measure_ui(quick: bool) -> Measurement:
    n = QUICK if quick else FULL
    m = Measurement(
        "ui", "the Storesync view's page and JSON answers (through its FastAPI app) on a large ledger",
        "< 1 s warm for the page and the overview JSON on 10M deliveries (PostgreSQL); no statement reads the "
        "whole deliveries table")
    problem = pg_available()
    # One backend: PostgreSQL (production's ledger) when it answers, else SQLite (the default).
    backends = ["postgresql"] if problem is None else ["sqlite"]
    if problem is not None:
        m.notes.append(f"PostgreSQL not measured: {problem}")
    for backend in backends:
        url, meta, built = ledger_for(backend, n)
        m.sizes[backend] = {"deliveries": meta["deliveries"], "built_in_this_run": built,
                            "build_s": round(meta["total_s"], 1)}
        out = run_child("bench.ui:measure_child", {"url": url, "repeats": 3 if quick else REPEATS},
                        timeout=3600)["result"]
        m.figures[backend] = {**out["figures"], **out["sizes"], "window_totals": out["window_totals"],
                              "dead_total": out["dead_total"], "held_total": out["held_total"],
                              "unknown": out["unknown"],
                              "budget_used": out["budget_used"], "statements": len(out["plans"])}
        m.baseline[backend] = {"naive_all_time_counts_cold_s": out["naive_cold_s"],
                               "naive_all_time_counts_warm_s": out["naive_warm_s"]}
        m.ratio[f"{backend}: naive whole-ledger count / page (warm)"] = (
            out["naive_warm_s"] / max(out["figures"]["page_warm_median_s"], 1e-6))
        scans = [p for p in out["plans"] if p["reads_whole_deliveries_table"]]
        m.figures[backend]["plans"] = out["plans"]
        m.figures[backend]["indexes_used"] = sorted({i for p in out["plans"] for i in p["indexes"]})
        if out["naive_total"] != meta["deliveries"]:
            raise RuntimeError(f"the ledger holds {out['naive_total']} deliveries, not {meta['deliveries']}")
        label = f"{backend} {n // 1_000_000}M" if n >= 1_000_000 else f"{backend} {n // 1000}k"
        m.checks += [
            Check(f"{label}: page, warm median (s)", out["figures"]["page_warm_median_s"], "<", 1.0),
            Check(f"{label}: overview JSON, warm median (s)", out["figures"]["overview_json_warm_median_s"], "<", 1.0),
            Check(f"{label}: page of one account, warm median (s)", out["figures"]["page_one_account_warm_median_s"],
                  "<", 1.0),
            Check(f"{label}: statements reading the whole deliveries table", float(len(scans)), "==", 0.0),
        ]
        log(f"ui {backend}: page {out['figures']['page_warm_median_s']:.3f} s warm "
            f"({out['figures']['page_cold_s']:.3f} s cold), JSON {out['figures']['overview_json_warm_median_s']:.3f} s, "
            f"naive count {out['naive_warm_s']:.2f} s; whole-table reads: {len(scans)}")
    if quick:
        m.notes.append("quick: 100k deliveries; the target is for 10M")
    m.notes.append("LTV has no rows in this ledger (measured by the ltv benchmark); runs and quarantine (20k rows) "
                   "over the year at full size, the last 30 days in a quick run")
    m.notes.append("cold = the first request of a fresh process: it imports the masking and quarantine modules "
                   "(pandas), once per api-server; page_90_days reads 25x the default window's rows")
    return m
