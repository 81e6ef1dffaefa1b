"""Dry-run sample payloads: every piece of personal data masked, the shape and the rest visible."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import create_engine, text
from sqlalchemy import text as text_sql

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.delivery.ledger import Ledger
from storesync.pipeline.jobs import run_nightly
from storesync.pipeline.syncs import MASK, mask_sample
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

END = datetime(2026, 11, 20)


def shape(value):
    """The payload's structure: keys, nesting and where values are null."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return None if value is None else "leaf"


def leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)
    else:
        yield value


ORDER = {
    "email": "ann.buyer@example.com",
    "token": "secret-token",
    "order_id": "1001",
    "total": 21.6,
    "currency": "USD",
    "occurred_at": "2026-11-19T12:30:45Z",
    "billing_address": {
        "first_name": "Ann", "last_name": "Buyer", "email": "ann.buyer@example.com", "phone": "+1 555-0100",
        "company": None, "address_1": "12 Elm Street", "city": "Springfield", "state_code": "IL",
        "country_code": "US", "postal_code": "62704",
    },
    "line_items": [{"product_id": 1, "sku": "MUG-1", "product_name": "Mug", "quantity": 2, "item_price": 10.0,
                    "product_url": "https://shop.example/mug"}],
    "custom_fields": [{"key": "phone", "value": "555 0100"}, {"key": "ltv_total", "value": 120.5},
                      {"key": "last_ip", "value": "203.0.113.7"}],
    "vars": {"ip_address": "2001:db8::1", "signup": "from 198.51.100.23 via the app", "version": "1.2.3",
             "Full Name": "Ann Buyer"},
}


def test_mask_sample_masks_personal_data_and_keeps_the_rest():
    masked = mask_sample(ORDER)
    assert shape(masked) == shape(ORDER)
    assert masked["email"] == "a***@example.com" and masked["token"] == MASK
    address = masked["billing_address"]
    for key in ("first_name", "last_name", "phone", "address_1", "postal_code"):
        assert address[key] == MASK, key
    assert address["email"] == "a***@example.com" and address["company"] is None
    assert (address["city"], address["state_code"], address["country_code"]) == ("Springfield", "IL", "US")
    assert masked["line_items"] == ORDER["line_items"]
    assert {k: masked[k] for k in ("order_id", "total", "currency", "occurred_at")} == \
        {k: ORDER[k] for k in ("order_id", "total", "currency", "occurred_at")}
    # Labelled values: the label stays, a personal value goes.
    assert masked["custom_fields"] == [{"key": "phone", "value": MASK}, {"key": "ltv_total", "value": 120.5},
                                       {"key": "last_ip", "value": MASK}]
    assert masked["vars"] == {"ip_address": MASK, "signup": f"from {MASK} via the app", "version": "1.2.3",
                              "Full Name": MASK}
    assert ORDER["billing_address"]["first_name"] == "Ann"  # the payload itself is left alone


def test_dry_run_samples_carry_no_personal_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(url, DemoStoreSpec(orders=150, seed=5, end=END, days=4, bad_share=0.0))
    settings = Settings(
        warehouse_url=url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        sendlane=SendlaneSettings(api_token="t", integration_token="i", list_id="42"),
        sailthru=SailthruSettings(api_key="k", secret="s"),
        quarantine_thresholds={"*": 0.2},
    )
    summary = run_nightly(settings, Window(END - timedelta(days=2), END), run_id="dry", dry_run=True)
    samples = summary["samples"]
    assert {"sendlane:order_placed", "sendlane:customer_added", "sendlane:contact", "sailthru:purchase",
            "sailthru:user", "sendlane:product_added"} <= set(samples)

    engine = create_engine(url)
    with engine.connect() as conn:
        people = conn.execute(text("SELECT email, first_name, last_name, phone, address_1, postal_code "
                                   "FROM customers")).all()
        titles = set(conn.execute(text("SELECT title FROM products")).scalars())
    engine.dispose()
    personal = {str(v) for row in people for v in row if v}
    shown = [str(v) for key in samples for s in samples[key] for v in leaves(s["payload"])]
    assert shown and not personal.intersection(shown)
    assert not any(row.email in value for row in people if row.email for value in shown)

    placed = samples["sendlane:order_placed"][0]["payload"]
    assert placed["billing_address"]["first_name"] == MASK and placed["billing_address"]["phone"] == MASK
    assert placed["billing_address"]["address_1"] == MASK and "***@" in placed["email"]
    assert placed["billing_address"]["country_code"] and placed["billing_address"]["country_code"] != MASK
    assert all(item["product_name"] in titles for item in placed["line_items"])
    assert isinstance(placed["total"], int | float) and placed["total"] > 0
    user = samples["sailthru:user"][0]["payload"]
    assert user["vars"]["first_name"] == MASK and user["vars"]["phone"] == MASK
    assert "***@" in user["keys"]["email"] and user["id"].isdigit() and user["key"] == "extid"
    assert Ledger(settings.ledger_url).counts() == {}


def test_the_text_dry_run_shows_every_quarantine_reason_and_the_masked_samples(tmp_path, capsys):
    """`storesync sync --dry-run` prints what its help promises: all reasons, not the top three, and
    one sample payload per vendor event, the same (masked) payloads the JSON summary carries."""
    import json

    from storesync.cli import main

    url = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(url, DemoStoreSpec(orders=300, seed=5, end=END, days=5, bad_share=0.08))
    config = tmp_path / "storesync.toml"
    config.write_text('[quarantine_thresholds]\n"*" = 0.5\n')  # many bad rows, yet the gate passes
    args = ["--config", str(config), "sync", "--dry-run", "--warehouse-url", url,
            "--ledger-url", f"sqlite:///{tmp_path / 'ledger.db'}", "--end", END.isoformat(), "--hours", "72"]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out

    reasons = {entity: s["reasons"] for entity, s in summary["rows"].items() if s["reasons"]}
    assert max(len(r) for r in reasons.values()) > 3, "the store must give more reasons than the top 3"
    section = text.split("quarantined rows by reason")[1].split("\n\n")[0]
    for entity, counts in reasons.items():
        line = next(ln for ln in section.splitlines() if ln.strip().startswith(f"{entity}: "))
        assert {f"{reason} ×{n}" for reason, n in counts.items()} == set(line.split(": ", 1)[1].split(", "))

    shown = text.split("sample payloads (personal data masked")[1].splitlines()[1:]
    pairs = dict(zip(shown[0::2], shown[1::2], strict=True))
    assert len(pairs) == len(summary["samples"])
    for key, samples in summary["samples"].items():
        header = f"  {key}  {samples[0]['endpoint']}"
        assert json.loads(pairs[header]) == samples[0]["payload"]

    engine = create_engine(url)
    with engine.connect() as conn:
        emails = [e for e in conn.execute(text_sql("SELECT email FROM customers")).scalars() if e]
    engine.dispose()
    assert emails and not any(email in text for email in emails)
    assert "***@" in text
    assert Ledger(f"sqlite:///{tmp_path / 'ledger.db'}").counts() == {}
