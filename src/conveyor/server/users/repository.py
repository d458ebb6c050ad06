"""Every query of the users package."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.server.models.api_token import ApiToken
from conveyor.server.models.membership import Membership, Role
from conveyor.server.models.user import User


class UserRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, user_id: int) -> User | None:
        return self.session.get(User, user_id)

    def get_by_name(self, name: str) -> User | None:
        return self.session.scalar(select(User).where(User.name == name))

    def list_all(self) -> Sequence[User]:
        return self.session.scalars(select(User).order_by(User.name)).all()

    def count(self) -> int:
        return self.session.scalar(select(func.count()).select_from(User)) or 0

    def first_admin(self) -> User | None:
        return self.session.scalar(
            select(User).where(User.is_admin.is_(True)).order_by(User.id).limit(1)
        )

    def add(self, user: User) -> User:
        self.session.add(user)
        self.session.flush()
        return user


class ApiTokenRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get_by_prefix(self, prefix: str) -> ApiToken | None:
        return self.session.scalar(select(ApiToken).where(ApiToken.prefix == prefix))

    def get_of_user(self, user_id: int, token_id: int) -> ApiToken | None:
        return self.session.scalar(
            select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user_id)
        )

    def list_of_user(self, user_id: int) -> Sequence[ApiToken]:
        return self.session.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
        ).all()

    def add(self, token: ApiToken) -> ApiToken:
        self.session.add(token)
        self.session.flush()
        return token

    def delete(self, token: ApiToken) -> None:
        self.session.delete(token)
        self.session.flush()


class MembershipRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def roles_of_user(self, user_id: int) -> dict[int, Role]:
        rows = self.session.execute(
            select(Membership.project_id, Membership.role).where(Membership.user_id == user_id)
        )
        return {project_id: role for project_id, role in rows}

    def get(self, user_id: int, project_id: int) -> Membership | None:
        return self.session.scalar(
            select(Membership).where(
                Membership.user_id == user_id, Membership.project_id == project_id
            )
        )

    def add(self, membership: Membership) -> Membership:
        self.session.add(membership)
        self.session.flush()
        return membership
