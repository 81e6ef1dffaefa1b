"""storesync reconcile: versions matched exactly, rows waiting for their own lookup never requeued,
and the held rows' remedy names the exact commands."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from storesync.cli import main
from storesync.delivery.ledger import ACCEPTED, RETRY, UNKNOWN, Ledger, PlannedDelivery, deliveries, utcnow
from storesync.delivery.remedies import AWAITING_LOOKUP, AWAITING_RESEND, HELD, held_remedy


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def unknown_row(ledger, vendor, event_type, entity_id, version="1", endpoint="/x", payload=None,
                unknown_for_s: float = 0.0) -> int:
    item = PlannedDelivery(vendor=vendor, account="a", event_type=event_type, entity_id=entity_id, version=version,
                           endpoint=endpoint, payload=payload or {}, ordering_key=f"{event_type}:{entity_id}:{version}")
    ledger.plan([item], sync_name="s", run_id="r")
    ledger.promote("r")
    claimed = ledger.claim(vendor, "a", 10, owner="elsewhere:1:x")
    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.id.in_([c.id for c in claimed]))
                     .values(state=UNKNOWN, updated_at=utcnow() - timedelta(seconds=unknown_for_s)))
    return claimed[0].id


def states(ledger) -> dict[int, str]:
    return {d.id: s for s in (ACCEPTED, RETRY, UNKNOWN) for d in ledger.in_state(s)}


def purchase_row(ledger, extid, **kw) -> int:
    return unknown_row(ledger, "sailthru", "purchase", extid, endpoint="/purchase",
                       payload={"purchase_keys": {"extid": extid}}, **kw)


def test_export_lines_match_the_version(url, tmp_path, capsys):
    ledger = Ledger(url)
    v1 = unknown_row(ledger, "sendlane", "checkout_started", "7", version="aaa")
    v2 = unknown_row(ledger, "sendlane", "checkout_started", "7", version="bbb")
    export = tmp_path / "export.tsv"
    export.write_text("checkout_started\t7\n")  # which of the two arrived?
    assert main(["reconcile", "--ledger-url", url, "--found-file", str(export)]) == 2
    assert "does not say which version arrived for: checkout_started 7 (versions aaa, bbb)" in capsys.readouterr().err
    assert states(ledger) == {v1: UNKNOWN, v2: UNKNOWN}  # nothing marked on an ambiguous export
    export.write_text("checkout_started\t7\tbbb\n")
    assert main(["reconcile", "--ledger-url", url, "--found-file", str(export), "--resend-missing"]) == 0
    assert states(ledger) == {v1: RETRY, v2: ACCEPTED}
    assert "1 arrived (accepted), 1 requeued to send, 0 still held" in capsys.readouterr().out


def test_rows_waiting_for_their_own_lookup_are_never_requeued(url, tmp_path, capsys):
    ledger = Ledger(url)
    waiting = purchase_row(ledger, "o-1")  # the next run looks it up
    given_up = purchase_row(ledger, "o-2", unknown_for_s=25 * 3600)  # lookups failed for a day: held
    refund = unknown_row(ledger, "sailthru", "return", "o-3", endpoint="/return")  # no read of returns: held
    order = unknown_row(ledger, "sendlane", "order_placed", "o-4", endpoint="/tracking/order-placed")
    export = tmp_path / "export.tsv"
    export.write_text("")  # the export shows none of them (a stale export, say)
    assert main(["reconcile", "--ledger-url", url, "--found-file", str(export), "--resend-missing"]) == 0
    assert states(ledger) == {waiting: UNKNOWN, given_up: RETRY, refund: RETRY, order: UNKNOWN}
    out = capsys.readouterr().out
    assert "1 left to their own lookup in the next run" in out and "1 left to the next run's resend" in out
    # By hand too: a resend of a row awaiting its lookup is refused, with why; arrived is allowed.
    assert main(["reconcile", "--ledger-url", url, "--ids", str(waiting), "--resend"]) == 0
    assert "wait for their own lookup" in capsys.readouterr().out and states(ledger)[waiting] == UNKNOWN
    assert main(["reconcile", "--ledger-url", url, "--ids", str(waiting), "--arrived"]) == 0
    assert states(ledger)[waiting] == ACCEPTED


def test_list_tells_held_from_settled_by_the_next_run_and_names_the_commands(url, capsys):
    ledger = Ledger(url)
    checkout = unknown_row(ledger, "sendlane", "checkout_started", "7", endpoint="/tracking/checkout-started")
    unknown_row(ledger, "sendlane", "order_placed", "8", endpoint="/tracking/order-placed")
    purchase_row(ledger, "o-1")
    assert main(["reconcile", "--ledger-url", url, "--list"]) == 0
    out = capsys.readouterr().out
    kinds = {line.split("\t")[2]: line.split("\t")[5] for line in out.splitlines() if "\t" in line}
    assert kinds == {"checkout_started": HELD, "order_placed": AWAITING_RESEND, "purchase": AWAITING_LOOKUP}
    assert "1 deliveries held for a person, 2 settled by the next run" in out
    assert "storesync reconcile --vendor sendlane --arrived --ids ID" in out
    assert main(["reconcile", "--ledger-url", url, "--ids", str(checkout), "--resend"]) == 0
    assert states(ledger)[checkout] == RETRY


def test_hand_settling_needs_one_decision(url, capsys):
    Ledger(url)
    assert main(["reconcile", "--ledger-url", url, "--ids", "1"]) == 2
    assert "exactly one of --arrived" in capsys.readouterr().err
    assert main(["reconcile", "--ledger-url", url, "--arrived"]) == 2
    assert "need --ids" in capsys.readouterr().err
    assert main(["reconcile", "--ledger-url", url, "--ids", "99", "--arrived"]) == 0
    assert "not deliveries held with an unknown outcome: 99" in capsys.readouterr().out


def test_held_remedy_says_why_and_the_exact_commands():
    text = held_remedy("sendlane", {"checkout_started": 2, "customer_added": 1, "order_placed": 0})
    assert text.startswith("3 sendlane deliveries are held with an unknown outcome (checkout_started 2, "
                           "customer_added 1)")
    assert "neither de-duplicates it nor publishes a read or export" in text
    assert "no rule settled it" in text  # the rules that settle checkouts and customers were tried
    for command in ("storesync reconcile --list --vendor sendlane",
                    "storesync reconcile --vendor sendlane --arrived --ids ID",
                    "storesync reconcile --vendor sendlane --resend --ids ID"):
        assert command in text
    returns = held_remedy("sailthru", {"return": 1})
    assert "no read of returns" in returns and "--found-file FILE" in returns
    assert "the user's profile: Sailthru saves returns on it" in returns
    assert "the user's profile" not in held_remedy("sailthru", {"return": 1, "purchase": 1})
    assert held_remedy("sailthru", {}) == ""


def test_sync_names_the_remedy_for_held_rows_only(url, tmp_path, capsys):
    from storesync.cli import _report_held
    from storesync.core.config import Settings

    ledger = Ledger(url)
    unknown_row(ledger, "sendlane", "checkout_started", "7", endpoint="/tracking/checkout-started")
    unknown_row(ledger, "sendlane", "order_placed", "8", endpoint="/tracking/order-placed")  # resent next run
    purchase_row(ledger, "o-1")  # looked up next run
    settings = Settings(ledger_url=url, warehouse_url=f"sqlite:///{tmp_path / 'w.db'}")
    assert _report_held(settings, ["sendlane", "sailthru"]) == 1  # `storesync sync` exits 1 for this one
    out = capsys.readouterr().out
    assert "1 sendlane deliveries are held with an unknown outcome (checkout_started 1)" in out
    assert "storesync reconcile --vendor sendlane --resend --ids ID" in out and "sailthru" not in out
