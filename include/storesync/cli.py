"""The ``storesync`` command: the demo store, the emulator, syncs, dry runs, replay, reconciliation.

Every command reads the same settings as the DAGs (``storesync.toml`` and ``STORESYNC_*``).
Exit status: 0 on success, 1 when the run failed (quality gate, auth, unknown outcomes held),
2 on bad input (arguments, settings, a missing or unreadable warehouse). Every error is one line
on stderr that says what to do next; ``--json`` output on stdout is JSON only (logs go to stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from datetime import datetime, timedelta, timezone

from storesync.core.errors import StoresyncError


def _settings(args):
    from pathlib import Path

    from storesync.core.config import load_settings
    from storesync.core.errors import ConfigurationError

    if args.config and not Path(args.config).is_file():
        raise ConfigurationError(f"--config {args.config}: no such settings file; check the path, or leave "
                                 "--config out to read ./storesync.toml or $STORESYNC_CONFIG")
    settings = load_settings(args.config)
    if getattr(args, "warehouse_url", None):
        settings = settings.with_overrides(warehouse_url=args.warehouse_url)
    if getattr(args, "ledger_url", None):
        settings = settings.with_overrides(ledger_url=args.ledger_url)
    return settings


def _iso_time(value: str) -> datetime:
    """argparse type for --start/--end: an ISO 8601 date or time (UTC unless it says otherwise)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 date or time: write e.g. 2026-11-20 or 2026-11-20T13:00") from None


