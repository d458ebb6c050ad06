"""Every query of the secrets package."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.models.secret import Secret


class SecretRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def list_of_project(self, project_id: int) -> Sequence[Secret]:
        return self.session.scalars(
            select(Secret).where(Secret.project_id == project_id).order_by(Secret.name)
        ).all()

    def get(self, project_id: int, name: str) -> Secret | None:
        return self.session.scalar(
            select(Secret).where(Secret.project_id == project_id, Secret.name == name)
        )

    def add(self, secret: Secret) -> Secret:
        self.session.add(secret)
        self.session.flush()
        return secret

    def delete(self, secret: Secret) -> None:
        self.session.delete(secret)
        self.session.flush()
