"""Project secrets. Maintainers set and delete them and see their names; only job
specs ever get the values (`secret_values`). Functions flush; the caller commits."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy.orm import Session

from conveyor.server.config import Settings
from conveyor.server.db.base import utcnow
from conveyor.server.errors import InvalidInputError, NotFoundError
from conveyor.server.models.project import Project
from conveyor.server.models.secret import Secret
from conveyor.server.projects import service as projects_service
from conveyor.server.secrets.cipher import SecretCipher
from conveyor.server.secrets.repository import SecretRepository
from conveyor.server.users.authorization import Action, Actor

SECRET_NAME_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]{0,199}$")


class SecretNotFoundError(NotFoundError):
    code = "secret_not_found"


def _cipher(settings: Settings) -> SecretCipher:
    return SecretCipher(settings.session_secret_key())


def check_secret_name(name: str) -> None:
    if not SECRET_NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"secret name {name!r} is not allowed: secrets become environment variables, so "
            "use capital letters, digits and '_', not starting with a digit (e.g. PYPI_TOKEN)",
            detail={"field": "name"},
        )


def list_secrets(session: Session, actor: Actor, project_name: str) -> Sequence[Secret]:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    return SecretRepository(session).list_of_project(project.id)


def put_secret(
    session: Session, settings: Settings, actor: Actor, project_name: str, name: str, value: str
) -> Secret:
    """Create or replace the secret `name`; only its ciphertext is stored."""
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    check_secret_name(name)
    ciphertext = _cipher(settings).encrypt(value)
    secrets = SecretRepository(session)
    secret = secrets.get(project.id, name)
    if secret is None:
        return secrets.add(Secret(project_id=project.id, name=name, value_ciphertext=ciphertext))
    secret.value_ciphertext = ciphertext
    secret.updated_at = utcnow()
    session.flush()
    return secret


def delete_secret(session: Session, actor: Actor, project_name: str, name: str) -> Secret:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    secrets = SecretRepository(session)
    secret = secrets.get(project.id, name)
    if secret is None:
        raise SecretNotFoundError(
            f"project {project_name!r} has no secret named {name!r}; "
            f"GET /api/v1/projects/{project_name}/secrets lists them",
            detail={"project": project_name, "secret": name},
        )
    secrets.delete(secret)
    return secret


def secret_values(session: Session, settings: Settings, project: Project) -> dict[str, str]:
    """Every secret of `project`, decrypted: for job specs (and log masking) only.

    Raises `SecretUnreadableError` when the server's secret key changed since a value
    was stored."""
    stored = SecretRepository(session).list_of_project(project.id)
    if not stored:
        # No cipher is made (and `cryptography` never loaded) for the projects that keep
        # no secret, most of them: this runs at every claim.
        return {}
    cipher = _cipher(settings)
    return {
        secret.name: cipher.decrypt(secret.value_ciphertext, name=secret.name, project=project.name)
        for secret in stored
    }