def _share(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a share from 0 up to 1, e.g. 0.005")
    return number


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a whole number of 1 or more")
    return number


def _window(args, settings):
    from storesync.core.windows import Window

    if args.start and not args.end:
        raise ValueError("--start needs --end (or give --end and --hours)")
    if args.start and args.end:
        if args.end <= args.start:
            raise ValueError(f"--end ({args.end}) must be after --start ({args.start})")
        return Window(args.start, args.end)
    end = args.end or _latest_activity(settings)
    end = datetime.fromisoformat(end) if isinstance(end, str) else end
    return Window(end - timedelta(hours=args.hours), end)


def _latest_activity(settings) -> datetime:
    """The store's "now": the top of the hour after the latest change its order_changes model
    returns (any schema: storesync.warehouse.activity)."""
    from storesync.warehouse.activity import latest_activity
    from storesync.warehouse.models import Warehouse

    _require_warehouse(settings)
    latest = latest_activity(Warehouse(settings.warehouse_url, settings.models_dir), datetime.utcnow())
    if latest is None:
        raise StoresyncError("the warehouse's order_changes model returns no change in the last ten years: "
                             "give the window (--end, or --start and --end), or run `storesync demo-store`")
    return latest


def _shown_url(url: str) -> str:
    from storesync.warehouse.errors import shown_url

    return shown_url(url)


def _require_warehouse(settings) -> None:
    """A SQLite warehouse file must exist before anything reads it (connecting would create an
    empty file, and the first query would fail with "no such table")."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from storesync.core.errors import ConfigurationError

    url = make_url(settings.warehouse_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not Path(url.database).exists():
        raise ConfigurationError(
            f"no warehouse at {url.database}: run `storesync demo-store` to create the demo store there, "
            "or point warehouse_url at your warehouse (storesync.toml, STORESYNC_WAREHOUSE_URL or "
            "--warehouse-url)")


def _database_error_text(exc, args) -> str:
    """A SQLAlchemy error as one line that says which database and what to check
    (``storesync.warehouse.errors``: the Airflow tasks say the same)."""
    from storesync.warehouse import errors

    try:
        settings = _settings(args)
        where = errors.where(settings.warehouse_url, settings.ledger_url, settings.models_dir)
        if getattr(args, "url", None):  # demo-store --url
            where = f"database {_shown_url(args.url)}"
    except Exception:  # noqa: BLE001 - the settings themselves may be what failed
        where = "the configured warehouse and ledger"
    return errors.describe(exc, where)


def _has_orders_table(url: str) -> bool:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        return inspect(engine).has_table("orders")
    finally:
        engine.dispose()


def cmd_demo_store(args) -> int:
    from sqlalchemy.engine import make_url

    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    settings = _settings(args)
    url = args.url or settings.warehouse_url
    if url.startswith(("sqlite:///", "duckdb:///")):  # file databases: make the folder
        from pathlib import Path

        Path(make_url(url).database).parent.mkdir(parents=True, exist_ok=True)
    if getattr(args, "if_missing", False) and _has_orders_table(url):
        print(f"demo store at {_shown_url(url)}: kept (it has an orders table; without --if-missing it is "
              "made again, replacing it)")
        return 0
    spec = DemoStoreSpec(orders=args.orders, seed=args.seed, days=args.days, bad_share=args.bad_share,
                         **({"end": args.end} if args.end else {}))
    stats = generate_demo_store(url, spec)
    print(f"demo store at {make_url(url).render_as_string(hide_password=True)}: "
          + ", ".join(f"{k} {v}" for k, v in stats.as_dict().items()))
    return 0


def cmd_emulator(args) -> int:
    from storesync.emulator.server import main as emulator_main

    import errno

    from storesync.core.errors import ConfigurationError

    try:
        return emulator_main(["--host", args.host, "--port", str(args.port)])
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(f"port {args.port} on {args.host} is in use (another emulator?): stop it, or "
                                     "choose another with --port (0 picks a free one)") from None
        raise


def cmd_sync(args) -> int:
    from storesync.pipeline.jobs import format_summary, run_nightly

    from storesync.run_report import (
        dry_run_samples_text,
        gate_failure_text,
        quarantine_reasons_text,
        quarantine_samples_text,
    )

    settings = _settings(args)
    window = _window(args, settings)  # argument errors first: they need no database
    _require_warehouse(settings)
    run_id = args.run_id or f"cli-{datetime.utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    summary = run_nightly(settings, window, run_id=run_id, vendors=args.vendors, dry_run=args.dry_run)
    failures = summary.get("gate_failures") or []  # a dry run shows them with everything else
    if args.json:  # stdout is the JSON document alone, so it pipes into jq
        summary = {"window": {"start": window.start.isoformat(), "end": window.end.isoformat()}, **summary}
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"window {window}")
        print(format_summary(summary))
        for section in (quarantine_reasons_text(summary),
                        quarantine_samples_text(summary, args.samples) if args.dry_run else "",
                        dry_run_samples_text(summary, args.samples) if args.dry_run else ""):
            if section:
                print("")
                print(section)
    for failure in failures:
        print(f"storesync: {gate_failure_text(failure)}", file=sys.stderr)
    if failures:
        return 1
    return 1 if not args.dry_run and _report_held(settings, args.vendors, to_stderr=args.json) else 0


def _report_held(settings, vendors, *, to_stderr: bool = False) -> int:
    """Print what to do about deliveries held for a person (``storesync.delivery.remedies``);
    return how many. Rows the next run settles (awaiting a lookup or a resend) are not held."""
    from storesync.delivery.ledger import UNKNOWN, Ledger
    from storesync.delivery.remedies import held_counts, held_remedy

    ledger = Ledger(settings.ledger_url)
    rows = [d for vendor in vendors for d in ledger.in_state(UNKNOWN, vendor=vendor)]
    counts = held_counts(rows, sendlane_unknown_outcome=settings.sendlane.unknown_outcome,
                         sailthru_unknown_outcome=settings.sailthru.unknown_outcome)
    for vendor, by_event in sorted(counts.items()):
        print("\n" + held_remedy(vendor, by_event), file=sys.stderr if to_stderr else sys.stdout)
    return sum(sum(by_event.values()) for by_event in counts.values())


def _current_demo(settings, db_path) -> bool:
    """False for the demo's own file (``data_dir/demo_store.db``) written by an older storesync (its
    schema lacks what the models now read): it is generated data, made again rather than failing
    `make run`. Any other database is the user's, never replaced."""
    from pathlib import Path

    from storesync.warehouse.demo import is_current_demo_store

    if db_path.resolve() != (Path(settings.data_dir) / "demo_store.db").resolve():
        return True
    current = is_current_demo_store(settings.warehouse_url)
    if not current:
        print("the demo store was written by an older storesync: writing it again", file=sys.stderr)
    return current


