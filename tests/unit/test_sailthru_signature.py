"""Our Sailthru signature equals the official ``sailthru-client``'s for the same parameters."""

from __future__ import annotations

import json

import pytest
from sailthru.sailthru_client import SailthruClient as OfficialClient
from sailthru.sailthru_client import get_signature_hash

from storesync.clients.sailthru import SailthruClient, sailthru_signature

SECRET = "test-sailthru-secret"


@pytest.mark.parametrize(
    "params",
    [
        {"api_key": "test-sailthru-key", "format": "json", "json": '{"email":"a@example.com"}'},
        # Values that sort differently as strings than as numbers, and non-ASCII text.
        {"api_key": "k", "format": "json", "json": json.dumps({"items": [{"price": 1999, "title": "Café"}]}),
         "extra": 10, "other": 9},
        {"api_key": "k", "format": "json", "json": json.dumps({"title": "日本語"}, ensure_ascii=False)},
        # Nested values: the official client signs their leaves too.
        {"api_key": "k", "format": "json", "vars": {"b": "2", "a": ["1", "3"]}},
    ],
)
def test_signature_matches_the_official_client(params):
    assert sailthru_signature(params, SECRET) == get_signature_hash(params, SECRET)


def test_sig_itself_is_not_signed():
    params = {"api_key": "k", "format": "json", "json": "{}"}
    assert sailthru_signature({**params, "sig": "whatever"}, SECRET) == get_signature_hash(params, SECRET)


def test_client_request_parameters_match_the_official_client():
    """What our client sends for a purchase is exactly what the official client would send for
    the same JSON text: same fields, same signature."""
    data = {"email": "a@example.com", "items": [{"qty": 3, "title": "Tee", "price": 1999, "id": "T-1",
                                                 "url": "https://shop.example.com/tee"}]}
    ours = SailthruClient("https://api.sailthru.com", "test-sailthru-key", SECRET)._signed_params(data)
    official = OfficialClient("test-sailthru-key", SECRET)._prepare_json_payload(data)
    # The two serialise the JSON text differently (separators); sign each's own text.
    assert json.loads(ours["json"]) == json.loads(official["json"])
    assert ours["sig"] == get_signature_hash({k: v for k, v in ours.items() if k != "sig"}, SECRET)
    assert official["sig"] == sailthru_signature({k: v for k, v in official.items() if k != "sig"}, SECRET)
    assert set(ours) == set(official) == {"api_key", "format", "json", "sig"}
