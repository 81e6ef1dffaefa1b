"""Where the time goes: cProfile of one subject, against the same inputs as the benchmark.

    python -m bench.profile delivery [--vendor sendlane] [--top 30]   # the DeliveryEngine run
    python -m bench.profile pipeline [--orders 100000] [--top 30]     # extract → validate → build
    python -m bench.profile ledger                                     # claim/record alone, no HTTP

``delivery`` needs the staged inputs of a previous ``python -m bench.run --only delivery``
(``bench/cache/delivery``). Prints the functions by cumulative and by own time, and for the
delivery engine the share of its main loop spent in the ledger (``claim``/``record``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

from bench.common import CACHE, emulator, emulator_info


def _print(profile: cProfile.Profile, top: int) -> pstats.Stats:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    print(out.getvalue())
    return stats


def _function_time(stats: pstats.Stats, path_part: str, name: str) -> tuple[int, float]:
    for (filename, _line, func), (_cc, calls, _tt, cumulative, _callers) in stats.stats.items():
        if func == name and path_part in filename:
            return calls, cumulative
    return 0, 0.0


def profile_delivery(vendor: str, top: int) -> None:
    from bench.delivery import _fresh_copy, storesync_child

    work = CACHE / "delivery"
    template = work / "ledger_template.db"
    if not template.exists():
        sys.exit("no staged events: run `python -m bench.run --only delivery` first")
    with emulator(rate_limits_enabled=False) as emu:
        ledger = _fresh_copy(template, work, "ledger_profile.db")
        profile = cProfile.Profile()
        profile.enable()
        result = storesync_child(ledger, vendor, emulator_info(emu))
        profile.disable()
    stats = _print(profile, top)
    run_calls, run_s = _function_time(stats, "delivery/engine.py", "run")
    print(f"{result['accepted']} accepted in {result['elapsed_s']:.2f} s "
          f"({result['accepted'] / result['elapsed_s']:.0f} events/s); engine.run {run_s:.2f} s")
    for name in ("claim", "record", "release", "orphaned", "in_state"):
        calls, seconds = _function_time(stats, "delivery/ledger.py", name)
        if calls:
            print(f"  Ledger.{name:<9} {calls:>6} calls  {seconds:7.2f} s  "
                  f"{seconds / run_s:6.1%} of the run  {seconds / calls * 1000:6.2f} ms/call")


def profile_ledger(rounds: int = 0) -> None:
    """claim(4) + record(4) on a copy of the staged ledger, single-threaded: the ledger's own cost."""
    from storesync.delivery.ledger import ACCEPTED, Ledger, Outcome

    from bench.delivery import _fresh_copy

    work = CACHE / "delivery"
    ledger = Ledger(f"sqlite:///{_fresh_copy(work / 'ledger_template.db', work, 'ledger_profile.db')}")
    with ledger.engine.connect() as conn:
        account = conn.exec_driver_sql(
            "SELECT account FROM storesync_deliveries WHERE vendor = 'sendlane' LIMIT 1").scalar()
    profile = cProfile.Profile()
    claim_s = record_s = 0.0
    n = calls = 0
    profile.enable()
    while True:
        started = time.perf_counter()
        batch = ledger.claim("sendlane", account, 4, "bench:0:profile")
        claim_s += time.perf_counter() - started
        if not batch:
            break
        started = time.perf_counter()
        ledger.record([(d, Outcome(ACCEPTED, http_status=200)) for d in batch], run_id="profile",
                      owner="bench:0:profile")
        record_s += time.perf_counter() - started
        n += len(batch)
        calls += 1
    profile.disable()
    _print(profile, 25)
    print(f"{n} deliveries in batches of 4: claim {claim_s / calls * 1000:.2f} ms/call, "
          f"record {record_s / calls * 1000:.2f} ms/call, i.e. {(claim_s + record_s) / n * 1000:.2f} ms of "
          f"ledger work per delivery ({n / (claim_s + record_s):.0f} deliveries/s at most, without any HTTP)")


def profile_pipeline(orders: int, top: int) -> None:
    from bench.pipeline import pipeline_child
    from bench.stores import sqlite_store

    store = sqlite_store(orders)
    profile = cProfile.Profile()
    profile.enable()
    result = pipeline_child(store.url, 5000)
    profile.disable()
    _print(profile, top)
    print(f"{result['orders_in']:,} orders, {result['events']:,} events in {result['elapsed_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("subject", choices=("delivery", "ledger", "pipeline"))
    parser.add_argument("--vendor", default="sendlane", choices=("sendlane", "sailthru"))
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    if args.subject == "delivery":
        profile_delivery(args.vendor, args.top)
    elif args.subject == "ledger":
        profile_ledger()
    else:
        profile_pipeline(args.orders, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
