"""The fault suite, short form (``make chaos`` runs the long one): both vendors through a 429 storm,
20% 5xx, 10% drop-after-accept, a real ``kill -9`` mid-delivery and two syncs sending at once, then
ordinary reruns only, judged against a second, fault-free emulator."""

from __future__ import annotations

import pytest

from storesync.chaos import SETTLED_BY, ChaosReport, run_chaos

# What the vendors' contracts may leave to a person when an answer was lost: events Sendlane neither
# de-duplicates nor lets anyone read (checkouts and customers only where no rule settled them), and
# Sailthru returns (no read of them).
CONTRACT_HELD = {
    "sendlane": {"checkout_started", "customer_added", "added_to_cart", "product_viewed", "custom_event"},
    "sailthru": {"return"},
}


@pytest.mark.slow
def test_chaos_short_form_loses_nothing_and_duplicates_nothing(tmp_path):
    report: ChaosReport = run_chaos(tmp_path, orders=120, days=6, seed=7, windows=2, storm_requests=15,
                                    log=lambda _m: None)
    assert set(report.figures) == {"sendlane", "sailthru"}
    for vendor, figures in report.figures.items():
        # The faults really happened, and the kill landed while the vendor was receiving.
        injected = figures.faults_injected
        assert injected.get("storm", 0) == 15 and injected.get("error_rate", 0) > 0, (vendor, injected)
        assert injected.get("drop_after", 0) > 0 and figures.killed_mid_delivery, (vendor, injected)
        assert figures.owed > 0 and figures.recorded > 0
        # Exactly once, judged by what the vendor recorded: nothing twice, nothing silently missing,
        # nothing left open after the ordinary reruns.
        assert figures.duplicates == 0, (vendor, figures.duplicate_examples)
        assert figures.lost == 0, (vendor, figures.lost_examples)
        assert figures.still_open == 0, vendor
        # Held only what no rule of the vendor's contract can settle; each with its manual steps.
        assert set(figures.held_by_event) <= CONTRACT_HELD[vendor], (vendor, figures.held_by_event)
        assert (figures.manual_steps > 0) == (figures.held > 0)
        # Held rows a rule settled are reported by rule, and superseded ones judged at the vendor.
        assert set(figures.settled) <= set(SETTLED_BY.values()), figures.settled
        superseded_by_order = figures.settled.get("superseded, contact ordered", 0)
        assert figures.superseded_arrived + figures.superseded_not_arrived == superseded_by_order
    text = report.text()
    assert ("chaos passed" in text) == report.ok
    for vendor, figures in report.figures.items():
        if figures.held:
            assert f"storesync reconcile --list --vendor {vendor}" in text
