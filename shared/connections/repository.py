"""Every query of provider connections."""

from __future__ import annotations

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.models import PhoneNumber, ProviderConnection


def insert_connection(session: Session, row: ProviderConnection) -> ProviderConnection | None:
    """Add a connection; None when the workspace already has one of that name."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    session.refresh(row)
    return row


def get_connection(
    session: Session, workspace_id: str, connection_id: str, *, lock: str | None = None
) -> ProviderConnection | None:
    """The workspace's connection; ``lock`` ``share`` (a number about to name it) or
    ``update`` (about to delete it) locks its row, so the two never cross."""
    query = select(ProviderConnection).where(
        ProviderConnection.id == connection_id, ProviderConnection.workspace_id == workspace_id
    )
    if lock == "share":
        query = query.with_for_update(read=True)
    elif lock == "update":
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def list_connections(session: Session, workspace_id: str) -> list[ProviderConnection]:
    """The workspace's connections, oldest first."""
    return list(
        session.execute(
            select(ProviderConnection)
            .where(ProviderConnection.workspace_id == workspace_id)
            .order_by(ProviderConnection.id)
        ).scalars()
    )


def is_referenced(session: Session, workspace_id: str, connection_id: str) -> bool:
    """Whether a phone number of the workspace names the connection in its credentials_ref."""
    return bool(
        session.execute(
            select(
                exists().where(
                    PhoneNumber.workspace_id == workspace_id,
                    PhoneNumber.credentials_ref == connection_id,
                )
            )
        ).scalar()
    )


def delete_connection(session: Session, workspace_id: str, connection_id: str) -> bool:
    """Delete it; whether it existed."""
    result = session.execute(
        delete(ProviderConnection).where(
            ProviderConnection.id == connection_id,
            ProviderConnection.workspace_id == workspace_id,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def connection_by_id(session: Session, connection_id: str) -> ProviderConnection | None:
    """A connection of any workspace (the dispatcher resolving a number's credentials_ref)."""
    return session.get(ProviderConnection, connection_id)


def connections_by_account(
    session: Session, provider: str, account_id: str
) -> list[ProviderConnection]:
    """Every connection of ``provider`` with that public account id (a callback names its
    account, not its workspace)."""
    return list(
        session.execute(
            select(ProviderConnection)
            .where(
                ProviderConnection.provider == provider,
                ProviderConnection.account_id == account_id,
            )
            .order_by(ProviderConnection.id)
        ).scalars()
    )


def connection_ids(session: Session) -> list[str]:
    """Every connection's id (rotation walks them one at a time)."""
    return list(
        session.execute(select(ProviderConnection.id).order_by(ProviderConnection.id)).scalars()
    )


def connection_secrets(session: Session) -> list[tuple[str, str]]:
    """Every connection's id and encrypted secret."""
    rows = session.execute(
        select(ProviderConnection.id, ProviderConnection.secret).order_by(ProviderConnection.id)
    )
    return [(row.id, row.secret) for row in rows]


def lock_secret(session: Session, connection_id: str) -> str | None:
    """A connection's encrypted secret, its row locked until the transaction ends."""
    return session.execute(
        select(ProviderConnection.secret)
        .where(ProviderConnection.id == connection_id)
        .with_for_update()
    ).scalar_one_or_none()


def store_secret(session: Session, connection_id: str, secret: str) -> None:
    """Replace a connection's encrypted secret (same secrets, another key): ``updated_at``
    is left alone, since what the secret holds did not change."""
    session.execute(
        update(ProviderConnection)
        .where(ProviderConnection.id == connection_id)
        .values(secret=secret)
    )
