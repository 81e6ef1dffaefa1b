"""``make bench``: generate (or reuse) the stores, run every measurement, print a table and write
``bench/results.json``.

    python -m bench.run                      # full sizes (about 45 min on 2 cores once the stores exist)
    python -m bench.run --quick              # small sizes, a couple of minutes (CI)
    python -m bench.run --only delivery,ltv  # some measurements (--merge keeps the others' results)

Measurements (see each module's docstring for exactly what is measured and how):

=================  ==========================================================================
delivery           events/s to the emulator, limits off: storesync vs drt-core vs sailthru-client
budget             share of a (scaled) Sendlane budget used, requests over it
bulk_backfill      historical orders through Sailthru's job API vs per-purchase calls at 40/min
pipeline_memory    extract → validate → build for 100k, 1M, 10M orders: time, peak RSS
incremental_cost   an hourly run (~1k changes) on a 100k- and a 10M-order warehouse
ltv                in-warehouse LTV SQL vs pandas/lifetimes on 10M orders, SQLite and PostgreSQL
parse              DAG file parse time, per file and as a DagBag
ui                 the Storesync view's page and JSON on a 10M-delivery ledger (PostgreSQL), with plans
airflow_backfill   a REST backfill of 720 (quick: 12) hourly order-events runs in Airflow vs a no-op DAG
=================  ==========================================================================

``results.json``: ``{"meta": {...}, "measurements": [{"name", "description", "sizes", "figures",
"baseline", "ratio", "target", "checks": [{"what", "value", "op", "target", "pass"}], "pass",
"notes", "error", "elapsed_s"}, ...]}``. Targets are for the full sizes; a quick run reports its
checks too, but they say little at those sizes. The exit status is 1 only when a measurement
could not produce its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime

from bench.common import RESULTS, Measurement, log

ORDER = ("parse", "delivery", "budget", "bulk_backfill", "incremental_cost", "pipeline_memory", "ltv", "ui",
         "airflow_backfill")


def _measure(name: str, args) -> Measurement:
    if name == "parse":
        from bench.parse import measure_parse

        return measure_parse(args.quick)
    if name == "delivery":
        from bench.delivery import measure_delivery

        return measure_delivery(args.quick)
    if name == "budget":
        from bench.delivery import measure_budget

        return measure_budget(args.quick)
    if name == "bulk_backfill":
        from bench.delivery import measure_backfill

        return measure_backfill(args.quick)
    if name == "incremental_cost":
        from bench.pipeline import measure_incremental

        return measure_incremental(args.quick)
    if name == "pipeline_memory":
        from bench.pipeline import measure_pipeline

        cap = None if args.quick or args.pipeline_cap_s <= 0 else args.pipeline_cap_s
        return measure_pipeline(args.quick, cap_s=cap)
    if name == "ltv":
        from bench.ltv import measure_ltv

        return measure_ltv(args.quick)
    if name == "ui":
        from bench.ui import measure_ui

        return measure_ui(args.quick)
    if name == "airflow_backfill":
        from bench.airflow_backfill import measure_airflow_backfill

        return measure_airflow_backfill(args.quick)
    raise ValueError(f"unknown measurement {name!r}; known: {', '.join(ORDER)}")


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _meta(args, started: float) -> dict:
    from bench.stores import generator_version

    stores = {}
    from bench.common import CACHE

    for meta_file in sorted(CACHE.glob("*.json")) if CACHE.exists() else []:
        try:
            stores[meta_file.stem] = json.loads(meta_file.read_text())
        except ValueError:
            continue
    return {
        "quick": args.quick, "started_at": datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "elapsed_s": round(time.time() - started, 1), "python": platform.python_version(),
        "platform": platform.platform(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "git_commit": _git_commit(), "generator_version": generator_version(), "stores": stores,
    }


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(measurements: list[dict]) -> str:
    lines = [f"{'measurement':<18}{'check':<62}{'value':>12}  {'target':<10}{'pass':>6}"]
    lines.append("-" * len(lines[0]))
    for m in measurements:
        if m.get("error"):
            lines.append(f"{m['name']:<18}{'ERROR: ' + m['error'].splitlines()[0][:55]:<62}")
            continue
        checks = m.get("checks") or [{"what": "(no check)", "value": None, "op": "", "target": "", "pass": None}]
        for i, c in enumerate(checks):
            name = m["name"] if i == 0 else ""
            target = f"{c['op']} {_fmt(c['target'])}" if c["op"] else ""
            lines.append(f"{name:<18}{c['what'][:61]:<62}{_fmt(c['value']):>12}  {target:<10}"
                         f"{_fmt(c['pass']):>6}")
        for label, value in m.get("ratio", {}).items():
            if not any(label in c["what"] for c in checks):
                lines.append(f"{'':<18}{'  ' + label[:59]:<62}{_fmt(value):>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (the CI smoke run)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(ORDER)}")
    parser.add_argument("--merge", action="store_true",
                        help="keep the results of measurements not run this time from the existing results.json")
    parser.add_argument("--pipeline-cap-s", type=float, default=0.0,
                        help="full run: stop the 10M-order pipeline pass after this many seconds, for a shorter "
                             "run (default 0: the whole store, ~25 min on 2 cores; a capped pass leaves the "
                             "10M/1M RSS check unproven)")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the JSON results")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(ORDER)
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown measurement(s) {unknown}; known: {', '.join(ORDER)}")
    names = [n for n in ORDER if n in names]  # dependencies: delivery stages budget's events
    started = time.time()
    log(f"{'quick' if args.quick else 'full'} run: {', '.join(names)}")
    results: list[dict] = []
    for name in names:
        t0 = time.perf_counter()
        try:
            m = _measure(name, args)
        except Exception as exc:  # noqa: BLE001 - one failed measurement must not hide the others
            import traceback

            m = Measurement(name, "", "", error=f"{type(exc).__name__}: {exc}")
            log(f"{name} failed:\n{traceback.format_exc()}")
        m.elapsed_s = time.perf_counter() - t0
        results.append(m.as_dict())
        log(f"{name}: {'error' if m.error else 'done'} in {m.elapsed_s:.0f} s")
    if args.merge and os.path.exists(args.output):
        try:
            previous = json.loads(open(args.output).read()).get("measurements", [])
        except ValueError:
            previous = []
        ran = {r["name"] for r in results}
        kept = [p for p in previous if p.get("name") not in ran]
        results = sorted(kept + results, key=lambda r: ORDER.index(r["name"]) if r["name"] in ORDER else 99)
    document = {"meta": _meta(args, started), "measurements": results}
    with open(args.output, "w") as fh:
        json.dump(document, fh, indent=2, default=str)
    print(table(results))
    print(f"\nresults: {args.output}  ({document['meta']['elapsed_s']:.0f} s)")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
