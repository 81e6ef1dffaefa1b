"""Text for people: every quarantine reason of a run, its dry-run samples, and what a gate failure asks.

``format_summary`` (pipeline/jobs.py) keeps its table short (the top reasons per entity); the
``storesync sync`` command adds these sections below it. The samples are already masked by the
planner (``syncs.mask_sample``): this module only lays them out.
"""

from __future__ import annotations

import json


def quarantine_reasons_text(summary: dict) -> str:
    """Every reason rows were quarantined for, per entity, most frequent first ('' when none)."""
    lines = []
    for entity, stats in summary.get("rows", {}).items():
        reasons = sorted((stats.get("reasons") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        if reasons:
            lines.append(f"  {entity}: " + ", ".join(f"{reason} ×{n}" for reason, n in reasons))
    if not lines:
        return ""
    # A row can fail several checks, so the reasons may add up to more than the rows quarantined.
    return "\n".join(["quarantined rows by reason (all reasons; a row may have several):", *lines])


def quarantine_samples_text(summary: dict, per_entity: int = 1) -> str:
    """Up to ``per_entity`` quarantined rows per entity (dry runs; masked by the planner), each with
    its reasons ('' when none)."""
    samples = summary.get("quarantine_samples") or {}
    if per_entity <= 0 or not samples:
        return ""
    lines = [f"quarantined rows (personal data masked; up to {per_entity} per entity):"]
    for entity in sorted(samples):
        for sample in samples[entity][:per_entity]:
            lines.append(f"  {entity} {sample.get('entity_id')}: " + "; ".join(sample.get("reasons") or []))
            lines.append("    " + json.dumps(sample.get("row"), default=str, ensure_ascii=False,
                                            separators=(", ", ": ")))
    return "\n".join(lines)


def dry_run_samples_text(summary: dict, per_event: int = 1) -> str:
    """Up to ``per_event`` sample payloads per vendor event, one JSON line each ('' when none).

    ``per_event`` 0 shows none. The planner keeps at most three per event."""
    samples = summary.get("samples") or {}
    if per_event <= 0 or not samples:
        return ""
    lines = [f"sample payloads (personal data masked; up to {per_event} per event):"]
    for key in sorted(samples):
        for sample in samples[key][:per_event]:
            lines.append(f"  {key}  {sample.get('endpoint', '')}")
            lines.append("    " + json.dumps(sample.get("payload"), default=str, ensure_ascii=False,
                                            separators=(", ", ": ")))
    return "\n".join(lines)


# A reason behind at least this share of a batch's rows is the model's doing, not a few bad rows.
MOSTLY_ONE_REASON = 0.5


def model_at_fault(failure: dict) -> tuple[str, int] | None:
    """The check (and its count) that half or more of the entity's rows fail, when one does: then
    the model returns something the contract does not take, and no threshold is the fix."""
    top, rows_in = failure.get("top_reasons") or [], failure.get("rows_in")
    if top and rows_in and top[0][1] >= MOSTLY_ONE_REASON * rows_in:
        return top[0][0], top[0][1]
    return None


def gate_failure_advice(failure: dict) -> str:
    """What to do about a quality-gate failure (``pipeline.jobs.gate_failure``): fix the rows, or,
    when the share is acceptable, a threshold that would have let it through (the share rounded
    up to the next 5%, never past 1); when the model is at fault, the model."""
    import math

    entity, share = failure.get("entity") or "<entity>", failure.get("share")
    fault = model_at_fault(failure)
    if fault:
        reason, count = fault
        return (f"Most {entity} rows fail {reason} (×{count}): raising the threshold is not the fix, the "
                f"{entity} model is. `storesync models check --model {entity}` shows what it returns against "
                "the contract (include/sql/README.md lists the allowed values)")
    allowed = min(1.0, math.ceil(share * 20 + 1e-9) / 20) if share is not None else 0.1
    return (f"Fix those rows in the warehouse, or, if that share is acceptable, raise the threshold in "
            f"storesync.toml ([quarantine_thresholds] {entity} = {allowed:g})")


def gate_failure_text(failure: dict) -> str:
    return f"{failure['message']}. {gate_failure_advice(failure)}"
