"""JSON API of sessions, the current user, their tokens, and (for admins) all users."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.orm import Session

from conveyor.server.audit import service as audit
from conveyor.server.config import Settings
from conveyor.server.deps import (
    AppSettings,
    CurrentActor,
    CurrentUser,
    DbSession,
    Signer,
    remote_address,
)
from conveyor.server.models.user import User
from conveyor.server.users import passwords
from conveyor.server.users import service as users_service
from conveyor.server.users.authorization import require_admin
from conveyor.server.users.schemas import (
    SignIn,
    TokenCreate,
    TokenCreated,
    TokenRead,
    UserCreate,
    UserCreated,
    UserRead,
    UserUpdate,
)
from conveyor.server.users.sessions import SESSION_COOKIE_NAME, SessionSigner


def start_session(
    request: Request,
    response: Response,
    session: Session,
    settings: Settings,
    signer: SessionSigner,
    user: User,
) -> None:
    """Sign `user` in on `response` (the HttpOnly, SameSite session cookie) and record
    it; the JSON API and the sign-in page both end a good sign-in here."""
    response.set_cookie(
        SESSION_COOKIE_NAME,
        signer.sign(user.id, user.password_hash),
        max_age=signer.max_age_seconds,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )
    audit.record(
        session,
        actor_id=user.id,
        actor_name=user.name,
        action="session.create",
        target_type="user",
        target_id=user.id,
        remote_address=remote_address(request),
    )


router = APIRouter(prefix="/api/v1", tags=["users"])


@router.post("/session", response_model=UserRead)
def sign_in(
    body: SignIn,
    request: Request,
    response: Response,
    session: DbSession,
    settings: AppSettings,
    signer: Signer,
) -> UserRead:
    user = users_service.authenticate_password(session, body.name, body.password)
    start_session(request, response, session, settings, signer, user)
    return UserRead.model_validate(user)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
def sign_out(settings: AppSettings) -> Response:
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        SESSION_COOKIE_NAME,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )
    return response


@router.get("/user", response_model=UserRead)
def read_me(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)


@router.post("/user/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(
    body: TokenCreate, request: Request, user: CurrentUser, session: DbSession
) -> TokenCreated:
    created = users_service.create_api_token(
        session,
        user,
        body.name,
        scopes=body.scopes,
        expires_in=timedelta(days=body.expires_in_days) if body.expires_in_days else None,
    )
    audit.record(
        session,
        actor_id=user.id,
        actor_name=user.name,
        action="token.create",
        target_type="api_token",
        target_id=created.token.id,
        remote_address=remote_address(request),
        detail={"name": created.token.name, "scopes": created.token.scopes},
    )
    return TokenCreated(
        **TokenRead.model_validate(created.token).model_dump(), token=created.plaintext
    )


@router.get("/user/tokens", response_model=list[TokenRead])
def list_tokens(user: CurrentUser, session: DbSession) -> list[TokenRead]:
    return [
        TokenRead.model_validate(token) for token in users_service.list_api_tokens(session, user)
    ]


@router.delete("/user/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(
    token_id: int, request: Request, user: CurrentUser, session: DbSession
) -> Response:
    token = users_service.delete_api_token(session, user, token_id)
    audit.record(
        session,
        actor_id=user.id,
        actor_name=user.name,
        action="token.delete",
        target_type="api_token",
        target_id=token_id,
        remote_address=remote_address(request),
        detail={"name": token.name},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users", response_model=list[UserRead])
def list_users(actor: CurrentActor, session: DbSession) -> list[UserRead]:
    require_admin(actor, writing=False)
    return [UserRead.model_validate(user) for user in users_service.list_users(session)]


@router.post("/users", response_model=UserCreated, status_code=status.HTTP_201_CREATED)
def create_user(
    body: UserCreate, request: Request, actor: CurrentActor, session: DbSession
) -> UserCreated:
    require_admin(actor, writing=True)
    generated = passwords.generate_password() if body.password is None else None
    user = users_service.create_user(
        session,
        body.name,
        body.password if body.password is not None else generated,
        is_admin=body.is_admin,
        display_name=body.display_name,
        email=body.email,
    )
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action="user.create",
        target_type="user",
        target_id=user.id,
        remote_address=remote_address(request),
        detail={"name": user.name, "is_admin": user.is_admin},
    )
    return UserCreated(**UserRead.model_validate(user).model_dump(), generated_password=generated)


@router.patch("/users/{name}", response_model=UserRead)
def update_user(
    name: str, body: UserUpdate, request: Request, actor: CurrentActor, session: DbSession
) -> UserRead:
    require_admin(actor, writing=True)
    user = users_service.get_user_by_name(session, name)
    users_service.update_user(
        user,
        password=body.password,
        is_admin=body.is_admin,
        is_active=body.is_active,
        display_name=body.display_name,
    )
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action="user.update",
        target_type="user",
        target_id=user.id,
        remote_address=remote_address(request),
        detail=body.model_dump(exclude_none=True, exclude={"password"})
        | ({"password_reset": True} if body.password is not None else {}),
    )
    return UserRead.model_validate(user)
