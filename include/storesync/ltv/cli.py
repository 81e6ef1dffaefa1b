"""``storesync ltv [--as-of DAY] [--full]``: the LTV job from the command line.

The same job the ``storesync_ltv`` DAG runs (``storesync.ltv.job.run_ltv_job``), with the same
settings: the LTV models in ``models_dir`` and the ``[ltv]`` table of ``storesync.toml``.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, timedelta, timezone

__all__ = ["add_arguments", "as_of_day", "cmd_ltv"]


def as_of_day(value: str) -> date:
    """argparse type for --as-of: a calendar day (an ISO time's date is taken)."""
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day: write e.g. 2026-11-20") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--as-of", type=as_of_day, default=None,
                   help="the day to compute, inclusive to its end (YYYY-MM-DD, warehouse time); "
                        "default: yesterday (UTC), the last whole day, as the daily DAG computes it")
    p.add_argument("--full", action="store_true",
                   help="recompute every customer from all orders, not from the day before")
    p.add_argument("--no-predict", action="store_true", help="historic figures only (no BG/NBD fit)")
    p.add_argument("--json", action="store_true", help="print the run's report as JSON")
    p.add_argument("--warehouse-url")
    p.add_argument("--ledger-url")


def format_report(report) -> str:
    left_out = ", ".join(f"{reason} {n}" for reason, n in report.left_out.items()) or "none"
    lines = [
        f"LTV {report.as_of} ({report.method}): {report.customers} customers, money in {report.currency}",
        f"orders left out: {left_out}",
    ]
    if report.not_counted:
        lines.append(f"not counted among the {report.not_counted_scope}: "
                     + ", ".join(f"{reason} {n}" for reason, n in report.not_counted.items()))
    if report.gate_changed_customers:
        lines.append(f"customers recomputed because an order entered or left the gate: {report.gate_changed_customers}")
    if report.fixed_orders:
        lines.append(f"orders fixed since earlier days: {report.fixed_orders}; days recomputed: "
                     + ", ".join(report.earlier_days_recomputed))
    no_rate = max(report.left_out.get("no_fx_rate", 0), (report.not_counted or {}).get("no_fx_rate", 0))
    if no_rate:
        lines.append(f"{no_rate} orders have no rate into {report.currency}: give fx_rates.sql rates for their "
                     "currencies, or, if the store sells in one currency, set [ltv] currency to it")
    if report.predicted:
        lines.append(f"predictions: fitted on {report.repeat_customers} repeat customers")
    elif report.note:
        lines.append(f"predictions: not fitted ({report.note})")
    return "\n".join(lines)


def cmd_ltv(args, settings) -> int:
    from storesync.ltv.job import run_ltv_job

    as_of = args.as_of or datetime.now(timezone.utc).date() - timedelta(days=1)
    report = run_ltv_job(settings, as_of, full=args.full, predict=not args.no_predict)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0
