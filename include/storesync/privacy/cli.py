"""``storesync erase`` and ``storesync retention`` (registered in storesync.cli)."""

from __future__ import annotations

import json

from storesync.core.errors import ConfigurationError


def cmd_erase(args, settings) -> int:
    from storesync.privacy.erasure import erase, requests_from_model

    emails, ids = list(args.email or ()), list(args.customer_id or ())
    asked_at = None
    if args.from_model:
        requests = requests_from_model(settings)
        emails += requests.emails
        ids += requests.customer_ids
        asked_at = requests.asked_at
    elif not emails and not ids:
        raise ConfigurationError("say whom to erase: --email ADDRESS and/or --customer-id ID "
                                 "(each may repeat), "
                                 "or --from-model to erase the erasure_requests model's people")
    bad = [e for e in args.email or () if "@" not in e]
    if bad:
        raise ConfigurationError(f"--email: {len(bad)} value(s) without an '@' are not emails; "
                                 "give each address whole (the value is not shown: it may be personal data)")
    report = erase(settings, emails=emails, customer_ids=ids, source="model" if args.from_model else "cli",
                   vendors=tuple(args.vendor or ("sailthru", "sendlane")), skip_done=args.from_model,
                   asked_at=asked_at)
    result = report.as_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_erasure(result))
    return 0 if report.ok else 1


def format_erasure(result: dict) -> str:
    lines = [f"people erased: {result['people']}"]
    for vendor, counts in result["vendors"].items():
        lines.append(f"  {vendor:<9} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for table, n in result["scrubbed"].items():
        lines.append(f"  scrubbed {table}: {n}")
    lines += [f"  NOT DONE {f}" for f in result["failures"]]
    return "\n".join(lines)


def cmd_retention(args, settings) -> int:
    from storesync.delivery.ledger import Ledger
    from storesync.privacy.retention import scrub_expired

    days = args.days if args.days is not None else settings.retention.days
    report = scrub_expired(Ledger(settings.ledger_url), days=days)
    result = report.as_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"scrubbed before {result['cutoff']}: {result['deliveries_scrubbed']} delivery payloads, "
              f"{result['quarantine_scrubbed']} quarantine rows")
    return 0


def add_commands(sub, positive_int) -> None:
    p = sub.add_parser("erase", help="erase people (GDPR/CCPA): at Sailthru and Sendlane, in every storesync "
                                     "table, and from every later sync")
    p.add_argument("--email", action="append", help="an email to erase (may repeat)")
    p.add_argument("--customer-id", action="append", help="a customer id to erase (may repeat)")
    p.add_argument("--from-model", action="store_true",
                   help="erase the people of the erasure_requests model (those not erased yet)")
    p.add_argument("--vendor", action="append", choices=("sailthru", "sendlane"),
                   help="only this vendor (default: both)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--warehouse-url")
    p.add_argument("--ledger-url")
    p.set_defaults(func_with_settings=cmd_erase)

    p = sub.add_parser("retention", help="scrub personal data older than [retention] days from delivered "
                                         "payloads and resolved quarantine rows")
    p.add_argument("--days", type=positive_int, help="override [retention] days")
    p.add_argument("--json", action="store_true")
    p.add_argument("--ledger-url")
    p.set_defaults(func_with_settings=cmd_retention)
