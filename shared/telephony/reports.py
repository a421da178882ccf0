"""Provider reports as the API queues them: plain JSON in our terms, whatever the provider.

The API asks the provider's adapter to read a callback, then queues what it read here (in the
status inbox, then a ``calls.apply_statuses`` message); the worker reads it back without any
provider knowledge. A status report::

    {"kind": "status", "sid": "CA…", "status": "completed", "provider_status": "completed",
     "outcome": "answered", "duration_s": 7, "from_number": "+1…", "answered_by": "human"}

(fields that are None are left out), and a machine-detection verdict::

    {"kind": "verdict", "sid": "CA…", "answered_by": "machine_end_beep", "detection_ms": 3100}

Reports queued before the provider port were Twilio's fields as they came (no ``kind``; a
verdict had ``"event": "amd"``). They may wait in the status inbox while a deploy rolls out, so
``read_report`` still reads them, through the default adapter (registry.py). Once no inbox row
and no queued message is older than the deploy, that branch can go.
"""

from __future__ import annotations

from typing import Any

from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus, Outcome
from shared.telephony.port import DetectionVerdict

STATUS = "status"
VERDICT = "verdict"
# The marker of a verdict queued before the port.
LEGACY_VERDICT_EVENT = "amd"


def status_report(update: ProviderUpdate) -> dict[str, Any]:
    """A status update as it is queued."""
    report: dict[str, Any] = {
        "kind": STATUS,
        "sid": update.sid,
        "status": update.status.value,
        "provider_status": update.provider_status,
    }
    for name in ("duration_s", "error_code", "error_message", "from_number", "answered_by"):
        value = getattr(update, name)
        if value is not None:
            report[name] = value
    if update.outcome is not None:
        report["outcome"] = update.outcome.value
    return report


def verdict_report(verdict: DetectionVerdict) -> dict[str, Any]:
    """A machine-detection verdict as it is queued."""
    report: dict[str, Any] = {
        "kind": VERDICT,
        "sid": verdict.sid,
        "answered_by": verdict.answered_by,
    }
    if verdict.detection_ms is not None:
        report["detection_ms"] = verdict.detection_ms
    return report


def read_report(report: dict[str, Any]) -> ProviderUpdate | DetectionVerdict | None:
    """A queued report in our terms; None for a status report of the old shape whose status
    the adapter does not know."""
    kind = report.get("kind")
    if kind == STATUS:
        outcome = report.get("outcome")
        return ProviderUpdate(
            sid=report["sid"],
            status=CallStatus(report["status"]),
            provider_status=report.get("provider_status", ""),
            outcome=Outcome(outcome) if outcome else None,
            duration_s=report.get("duration_s"),
            error_code=report.get("error_code"),
            error_message=report.get("error_message"),
            from_number=report.get("from_number"),
            answered_by=report.get("answered_by"),
        )
    if kind == VERDICT:
        return DetectionVerdict(
            sid=report.get("sid") or "",
            answered_by=report.get("answered_by") or "",
            detection_ms=report.get("detection_ms"),
        )
    return _read_legacy(report)


def _read_legacy(report: dict[str, Any]) -> ProviderUpdate | DetectionVerdict | None:
    """A report queued before the provider port: Twilio's fields (the only provider then)."""
    from shared.telephony import registry

    if report.get("event") == LEGACY_VERDICT_EVENT:
        return DetectionVerdict(report.get("sid") or "", report.get("answered_by") or "")
    return registry.legacy_status_update(report)
