"""Exactly-once delivery, proven against the emulator (the vendors' stand-in is the judge).

(1) a full sync under injected 500s, a 429 storm and connections dropped after acceptance;
(2) a delivery process killed with SIGKILL mid-batch, then rerun;
(3) two concurrent runs on one Sendlane account never exceed its budget;
(4) a rerun of a finished interval sends nothing.

Sendlane has no lookup endpoint, so deliveries whose outcome is unknown are held; the tests then
reconcile them the way an operator would, from the vendor's record of what it received (here the
emulator's inspection API stands in for the vendor's export), and assert the end state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.delivery.ledger import ACCEPTED, UNKNOWN, Ledger
from storesync.pipeline.jobs import run_nightly
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

END = datetime(2026, 11, 20)
WINDOW = Window(END - timedelta(days=3), END)


def make_settings(tmp_path, emulator, **sendlane_overrides) -> Settings:
    sendlane = dict(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                    integration_token=emulator.sendlane_integration_token, budget_per_minute=6000)
    sendlane.update(sendlane_overrides)
    return Settings(
        warehouse_url=f"sqlite:///{tmp_path / 'store.db'}",
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        concurrency=8,
        sendlane=SendlaneSettings(**sendlane),
        # The emulator records a request before it answers (a 502 it injects was never processed),
        # so a lookup that finds nothing is final at once; against the vendor, storesync waits
        # ``unknown_grace_s`` before it trusts one.
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret, budget_per_minute=6000, unknown_grace_s=0),
    )


@pytest.fixture
def store(tmp_path):
    generate_demo_store(f"sqlite:///{tmp_path / 'store.db'}",
                        DemoStoreSpec(orders=400, seed=11, end=END, days=12, bad_share=0.0))
    return tmp_path


def fast_clients():
    """Clients whose in-line retries are quick, so faults cost seconds, not minutes."""
    from storesync.clients.http import RetryPolicy
    from storesync.pipeline.senders import default_sailthru_client, default_sendlane_client

    policy = RetryPolicy(max_attempts=6, base_backoff_s=0.05, max_backoff_s=0.5)

    def sendlane(settings):
        client = default_sendlane_client(settings, "acct")
        client.retry_policy = policy
        return client

    def sailthru(settings):
        client = default_sailthru_client(settings)
        client.retry_policy = policy
        return client

    return {"sendlane": sendlane, "sailthru": sailthru}


def _canonical(vendor: str, endpoint: str, body: dict) -> tuple:
    body = {k: v for k, v in body.items() if k != "token"}  # Sendlane's credential, stored masked
    return vendor, endpoint, json.dumps(body, sort_keys=True)


def accepted_at_vendor(emulator) -> Counter:
    """Each distinct request body the vendor accepted (writes only) -> how many times."""
    return Counter(_canonical(r["vendor"], r["endpoint"], r["body"])
                   for r in emulator.requests() if r["method"] == "POST")


def owed_by_ledger(ledger: Ledger) -> dict:
    from sqlalchemy import select

    from storesync.delivery.ledger import deliveries

    with ledger.engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.vendor, deliveries.c.endpoint,
                                   deliveries.c.payload, deliveries.c.state)).all()
    return {r.id: (_canonical(r.vendor, r.endpoint, json.loads(r.payload)), r.state) for r in rows}


def reconcile_from_vendor_record(ledger: Ledger, emulator) -> None:
    """What an operator does with held deliveries: the vendor's export decides."""
    seen = accepted_at_vendor(emulator)
    owed = owed_by_ledger(ledger)
    held = [d.id for d in ledger.in_state(UNKNOWN)]
    ledger.mark_accepted([i for i in held if seen[owed[i][0]]], reason="reconciled from vendor export")
    ledger.requeue([i for i in held if not seen[owed[i][0]]], reset_attempts=False)


def assert_exactly_once(ledger: Ledger, emulator) -> None:
    seen = accepted_at_vendor(emulator)
    duplicates = {k[:2]: n for k, n in seen.items() if n > 1}
    assert duplicates == {}, f"sent more than once: {list(duplicates.items())[:5]}"
    owed = owed_by_ledger(ledger)
    states = Counter(state for _, state in owed.values())
    assert states == Counter({ACCEPTED: len(owed)}), f"not everything was accepted: {states}"
    owed_bodies = Counter(body for body, _ in owed.values())
    assert owed_bodies == seen, (
        f"lost: {len(owed_bodies - seen)}; unexpected at the vendor: {len(seen - owed_bodies)}")


def test_full_sync_under_faults_delivers_every_event_exactly_once(store, emulator):
    settings = make_settings(store, emulator)
    emulator.configure(rate_limits_enabled=False)
    emulator.set_faults(error_rate=0.2, drop_after_rate=0.05, storm={"duration_s": 1.5}, seed=3)
    summary = run_nightly(settings, WINDOW, run_id="faulty-1", client_factories=fast_clients())
    assert sum(d["requests"] for d in summary["deliveries"].values()) > 300
    faults = emulator.summary()["faults"]["injected"]
    assert faults.get("error", 0) + faults.get("error_rate", 0) > 0 and faults.get("drop_after", 0) > 0
    emulator.clear_faults()
    ledger = Ledger(settings.ledger_url)
    # Sailthru resolved its unknowns by lookup, except returns (no lookup exists for them) and
    # those whose lookup itself met a fault (looked up again by the next run); Sendlane's are
    # held until reconciled.
    from sqlalchemy import select

    from storesync.delivery.ledger import deliveries

    with ledger.engine.connect() as conn:
        unknown = conn.execute(select(deliveries.c.vendor, deliveries.c.endpoint, deliveries.c.vendor_error)
                               .where(deliveries.c.state == UNKNOWN)).all()
    held = {(vendor, endpoint) for vendor, endpoint, error in unknown
            if not (error or "").startswith("not found by lookup yet")}
    assert {endpoint for vendor, endpoint in held if vendor == "sailthru"} <= {"/return"}
    reconcile_from_vendor_record(ledger, emulator)
    run_nightly(settings, WINDOW, run_id="faulty-2", client_factories=fast_clients())
    assert_exactly_once(ledger, emulator)


