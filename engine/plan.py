"""Plan files: a dry run that a reviewer approves, bound to what it was made from.

The plan's hash covers the runbook (and the runbooks it calls), the inventory and the
parameters. `run --plan` refuses to start when any of them has changed since.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PlanMismatch, RunbookError
from .result import Report

if TYPE_CHECKING:
    from .inventory import Inventory
    from .loader import Catalog

__all__ = ["PLAN_FORMAT", "digest", "fingerprints", "plan_document", "save_plan", "load_plan",
           "verify_plan"]

PLAN_FORMAT = 1


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def fingerprints(catalog: Catalog, inventory: Inventory, runbook_id: str,
                 params: dict[str, Any], instrument: str | None) -> dict[str, str]:
    return {
        "runbook": catalog.digest(runbook_id),
        "inventory": inventory.fingerprint(),
        "params": digest({"params": params, "instrument": instrument}),
    }


def plan_document(report: Report, parts: dict[str, str]) -> dict[str, Any]:
    return {
        "format": PLAN_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "runbook": report.runbook,
        "site": report.site,
        "instrument": report.instrument,
        "params": report.params,
        "fingerprints": parts,
        "hash": digest(parts),
        "steps": [s.model_dump() for s in report.steps],
    }


def save_plan(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")


def load_plan(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunbookError(f"{path}: not a readable plan file: {exc}") from exc
    missing = [k for k in ("format", "runbook", "params", "fingerprints", "hash") if k not in doc]
    if missing or doc.get("format") != PLAN_FORMAT:
        raise RunbookError(f"{path}: not a plan file of format {PLAN_FORMAT} "
                           f"(missing {', '.join(missing) or 'nothing'})")
    return doc


def verify_plan(doc: dict[str, Any], now: dict[str, str]) -> None:
    """Raise PlanMismatch naming each part that changed since the plan was made."""
    if digest(doc["fingerprints"]) != doc["hash"]:
        raise PlanMismatch("the plan file was edited after it was made (its hash does not "
                           "match its contents); make a new plan")
    changed = [k for k, v in now.items() if doc["fingerprints"].get(k) != v]
    if changed:
        raise PlanMismatch(f"the {' and the '.join(changed)} changed since the plan was made "
                           f"({doc.get('created', '?')}); review a new plan")
