"""Settings are validated when loaded: one clear error per bad value, naming the key, the value,
what is allowed and where it came from (the file or the environment variable)."""

from __future__ import annotations

import pytest

from storesync.core.config import (
    QUARANTINE_ENTITIES,
    SAILTHRU_UNKNOWN_OUTCOMES,
    SENDLANE_UNKNOWN_OUTCOMES,
    ConfigurationError,
    SailthruSettings,
    SendlaneSettings,
    Settings,
    load_settings,
)


@pytest.fixture(autouse=True)
def no_storesync_env(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("STORESYNC_")]:
        monkeypatch.delenv(name)


def load(tmp_path, text: str) -> Settings:
    path = tmp_path / "storesync.toml"
    path.write_text(text)
    return load_settings(path)


def refused(tmp_path, text: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert str(tmp_path / "storesync.toml") in message  # where it came from
    return message


def test_a_good_file_loads(tmp_path):
    settings = load(tmp_path, '''
chunk_size = 500
concurrency = 4
[quarantine_thresholds]
orders = 0.1
"*" = 0.2
[sendlane]
base_url = "https://api.sendlane.com/v2"
budget_per_minute = 0
budget_window_s = 0.5
unknown_outcome = "hold"
[sendlane.event_paths]
order_fulfilled = "/tracking/order-shipped"
[sailthru]
unknown_outcome = "hold"
unknown_grace_s = 0
''')
    assert (settings.chunk_size, settings.concurrency) == (500, 4)
    assert settings.quarantine_thresholds == {"orders": 0.1, "*": 0.2}
    assert settings.sendlane.budget_per_minute == 0  # documented: no client-side budget (sandboxes)
    assert settings.sendlane.event_paths["order_fulfilled"] == "/tracking/order-shipped"
    assert settings.sendlane.event_paths["order_placed"] == "/tracking/order-placed"


def test_negative_budget_is_refused(tmp_path):
    message = refused(tmp_path, "[sendlane]\nbudget_per_minute = -5\n")
    assert "sendlane.budget_per_minute = -5" in message and ">= 0" in message and "[sendlane]" in message
    assert "sailthru.budget_per_minute = -1" in refused(tmp_path, "[sailthru]\nbudget_per_minute = -1\n")


def test_fractional_or_boolean_budget_is_refused(tmp_path):
    assert "whole number" in refused(tmp_path, "[sendlane]\nbudget_per_minute = 2.5\n")
    assert "whole number" in refused(tmp_path, "[sendlane]\nbudget_per_minute = true\n")


@pytest.mark.parametrize("window", ["0", "-1.0"])
def test_budget_window_must_be_positive(tmp_path, window):
    message = refused(tmp_path, f"[sendlane]\nbudget_window_s = {window}\n")
    assert f"sendlane.budget_window_s = {window}" in message and "> 0" in message


@pytest.mark.parametrize("share", ["1.5", "-0.1"])
def test_quarantine_threshold_outside_zero_to_one_is_refused(tmp_path, share):
    message = refused(tmp_path, f"[quarantine_thresholds]\norders = {share}\n")
    assert f"quarantine_thresholds.orders = {share}" in message and "between 0 and 1" in message


def test_quarantine_threshold_for_an_unknown_entity_is_refused(tmp_path):
    message = refused(tmp_path, "[quarantine_thresholds]\norder = 0.1\n")
    assert "quarantine_thresholds.order" in message and "orders" in message


def test_quarantine_entities_are_the_quality_gates():
    from storesync.quality.checks import ENTITIES

    assert set(QUARANTINE_ENTITIES) == set(ENTITIES)


@pytest.mark.parametrize(("section", "value", "choices"), [
    ("sendlane", "lookup", SENDLANE_UNKNOWN_OUTCOMES), ("sailthru", "resend", SAILTHRU_UNKNOWN_OUTCOMES)])
def test_unknown_outcome_must_be_a_known_policy(tmp_path, section, value, choices):
    message = refused(tmp_path, f'[{section}]\nunknown_outcome = "{value}"\n')
    assert f"{section}.unknown_outcome = {value!r}" in message
    assert all(repr(c) in message for c in choices)


def test_unknown_outcome_choices_are_what_the_senders_act_on():
    from storesync.pipeline import senders

    assert senders.SENDLANE_UNKNOWN_OUTCOMES == SENDLANE_UNKNOWN_OUTCOMES
    assert senders.SAILTHRU_UNKNOWN_OUTCOMES == SAILTHRU_UNKNOWN_OUTCOMES


@pytest.mark.parametrize(("line", "key", "allowed"), [
    ('supersede_held = "always"', "sendlane.supersede_held", "'newer_or_order'"),
    ('contact_read = "yes"', "sendlane.contact_read", "'presence'"),
    ("unknown_grace_s = -5", "sendlane.unknown_grace_s", "seconds >= 0"),
])
def test_sendlane_held_row_rules_are_validated(tmp_path, line, key, allowed):
    message = refused(tmp_path, f"[sendlane]\n{line}\n")
    assert key in message and allowed in message


def test_sendlane_held_row_rules_load_from_the_file_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STORESYNC_SENDLANE_UNKNOWN_GRACE_S", "30")
    settings = load(tmp_path, '[sendlane]\ncontact_read = "presence"\nsupersede_held = "off"\n')
    assert (settings.sendlane.contact_read, settings.sendlane.supersede_held) == ("presence", "off")
    assert settings.sendlane.unknown_grace_s == 30.0


@pytest.mark.parametrize("url", ["api.sendlane.com/v2", "ftp://api.sendlane.com", "https://", ""])
def test_vendor_base_url_must_be_http(tmp_path, url):
    message = refused(tmp_path, f'[sendlane]\nbase_url = "{url}"\n')
    assert f"sendlane.base_url = {url!r}" in message and "http:// or https://" in message


def test_database_url_must_parse_and_never_shows_its_password(tmp_path):
    message = refused(tmp_path, 'warehouse_url = "postgres ql://me:hunter2@host/db"\n')
    assert "warehouse_url" in message and "a SQLAlchemy URL such as" in message
    assert "hunter2" not in message
    assert "ledger_url" in refused(tmp_path, 'ledger_url = "not a url"\n')


@pytest.mark.parametrize(("key", "value"), [("chunk_size", 0), ("concurrency", -2), ("chunk_size", 1.5)])
def test_chunk_size_and_concurrency_must_be_positive_whole_numbers(tmp_path, key, value):
    message = refused(tmp_path, f"{key} = {value}\n")
    assert f"{key} = {value!r}" in message and ">= 1" in message


@pytest.mark.parametrize(("text", "typo", "hint"), [
    ("chunksize = 10\n", "chunksize", "chunk_size"),
    ("[sendlane]\nbudget_per_minut = 10\n", "sendlane.budget_per_minut", "budget_per_minute"),
    ("[sailthru]\nunknown_outcomes = 'hold'\n", "sailthru.unknown_outcomes", "unknown_outcome"),
])
def test_unknown_keys_are_refused_with_a_suggestion(tmp_path, text, typo, hint):
    message = refused(tmp_path, text)
    assert f"unknown setting {typo}" in message and f"did you mean {hint!r}" in message


def test_unknown_sendlane_event_path_is_refused(tmp_path):
    message = refused(tmp_path, '[sendlane.event_paths]\norder_shipped = "/tracking/x"\n')
    assert "sendlane.event_paths.order_shipped" in message and "order_fulfilled" in message
    assert "starting with '/'" in refused(tmp_path, '[sendlane.event_paths]\norder_fulfilled = "tracking/x"\n')


def test_a_section_that_is_not_a_table_is_refused(tmp_path):
    assert "a [sendlane] table" in refused(tmp_path, 'sendlane = "yes"\n')


def test_an_environment_variable_is_named_as_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("STORESYNC_SENDLANE_BUDGET_WINDOW_S", "0")
    with pytest.raises(ConfigurationError, match="environment variable STORESYNC_SENDLANE_BUDGET_WINDOW_S"):
        load(tmp_path, "")
    monkeypatch.setenv("STORESYNC_SENDLANE_BUDGET_WINDOW_S", "soon")
    with pytest.raises(ConfigurationError, match=r"budget_window_s = 'soon'.*STORESYNC_SENDLANE_BUDGET_WINDOW_S"):
        load(tmp_path, "")
    monkeypatch.setenv("STORESYNC_SENDLANE_BUDGET_WINDOW_S", "2.5")
    monkeypatch.setenv("STORESYNC_CHUNK_SIZE", "300")
    settings = load(tmp_path, "")
    assert settings.sendlane.budget_window_s == 2.5 and settings.chunk_size == 300


def test_settings_built_in_code_are_validated_too():
    with pytest.raises(ConfigurationError, match="sendlane.budget_per_minute"):
        SendlaneSettings(budget_per_minute=-1)
    with pytest.raises(ConfigurationError, match="sailthru.unknown_grace_s"):
        SailthruSettings(unknown_grace_s=-1)
    with pytest.raises(ConfigurationError, match="concurrency"):
        Settings(concurrency=0)
