"""``switchboard doctor``: every problem of a going-live configuration, and exit status 1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cli.main import main
from sandbox import SandboxCarrier, SandboxConfig
from shared.settings import get_settings
from tests.support import ROOT, free_port

GOING_LIVE_ENV = {
    "SWITCHBOARD_ENV": "production",
    "SWITCHBOARD_SIGNING_SECRET": "a-long-random-signing-secret",
    "SWITCHBOARD_FLOWER_USER": "ops",
    "SWITCHBOARD_FLOWER_PASSWORD": "a-flower-password",
    "SWITCHBOARD_TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "SWITCHBOARD_TWILIO_AUTH_TOKEN": "a-twilio-auth-token",
    "SWITCHBOARD_PUBLIC_BASE_URL": "https://switchboard.example.com",
    "SWITCHBOARD_VOICE_RUNTIME_URL": "wss://voice.example.com/media",
}


def test_doctor_names_every_problem_of_the_product_defaults() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    # Nothing listens there: the database and the broker are reported too.
    env["DATABASE_URL"] = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/none"
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    doctor = subprocess.run(
        [sys.executable, "-m", "cli.main", "doctor"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert doctor.returncode == 1, doctor.stderr
    for named in (
        "SWITCHBOARD_SIGNING_SECRET is the development default",
        "SWITCHBOARD_FLOWER_USER is the development default",
        "SWITCHBOARD_FLOWER_PASSWORD is the development default",
        "SWITCHBOARD_TWILIO_ACCOUNT_SID is empty",
        "SWITCHBOARD_PUBLIC_BASE_URL is a loopback address",
        "SWITCHBOARD_VOICE_RUNTIME_URL is the development default",
        "the database at",
        "Redis at",
    ):
        assert f"problem: {named}" in doctor.stdout, doctor.stdout


@pytest.fixture
def going_live(
    monkeypatch: pytest.MonkeyPatch, service_urls: tuple[str, str]
) -> Iterator[SandboxCarrier]:
    """A going-live environment on the test's services, whose Twilio REST API is the sandbox
    carrier on loopback (``SWITCHBOARD_TWILIO_API_BASE_URL``), with an account of its own:
    the doctor's account read goes through the SDK to it, and nothing leaves the machine."""
    database_url, redis_url = service_urls
    accounts = {
        GOING_LIVE_ENV["SWITCHBOARD_TWILIO_ACCOUNT_SID"]: GOING_LIVE_ENV[
            "SWITCHBOARD_TWILIO_AUTH_TOKEN"
        ]
    }
    with SandboxCarrier(SandboxConfig(accounts=accounts)).start() as carrier:
        for name, value in {
            **GOING_LIVE_ENV,
            "SWITCHBOARD_TWILIO_API_BASE_URL": carrier.base_url,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        yield carrier
        get_settings.cache_clear()


def test_doctor_passes_a_going_live_configuration(
    going_live: SandboxCarrier, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor"]) == 0
    assert "ready to go live" in capsys.readouterr().out


def test_doctor_reports_credentials_the_provider_refuses(
    going_live: SandboxCarrier, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_TWILIO_AUTH_TOKEN", "a-revoked-token")
    get_settings.cache_clear()
    assert main(["doctor"]) == 1
    [problem] = capsys.readouterr().out.splitlines()
    assert problem.startswith("problem: Twilio did not accept the account's credentials")


def test_doctor_fails_on_one_problem(
    going_live: SandboxCarrier, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_PUBLIC_BASE_URL", "http://127.0.0.1:8000")
    get_settings.cache_clear()
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "problem: SWITCHBOARD_PUBLIC_BASE_URL is a loopback address: Twilio cannot reach it"
    ]


def test_doctor_reads_the_vobiz_account_when_one_is_set(
    going_live: SandboxCarrier, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    going_live.configure(
        SandboxConfig(accounts={**going_live.config.accounts, "MA_LIVE": "a-vobiz-auth-token"})
    )
    monkeypatch.setenv("SWITCHBOARD_VOBIZ_AUTH_ID", "MA_LIVE")
    monkeypatch.setenv("SWITCHBOARD_VOBIZ_AUTH_TOKEN", "a-vobiz-auth-token")
    monkeypatch.setenv("SWITCHBOARD_VOBIZ_API_BASE_URL", going_live.base_url + "/api")
    get_settings.cache_clear()
    assert main(["doctor"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SWITCHBOARD_VOBIZ_AUTH_TOKEN", "a-revoked-token")
    get_settings.cache_clear()
    assert main(["doctor"]) == 1
    [problem] = capsys.readouterr().out.splitlines()
    assert problem.startswith("problem: Vobiz did not accept the account's credentials")
