"""Switchboard's one settings object, read from the environment (prefix ``SWITCHBOARD_``)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import UnsafeSettings

SANDBOX_ACCOUNT_SID = "AC00000000000000000000000000000000"

# The one PostgreSQL driver Switchboard installs and uses (shared/db.py runs statements through
# psycopg2 directly). SQLAlchemy reads a bare postgresql:// as psycopg 3, which is not installed.
DATABASE_DRIVER = "postgresql+psycopg2"
_DRIVERLESS_SCHEMES = ("postgresql", "postgres")
SANDBOX_AUTH_TOKEN = "sandbox-auth-token"
# The sandbox carrier's Vobiz account (its auth id and auth token).
SANDBOX_VOBIZ_AUTH_ID = "MA00000000SANDBOX000"
SANDBOX_VOBIZ_AUTH_TOKEN = "sandbox-vobiz-auth-token"


def is_rabbitmq_url(url: str) -> bool:
    """Whether a broker URL names RabbitMQ (AMQP) rather than Redis."""
    return urlsplit(url).scheme in ("amqp", "amqps", "pyamqp")


class Settings(BaseSettings):
    """Every tunable of the API, the workers and beat; defaults suit the embedded dev stack."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    # "production" (the default): the API, the workers, beat and Flower refuse to start while a
    # secret is a development default or empty, or while calls would go to the sandbox carrier
    # (unsafe_for_production). "dev": the embedded stack's defaults are accepted; `make run`,
    # `make demo` and the tests set it.
    env: Literal["production", "dev"] = "production"

    database_url: str = Field(
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/switchboard",
        validation_alias=AliasChoices("DATABASE_URL", "SWITCHBOARD_DATABASE_URL"),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "SWITCHBOARD_REDIS_URL"),
    )
    # Every Redis key Switchboard writes (queues, unacked messages) starts with this prefix, so
    # several deployments or test runs can share one Redis without seeing each other's messages.
    redis_key_prefix: str = "switchboard:"
    # Celery's broker: Redis (the default: REDIS_URL's server) or RabbitMQ
    # (amqp://user:password@host:5672/vhost). Redis is used either way for pacing, live-call
    # slots and webhook admission. Celery lets CELERY_BROKER_URL override any configuration,
    # so it is read first here too: the depth reader, the readiness check and the workers
    # always name the same broker.
    broker_url: str = Field(
        default="",
        validation_alias=AliasChoices("CELERY_BROKER_URL", "SWITCHBOARD_BROKER_URL"),
    )
    # RabbitMQ only: deliveries of one message before it goes to the dead-letter queue instead
    # (a message whose worker keeps dying on it; a task that fails is acknowledged, not
    # redelivered).
    broker_delivery_limit: int = Field(default=10, ge=1)

    # The address providers use to reach our callback and TwiML endpoints.
    public_base_url: str = "http://127.0.0.1:8000"
    # Signs the per-call agent-config URLs handed to the voice-agent runtime.
    signing_secret: str = "dev-signing-secret-change-me"
    # Where the voice-agent runtime accepts the media stream of a call.
    voice_runtime_url: str = "wss://127.0.0.1:8765/media"

    # Twilio credentials; when the account SID is empty the sandbox carrier is used.
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    # Where Twilio's REST API is reached with those credentials: empty for Twilio itself, or a
    # Twilio edge's or an egress proxy's base URL (https://api.dublin.ie1.twilio.com, ...).
    twilio_api_base_url: str = ""
    sandbox_url: str = "http://127.0.0.1:8055"
    # Vobiz credentials (the auth id and auth token of the console); when the auth id is empty
    # the sandbox carrier's Vobiz API is used.
    vobiz_auth_id: str = ""
    vobiz_auth_token: str = ""
    # Where Vobiz's REST API is reached: empty for Vobiz itself (https://api.vobiz.ai/api), or
    # an egress proxy's base URL, in the same form.
    vobiz_api_base_url: str = ""
    # Whether Vobiz calls ask for answering machine detection when their agent stays on the
    # line whatever answers (connect_agent): it tells a voicemail from a person.
    vobiz_machine_detection: bool = True
    # The call-progress events Twilio posts to the status callback, space-separated. Each one
    # costs a request, a worker's transition and a row version per call. The default asks for
    # what moves a call through the states Switchboard acts on: answered (in_progress) and
    # the end. A call then shows `dispatched` from the provider's acceptance until it is
    # answered or ends. Add "initiated" to see when the provider starts dialing it, worth it
    # when the provider may hold calls in its own queue (an account whose calls-per-second
    # at the provider is below the pacing configured here); it costs about a sixth of the
    # CPU a call takes. "ringing" is acknowledged without queueing work: a ringing call was
    # initiated.
    twilio_status_events: str = "answered completed"
    # Twilio's answering machine detection ("Enable", "DetectMessageEnd", or "" for none): it
    # is what tells a voicemail from a person (AnsweredBy); Twilio charges for it per call.
    twilio_machine_detection: str = "Enable"
    # Status callbacks arriving within this window of the first one (at most this many) are
    # queued as one message and applied in one worker transaction.
    status_batch_window_s: float = 0.05
    status_batch_max_reports: int = 100
    # Every status report is written to the status inbox before its callback is acknowledged,
    # and deleted with the transaction that applies it. A report still there this long after
    # it was last published (its message was lost, e.g. Redis restarted empty) is published
    # again by the tick, when the status queue is empty.
    status_inbox_redrive_after_s: float = 30.0
    # Twilio's connection overrides, appended to the status callback URL as its fragment
    # ("" for none): ct/rt connect and read timeouts per try, tt the time for all tries (ms),
    # rc how many times a failed callback is sent again, rp which failures are (4xx, 5xx, ct,
    # rt or all). Without them Twilio resends only a callback it could not connect for, once,
    # so one whose request failed (e.g. while the API restarts) would be lost.
    twilio_callback_overrides: str = "ct=2000&rt=5000&tt=15000&rc=5&rp=all"
    # Socket timeout of every provider request (connect, and each read).
    provider_timeout_s: float = 10.0
    # Fernet key(s) that encrypt provider connections' secrets at rest, comma-separated: the
    # first encrypts, all decrypt (rotation: README, Provider connections). No default: without
    # it connections cannot be stored or read; the dev stack and the tests set their own.
    secrets_key: str = ""
    # How long a process keeps a provider connection it read (its account and secrets).
    connection_cache_ttl_s: float = 30.0

    db_pool_size: int = 20
    db_max_overflow: int = 10
    # The statements run for every call are prepared once per database connection, so that
    # PostgreSQL plans them once per connection rather than on every run. Turn off behind a
    # pooler that shares server connections between transactions (PgBouncer's transaction
    # mode), where a connection's prepared statements are not its own.
    db_prepared_statements: bool = True

    # Celery. The visibility timeout must exceed the longest time a message may stay unacked.
    visibility_timeout_s: int = 3600
    worker_prefetch_multiplier: int = 1
    # Beat: how often the tick starts due batches, re-drives lost messages and reaps stale calls.
    tick_interval_s: float = 5.0
    # A pending call whose dial message was published longer ago than this, while the dial
    # queue is empty, is published again (its message was lost, e.g. Redis restarted empty).
    redrive_after_s: float = 60.0
    # A call claimed for dialing longer ago than this is reconciled with the provider: the
    # worker that claimed it died between claiming and recording the provider's answer.
    dial_stale_after_s: float = 90.0
    # The longest call expected, from answer to hang-up: the provider is asked to end a call
    # at this length (Twilio's TimeLimit), and a live-call slot's lease is sized from it (with
    # the longest ring and the grace below), so a slot whose call's end is never heard of is
    # freed at the latest then, even when the provider cannot be asked.
    max_call_duration_s: int = 3600
    # A call the provider accepted and that has not been answered is looked up at the provider
    # when no callback has come for its ring timeout plus this long (its callbacks were lost,
    # e.g. while the API restarted); an answered call, when none has come for
    # live_call_check_s. A lookup that finds the call still live renews its slot's lease, and
    # the call is looked up again reconcile_interval_s later at the soonest.
    callback_grace_s: float = 30.0
    live_call_check_s: float = 120.0
    reconcile_interval_s: float = 60.0
    # How many stale rows one tick handles per kind, so a tick stays short.
    tick_batch_limit: int = 2000

    # Webhooks: a failed delivery is tried again after base * 2^(attempts - 1) seconds, at most
    # max_delay apart, until the window since the event closes; then it is marked failed.
    webhook_retry_base_s: float = 5.0
    webhook_retry_max_delay_s: float = 600.0
    webhook_retry_window_s: float = 24 * 3600.0
    webhook_timeout_s: float = 10.0
    # Webhooks to loopback, private, link-local or reserved addresses are refused unless this
    # is set (the dev stack and the tests, whose receivers run on loopback, set it).
    webhook_allow_private_destinations: bool = False
    # How long a delivery may take to resolve its receiver's name and connect (webhook_timeout_s
    # bounds each read after that).
    webhook_connect_timeout_s: float = 3.0
    # Deliveries in flight at once, across every webhooks worker: per endpoint, and per
    # workspace (so one workspace's backlog or slow receivers never hold every thread).
    webhook_max_in_flight_per_endpoint: int = 2
    webhook_max_in_flight_per_workspace: int = 4
    # An endpoint that gives no answer (no name, no connection, nothing within the timeouts)
    # this many times in a row is left alone for a cool-down (30 s, doubling to 10 min while
    # it keeps failing); its deliveries wait for it without an attempt.
    webhook_breaker_failures: int = 5

    # Applies to every batch, in each recipient's local time; a batch may narrow it, and widen
    # it only with override_default_window.
    default_calling_window: str = "08:00-21:00"

    # Pacing, enforced across all workers through Redis, with bursts of up to the given size.
    # Per provider account: Twilio's default is 1 call per second per account (calls above it
    # are queued at Twilio, not refused); an account that bought more calls per second in
    # Twilio's console sets this to what it bought. Per caller number: none unless set (unset
    # or 0); a carrier or a number's own limit may ask for one.
    calls_per_second_per_account: float = Field(default=1.0, gt=0)
    calls_per_second_per_number: float | None = Field(default=None, ge=0)
    pacing_burst: int = 1
    # A dial whose pacing slot is further away than this goes back to pending, due then, instead
    # of holding a worker thread.
    max_pacing_sleep_s: float = 5.0

    # A dial the provider did not process (unreachable, a 5xx, a 429) goes back to pending and
    # is tried again after a delay that grows with the batch's run of such dials: the time
    # since its first one, at least retry_base_s and at most retry_max_s. Once a batch has had
    # no dial accepted for pause_after_s since that first one, it is paused, paused_reason
    # "provider_unreachable", until resumed.
    provider_unreachable_retry_base_s: float = Field(default=15.0, gt=0)
    provider_unreachable_retry_max_s: float = Field(default=120.0, gt=0)
    provider_unreachable_pause_after_s: float = Field(default=300.0, gt=0)

    # Live calls at once per workspace (batches may set a lower target_concurrency_limit).
    max_live_calls_per_workspace: int = 200
    # Live calls at once per provider account (a connection, or the environment's account, which
    # every workspace on it shares): 0, the default, caps none, so no workspace waits for
    # another's calls unless the account's own limit is set here.
    max_live_calls_per_account: int = Field(default=0, ge=0)

    # At most this many accepted dials to one number per rolling 7 days, per workspace, across
    # batches (Regulation F's presumption); over the cap a call waits.
    max_dials_per_number_per_week: int = 7

    idempotency_ttl_s: int = 24 * 3600
    max_recipients_per_batch: int = 10_000
    # Dial messages of a batch are pushed to the broker in pipelined chunks of this many, one
    # round trip each; call-bulk's batchSize overrides it per batch.
    fan_out_chunk_size: int = 1000
    # Calls published together are grouped into `calls.dial_many` messages of up to this many
    # (each message costs the worker's consumer, one thread for the whole pool, several Redis
    # round trips), but never so many that fewer than dial_messages_min messages carry them: a
    # small batch still spreads over every worker thread.
    max_calls_per_dial_message: int = 20
    dial_messages_min: int = 64
    default_ringing_timeout_s: int = 60

    flower_user: str = "admin"
    flower_password: str = "switchboard"

    # Prometheus. With PROMETHEUS_MULTIPROC_DIR set, workers write their metrics there and the
    # API's /metrics serves them; without it, a worker given a port serves its own metrics
    # (0: none). One port per worker process, so this suits the threads pool.
    worker_metrics_port: int = 0
    worker_metrics_host: str = "127.0.0.1"

    @field_validator("database_url")
    @classmethod
    def _with_driver(cls, value: str) -> str:
        return with_database_driver(value)

    @field_validator("calls_per_second_per_number", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER= (empty) unsets the per-number limit.
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def per_number_pacing(self) -> float | None:
        """Calls per second per caller number, or None when numbers are not paced."""
        return self.calls_per_second_per_number or None

    @model_validator(mode="after")
    def _broker_defaults_to_redis(self) -> Settings:
        if not self.broker_url.strip():
            self.broker_url = self.redis_url
        return self

    @property
    def broker_is_rabbitmq(self) -> bool:
        """Whether Celery's broker is RabbitMQ (an AMQP URL) rather than Redis."""
        return is_rabbitmq_url(self.broker_url)

    def unsafe_for_production(self, *, flower: bool = False) -> list[str]:
        """What makes these settings unfit for production, one problem per setting, each
        naming its environment variable; with ``flower``, Flower's credentials too."""
        secrets = ["signing_secret", *(["flower_user", "flower_password"] if flower else [])]
        problems = []
        for name in secrets:
            value = str(getattr(self, name)).strip()
            if not value:
                problems.append(f"{_variable(name)} is empty")
            elif value == Settings.model_fields[name].default:
                problems.append(f"{_variable(name)} is the development default")
        # Production dials Twilio; without an account the sandbox carrier would take the calls.
        if not self.twilio_account_sid.strip():
            problems.append(
                f"{_variable('twilio_account_sid')} is empty (calls would go to the sandbox "
                "carrier)"
            )
        elif not self.twilio_auth_token.strip():
            problems.append(f"{_variable('twilio_auth_token')} is empty")
        return problems

    def going_live_problems(self) -> list[str]:
        """What these settings lack for going live (``switchboard doctor``): production mode,
        the startup rule with Flower's credentials, an address Twilio can reach the API at,
        and the voice runtime's address."""
        problems = []
        if self.env != "production":
            problems.append(
                f"{_variable('env')} is {self.env} (development secrets would be accepted)"
            )
        problems += self.unsafe_for_production(flower=True)
        public_host = urlsplit(self.public_base_url).hostname
        if not public_host:
            problems.append(f"{_variable('public_base_url')} is not a URL")
        elif _is_loopback(public_host):
            problems.append(
                f"{_variable('public_base_url')} is a loopback address: Twilio cannot reach it"
            )
        voice_runtime = self.voice_runtime_url.strip()
        if voice_runtime == Settings.model_fields["voice_runtime_url"].default:
            problems.append(f"{_variable('voice_runtime_url')} is the development default")
        elif not urlsplit(voice_runtime).hostname:
            problems.append(f"{_variable('voice_runtime_url')} is not a URL")
        return problems


def with_database_driver(url: str) -> str:
    """``url`` with Switchboard's driver named: ``postgresql://`` and ``postgres://`` (what
    hosting platforms hand out) become ``postgresql+psycopg2://``; any other URL is kept as is."""
    scheme, separator, rest = url.strip().partition("://")
    if separator and scheme.lower() in _DRIVERLESS_SCHEMES:
        return f"{DATABASE_DRIVER}://{rest}"
    return url


def _variable(setting: str) -> str:
    return f"SWITCHBOARD_{setting.upper()}"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_unsafe_start(settings: Settings, *, flower: bool = False) -> None:
    """Raise ``UnsafeSettings`` when a process is asked to start in production with settings
    only fit for development (``Settings.unsafe_for_production``); in dev, accept anything."""
    if settings.env == "dev":
        return
    problems = settings.unsafe_for_production(flower=flower)
    if problems:
        raise UnsafeSettings(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
