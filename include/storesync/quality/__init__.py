"""The data-quality gate: every extracted batch passes an expectation suite before it is sent.

    from storesync.quality import validate_batch, check_threshold, QuarantineStore

    outcome = validate_batch("orders", df, run_id=run_id, batch_id=batch_id, now=now)
    QuarantineStore(engine).record(outcome)      # quarantined rows in, fixed rows resolved
    check_threshold(outcome, {"orders": 0.01})   # QualityGateError above 1 % quarantined
    send(outcome.passed)

Modules: ``checks`` (the suites as data: a registry of named checks per entity), ``gate``
(validation with Great Expectations, outcome, threshold), ``store`` (the quarantine table),
``docs`` (results on disk and GX Data Docs), ``money`` (exact cents), ``currencies`` (ISO 4217).

Importing this package is cheap: submodules load on first use, and Great Expectations (~5 s to
import) only when a batch is first validated or Data Docs are built. Safe to import from a DAG file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from storesync.quality.errors import QualityGateError, ValidationIncompleteError

_EXPORTS = {
    "validate_batch": "gate",
    "check_threshold": "gate",
    "build_suite": "gate",
    "gx_runtime": "gate",
    "ValidationOutcome": "gate",
    "QuarantinedRow": "gate",
    "DEFAULT_MAX_SHARE": "gate",
    "QuarantineStore": "store",
    "store_results": "docs",
    "load_results": "docs",
    "render_data_docs": "docs",
    "REGISTRY": "checks",
    "ENTITIES": "checks",
    "spec_for": "checks",
    "Check": "checks",
    "EntitySpec": "checks",
    "MAX_CENTS": "money",
    "KNOWN_CURRENCIES": "currencies",
}

__all__ = ["QualityGateError", "ValidationIncompleteError", *_EXPORTS]

if TYPE_CHECKING:
    from storesync.quality.checks import ENTITIES, REGISTRY, Check, EntitySpec, spec_for
    from storesync.quality.currencies import KNOWN_CURRENCIES
    from storesync.quality.docs import load_results, render_data_docs, store_results
    from storesync.quality.gate import (
        DEFAULT_MAX_SHARE,
        QuarantinedRow,
        ValidationOutcome,
        build_suite,
        check_threshold,
        gx_runtime,
        validate_batch,
    )
    from storesync.quality.money import MAX_CENTS
    from storesync.quality.store import QuarantineStore


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
