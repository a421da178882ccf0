"""How the sandbox resends a failed callback: Twilio's defaults, or its URL's fragment."""

from __future__ import annotations

import pytest

from sandbox.config import FAILURES, CallbackPolicy


def test_without_a_fragment_twilio_defaults_resend_only_a_failed_connection_once():
    url, policy = CallbackPolicy.of_url("https://api.example.com/v1/status/call_1?x=1")
    assert url == "https://api.example.com/v1/status/call_1?x=1"
    assert policy == CallbackPolicy(
        connect_timeout_ms=5000,
        read_timeout_ms=15000,
        total_timeout_ms=15000,
        retries=1,
        retry_on=frozenset({"ct"}),
    )
    assert policy.resends("ct", 1, 0.0) == 0.5
    assert policy.resends("ct", 2, 1.0) is None  # one resend only
    for failure in ("rt", "4xx", "5xx"):
        assert policy.resends(failure, 1, 0.0) is None


def test_the_fragment_is_stripped_and_read_as_connection_overrides():
    url, policy = CallbackPolicy.of_url(
        "https://api.example.com/v1/status/call_1#ct=2000&rt=5000&tt=12000&rc=5&rp=all"
    )
    assert url == "https://api.example.com/v1/status/call_1"
    assert policy == CallbackPolicy(2000, 5000, 12000, 5, FAILURES)


@pytest.mark.parametrize(
    ("rp", "retried"),
    [
        ("all", {"ct", "rt", "4xx", "5xx"}),
        ("5xx", {"5xx"}),
        ("4xx,5xx", {"4xx", "5xx"}),
        ("CT, RT", {"ct", "rt"}),
        ("nonsense", {"ct"}),  # unknown: Twilio's default
    ],
)
def test_the_retry_policy_names_the_failures_resent(rp: str, retried: set[str]):
    policy = CallbackPolicy.from_fragment(f"rc=2&rp={rp}")
    assert {f for f in FAILURES if policy.resends(f, 1, 0.0) is not None} == retried


def test_values_are_held_to_twilios_ranges_and_malformed_ones_keep_the_default():
    policy = CallbackPolicy.from_fragment("ct=1&rt=99999&tt=50&rc=9&e=ashburn&sni=y")
    assert policy == CallbackPolicy(100, 15000, 100, 5, frozenset({"ct"}))
    assert CallbackPolicy.from_fragment("ct=abc&rc=-&rp=") == CallbackPolicy()
    assert CallbackPolicy.from_fragment("rc=0&rp=all").resends("5xx", 1, 0.0) is None


def test_pauses_grow_and_never_run_past_the_total_time():
    policy = CallbackPolicy.from_fragment("tt=15000&rc=5&rp=all")
    elapsed, pauses = 0.0, []
    for resend in range(1, 10):
        pause = policy.resends("5xx", resend, elapsed)
        if pause is None:
            break
        pauses.append(pause)
        elapsed += pause
    # 0.5, 1, 2, 4, then what is left of the 15 s but the last try's half second.
    assert pauses == [0.5, 1.0, 2.0, 4.0, 7.0]
    short = CallbackPolicy.from_fragment("tt=2000&rc=5&rp=all")
    assert short.resends("5xx", 1, 0.0) == 0.5
    assert short.resends("5xx", 2, 0.5) == 1.0
    assert short.resends("5xx", 3, 1.5) == 0.0  # a last try right away, half a second left
    assert short.resends("5xx", 4, 1.6) is None
