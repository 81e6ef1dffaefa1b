"""Validation results kept on disk, and GX Data Docs built from them for people to read.

``store_results`` writes one JSON file per validated batch:
``<results_dir>/<run_id>/<entity>__<batch_id>.json`` holding the GX validation result (with the
gate's counts under ``meta.storesync``). The results never contain row values (the gate runs GX
with ``exclude_unexpected_values``), only row positions and entity ids, at most
``RESULTS_INDEX_LIMIT`` per expectation.

``render_data_docs`` builds a static GX Data Docs site from those files (or straight from
outcomes): an index, one page per suite, one page per validated batch grouped by run. It uses its
own short-lived ephemeral context with a filesystem site and ``context.build_data_docs()``, so the
process-wide validation context keeps no results in memory. Building takes ~0.3 s per batch page;
callers that run often can keep it behind a flag.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storesync.quality.checks import REGISTRY

if TYPE_CHECKING:
    from storesync.quality.gate import ValidationOutcome

SITE_NAME = "storesync_quality"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def _safe(part: str) -> str:
    cleaned = _UNSAFE.sub("_", str(part)).strip("._")
    return cleaned or "_"


def results_path(results_dir: str | os.PathLike[str], outcome: ValidationOutcome) -> Path:
    name = f"{_safe(outcome.entity)}__{_safe(outcome.batch_id)}.json"
    return Path(results_dir) / _safe(outcome.run_id) / name


def store_results(outcome: ValidationOutcome, results_dir: str | os.PathLike[str]) -> Path:
    """Write the outcome's GX validation result as JSON (atomically); returns the file."""
    path = results_path(results_dir, outcome)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(outcome.results, fh, ensure_ascii=False, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_results(results_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every stored result under ``results_dir``, oldest run first."""
    found = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if path.name.startswith(".tmp-"):
            continue
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
        if isinstance(data, dict) and "storesync" in (data.get("meta") or {}):
            found.append(data)
    return found


def render_data_docs(
    source: str | os.PathLike[str] | ValidationOutcome | Iterable[ValidationOutcome] | Iterable[dict],
    site_dir: str | os.PathLike[str],
) -> Path:
    """Build GX Data Docs into ``site_dir`` and return the path of its ``index.html``.

    ``source`` is a results directory written by ``store_results``, one outcome, or several
    outcomes / result dicts. Every suite of the registry gets its page (the checks, documented);
    every result its validation page, filed under its run.
    """
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from storesync.quality.gate import build_suite

    results = _collect(source)
    site = Path(site_dir).resolve()
    site.mkdir(parents=True, exist_ok=True)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.add_data_docs_site(
        site_name=SITE_NAME,
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    for spec in REGISTRY.values():
        context.suites.add(build_suite(spec))

    schema = ExpectationSuiteValidationResultSchema()
    for data in results:
        meta = data["meta"]["storesync"]
        result = schema.load(data)
        run_time = dt.datetime.fromisoformat(meta.get("now") or meta["validated_at"]).replace(tzinfo=dt.UTC)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=data["suite_name"]),
            run_id=RunIdentifier(run_name=str(meta["run_id"]), run_time=run_time),
            batch_identifier=_safe(f"{meta['entity']}__{meta['batch_id']}"),
        )
        context.validation_results_store.set(key, result)

    urls = context.build_data_docs(site_names=[SITE_NAME])
    index = site / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"GX did not write {index} (build_data_docs returned {urls})")
    return index


def _collect(source: Any) -> list[dict[str, Any]]:
    from storesync.quality.gate import ValidationOutcome

    if isinstance(source, (str, os.PathLike)):
        return load_results(source)
    if isinstance(source, ValidationOutcome):
        return [source.results]
    collected = []
    for item in source:
        collected.append(item.results if isinstance(item, ValidationOutcome) else item)
    return collected
