from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from conveyor.server.db import dialect
from conveyor.server.errors import (
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    PermissionDeniedError,
)
from conveyor.server.models import ApiToken, Project, Role, TokenScope
from conveyor.server.users import service
from conveyor.server.users.authorization import Action, authorize
from conveyor.server.users.passwords import verify_password
from conveyor.server.users.sessions import SessionSigner
from tests.server.conftest import PASSWORD, add_user


class TestEnsureFirstAdmin:
    def test_empty_database_gets_an_admin_with_a_working_one_time_password(
        self, db_session: Session
    ) -> None:
        password = service.ensure_first_admin(db_session)
        db_session.commit()
        assert password is not None and len(password) >= 16
        admin = service.get_user_by_name(db_session, "admin")
        assert admin.is_admin
        assert admin.password_hash is not None and password not in admin.password_hash
        assert service.authenticate_password(db_session, "admin", password).id == admin.id

    def test_nothing_happens_once_users_exist(self, db_session: Session) -> None:
        add_user(db_session, "ada")
        assert service.ensure_first_admin(db_session) is None
        assert [user.name for user in service.list_users(db_session)] == ["ada"]

    def test_a_second_server_starting_at_once_makes_no_second_admin(
        self, db_session: Session
    ) -> None:
        # Another server's start, between our count and our insert, in write
        # transactions as servers prepare the database: on PostgreSQL our insert waits
        # on the unique name until the other commits, on SQLite our transaction waits
        # to begin; either way ours then makes no admin and shows no password.
        bind = db_session.get_bind()
        writing = dialect.write_transaction_options(bind.engine)
        other = Session(bind=bind)
        other.connection(execution_options=writing)
        assert service.ensure_first_admin(other) is not None  # flushed, not committed
        result: dict[str, object] = {}

        def our_start() -> None:
            with Session(bind=bind) as ours:
                ours.connection(execution_options=writing)
                result["password"] = service.ensure_first_admin(ours)
                ours.commit()

        thread = threading.Thread(target=our_start)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive()  # waiting on the other start's uncommitted admin
        other.commit()
        other.close()
        thread.join(timeout=10)
        assert result == {"password": None}
        assert [user.name for user in service.list_users(db_session)] == ["admin"]


