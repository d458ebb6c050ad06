"""The users API through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.models import ApiToken, AuditEvent
from conveyor.server.users.sessions import SESSION_COOKIE_NAME
from tests.server.conftest import PASSWORD, add_user, sign_in


def _assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    error: dict[str, object] = body["error"]
    return error


class TestSignIn:
    def test_sets_an_http_only_same_site_lax_session_cookie(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "ada")
        response = sign_in(http, "ada")
        assert response.json()["name"] == "ada"
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith(f"{SESSION_COOKIE_NAME}=")
        attributes = {part.strip().lower() for part in set_cookie.split(";")}
        assert "httponly" in attributes
        assert "samesite=lax" in attributes
        assert "path=/" in attributes
        assert "secure" not in attributes  # plain http on 127.0.0.1

    def test_cookie_signs_the_user_in_for_later_requests(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "ada")
        sign_in(http, "ada")
        me = http.get("/api/v1/user")
        assert me.status_code == 200
        assert me.json()["name"] == "ada"

    def test_wrong_password_is_401_with_the_error_shape(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "ada")
        response = http.post("/api/v1/session", json={"name": "ada", "password": "nope"})
        _assert_error(response, 401, "invalid_credentials")
        assert SESSION_COOKIE_NAME not in response.cookies

    def test_sign_in_is_audited(self, http: httpx.Client, db_session: Session) -> None:
        add_user(db_session, "ada")
        sign_in(http, "ada")
        event = db_session.scalars(select(AuditEvent)).one()
        assert (event.action, event.actor_name, event.remote_address) == (
            "session.create",
            "ada",
            "127.0.0.1",
        )


class TestSignOut:
    def test_clears_the_cookie(self, http: httpx.Client, db_session: Session) -> None:
        add_user(db_session, "ada")
        sign_in(http, "ada")
        response = http.delete("/api/v1/session")
        assert response.status_code == 204
        assert 'conveyor_session=""' in response.headers["set-cookie"]
        _assert_error(http.get("/api/v1/user"), 401, "not_authenticated")


class TestReadMe:
    def test_without_credentials_is_401_with_the_error_shape(self, http: httpx.Client) -> None:
        response = http.get("/api/v1/user")
        _assert_error(response, 401, "not_authenticated")
        assert response.headers["www-authenticate"] == "Bearer"

    def test_unknown_bearer_token_is_401(self, http: httpx.Client) -> None:
        response = http.get("/api/v1/user", headers={"Authorization": "Bearer cvy_0123456789ab_x"})
        _assert_error(response, 401, "invalid_token")

    def test_basic_authorization_scheme_is_refused_saying_what_to_send(
        self, http: httpx.Client
    ) -> None:
        response = http.get("/api/v1/user", headers={"Authorization": "Basic YWRhOnB3"})
        error = _assert_error(response, 401, "invalid_authorization_header")
        assert "Bearer" in str(error["message"])


class TestTokens:
    def test_token_is_shown_once_hashed_in_the_database_and_works_as_bearer(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "ada")
        sign_in(http, "ada")
        created = http.post("/api/v1/user/tokens", json={"name": "laptop"})
        assert created.status_code == 201, created.text
        token = created.json()["token"]

        listed = http.get("/api/v1/user/tokens")
        assert listed.status_code == 200
        assert [entry["name"] for entry in listed.json()] == ["laptop"]
        assert token not in listed.text
        assert "token" not in listed.json()[0]

        row = db_session.scalars(select(ApiToken)).one()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()

        with httpx.Client(base_url=str(http.base_url)) as fresh:
            me = fresh.get("/api/v1/user", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
        assert me.json()["name"] == "ada"

    def test_a_read_with_a_token_records_its_last_use_and_a_write_does_too(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "ada")
        sign_in(http, "ada")
        token = http.post("/api/v1/user/tokens", json={"name": "ci"}).json()["token"]
        assert http.get("/api/v1/user/tokens").json()[0]["last_used_at"] is None
        bearer = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=str(http.base_url), headers=bearer) as client:
            assert client.get("/api/v1/user").status_code == 200
            first = http.get("/api/v1/user/tokens").json()[0]["last_used_at"]
            assert first is not None
            made = client.post("/api/v1/user/tokens", json={"name": "second"})
            assert made.status_code == 201, made.text
        # Written at most once a minute: the write within it kept the first time.
        listed = {entry["name"]: entry for entry in http.get("/api/v1/user/tokens").json()}
        assert listed["ci"]["last_used_at"] == first

    def test_deleted_token_stops_working(self, http: httpx.Client, db_session: Session) -> None:
        add_user(db_session, "ada")
        sign_in(http, "ada")
        created = http.post("/api/v1/user/tokens", json={"name": "ci"}).json()
        assert http.delete(f"/api/v1/user/tokens/{created['id']}").status_code == 204
        with httpx.Client(base_url=str(http.base_url)) as fresh:
            response = fresh.get(
                "/api/v1/user", headers={"Authorization": f"Bearer {created['token']}"}
            )
        _assert_error(response, 401, "invalid_token")

    def test_deleting_another_users_token_is_404(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "ada")
        add_user(db_session, "bob")
        sign_in(http, "bob")
        bobs = http.post("/api/v1/user/tokens", json={"name": "bob's"}).json()
        http.delete("/api/v1/session")
        sign_in(http, "ada")
        _assert_error(http.delete(f"/api/v1/user/tokens/{bobs['id']}"), 404, "api_token_not_found")

    def test_malformed_json_body_is_422_with_the_error_shape(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "ada")
        sign_in(http, "ada")
        response = http.post(
            "/api/v1/user/tokens",
            content=b'{"name": "ci",',
            headers={"content-type": "application/json"},
        )
        error = _assert_error(response, 422, "invalid_input")
        assert isinstance(error["detail"], list) and error["detail"]

    def test_unknown_scope_is_422_naming_the_field(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "ada")
        sign_in(http, "ada")
        response = http.post("/api/v1/user/tokens", json={"name": "ci", "scopes": ["root"]})
        error = _assert_error(response, 422, "invalid_input")
        assert "scopes" in str(error["message"])


class TestAdminUsers:
    def test_non_admin_listing_users_is_403_with_the_error_shape(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "ada")
        sign_in(http, "ada")
        _assert_error(http.get("/api/v1/users"), 403, "permission_denied")

    def test_admin_creates_a_user_who_can_sign_in_with_the_generated_password(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "root", is_admin=True)
        sign_in(http, "root")
        created = http.post("/api/v1/users", json={"name": "bob"})
        assert created.status_code == 201, created.text
        password = created.json()["generated_password"]
        assert password
        http.delete("/api/v1/session")
        assert sign_in(http, "bob", password).json()["is_admin"] is False

    def test_admin_lists_users(self, http: httpx.Client, db_session: Session) -> None:
        add_user(db_session, "root", is_admin=True)
        add_user(db_session, "ada")
        sign_in(http, "root")
        response = http.get("/api/v1/users")
        assert [user["name"] for user in response.json()] == ["ada", "root"]

    def test_creating_an_existing_name_is_409(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "root", is_admin=True)
        sign_in(http, "root")
        response = http.post("/api/v1/users", json={"name": "root", "password": PASSWORD})
        _assert_error(response, 409, "user_already_exists")

    def test_patch_grants_admin_and_resets_the_password(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "root", is_admin=True)
        add_user(db_session, "ada")
        sign_in(http, "root")
        response = http.patch(
            "/api/v1/users/ada", json={"is_admin": True, "password": "new password 123"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["is_admin"] is True
        http.delete("/api/v1/session")
        failed = http.post("/api/v1/session", json={"name": "ada", "password": PASSWORD})
        _assert_error(failed, 401, "invalid_credentials")
        assert sign_in(http, "ada", "new password 123").json()["is_admin"] is True

    def test_patch_of_unknown_user_is_404(self, http: httpx.Client, db_session: Session) -> None:
        add_user(db_session, "root", is_admin=True)
        sign_in(http, "root")
        error = _assert_error(
            http.patch("/api/v1/users/ghost", json={"is_admin": True}), 404, "user_not_found"
        )
        assert "ghost" in str(error["message"])

    def test_read_only_token_of_admin_cannot_create_users(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "root", is_admin=True)
        sign_in(http, "root")
        token = http.post(
            "/api/v1/user/tokens", json={"name": "reader", "scopes": ["read"]}
        ).json()["token"]
        with httpx.Client(base_url=str(http.base_url)) as fresh:
            headers = {"Authorization": f"Bearer {token}"}
            assert fresh.get("/api/v1/users", headers=headers).status_code == 200
            response = fresh.post("/api/v1/users", json={"name": "eve"}, headers=headers)
        _assert_error(response, 403, "token_scope_insufficient")
