"""Text for people at a terminal: every quarantine reason of a run and its dry-run sample payloads.

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
