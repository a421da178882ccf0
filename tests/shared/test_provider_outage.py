"""The backoff and the bound for dials a provider did not process."""

from __future__ import annotations

import pytest

from shared.provider_outage import UnreachableVerdict, unreachable_verdict
from shared.settings import Settings

BOUNDS = {"base_s": 15.0, "cap_s": 120.0, "pause_after_s": 300.0}


def test_the_first_failure_of_a_run_is_retried_after_the_base_delay() -> None:
    assert unreachable_verdict(0.0, **BOUNDS) == UnreachableVerdict(pause=False, retry_in_s=15.0)


def test_retries_space_out_exponentially_up_to_the_cap() -> None:
    # Each retry waits as long as the run has lasted: the run doubles at every failure.
    elapsed, delays = 0.0, []
    while True:
        verdict = unreachable_verdict(elapsed, **BOUNDS)
        if verdict.pause:
            break
        delays.append(verdict.retry_in_s)
        elapsed += verdict.retry_in_s
    assert delays == [15.0, 15.0, 30.0, 60.0, 120.0, 60.0]
    assert elapsed == 300.0


def test_no_retry_is_due_after_the_bound() -> None:
    verdict = unreachable_verdict(250.0, **BOUNDS)
    assert verdict == UnreachableVerdict(pause=False, retry_in_s=50.0)


@pytest.mark.parametrize("elapsed", [300.0, 301.0, 10_000.0])
def test_a_failure_at_or_after_the_bound_pauses(elapsed: float) -> None:
    assert unreachable_verdict(elapsed, **BOUNDS).pause


def test_a_clock_behind_the_first_failure_counts_as_the_start_of_the_run() -> None:
    assert unreachable_verdict(-2.0, **BOUNDS) == UnreachableVerdict(pause=False, retry_in_s=15.0)


def test_defaults_retry_from_15_s_and_pause_after_five_minutes() -> None:
    settings = Settings()
    assert settings.provider_unreachable_retry_base_s == 15.0
    assert settings.provider_unreachable_retry_max_s == 120.0
    assert settings.provider_unreachable_pause_after_s == 300.0