def test_sigkill_mid_batch_then_rerun(store, emulator):
    settings = make_settings(store, emulator)
    emulator.configure(rate_limits_enabled=False)
    emulator.set_faults(latency_ms=15, seed=5)
    script = textwrap.dedent(f"""
        from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
        from storesync.core.windows import Window
        from storesync.pipeline.jobs import run_nightly
        from datetime import datetime
        s = Settings(warehouse_url={settings.warehouse_url!r}, ledger_url={settings.ledger_url!r}, concurrency=8,
            sendlane=SendlaneSettings(base_url={emulator.sendlane_url!r}, api_token={emulator.sendlane_api_token!r},
                integration_token={emulator.sendlane_integration_token!r}, budget_per_minute=6000),
            sailthru=SailthruSettings(base_url={emulator.sailthru_url!r}, api_key={emulator.sailthru_api_key!r},
                secret={emulator.sailthru_secret!r}, budget_per_minute=6000))
        run_nightly(s, Window({WINDOW.start.isoformat()!r}, {WINDOW.end.isoformat()!r}), run_id="killed")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    ledger = Ledger(settings.ledger_url)
    # Generous: on a busy machine the child can take a minute just to import and plan. It is
    # killed once it is mid-batch, whenever that is (not when a timer runs out).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and ledger.counts().get(ACCEPTED, 0) < 40:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    counts = ledger.counts()
    assert counts.get(ACCEPTED, 0) >= 40 and sum(counts.values()) > counts[ACCEPTED], counts
    emulator.clear_faults()
    run_nightly(settings, WINDOW, run_id="after-kill")
    reconcile_from_vendor_record(ledger, emulator)
    run_nightly(settings, WINDOW, run_id="after-reconcile")
    assert_exactly_once(ledger, emulator)


def test_two_concurrent_runs_on_one_account_never_exceed_its_budget(store, emulator):
    limit, window_s = 25, 2.0
    emulator.configure(sendlane_rate_limit=limit, sendlane_rate_window_s=window_s)
    settings = make_settings(store, emulator, budget_per_minute=limit, budget_window_s=window_s)
    small = Window(END - timedelta(hours=30), END)
    # Two processes, two different syncs, one Sendlane account, one ledger database.
    script = textwrap.dedent("""
        import json, sys
        from storesync.core.config import SendlaneSettings, Settings
        from storesync.core.windows import Window
        from storesync.pipeline.jobs import open_context, plan_entity, deliver_vendor
        entity = sys.argv[1]
        s = Settings(warehouse_url=%r, ledger_url=%r, concurrency=4,
            sendlane=SendlaneSettings(base_url=%r, api_token=%r, integration_token=%r,
                                      budget_per_minute=%d, budget_window_s=%r))
        ctx = open_context(s, run_id="concurrent-" + entity, sync_name=entity, vendors=["sendlane"])
        plan_entity(ctx, entity, Window(%r, %r))
        report = deliver_vendor(ctx, "sendlane")
        print(json.dumps(report))
    """) % (settings.warehouse_url, settings.ledger_url, emulator.sendlane_url, emulator.sendlane_api_token,
            emulator.sendlane_integration_token, limit, window_s, small.start.isoformat(), small.end.isoformat())
    # Each child's output goes to a file (a pipe could fill up and stall a child) and is shown
    # when it fails.
    logs = {entity: store / f"concurrent-{entity}.log" for entity in ("orders", "checkouts")}
    procs = {}
    for entity, log in logs.items():
        with open(log, "wb") as out:
            procs[entity] = subprocess.Popen([sys.executable, "-c", script, entity], stdout=out,
                                             stderr=subprocess.STDOUT)
    try:
        for entity, proc in procs.items():
            code = proc.wait(timeout=300)
            output = logs[entity].read_text(errors="replace")
            assert code == 0, f"the {entity} run exited {code}:\n{output[-6000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # Both runs drain the account's open deliveries, whichever run planned them: how the work is
    # split between them is up to the scheduler (one may even get none), so only the total counts.
    reports = {e: json.loads([line for line in log.read_text().splitlines() if line.startswith("{")][-1])
               for e, log in logs.items()}
    ledger = Ledger(settings.ledger_url)
    planned = sum(ledger.counts(vendor="sendlane").values())
    assert sum(r["accepted"] for r in reports.values()) == planned, reports
    stats = emulator.summary()["rate_limits"]["sendlane"]
    account = next(iter(stats.values()))
    assert account["admitted"] > 2 * limit, "the runs were too small to test the budget"
    # The budget held at the vendor (it counts on arrival, however late a request got there).
    assert account["over_limit_rejections"] == 0, (account, reports)
    assert account["max_in_window"] <= limit, account
    assert_exactly_once(ledger, emulator)


def test_rerun_of_a_finished_interval_sends_nothing(store, emulator):
    settings = make_settings(store, emulator)
    emulator.configure(rate_limits_enabled=False)
    first = run_nightly(settings, WINDOW, run_id="first")
    assert sum(d["requests"] for d in first["deliveries"].values()) > 100
    before = len(emulator.requests())
    again = run_nightly(settings, WINDOW, run_id="rerun")
    assert sum(d["requests"] for d in again["deliveries"].values()) == 0
    assert len(emulator.requests()) == before
    assert_exactly_once(Ledger(settings.ledger_url), emulator)
