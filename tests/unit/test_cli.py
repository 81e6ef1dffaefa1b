"""The storesync command: bad input gets a clear error that says what to do (exit 2), reconciliation
matches exactly, and ``--json`` output is JSON alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

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
    # order_placed 43 is left to the next run, which resends it (Sendlane skips a repeated order event).
    assert states == {("order_placed", "42"): ACCEPTED, ("customer_added", "42"): RETRY,
                      ("order_placed", "43"): UNKNOWN}


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


# ------------------------------------------------------------------------------ errors say what to do
def _empty_config(tmp_path) -> str:
    """A settings file of its own, so a storesync.toml or STORESYNC_CONFIG around the test is not read;
    with (unused) credentials: a sync without them stops before the warehouse these tests are about."""
    path = tmp_path / "storesync.toml"
    path.write_text('[sendlane]\napi_token = "t-api"\nintegration_token = "t-int"\n'
                    '[sailthru]\napi_key = "k-api"\nsecret = "k-secret"\n')
    return str(path)


def _sync(tmp_path, *args):
    return main(["--config", _empty_config(tmp_path), "sync",
                 "--ledger-url", f"sqlite:///{tmp_path / 'ledger.db'}", *args])


def test_sync_against_a_missing_warehouse_says_how_to_make_one_and_creates_nothing(tmp_path, capsys):
    warehouse = tmp_path / "nowhere" / "store.db"
    assert _sync(tmp_path, "--warehouse-url", f"sqlite:///{warehouse}") == 2
    err = capsys.readouterr().err
    assert f"no warehouse at {warehouse}" in err and "storesync demo-store" in err
    assert "--warehouse-url" in err and "Traceback" not in err
    assert not warehouse.exists()  # connecting would have created an empty SQLite file


@pytest.mark.parametrize("window", [(), ("--start", "2026-01-01", "--end", "2026-01-02")])
def test_sync_against_an_empty_warehouse_names_the_table_and_the_way_out(tmp_path, capsys, window):
    empty = tmp_path / "empty.db"
    empty.touch()
    assert _sync(tmp_path, "--warehouse-url", f"sqlite:///{empty}", *window) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("storesync: database error: no such table: ")
    assert "storesync models check" in err and "storesync demo-store" in err and len(err.splitlines()) == 1


def test_an_unreachable_or_malformed_warehouse_url_is_bad_input_with_a_hint(tmp_path, capsys):
    assert _sync(tmp_path, "--warehouse-url", "postgresql+psycopg://nobody:hunter2@127.0.0.1:1/store") == 2
    err = capsys.readouterr().err
    assert "database error" in err and "reachable" in err
    assert "hunter2" not in err  # the URL is shown without its password
    assert _sync(tmp_path, "--warehouse-url", "not a url") == 2
    assert "a SQLAlchemy URL such as" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (("--start", "yesterday", "--end", "2026-01-02"), "not an ISO 8601 date or time: write e.g. 2026-11-20"),
    (("--start", "2026-01-02", "--end", "2026-01-01"), "--end (2026-01-01 00:00:00) must be after --start"),
    (("--hours", "0"), "give a whole number of 1 or more"),
    (("--vendors", "mailchimp"), "invalid choice: 'mailchimp' (choose from 'sendlane', 'sailthru')"),
])
def test_bad_sync_arguments_exit_2_saying_what_is_expected(tmp_path, capsys, args, message):
    try:
        code = _sync(tmp_path, "--warehouse-url", f"sqlite:///{tmp_path / 'w.db'}", *args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_missing_found_file_is_named(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert main(["reconcile", "--ledger-url", url, "--found-file", str(tmp_path / "export.tsv")]) == 2
    assert f"{tmp_path / 'export.tsv'}: no such file" in capsys.readouterr().err


# ------------------------------------------------------------------------------ --json is pure JSON
def test_dry_run_json_pipes_into_jq(tmp_path):
    """The real command in a shell pipeline: stdout is one JSON document, logs go to stderr."""
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    warehouse = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(warehouse, DemoStoreSpec(orders=120, seed=3, end=datetime(2026, 11, 20), days=3,
                                                 bad_share=0.05))
    storesync = Path(sys.executable).with_name("storesync")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORESYNC_")}
    command = [str(storesync), "--config", _empty_config(tmp_path), "-v", "sync", "--dry-run", "--json",
               "--warehouse-url", warehouse, "--ledger-url", f"sqlite:///{tmp_path / 'ledger.db'}",
               "--end", "2026-11-20", "--hours", "48"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.strip(), "-v logs nothing? then this test cannot tell stderr from stdout"
    summary = json.loads(result.stdout)  # the whole of stdout, nothing before or after
    assert summary["window"] == {"start": "2026-11-18T00:00:00", "end": "2026-11-20T00:00:00"}
    assert summary["dry_run"] is True and summary["planned"]
    # Without -v, as a user pipes it: nothing on stderr either (no Great Expectations INFO lines).
    quiet = [part for part in command if part != "-v"]
    jq = shutil.which("jq")
    if jq is None:  # json.loads above already proved the JSON; jq is what a user pipes into
        result = subprocess.run(quiet, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert result.returncode == 0 and result.stderr == "" and json.loads(result.stdout)["planned"]
        return
    piped = subprocess.run(f"{' '.join(map(repr, quiet))} | {jq} -e '.planned | length'",
                           shell=True, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    assert int(piped.stdout) == len(summary["planned"])


def test_a_failed_quality_gate_says_how_to_fix_or_accept_it(tmp_path, capsys):
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    warehouse = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(warehouse, DemoStoreSpec(orders=300, seed=5, end=datetime(2026, 11, 20), days=5,
                                                 bad_share=0.08))
    assert _sync(tmp_path, "--warehouse-url", warehouse, "--dry-run", "--end", "2026-11-20", "--hours", "72") == 1
    err = capsys.readouterr().err
    assert "quality gate failed" in err and "Fix those rows in the warehouse" in err
    assert "[quarantine_thresholds] customers = 0.1" in err  # 6.2% quarantined: the next 5% step up


@pytest.mark.parametrize(("args", "message"), [
    (["--config", "/nonexistent/storesync.toml", "sync"], "--config /nonexistent/storesync.toml: no such settings file"),
    (["demo-store", "--orders", "-5"], "'-5': give a whole number of 1 or more"),
    (["demo-store", "--bad-share", "5"], "'5': give a share from 0 up to 1"),
    (["demo-store", "--end", "tomorrow"], "'tomorrow' is not an ISO 8601 date or time"),
])
def test_bad_arguments_anywhere_say_what_is_expected(tmp_path, capsys, args, message):
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_an_emulator_port_in_use_says_how_to_pick_another(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in err and "--port (0 picks a free one)" in err


def test_a_demo_store_url_that_fails_is_the_one_named(tmp_path, capsys):
    assert main(["--config", _empty_config(tmp_path), "demo-store", "--orders", "5",
                 "--url", "postgresql+psycopg://nobody:hunter2@127.0.0.1:1/store"]) == 2
    err = capsys.readouterr().err
    assert "database postgresql+psycopg://nobody:***@127.0.0.1:1/store" in err and "hunter2" not in err


def test_demo_store_if_missing_keeps_a_warehouse_that_has_one(tmp_path, capsys):
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'store.db'}"
    args = ["--config", _empty_config(tmp_path), "demo-store", "--if-missing", "--orders", "40", "--days", "2",
            "--url", url]
    assert main(args) == 0
    assert "orders 40" in capsys.readouterr().out
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM orders WHERE order_id IN (SELECT order_id FROM orders LIMIT 5)"))
    assert main(args) == 0
    assert "kept (it has an orders table" in capsys.readouterr().out
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM orders")).scalar() == 35  # untouched
    engine.dispose()
