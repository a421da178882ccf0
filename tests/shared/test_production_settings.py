"""Production mode: the rule that tells development settings from production ones, and every
entry point (API, workers, beat, Flower) refusing to start on them, as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from shared.errors import UnsafeSettings
from shared.settings import Settings, refuse_unsafe_start
from tests.support import ROOT, free_port, wait_for

LIVE = {
    "signing_secret": "a-long-random-signing-secret",
    "twilio_account_sid": "AC" + "1" * 32,
    "twilio_auth_token": "a-twilio-auth-token",
    "flower_user": "ops",
    "flower_password": "a-flower-password",
}


def settings(**overrides: Any) -> Settings:
    return Settings(**{**LIVE, **overrides})


def test_live_settings_are_fit_for_production() -> None:
    assert settings().unsafe_for_production(flower=True) == []
    refuse_unsafe_start(settings(), flower=True)


def test_production_is_the_default_mode() -> None:
    assert Settings.model_fields["env"].default == "production"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValidationError):
        settings(env="staging")


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (
            {"signing_secret": Settings.model_fields["signing_secret"].default},
            "SWITCHBOARD_SIGNING_SECRET is the development default",
        ),
        ({"signing_secret": ""}, "SWITCHBOARD_SIGNING_SECRET is empty"),
        ({"signing_secret": "  "}, "SWITCHBOARD_SIGNING_SECRET is empty"),
        (
            {"twilio_account_sid": ""},
            "SWITCHBOARD_TWILIO_ACCOUNT_SID is empty (calls would go to the sandbox carrier)",
        ),
        ({"twilio_auth_token": ""}, "SWITCHBOARD_TWILIO_AUTH_TOKEN is empty"),
    ],
)
def test_each_unsafe_setting_is_named(overrides: dict[str, str], problem: str) -> None:
    assert settings(**overrides).unsafe_for_production() == [problem]
    with pytest.raises(UnsafeSettings) as refused:
        refuse_unsafe_start(settings(**overrides))
    assert problem in str(refused.value)


def test_flower_credentials_matter_only_to_flower() -> None:
    defaults = settings(
        flower_user=Settings.model_fields["flower_user"].default,
        flower_password="",
    )
    assert defaults.unsafe_for_production() == []
    assert defaults.unsafe_for_production(flower=True) == [
        "SWITCHBOARD_FLOWER_USER is the development default",
        "SWITCHBOARD_FLOWER_PASSWORD is empty",
    ]


def test_every_problem_is_named_at_once() -> None:
    defaults = {name: Settings.model_fields[name].default for name in LIVE}
    problems = Settings(env="production", **defaults).unsafe_for_production(flower=True)
    assert [problem.split()[0] for problem in problems] == [
        "SWITCHBOARD_SIGNING_SECRET",
        "SWITCHBOARD_FLOWER_USER",
        "SWITCHBOARD_FLOWER_PASSWORD",
        "SWITCHBOARD_TWILIO_ACCOUNT_SID",
    ]


def test_development_mode_accepts_the_development_defaults() -> None:
    dev = Settings(
        env="dev",
        signing_secret=Settings.model_fields["signing_secret"].default,
        twilio_account_sid="",
        flower_user="",
    )
    refuse_unsafe_start(dev, flower=True)
    with pytest.raises(UnsafeSettings):
        refuse_unsafe_start(dev.model_copy(update={"env": "production"}), flower=True)


# --- the entry points, as real processes ----------------------------------------------------


def production_env(service_urls: tuple[str, str], **settings_env: str) -> dict[str, str]:
    """Our environment without any SWITCHBOARD_ setting (so the product's defaults apply),
    pointed at the services, in production mode, plus ``settings_env``."""
    database_url, redis_url = service_urls
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        # Queues of their own, should a worker start: nobody else's messages are consumed.
        SWITCHBOARD_REDIS_KEY_PREFIX=f"sbtest_safety_{uuid.uuid4().hex[:8]}:",
        SWITCHBOARD_ENV="production",
        PYTHONUNBUFFERED="1",
    )
    env.update(settings_env)
    return env


LIVE_ENV = {f"SWITCHBOARD_{name.upper()}": value for name, value in LIVE.items()}
UVICORN = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
CELERY = [sys.executable, "-m", "celery", "-A", "worker.app"]
ENTRY_POINTS = {
    "api": [*UVICORN, "--port", "0"],
    "worker": [*CELERY, "worker", "-Q", "dial", "-P", "threads", "-c", "1", "--loglevel", "INFO"],
    "beat": [*CELERY, "beat", "-s", os.devnull],
    "flower": [*CELERY, "flower", "--address=127.0.0.1", "--port=0"],
}


def run_until_exit(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_every_entry_point_refuses_an_empty_signing_secret(
    entry_point: str, service_urls: tuple[str, str]
) -> None:
    env = production_env(service_urls, **{**LIVE_ENV, "SWITCHBOARD_SIGNING_SECRET": ""})
    refused = run_until_exit(ENTRY_POINTS[entry_point], env)
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "SWITCHBOARD_SIGNING_SECRET is empty" in output, output[-2000:]


def test_processes_on_the_product_defaults_name_every_setting(
    service_urls: tuple[str, str],
) -> None:
    for entry_point in ("api", "flower"):
        refused = run_until_exit(ENTRY_POINTS[entry_point], production_env(service_urls))
        assert refused.returncode != 0
        output = refused.stdout + refused.stderr
        for name in ("SIGNING_SECRET", "TWILIO_ACCOUNT_SID"):
            assert f"SWITCHBOARD_{name} is" in output, (entry_point, output[-2000:])
        flower_named = "SWITCHBOARD_FLOWER_PASSWORD is the development default" in output
        assert flower_named == (entry_point == "flower"), output[-2000:]


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.timeout(120)
def test_the_api_and_a_worker_start_on_production_settings(
    service_urls: tuple[str, str], started: list[subprocess.Popen[str]]
) -> None:
    # The workers never need Flower's credentials: the product's defaults stay here.
    env = production_env(
        service_urls,
        **{k: v for k, v in LIVE_ENV.items() if "FLOWER" not in k},
    )
    port = free_port()
    api = subprocess.Popen(
        [*UVICORN, "--port", str(port)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, text=True
    )
    started.append(api)
    worker = subprocess.Popen(
        ENTRY_POINTS["worker"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started.append(worker)

    def api_answers() -> bool:
        assert api.poll() is None, "the API exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(api_answers, 30, what="the API to answer /healthz")

    assert worker.stdout is not None
    lines: list[str] = []
    for line in worker.stdout:  # Celery logs "<hostname> ready." once it consumes
        lines.append(line)
        if " ready." in line:
            break
    assert any(" ready." in line for line in lines), "".join(lines[-40:])


# --- going live (switchboard doctor) ---------------------------------------------------------

GOING_LIVE = {
    **LIVE,
    "env": "production",
    "public_base_url": "https://switchboard.example.com",
    "voice_runtime_url": "wss://voice.example.com/media",
}


def test_a_going_live_configuration_has_no_problems() -> None:
    assert Settings(**GOING_LIVE).going_live_problems() == []


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"env": "dev"}, "SWITCHBOARD_ENV is dev (development secrets would be accepted)"),
        ({"flower_password": ""}, "SWITCHBOARD_FLOWER_PASSWORD is empty"),
        (
            {"public_base_url": "http://127.0.0.1:8000"},
            "SWITCHBOARD_PUBLIC_BASE_URL is a loopback address: Twilio cannot reach it",
        ),
        (
            {"public_base_url": "http://localhost:8000"},
            "SWITCHBOARD_PUBLIC_BASE_URL is a loopback address: Twilio cannot reach it",
        ),
        ({"public_base_url": ""}, "SWITCHBOARD_PUBLIC_BASE_URL is not a URL"),
        (
            {"voice_runtime_url": Settings.model_fields["voice_runtime_url"].default},
            "SWITCHBOARD_VOICE_RUNTIME_URL is the development default",
        ),
        ({"voice_runtime_url": ""}, "SWITCHBOARD_VOICE_RUNTIME_URL is not a URL"),
    ],
)
def test_each_going_live_problem_is_named(overrides: dict[str, str], problem: str) -> None:
    assert Settings(**{**GOING_LIVE, **overrides}).going_live_problems() == [problem]