class TestCreateUser:
    def test_password_is_stored_as_argon2_hash(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        assert user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        assert verify_password(user.password_hash, PASSWORD)

    def test_second_user_with_same_name_is_a_conflict(self, db_session: Session) -> None:
        add_user(db_session, "ada")
        with pytest.raises(ConflictError, match="already exists"):
            service.create_user(db_session, "ada", PASSWORD)

    @pytest.mark.parametrize("name", ["", "-dash-first", "has space", "x" * 65, "a/b"])
    def test_unusable_names_are_refused(self, db_session: Session, name: str) -> None:
        with pytest.raises(InvalidInputError, match="user name"):
            service.create_user(db_session, name, PASSWORD)

    def test_short_password_is_refused(self, db_session: Session) -> None:
        with pytest.raises(InvalidInputError, match="at least 8"):
            service.create_user(db_session, "ada", "short")


class TestAuthenticatePassword:
    def test_wrong_password_and_unknown_name_give_the_same_error(self, db_session: Session) -> None:
        add_user(db_session, "ada")
        with pytest.raises(NotAuthenticatedError) as wrong_password:
            service.authenticate_password(db_session, "ada", "not the password")
        with pytest.raises(NotAuthenticatedError) as unknown_name:
            service.authenticate_password(db_session, "nobody", PASSWORD)
        assert wrong_password.value.message == unknown_name.value.message

    def test_deactivated_user_cannot_sign_in(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        service.update_user(user, is_active=False)
        with pytest.raises(NotAuthenticatedError):
            service.authenticate_password(db_session, "ada", PASSWORD)

    def test_sign_in_records_the_time(self, db_session: Session) -> None:
        add_user(db_session, "ada")
        user = service.authenticate_password(db_session, "ada", PASSWORD)
        assert user.last_login_at is not None
        assert user.last_login_at <= datetime.now(UTC)


class TestApiTokens:
    def test_token_is_stored_only_as_its_sha256(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        created = service.create_api_token(db_session, user, "ci")
        db_session.commit()
        row = db_session.execute(text("SELECT * FROM api_tokens")).mappings().one()
        assert created.plaintext not in {str(value) for value in row.values()}
        assert row["token_hash"] == hashlib.sha256(created.plaintext.encode()).hexdigest()
        assert created.plaintext.startswith(f"cvy_{row['prefix']}_")

    def test_token_authenticates_its_user_with_its_scopes(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        created = service.create_api_token(db_session, user, "reader", scopes=[TokenScope.READ])
        actor = service.actor_for_token(db_session, created.plaintext)
        assert (actor.user_id, actor.scopes) == (user.id, frozenset({TokenScope.READ}))
        # The use is noted for the caller to write (see deps.get_db_session), once.
        use = service.take_token_use(db_session)
        assert use is not None and use[0] == created.token.id
        assert service.take_token_use(db_session) is None
        service.record_token_use(db_session, *use)
        db_session.refresh(created.token)
        assert created.token.last_used_at is not None

    def test_token_with_a_changed_secret_is_refused(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        created = service.create_api_token(db_session, user, "ci")
        tampered = created.plaintext[:-4] + (
            "AAAA" if not created.plaintext.endswith("AAAA") else "BBBB"
        )
        with pytest.raises(NotAuthenticatedError) as raised:
            service.actor_for_token(db_session, tampered)
        assert raised.value.code == "invalid_token"

    def test_expired_token_is_refused_saying_so(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        created = service.create_api_token(db_session, user, "old", expires_in=timedelta(days=1))
        created.token.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        db_session.flush()
        with pytest.raises(NotAuthenticatedError) as raised:
            service.actor_for_token(db_session, created.plaintext)
        assert raised.value.code == "token_expired"

    def test_deleted_token_no_longer_authenticates(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        created = service.create_api_token(db_session, user, "ci")
        service.delete_api_token(db_session, user, created.token.id)
        assert db_session.scalars(select(ApiToken)).all() == []
        with pytest.raises(NotAuthenticatedError):
            service.actor_for_token(db_session, created.plaintext)

    def test_token_without_scopes_is_refused(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        with pytest.raises(InvalidInputError, match="at least one scope"):
            service.create_api_token(db_session, user, "none", scopes=[])


class TestSessions:
    def test_cookie_names_its_user(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        signer = SessionSigner("k" * 40)
        actor = service.actor_for_session(
            db_session, signer, signer.sign(user.id, user.password_hash)
        )
        assert actor is not None and actor.user_id == user.id

    def test_password_change_ends_existing_sessions(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        signer = SessionSigner("k" * 40)
        cookie = signer.sign(user.id, user.password_hash)
        service.set_password(user, "a brand new password")
        assert service.actor_for_session(db_session, signer, cookie) is None

    def test_cookie_signed_with_another_key_is_ignored(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        forged = SessionSigner("x" * 40).sign(user.id, user.password_hash)
        assert service.actor_for_session(db_session, SessionSigner("k" * 40), forged) is None


class TestMemberships:
    def test_role_granted_in_a_project_is_what_authorize_sees(self, db_session: Session) -> None:
        user = add_user(db_session, "ada")
        project = Project(name="app", git_url="file:///git/app")
        db_session.add(project)
        db_session.flush()
        service.set_membership(db_session, user, project, Role.VIEWER)
        actor = service.actor_for_user(db_session, user)
        authorize(actor, project, Action.READ)
        with pytest.raises(PermissionDeniedError):
            authorize(actor, project, Action.TRIGGER)
        service.set_membership(db_session, user, project, Role.DEVELOPER)
        authorize(service.actor_for_user(db_session, user), project, Action.TRIGGER)
