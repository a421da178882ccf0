"""``switchboard secrets``: the key that encrypts provider connections' secrets at rest
(``SWITCHBOARD_SECRETS_KEY``): a new key, and re-encrypting every connection under the first
key after a rotation."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cli.stack.databases import check_database
from cli.stack.dev_secrets import DEV_SECRETS_KEY_FILE, SECRETS_KEY_VARIABLE


def cmd_secrets_new_key(_args: argparse.Namespace) -> int:
    """Print a fresh Fernet key."""
    from shared.connections.secrets import new_key

    print(new_key())
    return 0


def _use_dev_stack_key() -> None:
    """Without SWITCHBOARD_SECRETS_KEY, the running dev stack's key (its state directory's)."""
    from cli.main import _dev_state_dirs
    from shared.settings import get_settings

    if os.environ.get(SECRETS_KEY_VARIABLE, "").strip():
        return
    for state_dir in _dev_state_dirs():
        key_file = state_dir / DEV_SECRETS_KEY_FILE
        if key_file.exists():
            os.environ[SECRETS_KEY_VARIABLE] = key_file.read_text().strip()
            get_settings.cache_clear()
            return


def cmd_secrets_rotate(_args: argparse.Namespace) -> int:
    """Re-encrypt every provider connection under the first key of SWITCHBOARD_SECRETS_KEY
    (each in a short transaction of its own); without DATABASE_URL, the dev stack's."""
    from cli.main import use_running_dev_database
    from shared.connections import service
    from shared.connections.secrets import SecretsUnavailable, cipher
    from shared.db import transaction
    from shared.settings import get_settings

    if use_running_dev_database() is not None:
        _use_dev_stack_key()
    try:
        cipher()
    except SecretsUnavailable as exc:
        print(f"switchboard secrets rotate: {exc.items[0].msg}", file=sys.stderr)
        return 1
    check_database(get_settings().database_url)
    with transaction() as session:
        ids = service.connection_ids(session)
    rotated = 0
    for connection_id in ids:
        try:
            with transaction() as session:
                rotated += service.rotate_secret(session, connection_id)
        except SecretsUnavailable as exc:
            print(
                f"switchboard secrets rotate: {connection_id}: {exc.items[0].msg}", file=sys.stderr
            )
            return 1
    print(
        f"{rotated} provider connection(s) re-encrypted under the first key of "
        f"{SECRETS_KEY_VARIABLE}; keys after it can now be dropped",
        file=sys.stderr,
    )
    return 0


def cmd_secrets_check(_args: argparse.Namespace) -> int:
    """Whether the configured keys open every provider connection: run it with the new key
    alone before dropping the old one. 1 when one does not open (each is named)."""
    from cli.main import use_running_dev_database
    from shared.connections import service
    from shared.db import transaction
    from shared.settings import get_settings

    if use_running_dev_database() is not None:
        _use_dev_stack_key()
    check_database(get_settings().database_url)
    with transaction(snapshot=True) as session:
        unreadable = service.unreadable_connections(session)
        total = len(service.connection_ids(session))
    for connection_id, problem in unreadable:
        print(f"{connection_id}: {problem}", file=sys.stderr)
    if unreadable:
        return 1
    print(
        f"the keys of {SECRETS_KEY_VARIABLE} open all {total} provider connection(s)",
        file=sys.stderr,
    )
    return 0


def add_secrets_commands(commands: Any) -> None:
    """``secrets new-key``, ``rotate`` and ``check`` on the ``switchboard`` parser's
    subcommands."""
    secrets = commands.add_parser(
        "secrets", help="the key that encrypts provider connections (SWITCHBOARD_SECRETS_KEY)"
    )
    secrets_commands = secrets.add_subparsers(dest="secrets_command", required=True)
    new_key = secrets_commands.add_parser("new-key", help="print a fresh key")
    new_key.set_defaults(handler=cmd_secrets_new_key)
    rotate = secrets_commands.add_parser(
        "rotate",
        help="re-encrypt every connection under the first key (uses DATABASE_URL, else a "
        "running dev stack's database)",
    )
    rotate.set_defaults(handler=cmd_secrets_rotate)
    check = secrets_commands.add_parser(
        "check", help="check that the configured keys open every connection (exit 1 if not)"
    )
    check.set_defaults(handler=cmd_secrets_check)
