"""The secrets API through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.config import Settings
from conveyor.server.models import Project, Role, Secret
from conveyor.server.secrets import service as secrets_service
from conveyor.server.secrets.cipher import SecretCipher, SecretUnreadableError
from tests.server.conftest import add_user
from tests.server.projects.factories import actor_headers, add_project, assert_error, bearer

VALUE = "hunter2-very-secret-value"


def _maintainer(db_session: Session) -> dict[str, str]:
    mia = add_user(db_session, "mia")
    add_project(db_session, "demo", members={mia: Role.MAINTAINER})
    return bearer(db_session, mia)


class TestPutSecret:
    def test_value_is_stored_encrypted_and_never_returned(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        headers = _maintainer(db_session)
        response = http.put(
            "/api/v1/projects/demo/secrets/PYPI_TOKEN", headers=headers, json={"value": VALUE}
        )
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"name", "created_at", "updated_at"}
        assert VALUE not in response.text
        raw = db_session.scalars(select(Secret.value_ciphertext)).one()
        assert VALUE.encode() not in raw
        assert raw.startswith(b"gAAAAA")  # a Fernet token

    def test_put_again_replaces_the_value(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        headers = _maintainer(db_session)
        url = "/api/v1/projects/demo/secrets/TOKEN"
        first = http.put(url, headers=headers, json={"value": "one"}).json()
        second = http.put(url, headers=headers, json={"value": "two"}).json()
        assert second["updated_at"] >= first["updated_at"]
        project = db_session.scalars(select(Project)).one()
        assert secrets_service.secret_values(db_session, server_settings, project) == {
            "TOKEN": "two"
        }

    @pytest.mark.parametrize("name", ["lower", "1ABC", "A-B", "A B"])
    def test_names_must_be_environment_variable_names(
        self, http: httpx.Client, db_session: Session, name: str
    ) -> None:
        headers = _maintainer(db_session)
        response = http.put(
            f"/api/v1/projects/demo/secrets/{name}", headers=headers, json={"value": VALUE}
        )
        assert_error(response, 422, "invalid_input")

    def test_malformed_body_is_422(self, http: httpx.Client, db_session: Session) -> None:
        headers = _maintainer(db_session)
        response = http.put("/api/v1/projects/demo/secrets/TOKEN", headers=headers, json={})
        assert_error(response, 422, "invalid_input")

    def test_unknown_project_is_404(self, http: httpx.Client, db_session: Session) -> None:
        headers = bearer(db_session, add_user(db_session, "root", is_admin=True))
        response = http.put("/api/v1/projects/nope/secrets/A", headers=headers, json={"value": "x"})
        assert_error(response, 404, "project_not_found")

    def test_only_maintainers_and_admins(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "demo")
        headers = actor_headers(db_session, project)
        statuses = {
            actor: http.put(
                "/api/v1/projects/demo/secrets/TOKEN", headers=h, json={"value": VALUE}
            ).status_code
            for actor, h in headers.items()
        }
        assert statuses == {
            "anonymous": 401,
            "viewer": 403,
            "developer": 403,
            "maintainer": 200,
            "admin": 200,
            "outsider": 403,
        }


class TestListSecrets:
    def test_lists_names_and_times_only(self, http: httpx.Client, db_session: Session) -> None:
        headers = _maintainer(db_session)
        for name in ("B_TOKEN", "A_TOKEN"):
            http.put(
                f"/api/v1/projects/demo/secrets/{name}", headers=headers, json={"value": VALUE}
            )
        response = http.get("/api/v1/projects/demo/secrets", headers=headers)
        assert response.status_code == 200
        assert [s["name"] for s in response.json()] == ["A_TOKEN", "B_TOKEN"]
        assert VALUE not in response.text

    def test_developers_cannot_list(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "demo")
        headers = actor_headers(db_session, project)
        response = http.get("/api/v1/projects/demo/secrets", headers=headers["developer"])
        assert_error(response, 403, "permission_denied")


class TestDeleteSecret:
    def test_deletes_and_then_404(self, http: httpx.Client, db_session: Session) -> None:
        headers = _maintainer(db_session)
        url = "/api/v1/projects/demo/secrets/TOKEN"
        http.put(url, headers=headers, json={"value": VALUE})
        assert http.delete(url, headers=headers).status_code == 204
        assert db_session.scalars(select(Secret)).all() == []
        assert_error(http.delete(url, headers=headers), 404, "secret_not_found")


class TestSecretValues:
    def test_decrypts_every_secret_of_the_project_only(
        self, db_session: Session, server_settings: Settings
    ) -> None:
        cipher = SecretCipher(server_settings.session_secret_key())
        demo = add_project(db_session, "demo")
        other = add_project(db_session, "other")
        db_session.add_all(
            [
                Secret(project_id=demo.id, name="A", value_ciphertext=cipher.encrypt("alpha")),
                Secret(project_id=demo.id, name="B", value_ciphertext=cipher.encrypt("beta")),
                Secret(project_id=other.id, name="C", value_ciphertext=cipher.encrypt("gamma")),
            ]
        )
        db_session.commit()
        assert secrets_service.secret_values(db_session, server_settings, demo) == {
            "A": "alpha",
            "B": "beta",
        }

    def test_a_changed_server_key_is_a_clear_error(
        self, db_session: Session, server_settings: Settings
    ) -> None:
        demo = add_project(db_session, "demo")
        stale = SecretCipher("an older server key").encrypt("alpha")
        db_session.add(Secret(project_id=demo.id, name="OLD", value_ciphertext=stale))
        db_session.commit()
        with pytest.raises(SecretUnreadableError, match="set the secret again"):
            secrets_service.secret_values(db_session, server_settings, demo)
