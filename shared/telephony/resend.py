"""One provider request, sent again only while the provider did not process it: the rule every
adapter's REST calls follow (a request that may have been processed is never sent twice)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from shared import metrics
from shared.errors import ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")

# The pauses before each resend of a request the provider did not process.
RETRY_PAUSES_S = (0.2, 0.5, 1.0)


class FencePassed(Exception):
    """A dial's request was not sent: its fence passed first (each adapter reads it as a
    ``ProviderError`` with ``fenced``)."""


def send_resending(
    request: Callable[[], T],
    provider_error: Callable[[Exception], ProviderError],
    pauses: tuple[float, ...] = RETRY_PAUSES_S,
    *,
    answers: frozenset[int] = frozenset(),
) -> T:
    """Run ``request``; when it fails with an error ``provider_error`` reads as not processed
    (``retryable``), pause and send it again, as many times as ``pauses`` has pauses. Every
    failure is counted in ``switchboard_provider_errors_total``; the last is raised. A resend
    that the dial's fence holds back raises the error before it: what the caller must know is
    that the provider did not process the request (an outage is counted from it). An error
    whose HTTP status is one of ``answers`` is the provider's answer to the request (a lookup's
    404: no such call there), raised at once and not counted as a failure."""
    unprocessed: ProviderError | None = None
    for pause in (*pauses, None):
        try:
            return request()
        except Exception as exc:
            error = provider_error(exc)
            if error.status in answers:
                raise error from exc
            metrics.PROVIDER_ERRORS.labels(code=metrics.provider_error_code(error)).inc()
            if error.fenced and unprocessed is not None:
                raise unprocessed from exc
            if not error.retryable or error.fenced or pause is None:
                raise error from exc
            unprocessed = error
            log.warning("provider request not processed (%s); retrying", error.message)
            time.sleep(pause)
    raise AssertionError("unreachable")
