"""Durable intake of provider status reports.

A callback is acknowledged only once its report is committed to the status inbox; the report
then goes to the status queue in a ``calls.apply_statuses`` message with its inbox id, and the
transaction that applies it deletes its row. A report whose message was lost (a publish that
failed after the commit, Redis restarted empty) stays in the inbox, and the tick publishes it
again. Applying a report twice is harmless: every transition is guarded by the state it leaves.

Reports are provider-neutral (``shared/telephony/reports.py``): nothing here knows a provider.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import groupby

from sqlalchemy.orm import Session

from shared import messaging, metrics
from shared.db import after_commit
from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.transitions import MachineVerdict, apply_provider_reports
from shared.repositories import status_inbox as status_inbox_repo
from shared.repositories.status_inbox import InboxReport, UnappliedReport
from shared.settings import get_settings
from shared.telephony.reports import read_report

log = logging.getLogger(__name__)

# The arguments of one ``calls.apply_statuses`` message: its reports and their inbox ids.
ApplyStatusesArgs = tuple[list[InboxReport], list[int]]


def store_reports(reports: Sequence[InboxReport]) -> list[int]:
    """Commit reports to the inbox, in one statement of their own; their ids."""
    inbox_ids = status_inbox_repo.add_reports(reports)
    metrics.STATUS_CALLBACKS.inc(len(inbox_ids))
    return inbox_ids


def publish_reports(reports: Sequence[InboxReport], inbox_ids: Sequence[int]) -> None:
    """Send stored reports to the status queue, in one message."""
    messaging.publish(messaging.TASK_APPLY_STATUSES, [list(reports), list(inbox_ids)])


def read_reports(
    reports: Sequence[InboxReport],
) -> tuple[list[tuple[str, ProviderUpdate]], list[MachineVerdict]]:
    """The queued reports in our terms: status updates (call id, update) and machine-detection
    verdicts; a report of a status we do not know (only the old, provider-shaped reports can
    hold one) is logged and left out."""
    updates: list[tuple[str, ProviderUpdate]] = []
    verdicts: list[MachineVerdict] = []
    for call_id, report in reports:
        read = read_report(report)
        if isinstance(read, ProviderUpdate):
            updates.append((call_id, read))
        elif read is not None:
            verdicts.append(MachineVerdict(call_id, read.sid, read.answered_by))
        else:
            log.info("ignoring provider status %r for %s", report.get("status"), call_id)
    return updates, verdicts


def apply_reports(
    session: Session,
    updates: list[tuple[str, ProviderUpdate]],
    inbox_ids: Sequence[int],
    verdicts: Sequence[MachineVerdict] = (),
) -> int:
    """Apply provider reports (status reports, and answering machine detection ``verdicts``)
    and take them out of the inbox, in the session's transaction; how many moved a call."""
    applied = apply_provider_reports(session, updates, verdicts) if updates or verdicts else 0
    status_inbox_repo.delete_reports(session, inbox_ids)
    return applied


def redrive_status_inbox(session: Session, older_than_s: float, lost: bool = False) -> int:
    """Publish again, after commit, the inbox reports last published more than
    ``older_than_s`` ago (at most the tick's batch limit); how many.

    Only while the status queue is empty, unless the messages are known ``lost`` (the broker
    restarted empty): until then a report's message may simply be waiting its turn. Each row
    is stamped when it is published, so neither a concurrent tick (rows are claimed with SKIP
    LOCKED) nor the next ones publish it again within ``older_than_s``.
    """
    settings = get_settings()
    if not lost and messaging.queue_length(messaging.QUEUE_STATUS) > 0:
        return 0
    claimed = status_inbox_repo.claim_unapplied(session, older_than_s, settings.tick_batch_limit)
    if not claimed:
        return 0
    messages = redrive_messages(claimed, settings.status_batch_max_reports)
    log.warning(
        "publishing again %d status reports not applied after %.0f s, in %d messages",
        len(claimed),
        older_than_s,
        len(messages),
    )

    def publish() -> None:
        messaging.publish_many(
            messaging.TASK_APPLY_STATUSES, [[reports, ids] for reports, ids in messages]
        )

    after_commit(session, publish)
    return len(claimed)


def redrive_messages(
    claimed: Sequence[UnappliedReport], max_reports: int
) -> list[ApplyStatusesArgs]:
    """The messages that carry re-driven reports: at most ``max_reports`` each, and half as
    many for each time its reports were re-driven before, so that a report whose message keeps
    failing ends up alone and no longer holds others back."""
    messages: list[ApplyStatusesArgs] = []
    by_redrives = sorted(claimed, key=lambda report: (report.earlier_redrives, report.id))
    for earlier, reports in groupby(by_redrives, key=lambda report: report.earlier_redrives):
        size = max(1, max_reports >> min(earlier, 30))
        group = list(reports)
        for start in range(0, len(group), size):
            chunk = group[start : start + size]
            messages.append(
                ([(report.call_id, report.report) for report in chunk], [r.id for r in chunk])
            )
    return messages
