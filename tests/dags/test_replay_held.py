"""The replay DAG resolves held rows (``held_ids`` + ``resolution``), as the Storesync view's
"Mark arrived" / "Resend" trigger it: ``dag.test()`` against the emulator, on a store whose
Sendlane checkout answers were lost (Sendlane keeps no checkout id: a person must decide)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, text

from tests.dags.test_dag_suite import busiest_hour, load_dag, vendors  # noqa: F401 (a fixture)

pytestmark = pytest.mark.airflow
UTC = timezone.utc
REPLAY = "storesync_dead_letter_replay"


def rows(env, where: str) -> dict[int, tuple]:
    with create_engine(env["STORESYNC_LEDGER_URL"]).connect() as conn:
        found = conn.execute(text("SELECT id, state, vendor, entity_id, vendor_error FROM storesync_deliveries "
                                  f"WHERE {where} ORDER BY id")).all()
    return {r[0]: tuple(r[1:]) for r in found}


def set_unknown(env, ids, *, since: datetime | None = None) -> None:
    """The answers to ``ids`` were lost (the ledger counts an unknown row's age from updated_at)."""
    stamp = ", updated_at = :since" if since else ""
    with create_engine(env["STORESYNC_LEDGER_URL"]).begin() as conn:
        conn.execute(text(f"UPDATE storesync_deliveries SET state = 'unknown'{stamp} "
                          f"WHERE id IN ({', '.join(map(str, ids))})"), {"since": since})


def resolve(dag, hour: int, **conf):
    return dag.test(logical_date=datetime(2026, 11, 23, hour, tzinfo=UTC), run_conf={"dry_run": False, **conf})


def test_held_ids_resolve_exactly_those_rows_and_a_row_awaiting_its_lookup_is_refused(airflow_db, vendors, capfd):
    emulator = vendors["emulator"]
    hour_end = busiest_hour(vendors, "SELECT updated_at FROM checkouts WHERE status = 'open' AND order_id IS NULL")
    assert load_dag("storesync_checkouts").test(
        logical_date=hour_end, run_conf={"reminder_max_age_hours": 0}).state == "success"
    sent = rows(vendors, "vendor = 'sendlane' AND event_type = 'checkout_started' AND state = 'accepted'")
    assert len(sent) >= 4
    held = list(sent)
    set_unknown(vendors, held)  # their answers were lost
    arrived, resend, untouched = held[:2], held[2:4], held[4:]
    replay = load_dag(REPLAY)

    # An id that is not held (an accepted Sailthru row) beside a held one: refused, nothing changes.
    accepted = next(iter(rows(vendors, "vendor = 'sailthru' AND state = 'accepted'")))
    before = rows(vendors, "1 = 1")
    requests_before = len(emulator.requests(recorded=None))
    capfd.readouterr()
    run = resolve(replay, 1, held_ids=[arrived[0], accepted], resolution="arrived")
    assert run.state == "failed"
    assert "1 of the 2 ids are not deliveries of this store held with an unknown outcome" in "".join(
        capfd.readouterr())
    assert rows(vendors, "1 = 1") == before

    # A dry run lists them and changes nothing.
    assert resolve(replay, 2, held_ids=arrived, resolution="arrived", dry_run=True).state == "success"
    assert rows(vendors, "1 = 1") == before

    # Arrived: recorded accepted with why, nothing sent.
    assert resolve(replay, 3, held_ids=arrived, resolution="arrived").state == "success"
    now = rows(vendors, "1 = 1")
    assert all(now[i][0] == "accepted" and now[i][3] == "reconciled by hand: arrived" for i in arrived)
    assert all(now[i][0] == "unknown" for i in resend + untouched)
    assert len(emulator.requests(recorded=None)) == requests_before

    # Resend: sent once each, now; the rest stay held.
    assert resolve(replay, 4, held_ids=resend, resolution="resend").state == "success"
    now = rows(vendors, "1 = 1")
    assert all(now[i][0] == "accepted" for i in resend)
    assert all(now[i][0] == "unknown" for i in untouched)
    new_requests = emulator.requests(recorded=None)[requests_before:]
    assert sorted(r["entity_id"] for r in new_requests) == sorted(now[i][2] for i in resend)

    # A Sailthru purchase whose answer was lost a moment ago waits for its own lookup: never resent.
    lookup_row = next(i for i, r in rows(vendors, "vendor = 'sailthru' AND state = 'accepted' "
                                                  "AND event_type = 'incomplete_purchase'").items())
    set_unknown(vendors, [lookup_row], since=datetime.utcnow())
    requests_before = len(emulator.requests(recorded=None))
    capfd.readouterr()
    run = resolve(replay, 5, held_ids=[lookup_row], resolution="resend")
    assert run.state == "failed"
    assert "1 row(s) wait for their own lookup" in "".join(capfd.readouterr())
    assert rows(vendors, f"id = {lookup_row}")[lookup_row][0] == "unknown"
    assert len(emulator.requests(recorded=None)) == requests_before
