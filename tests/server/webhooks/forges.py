"""Deliveries shaped like each forge's: payload files filled in, headers, signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "s3cret-of-the-demo-project"
ZERO = "0" * 40


def fill(name: str, **values: str) -> bytes:
    """The payload file `name` with its `__KEY__` placeholders replaced (JSON-escaped)."""
    text = (PAYLOADS / name).read_text()
    for key, value in values.items():
        escaped = json.dumps(value)[1:-1]
        text = text.replace(f"__{key}__", escaped)
    assert "__" not in text.replace("__init__", ""), f"unfilled placeholder in {name}"
    json.loads(text)  # the filled payload is still JSON
    return text.encode()


def hmac_hex(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    provider: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delivery_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def signed_headers(self, secret: str | None = SECRET) -> dict[str, str]:
        """The forge's headers, signed with `secret` (None: unsigned)."""
        headers = {"Content-Type": "application/json", **self.headers}
        if self.provider == "github":
            headers |= {"X-GitHub-Delivery": self.delivery_id}
            if secret is not None:
                headers["X-Hub-Signature-256"] = "sha256=" + hmac_hex(self.body, secret)
        elif self.provider in {"gitea", "forgejo"}:
            prefix = "X-Gitea" if self.provider == "gitea" else "X-Forgejo"
            # Both send GitHub's and Gogs' headers too; Forgejo also sends Gitea's.
            headers |= {
                "X-GitHub-Delivery": self.delivery_id,
                "X-Gogs-Delivery": self.delivery_id,
                "X-Gitea-Delivery": self.delivery_id,
                f"{prefix}-Delivery": self.delivery_id,
            }
            if secret is not None:
                headers[f"{prefix}-Signature"] = hmac_hex(self.body, secret)
                headers["X-Gitea-Signature"] = hmac_hex(self.body, secret)
        elif self.provider == "gitlab":
            headers |= {
                "X-Gitlab-Event-UUID": self.delivery_id,
                "Idempotency-Key": self.delivery_id,
            }
            headers["X-Gitlab-Instance"] = "https://gitlab.example.test"
            if secret is not None:
                headers["X-Gitlab-Token"] = secret
        elif self.provider == "bitbucket":
            headers |= {"X-Request-UUID": self.delivery_id, "X-Attempt-Number": "1"}
            headers["X-Hook-UUID"] = "cb3e6a6a-2b34-4f4a-8c2e-4d0a1b1a1f00"
            if secret is not None:
                headers["X-Hub-Signature"] = "sha256=" + hmac_hex(self.body, secret)
        else:
            headers |= {"X-Conveyor-Delivery": self.delivery_id}
            if secret is not None:
                headers["X-Conveyor-Signature"] = "sha256=" + hmac_hex(self.body, secret)
        return headers


def _event_headers(provider: str, event: str) -> dict[str, str]:
    if provider == "github":
        return {"X-GitHub-Event": event}
    if provider in {"gitea", "forgejo"}:
        headers = {"X-GitHub-Event": event, "X-Gogs-Event": event, "X-Gitea-Event": event}
        if provider == "forgejo":
            headers["X-Forgejo-Event"] = event
        return headers
    if provider == "gitlab":
        return {"X-Gitlab-Event": event}
    if provider == "bitbucket":
        return {"X-Event-Key": event}
    return {"X-Conveyor-Event": event}


def push(
    provider: str,
    *,
    sha: str,
    before: str,
    branch: str | None = "main",
    tag: str | None = None,
    message: str = "Fix the build",
    actor: str = "octocat",
) -> Delivery:
    ref = f"refs/tags/{tag}" if tag is not None else f"refs/heads/{branch}"
    if provider in {"github", "gitea", "forgejo"}:
        name = "github_push.json" if provider == "github" else "gitea_push.json"
        body = fill(name, REF=ref, BEFORE=before, SHA=sha, MESSAGE=message, ACTOR=actor)
        return Delivery(provider, body, _event_headers(provider, "push"))
    if provider == "gitlab":
        kind = "tag_push" if tag is not None else "push"
        event = "Tag Push Hook" if tag is not None else "Push Hook"
        body = fill(
            "gitlab_push.json",
            KIND=kind,
            REF=ref,
            BEFORE=before,
            SHA=sha,
            MESSAGE=message,
            ACTOR=actor,
        )
        return Delivery(provider, body, _event_headers(provider, event))
    if provider == "bitbucket":
        body = fill(
            "bitbucket_push.json",
            REF_TYPE="tag" if tag is not None else "branch",
            REF_NAME=tag if tag is not None else str(branch),
            SHA=sha,
            BEFORE=before,
            MESSAGE=message,
            ACTOR=actor,
        )
        return Delivery(provider, body, _event_headers(provider, "repo:push"))
    document = {"ref": ref, "sha": sha, "message": message, "actor": actor}
    return Delivery(
        provider, json.dumps(document).encode(), _event_headers(provider, "tag" if tag else "push")
    )


def pull_request(
    provider: str,
    *,
    sha: str,
    base: str,
    fork: bool = False,
    actor: str = "octocat",
    action: str | None = None,
) -> Delivery:
    """Pull request 7 from branch `feature` (of a fork, when `fork`) into `main`."""
    head_repo = "outsider/demo" if fork else "octo-org/demo"
    if provider in {"github", "gitea", "forgejo"}:
        if provider == "github":
            name, default = "github_pull_request.json", "opened"
            values = {"HEAD_OWNER": head_repo.split("/")[0], "HEAD_REPO": head_repo}
        else:
            name, default = "gitea_pull_request.json", "opened"
            values = {"HEAD_REPO": "outsider/demo" if fork else "gitea/demo"}
        body = fill(
            name,
            ACTION=action or default,
            SHA=sha,
            BEFORE=base,
            ACTOR=actor,
            FORK="true" if fork else "false",
            **values,
        )
        return Delivery(provider, body, _event_headers(provider, "pull_request"))
    if provider == "gitlab":
        body = fill(
            "gitlab_merge_request.json",
            ACTION=action or "open",
            SHA=sha,
            MESSAGE="Add a feature",
            ACTOR=actor,
            SOURCE_PROJECT="2" if fork else "1",
        )
        return Delivery(provider, body, _event_headers(provider, "Merge Request Hook"))
    if provider == "bitbucket":
        body = fill(
            "bitbucket_pullrequest.json",
            SHORT_SHA=sha[:12],
            SHORT_BEFORE=base[:12],
            ACTOR=actor,
            HEAD_REPO="outsider/demo" if fork else "team_name/demo",
        )
        return Delivery(provider, body, _event_headers(provider, action or "pullrequest:created"))
    document = {
        "sha": sha,
        "actor": actor,
        "pull_request": {
            "number": 7,
            "source_branch": "feature",
            "target_branch": "main",
            "fork": fork,
        },
    }
    return Delivery(
        provider, json.dumps(document).encode(), _event_headers(provider, "pull_request")
    )


def ping(provider: str) -> Delivery:
    if provider == "github":
        return Delivery(provider, fill("github_ping.json"), _event_headers(provider, "ping"))
    if provider == "bitbucket":
        return Delivery(provider, b'{"test": true}', _event_headers(provider, "diagnostics:ping"))
    return Delivery(provider, b"{}", _event_headers(provider, "ping"))
