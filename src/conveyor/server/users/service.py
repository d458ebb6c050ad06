"""Users, tokens, sessions and memberships. Functions flush; the caller commits."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.server.db.base import utcnow
from conveyor.server.errors import (
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
)
from conveyor.server.models.api_token import ApiToken, TokenScope
from conveyor.server.models.membership import Membership, Role
from conveyor.server.models.project import Project
from conveyor.server.models.user import User
from conveyor.server.users import passwords, tokens
from conveyor.server.users.authorization import ALL_SCOPES, Actor
from conveyor.server.users.repository import (
    ApiTokenRepository,
    MembershipRepository,
    UserRepository,
)
from conveyor.server.users.sessions import SessionSigner, password_fingerprint

FIRST_ADMIN_NAME = "admin"
USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD_LENGTH = 8


class UserNotFoundError(NotFoundError):
    code = "user_not_found"


class UserAlreadyExistsError(ConflictError):
    code = "user_already_exists"


class InvalidCredentialsError(NotAuthenticatedError):
    code = "invalid_credentials"


class ApiTokenNotFoundError(NotFoundError):
    code = "api_token_not_found"


def check_user_name(name: str) -> None:
    if not USER_NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"user name {name!r} is not allowed: use 1 to 64 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit",
            detail={"field": "name"},
        )


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInputError(
            f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters",
            detail={"field": "password"},
        )


def get_user_by_name(session: Session, name: str) -> User:
    user = UserRepository(session).get_by_name(name)
    if user is None:
        raise UserNotFoundError(
            f"no user named {name!r}; `conveyor user list` shows the users",
            detail={"name": name},
        )
    return user


def list_users(session: Session) -> Sequence[User]:
    return UserRepository(session).list_all()


def create_user(
    session: Session,
    name: str,
    password: str | None,
    *,
    is_admin: bool = False,
    display_name: str = "",
    email: str | None = None,
) -> User:
    """Create a local user; `password=None` makes an account that cannot sign in with
    a password until one is set."""
    check_user_name(name)
    if password is not None:
        check_password(password)
    users = UserRepository(session)
    if users.get_by_name(name) is not None:
        raise UserAlreadyExistsError(
            f"a user named {name!r} already exists; pick another name or change that "
            "user with PATCH /api/v1/users/{name}",
            detail={"name": name},
        )
    return users.add(
        User(
            name=name,
            display_name=display_name,
            email=email,
            password_hash=passwords.hash_password(password) if password is not None else None,
            is_admin=is_admin,
        )
    )


def set_password(user: User, password: str) -> None:
    check_password(password)
    user.password_hash = passwords.hash_password(password)


def set_admin(user: User, is_admin: bool) -> None:
    user.is_admin = is_admin


def update_user(
    user: User,
    *,
    password: str | None = None,
    is_admin: bool | None = None,
    is_active: bool | None = None,
    display_name: str | None = None,
) -> None:
    """Change the given fields; None leaves a field as it is."""
    if password is not None:
        set_password(user, password)
    if is_admin is not None:
        set_admin(user, is_admin)
    if is_active is not None:
        user.is_active = is_active
    if display_name is not None:
        user.display_name = display_name


def ensure_first_admin(session: Session) -> str | None:
    """On a database without users, create `admin` with a random password and return
    that password (to be shown once); return None when users exist already."""
    if UserRepository(session).count() > 0:
        return None
    password = passwords.generate_password()
    try:
        with session.begin_nested():
            create_user(
                session, FIRST_ADMIN_NAME, password, is_admin=True, display_name="Administrator"
            )
    except IntegrityError:
        return None  # another server starting on the same database made it first
    return password


def authenticate_password(session: Session, name: str, password: str) -> User:
    """The active user with this name and password; InvalidCredentialsError otherwise
    (without saying which part was wrong)."""
    user = UserRepository(session).get_by_name(name)
    matches = passwords.verify_password(user.password_hash if user else None, password)
    if user is None or not matches or not user.is_active:
        raise InvalidCredentialsError("wrong user name or password")
    assert user.password_hash is not None  # verify_password never matches None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    user.last_login_at = utcnow()
    return user


def actor_for_user(
    session: Session,
    user: User,
    *,
    scopes: Iterable[TokenScope] = ALL_SCOPES,
) -> Actor:
    return Actor(
        user_id=user.id,
        name=user.name,
        is_admin=user.is_admin,
        project_roles=MembershipRepository(session).roles_of_user(user.id),
        scopes=frozenset(scopes),
    )


def actor_for_session(session: Session, signer: SessionSigner, cookie: str) -> Actor | None:
    """The actor of a session cookie; None when the cookie is invalid, expired, of a
    deactivated user, or made before the user's password changed."""
    claims = signer.read(cookie)
    if claims is None:
        return None
    user = UserRepository(session).get(claims.user_id)
    if user is None or not user.is_active:
        return None
    if password_fingerprint(user.password_hash) != claims.password_fingerprint:
        return None
    return actor_for_user(session, user)


