"""The run summary says why a vendor's dead letters died (top reasons, counted alike whatever entity
they name) and what to do next, from the same knowledge ``storesync replay`` has."""

from __future__ import annotations

from datetime import datetime, timedelta

from acme_store import AcmeStore, write_models

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.delivery.ledger import DEAD, Ledger, Outcome, PlannedDelivery
from storesync.pipeline.jobs import dead_letter_reasons, format_summary, run_nightly

DAY = datetime(2026, 11, 10)


def test_the_summary_names_the_dead_letters_reason_and_the_next_step(tmp_path, emulator):
    emulator.configure(rate_limits_enabled=False)
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    store.customer(1, DAY)
    store.product(1, DAY)
    at = DAY.isoformat("T")
    store._insert("acme_products", prod_no=3, code="ACME-3", name="Anvil 3", page=None, picture=None,
                  list_price=5.0, added=at, touched=at)  # no page: Sailthru cannot take an order of it
    store.order(1, 1, DAY + timedelta(hours=2))
    store.order(2, 1, DAY + timedelta(hours=3), prod_no=3)
    store.order(3, 1, DAY + timedelta(hours=4), prod_no=3)
    settings = Settings(
        warehouse_url=store.url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        models_dir=write_models(tmp_path / "models"), quarantine_thresholds={"*": 1.0},
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret))
    summary = run_nightly(settings, Window(DAY, DAY + timedelta(days=1)), run_id="night")
    store.dispose()

    assert summary["ledger"]["sailthru"][DEAD] == 2 and "sendlane" not in summary["dead_letters"]
    dead = summary["dead_letters"]["sailthru"]
    assert dead["reasons"] == [["item ACME-3 has no product URL (Sailthru requires items[].url)", 2]]
    assert dead["next_step"].startswith("fix the data in the warehouse: the next run re-plans the orders")
    line = next(ln for ln in format_summary(summary).splitlines() if ln.startswith("sailthru dead letters: "))
    assert "no product URL (Sailthru requires items[].url) ×2; next: fix the data" in line
    assert "`storesync replay --vendor sailthru`" in line


def test_refused_dead_letters_point_at_replay_and_never_show_an_email(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.plan([PlannedDelivery(vendor="sendlane", account="a", event_type="customer_added",
                                 entity_id=str(n), version="1", endpoint="/customer", payload={})
                 for n in range(3)],
                sync_name="s", run_id="r")
    ledger.promote("r")
    claimed = ledger.claim("sendlane", "a", 10, owner="me:1:x")
    ledger.record([(d, Outcome(DEAD, http_status=422, error_class="permanent",
                               vendor_error=f"customer {d.entity_id}: The email ann{d.entity_id}@example.com "
                                            "is on the suppression list")) for d in claimed], run_id="r")
    found = dead_letter_reasons(ledger, "sendlane", "a")
    # Masked, the three refusals read alike: one reason, counted three times.
    assert found["reasons"] == [["The email a***@example.com is on the suppression list", 3]]
    assert "`storesync replay --vendor sendlane`" in found["next_step"] and "refused" in found["next_step"]