def cmd_demo(args) -> int:
    """`make run`: demo store if missing, the emulator in-process, then the nightly sync."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from storesync.emulator.testing import start_emulator
    from storesync.pipeline.jobs import format_summary, run_nightly

    settings = _settings(args)
    db_path = Path(make_url(settings.warehouse_url).database or "")
    if settings.warehouse_url.startswith("sqlite") and not (db_path.exists() and _current_demo(settings, db_path)):
        args.url, args.end = None, None
        cmd_demo_store(args)
    # The demo account's limits are raised so the demo takes seconds; the client budget matches.
    demo_budget = 6000
    with start_emulator(port=args.port) as emu:
        emu.configure(sendlane_rate_limit=demo_budget,
                      sailthru_rate_limits={"POST": demo_budget, "GET": demo_budget, "DELETE": demo_budget})
        settings = settings.with_overrides(
            sendlane=type(settings.sendlane)(base_url=emu.sendlane_url, api_token=emu.sendlane_api_token,
                                             integration_token=emu.sendlane_integration_token,
                                             budget_per_minute=demo_budget),
            sailthru=type(settings.sailthru)(base_url=emu.sailthru_url, api_key=emu.sailthru_api_key,
                                             secret=emu.sailthru_secret, budget_per_minute=demo_budget),
        )
        window = _window(args, settings)
        run_id = f"demo-{datetime.utcnow():%Y%m%dT%H%M%S}"
        print(f"nightly sync over the demo store, window {window}, vendors: local emulator at {emu.base_url}")
        summary = run_nightly(settings, window, run_id=run_id)
        print(format_summary(summary))
        vendors = emu.summary()["vendors"]
        print("")
        print("the emulator (as the vendors) accepted: "
              + ", ".join(f"{vendor} {stats['accepted']}" for vendor, stats in vendors.items()))
    return 0


def cmd_replay(args) -> int:
    from storesync.pipeline.jobs import REPLANNED_ONCE_FIXED, replay_dead_letters

    settings = _settings(args)
    result = replay_dead_letters(settings, vendor=args.vendor, event_type=args.event_type, ids=args.ids,
                                 run_id=f"replay-{uuid.uuid4().hex[:8]}", deliver_now=not args.requeue_only)
    print(json.dumps(result, indent=2, default=str))
    invalid = result.get("still_invalid") or []
    if invalid:
        # Replayed from the warehouse's current data, they still cannot be mapped: say why and what fixes it.
        for item in invalid[:20]:
            print(f"storesync: dead letter {item['id']} ({item['vendor']} {item['event_type']} {item['entity_id']}) "
                  f"still cannot be sent: {item['reason']}", file=sys.stderr)
        print(f"storesync: {len(invalid)} dead letters still cannot be mapped from the warehouse's data: fix it "
              f"there; {REPLANNED_ONCE_FIXED} (or run `storesync replay` again)", file=sys.stderr)
        return 1
    return 0


def cmd_reconcile(args) -> int:
    """Resolve deliveries held as ``unknown``: from a vendor export, or by hand after checking at
    the vendor (``storesync.delivery.reconcile``). Rows waiting for their own lookup are never
    requeued."""
    from storesync.delivery.ledger import Ledger
    from storesync.delivery.reconcile import Reconciler, read_export
    from storesync.delivery.remedies import HELD, held_remedy

    settings = _settings(args)
    reconciler = Reconciler.from_settings(Ledger(settings.ledger_url), settings)
    if args.ids and args.arrived == args.resend:
        raise ValueError("--ids needs exactly one of --arrived (the vendor has them) or --resend (it does not)")
    if (args.arrived or args.resend) and not args.ids:
        raise ValueError("--arrived / --resend need --ids (the ids `storesync reconcile --list` shows)")
    if args.resend_missing and not args.found_file:
        raise ValueError("--resend-missing needs --found-file: without the vendor's record, resending is blind")
    if args.ids:
        result = reconciler.by_hand(args.ids, arrived=args.arrived, vendor=args.vendor)
    elif args.found_file:
        result = reconciler.from_export(read_export(args.found_file, args.event_type), vendor=args.vendor,
                                        event_type=args.event_type, resend_missing=args.resend_missing,
                                        source=args.found_file)
    else:
        rows = reconciler.unknown(args.vendor, args.event_type)
        held: dict[str, dict[str, int]] = {}
        for d, kind in rows:
            since = d.unknown_since.isoformat(timespec="seconds") if d.unknown_since else "-"
            print(f"{d.id}\t{d.vendor}\t{d.event_type}\t{d.entity_id}\t{d.version}\t{kind}\tunknown since {since}")
            if kind == HELD:
                held.setdefault(d.vendor, {}).setdefault(d.event_type, 0)
                held[d.vendor][d.event_type] += 1
        n_held = sum(sum(v.values()) for v in held.values())
        print(f"{n_held} deliveries held for a person, {len(rows) - n_held} settled by the next run "
              "(awaiting their lookup or resend)")
        for vendor, counts in sorted(held.items()):
            print(held_remedy(vendor, counts))
        return 0
    print(result.text())
    return 0


def cmd_models_check(args) -> int:
    """Run every model for a window and hold it to the contract (storesync.warehouse.check)."""
    from storesync.warehouse.check import format_report, run_check

    settings = _settings(args)
    if args.models_dir:
        settings = settings.with_overrides(models_dir=args.models_dir)
    _require_warehouse(settings)
    result = run_check(settings, _window(args, settings), samples=args.samples, models=args.model)
    print(json.dumps(result, indent=2, default=str) if args.json else format_report(result))
    return 0 if result["ok"] else 1


def cmd_ledger_accounts(args) -> int:
    """Open deliveries per vendor and account key: more than one account of a vendor means the
    key changed under open rows."""
    from storesync.delivery.ledger import Ledger

    ledger = Ledger(_settings(args).ledger_url)
    for vendor in args.vendor or ("sendlane", "sailthru"):
        for account, n in sorted(ledger.open_by_account(vendor).items()):
            print(f"{vendor}\t{account}\t{n} open")
    return 0


def cmd_ledger_move_account(args) -> int:
    from storesync.delivery.ledger import Ledger
    from storesync.pipeline.accounts import move_account

    moved = move_account(Ledger(_settings(args).ledger_url), args.vendor, args.old, args.new,
                         merge_unsent=args.merge_unsent)
    print(json.dumps({"vendor": args.vendor, "from": args.old, "to": args.new, "moved": moved}, indent=2))
    if moved.get("dropped_unsent"):
        print(f"storesync: dropped {moved['dropped_unsent']} {args.vendor} deliveries of {args.old} that never "
              f"left and {args.new} holds too (a storesync_record_log line each, status 'dropped')",
              file=sys.stderr)
    return 0


def cmd_ltv(args) -> int:
    from storesync.ltv.cli import cmd_ltv as run

    return run(args, _settings(args))


def cmd_privacy(args) -> int:
    """``erase`` and ``retention``: bodies in storesync.privacy.cli."""
    return args.func_with_settings(args, _settings(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storesync", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="settings file (default: storesync.toml or $STORESYNC_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def window_args(p):
        p.add_argument("--start", type=_iso_time, help="window start, ISO 8601 UTC")
        p.add_argument("--end", type=_iso_time,
                       help="window end, ISO 8601 UTC (default: the store's latest activity)")
        p.add_argument("--hours", type=_positive_int, default=24, help="window length when --start is not given")
        p.add_argument("--warehouse-url")
        p.add_argument("--ledger-url")

    p = sub.add_parser("demo-store", help="generate the demo store")
    p.add_argument("--url", help="SQLAlchemy URL (default: the configured warehouse)")
    p.add_argument("--orders", type=_positive_int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--days", type=_positive_int, default=60)
    p.add_argument("--bad-share", type=_share, default=0.005, help="share of orders made malformed (0-1)")
    p.add_argument("--end", type=_iso_time, help="the store's 'now', ISO 8601 UTC (default: this hour)")
    p.add_argument("--if-missing", action="store_true",
                   help="keep a warehouse that already has an orders table (the demo store replaces the "
                        "warehouse's demo tables otherwise)")
    p.add_argument("--warehouse-url")
    p.set_defaults(func=cmd_demo_store)

    p = sub.add_parser("emulator", help="run the local Sendlane + Sailthru emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.set_defaults(func=cmd_emulator)

    p = sub.add_parser("sync", help="run the nightly sync for a window (--dry-run to plan only)")
    window_args(p)
    p.add_argument("--vendors", nargs="+", default=["sendlane", "sailthru"], choices=("sendlane", "sailthru"))
    p.add_argument("--dry-run", action="store_true", help="plan only: counts, every quarantine reason and "
                                                           "sample payloads (personal data masked); nothing sent")
    p.add_argument("--samples", type=int, default=1, metavar="N",
                   help="dry run: sample payloads shown per vendor event (0-3, default 1)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document (stdout only)")
    p.add_argument("--run-id")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("demo", help="the README's `make run`: demo store + emulator + nightly sync")
    window_args(p)
    p.add_argument("--orders", type=_positive_int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--days", type=_positive_int, default=60)
    p.add_argument("--bad-share", type=_share, default=0.005)
    p.add_argument("--port", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ltv", help="compute customer lifetime value for a day (the LTV models, [ltv] settings)")
    from storesync.ltv.cli import add_arguments as ltv_arguments  # light: the job is imported when run

    ltv_arguments(p)
    p.set_defaults(func=cmd_ltv)

    p = sub.add_parser("replay", help="replay dead letters (an order's re-mapped from the warehouse's current data)")
    p.add_argument("--vendor")
    p.add_argument("--event-type")
    p.add_argument("--ids", type=int, nargs="*")
    p.add_argument("--requeue-only", action="store_true", help="requeue; let the next run send them")
    p.add_argument("--ledger-url")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("reconcile", help="list or resolve deliveries held with an unknown outcome")
    p.add_argument("--vendor")
    p.add_argument("--event-type")
    p.add_argument("--list", action="store_true")
    p.add_argument("--found-file", help="the vendor's export: lines of '<event_type>TAB<entity_id>TAB<version>' "
                                        "it holds (the version may be left out when one version is held)")
    p.add_argument("--resend-missing", action="store_true",
                   help="requeue held rows not in the export (never one waiting for its own lookup)")
    p.add_argument("--ids", type=int, nargs="+", help="ledger ids (from --list) to settle by hand")
    p.add_argument("--arrived", action="store_true", help="with --ids: the vendor has them (mark accepted)")
    p.add_argument("--resend", action="store_true", help="with --ids: the vendor does not have them (send again)")
    p.add_argument("--ledger-url")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("models", help="the warehouse models: check them against the contract")
    models_sub = p.add_subparsers(dest="models_command", required=True)
    q = models_sub.add_parser("check", help="run every model for a window; check columns and types against "
                                            "the contract, warn on empty windows, show masked samples")
    window_args(q)
    q.add_argument("--models-dir", help="the models folder (default: the configured models_dir)")
    q.add_argument("--model", action="append", help="check only this model (repeatable)")
    q.add_argument("--samples", type=int, default=3, help="sample rows shown per model (masked)")
    q.add_argument("--json", action="store_true", help="the report as JSON only")
    q.set_defaults(func=cmd_models_check)

    p = sub.add_parser("ledger", help="ledger upkeep: accounts and their open deliveries")
    ledger_sub = p.add_subparsers(dest="ledger_command", required=True)
    q = ledger_sub.add_parser("accounts", help="open deliveries per vendor and account key")
    q.add_argument("--vendor", action="append", choices=("sendlane", "sailthru"))
    q.add_argument("--ledger-url")
    q.set_defaults(func=cmd_ledger_accounts)
    q = ledger_sub.add_parser("move-account", help="re-key a vendor's deliveries from an old account key to a "
                                                   "new one (the same vendor account)")
    q.add_argument("--vendor", required=True, choices=("sendlane", "sailthru"))
    q.add_argument("--from", dest="old", required=True, help="the account key the deliveries are under")
    q.add_argument("--to", dest="new", required=True, help="the account key the deliveries are sent with now")
    q.add_argument("--merge-unsent", action="store_true",
                   help="drop the old key's deliveries that never left (planned, never claimed) when the new "
                        "key holds the same ones (e.g. planned under 'unconfigured' before credentials were "
                        "set); anything that may have left still refuses the move")
    q.add_argument("--ledger-url")
    q.set_defaults(func=cmd_ledger_move_account)
    from storesync.privacy.cli import add_commands as add_privacy_commands

    add_privacy_commands(sub, _positive_int)
    for name in ("erase", "retention"):
        sub.choices[name].set_defaults(func=cmd_privacy)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        # GX sets some of its loggers' levels when it is imported (after this): filter at the handler.
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: record.levelno >= logging.WARNING
                              or not record.name.startswith("great_expectations"))
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, NoSuchTableError

    from storesync.core.errors import ConfigurationError
    from storesync.quality.errors import QualityGateError

    try:
        return args.func(args)
    except ConfigurationError as exc:
        print(f"storesync: {exc}", file=sys.stderr)
        return 2
    except QualityGateError as exc:
        # Imported here: the pipeline (pandas, the ledger) costs every other command ~0.4 s to load.
        from storesync.pipeline.jobs import gate_failure
        from storesync.run_report import gate_failure_text

        print(f"storesync: {gate_failure_text(gate_failure(exc))}", file=sys.stderr)
        return 1
    except StoresyncError as exc:
        print(f"storesync: {exc}", file=sys.stderr)
        return 1
    except (ArgumentError, NoSuchModuleError) as exc:  # a malformed URL or an unknown dialect
        print(f"storesync: {exc}: check warehouse_url / ledger_url (a SQLAlchemy URL such as "
              "postgresql+psycopg://user@host/db or sqlite:///path/store.db)", file=sys.stderr)
        return 2
    except (DBAPIError, NoSuchTableError) as exc:
        print(f"storesync: {_database_error_text(exc, args)}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"storesync: {exc.filename or exc}: no such file; check the path", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"storesync: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
