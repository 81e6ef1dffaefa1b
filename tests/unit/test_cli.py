"""The storesync command: bad input gets a clear error (exit 2), reconciliation matches exactly."""

from __future__ import annotations

from storesync.cli import main
from storesync.delivery.ledger import ACCEPTED, RETRY, UNKNOWN, Ledger, PlannedDelivery


def _held(ledger, event_type, entity_id):
    item = PlannedDelivery(vendor="sendlane", account="a", event_type=event_type, entity_id=entity_id,
                           version="1", endpoint="/x", payload={})
    ledger.plan([item], sync_name="s", run_id="r")
    ledger.promote("r")
    claimed = ledger.claim("sendlane", "a", 10, owner="elsewhere:1:x")
    with ledger.engine.begin() as conn:
        from sqlalchemy import update

        from storesync.delivery.ledger import deliveries

        conn.execute(update(deliveries).where(deliveries.c.id.in_([c.id for c in claimed]))
                     .values(state=UNKNOWN))


def test_reconcile_matches_event_type_and_entity(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    _held(ledger, "order_placed", "42")
    _held(ledger, "customer_added", "42")
    _held(ledger, "order_placed", "43")
    export = tmp_path / "export.tsv"
    export.write_text("order_placed\t42\n")
    assert main(["reconcile", "--ledger-url", url, "--found-file", str(export), "--resend-missing"]) == 0
    states = {(d.event_type, d.entity_id): s for s in (ACCEPTED, RETRY, UNKNOWN) for d in ledger.in_state(s)}
    assert states == {("order_placed", "42"): ACCEPTED, ("customer_added", "42"): RETRY,
                      ("order_placed", "43"): RETRY}


def test_blind_resend_is_refused(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url)
    assert main(["reconcile", "--ledger-url", url, "--resend-missing"]) == 2
    assert "needs --found-file" in capsys.readouterr().err


def test_start_without_end_is_an_error(tmp_path, capsys):
    assert main(["sync", "--start", "2026-01-01", "--ledger-url", f"sqlite:///{tmp_path}/l.db",
                 "--warehouse-url", f"sqlite:///{tmp_path}/w.db"]) == 2
    assert "--start needs --end" in capsys.readouterr().err


def test_ledger_accounts_lists_open_rows_per_key_and_move_account_re_keys_them(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    for account, entity in (("old", "1"), ("old", "2"), ("new", "3")):
        ledger.plan([PlannedDelivery(vendor="sendlane", account=account, event_type="order_placed",
                                     entity_id=entity, version="1", endpoint="/x", payload={})],
                    sync_name="s", run_id="r")
    assert main(["ledger", "accounts", "--ledger-url", url, "--vendor", "sendlane"]) == 0
    assert capsys.readouterr().out.splitlines() == ["sendlane\tnew\t1 open", "sendlane\told\t2 open"]
    assert main(["ledger", "move-account", "--ledger-url", url, "--vendor", "sendlane",
                 "--from", "old", "--to", "new"]) == 0
    assert '"storesync_deliveries": 2' in capsys.readouterr().out
    assert ledger.open_by_account("sendlane") == {"new": 3}
    # A clash (the new key already holds the same delivery) is a clear error, exit 1, nothing moved.
    ledger.plan([PlannedDelivery(vendor="sendlane", account="old", event_type="order_placed", entity_id="3",
                                 version="1", endpoint="/x", payload={})], sync_name="s", run_id="r2")
    assert main(["ledger", "move-account", "--ledger-url", url, "--vendor", "sendlane",
                 "--from", "old", "--to", "new"]) == 1
    assert "already holds 1 sendlane deliveries" in capsys.readouterr().err