def actor_for_token(session: Session, plaintext: str) -> Actor:
    """The actor of a bearer token; NotAuthenticatedError when it is not valid."""
    prefix = tokens.prefix_of(plaintext)
    token = ApiTokenRepository(session).get_by_prefix(prefix) if prefix else None
    if token is None or not tokens.token_matches(plaintext, token.token_hash):
        raise InvalidCredentialsError(
            "the bearer token is not valid; create one with POST /api/v1/user/tokens "
            "or `conveyor token create`",
            code="invalid_token",
        )
    now = utcnow()
    if token.expires_at is not None and token.expires_at <= now:
        raise InvalidCredentialsError(
            f"the API token {token.name!r} expired at {token.expires_at.isoformat()}; "
            "create a new one",
            code="token_expired",
        )
    user = UserRepository(session).get(token.user_id)
    if user is None or not user.is_active:
        raise InvalidCredentialsError("the API token's user is deactivated", code="invalid_token")
    # Noted at most once a minute, and not written here: see `take_token_use`.
    if token.last_used_at is None or now - token.last_used_at > TOKEN_USE_RESOLUTION:
        session.info[_PENDING_TOKEN_USE] = (token.id, now)
    return actor_for_user(session, user, scopes=(TokenScope(scope) for scope in token.scopes))


TOKEN_USE_RESOLUTION = timedelta(minutes=1)
_PENDING_TOKEN_USE = "conveyor.pending_token_use"  # noqa: S105  (a session.info key)


def take_token_use(session: Session) -> tuple[int, datetime] | None:
    """The token use `actor_for_token` noted in this session (token id, time), once.

    A token's last use is bookkeeping that a read must not fail for: written by the
    session that asked, on SQLite a read transaction that turns into a write fails
    ("database is locked") whenever another writer committed meanwhile. The caller
    writes it with `record_token_use`: in its own write transaction after a read, in
    the same one before a write commits."""
    pending: tuple[int, datetime] | None = session.info.pop(_PENDING_TOKEN_USE, None)
    return pending


def record_token_use(session: Session, token_id: int, at: datetime) -> None:
    session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id)
        .where(or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < at))
        .values(last_used_at=at)
    )


def development_actor(session: Session) -> Actor:
    """Auth-disabled mode: everyone is the first admin (created if need be)."""
    admin = UserRepository(session).first_admin()
    if admin is None:
        ensure_first_admin(session)
        admin = UserRepository(session).first_admin()
        assert admin is not None
    return actor_for_user(session, admin)


@dataclass(frozen=True)
class CreatedToken:
    token: ApiToken
    plaintext: str
    """The only time the token is seen in clear."""


def create_api_token(
    session: Session,
    user: User,
    name: str,
    *,
    scopes: Iterable[TokenScope] = ALL_SCOPES,
    expires_in: timedelta | None = None,
) -> CreatedToken:
    scope_values = sorted({TokenScope(scope).value for scope in scopes})
    if not scope_values:
        raise InvalidInputError(
            "an API token needs at least one scope: 'read', 'write' or both",
            detail={"field": "scopes"},
        )
    if not name.strip():
        raise InvalidInputError("an API token needs a name", detail={"field": "name"})
    new = tokens.generate_token()
    token = ApiTokenRepository(session).add(
        ApiToken(
            user_id=user.id,
            name=name.strip(),
            prefix=new.prefix,
            token_hash=new.token_hash,
            scopes=scope_values,
            expires_at=utcnow() + expires_in if expires_in is not None else None,
        )
    )
    return CreatedToken(token=token, plaintext=new.plaintext)


def list_api_tokens(session: Session, user: User) -> Sequence[ApiToken]:
    return ApiTokenRepository(session).list_of_user(user.id)


def delete_api_token(session: Session, user: User, token_id: int) -> ApiToken:
    repository = ApiTokenRepository(session)
    token = repository.get_of_user(user.id, token_id)
    if token is None:
        raise ApiTokenNotFoundError(
            f"user {user.name!r} has no API token with id {token_id}; "
            "GET /api/v1/user/tokens lists them",
            detail={"token_id": token_id},
        )
    repository.delete(token)
    return token


def set_membership(session: Session, user: User, project: Project, role: Role) -> Membership:
    """Give `user` `role` in `project`, replacing any role they had there."""
    repository = MembershipRepository(session)
    membership = repository.get(user.id, project.id)
    if membership is None:
        return repository.add(Membership(user_id=user.id, project_id=project.id, role=role))
    membership.role = role
    return membership
