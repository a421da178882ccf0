"""The ``switchboard`` command: API keys, migrations, the local dev stack, the demo, and batch
commands (submit a CSV, watch, list, export) that talk to the HTTP API."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cli.batches import CommandFailed, add_batch_commands
from cli.demo import DEMO_PROVIDERS, cmd_demo
from cli.run import cmd_run
from cli.secrets import add_secrets_commands
from cli.stack.databases import check_database
from cli.stack.embedded import running_dev_database_url
from cli.stack.net import PROJECT_ROOT, ServiceUnavailable, redact_url

# Where the database is, as Settings reads it (the bare name wins).
DATABASE_URL_VARIABLES = ("DATABASE_URL", "SWITCHBOARD_DATABASE_URL")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# --------------------------------------------------------------------------------------------
# api-key, migrate


def _dev_state_dirs() -> list[Path]:
    # Where `switchboard run` keeps its state: its --state-dir default, from here and from the
    # project's root (what `make run` uses).
    configured = os.environ.get("SWITCHBOARD_STATE_DIR", "").strip()
    if configured:
        return [Path(configured)]
    return [Path(".devstack"), PROJECT_ROOT / ".devstack"]


def use_running_dev_database() -> str | None:
    """With neither DATABASE_URL nor SWITCHBOARD_DATABASE_URL set, point this process's
    settings at the database of a running dev stack, if there is one; its URL, or None."""
    from shared import db
    from shared.settings import get_settings

    if any(os.environ.get(name, "").strip() for name in DATABASE_URL_VARIABLES):
        return None
    for state_dir in _dev_state_dirs():
        url = running_dev_database_url(state_dir)
        if url is not None:
            os.environ["DATABASE_URL"] = url
            get_settings.cache_clear()
            db.reset_engine()
            return url
    return None


def cmd_api_key_create(args: argparse.Namespace) -> int:
    """Create an API key for a workspace (created if missing) and print it once; without
    DATABASE_URL, in the database of the dev stack running here, if one is."""
    from shared.db import transaction
    from shared.settings import get_settings
    from shared.workspaces.service import create_api_key

    dev_database = use_running_dev_database()
    if dev_database is not None:
        print(f"Using the running dev stack's database, {dev_database}", file=sys.stderr)
    check_database(get_settings().database_url)
    with transaction() as session:
        key = create_api_key(session, args.workspace)
    print(key)
    print(
        f"API key for workspace '{args.workspace}'; it is stored hashed and cannot be shown again.",
        file=sys.stderr,
    )
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    """Bring the database at DATABASE_URL to the newest migration."""
    from shared.db import migrate
    from shared.settings import get_settings

    url = get_settings().database_url
    check_database(url)
    migrate(url)
    print(f"{redact_url(url)} is at the newest migration", file=sys.stderr)
    return 0


def cmd_doctor(_args: argparse.Namespace) -> int:
    """Check a going-live configuration and print every problem; 1 when there is one."""
    from cli.stack.services import check_redis
    from shared.errors import ProviderError
    from shared.settings import get_settings
    from shared.telephony import vobiz
    from shared.telephony.twilio import TwilioProvider, account_for

    settings = get_settings()
    problems = settings.going_live_problems()
    for check, url in ((check_database, settings.database_url), (check_redis, settings.redis_url)):
        try:
            check(url)
        except ServiceUnavailable as exc:
            problems.append(str(exc))
    if settings.twilio_account_sid.strip() and settings.twilio_auth_token.strip():
        try:
            TwilioProvider(account_for(settings), settings).check_account()
        except ProviderError as exc:
            problems.append(f"Twilio did not accept the account's credentials: {exc.message}")
    if settings.vobiz_auth_id.strip():
        # One read of the account's live calls through the SDK, at SWITCHBOARD_VOBIZ_API_BASE_URL.
        try:
            vobiz.VobizProvider(vobiz.account_for(settings), settings).check_account()
        except ProviderError as exc:
            problems.append(f"Vobiz did not accept the account's credentials: {exc.message}")
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        return 1
    print("ready to go live: settings, database, broker and Twilio account check out")
    # Twilio queues calls above the account's calls per second rather than refusing them, so
    # a pace above what the account bought only delays calls at Twilio (past calling hours).
    print(
        f"pacing: at most {settings.calls_per_second_per_account:g} calls per second for the "
        "Twilio account (SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT; Twilio's default is 1: set "
        "it to the calls per second the account has bought)"
    )
    return 0


# --------------------------------------------------------------------------------------------
# argument parsing


def build_parser() -> argparse.ArgumentParser:
    """The ``switchboard`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Switchboard: API keys, migrations, the local dev stack, the demo, and "
        "batches from CSV files (submit, watch, batches, export) over the HTTP API.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api_key = commands.add_parser(
        "api-key",
        help="manage API keys (uses DATABASE_URL, else a running dev stack's database)",
    )
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True)
    create = api_key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--workspace", required=True, help="workspace name (created if missing)")
    create.set_defaults(handler=cmd_api_key_create)

    migrate = commands.add_parser("migrate", help="upgrade the database at DATABASE_URL to head")
    migrate.set_defaults(handler=cmd_migrate)

    doctor = commands.add_parser(
        "doctor",
        help="check the settings, database, broker and Twilio account for going live",
    )
    doctor.set_defaults(handler=cmd_doctor)

    run = commands.add_parser(
        "run",
        help="run API, workers (dial, webhooks), beat, Flower and the sandbox in the foreground",
        description="Uses DATABASE_URL / REDIS_URL when set, else embedded PostgreSQL and Redis.",
    )
    run.add_argument("--api-port", type=int, default=_env_int("SWITCHBOARD_API_PORT", 8000))
    run.add_argument("--flower-port", type=int, default=_env_int("SWITCHBOARD_FLOWER_PORT", 5555))
    run.add_argument("--sandbox-port", type=int, default=_env_int("SWITCHBOARD_SANDBOX_PORT", 8055))
    run.add_argument(
        "--state-dir",
        default=os.environ.get("SWITCHBOARD_STATE_DIR", ".devstack"),
        help="where embedded servers keep their data and beat its schedule",
    )
    run.add_argument(
        "--sandbox-config",
        default=os.environ.get("SWITCHBOARD_SANDBOX_CONFIG") or None,
        help="JSON file with the sandbox carrier's outcome rules",
    )
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser(
        "demo", help="run a sample batch of calls through a private stack, then stop it"
    )
    demo.add_argument("--recipients", type=int, default=200)
    demo.add_argument(
        "--provider",
        choices=DEMO_PROVIDERS,
        default="twilio",
        help="the caller number's provider (the sandbox carrier plays it)",
    )
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the batch")
    demo.add_argument(
        "--state-dir", default=None, help="keep state here (default: a temporary directory)"
    )
    demo.set_defaults(handler=cmd_demo)

    add_batch_commands(commands)
    add_secrets_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``switchboard`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (ServiceUnavailable, CommandFailed) as exc:
        print(f"switchboard {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
