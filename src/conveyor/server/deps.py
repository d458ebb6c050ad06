"""Dependencies of the routes, as Annotated aliases.

DbSession      one session per request; committed when the route returns, rolled
               back when it raises (before the response is sent, so a failed
               commit is an error response, not a lost write)
AppSettings    the server's Settings
RequestActor   who is asking: a user (cookie or `Authorization: Bearer`) or anonymous
CurrentActor   a signed-in actor (401 otherwise)
CurrentUser    the signed-in user's row
OptionalUser   the user's row, or None for anonymous requests
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.config import Settings
from conveyor.server.errors import NotAuthenticatedError
from conveyor.server.models.user import User
from conveyor.server.users import service as users_service
from conveyor.server.users.authorization import Actor
from conveyor.server.users.sessions import SESSION_COOKIE_NAME, SessionSigner

logger = logging.getLogger("conveyor.server")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session_signer(request: Request) -> SessionSigner:
    signer: SessionSigner = request.app.state.session_signer
    return signer


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_db_session(request: Request) -> Iterator[Session]:
    # A request that may write gets a writer session (see `create_app`); reads don't wait.
    state = request.app.state
    reading = request.method in SAFE_METHODS
    factory: sessionmaker[Session] = (
        state.read_session_factory if reading else state.session_factory
    )
    with factory() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        token_use = users_service.take_token_use(session)
        if token_use is not None and not reading:
            users_service.record_token_use(session, *token_use)
        session.commit()
    if token_use is not None and reading:
        _record_token_use_aside(state.session_factory, *token_use)


def get_writer_session(request: Request) -> Iterator[Session]:
    """A writer session whatever the method, for the few reads that may write (the
    webhook settings make the secret the first time they are shown). On SQLite a plain
    read transaction that later writes fails at once when another writer is busy;
    this one waits its turn from the start. Committed when the route returns."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        session.commit()


def _record_token_use_aside(factory: sessionmaker[Session], token_id: int, at: datetime) -> None:
    """A read's token use, in a short write transaction of its own; if the database
    is busy past its timeout the use is dropped (the next request notes it again)."""
    try:
        with factory.begin() as session:
            users_service.record_token_use(session, token_id, at)
    except OperationalError as error:
        logger.warning("the last use of API token %s was not recorded: %s", token_id, error)


AppSettings = Annotated[Settings, Depends(get_settings)]
DbSession = Annotated[Session, Depends(get_db_session, scope="function")]
WriterDbSession = Annotated[Session, Depends(get_writer_session, scope="function")]
Signer = Annotated[SessionSigner, Depends(get_session_signer)]


def resolve_actor(
    request: Request, session: DbSession, settings: AppSettings, signer: Signer
) -> Actor:
    if settings.auth_disabled:
        return users_service.development_actor(session)
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise NotAuthenticatedError(
                "the Authorization header must be 'Bearer <token>'",
                code="invalid_authorization_header",
            )
        return users_service.actor_for_token(session, credentials.strip())
    cookie = request.cookies.get(SESSION_COOKIE_NAME)
    if cookie:
        # A stale cookie makes the request anonymous rather than failing it, so public
        # pages still work after a session ends.
        actor = users_service.actor_for_session(session, signer, cookie)
        if actor is not None:
            return actor
    return Actor.anonymous(read_allowed=settings.allow_anonymous_read)


RequestActor = Annotated[Actor, Depends(resolve_actor)]


def require_signed_in(actor: RequestActor) -> Actor:
    if actor.is_anonymous:
        raise NotAuthenticatedError(
            "sign in first: POST /api/v1/session with your name and password, or send "
            "'Authorization: Bearer <token>'"
        )
    return actor


CurrentActor = Annotated[Actor, Depends(require_signed_in)]


def current_user(actor: CurrentActor, session: DbSession) -> User:
    assert actor.user_id is not None  # require_signed_in
    user = session.get(User, actor.user_id)
    if user is None:
        raise NotAuthenticatedError("the signed-in user no longer exists; sign in again")
    return user


def optional_user(actor: RequestActor, session: DbSession) -> User | None:
    return None if actor.user_id is None else session.get(User, actor.user_id)


CurrentUser = Annotated[User, Depends(current_user)]
OptionalUser = Annotated[User | None, Depends(optional_user)]


def remote_address(request: Request) -> str | None:
    return request.client.host if request.client else None
