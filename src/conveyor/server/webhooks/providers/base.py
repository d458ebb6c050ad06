"""The contract of a forge: how its deliveries are recognised, verified and read.

A provider is one module with one object satisfying `Provider`, listed once in
`registry.py`. Providers are pure: they see headers, the raw body and the secret, and
return facts; what to do with the facts (rules, runs) is the service's business.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

ZERO_SHA = "0" * 40


class ProviderName(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"
    FORGEJO = "forgejo"
    BITBUCKET = "bitbucket"
    GENERIC = "generic"


class EventKind(StrEnum):
    """What a delivery asks for; the first three are also the run's `event`."""

    PUSH = "push"
    TAG = "tag"
    PULL_REQUEST = "pull_request"
    PING = "ping"
    NOTHING = "nothing"
    """A delivery that starts nothing (a deleted branch, a closed pull request...):
    `ForgeEvent.reason` says why."""


@dataclass(frozen=True)
class ForgeEvent:
    """The facts of one delivery, as the forge stated them."""

    kind: EventKind
    reason: str = ""
    """Why nothing is built (kind NOTHING), or what the ping said."""
    branch: str | None = None
    """The pushed branch; for a pull request, its target branch (as Woodpecker does:
    the branch filter and `when: branch` apply to where the change is going)."""
    tag: str | None = None
    sha: str | None = None
    message: str = ""
    """The head commit's message, when the payload has it (pull requests do not)."""
    author: str = ""
    """``Name <email>`` of the head commit's author, when the payload has it."""
    actor: str = ""
    """The forge user who pushed or opened/updated the pull request."""
    from_fork: bool = False
    variables: Mapping[str, str] = field(default_factory=dict)
    """Extra run variables (the pull request's number and source branch)."""

    @property
    def ref(self) -> str | None:
        return self.tag if self.tag is not None else self.branch


def nothing(reason: str) -> ForgeEvent:
    return ForgeEvent(kind=EventKind.NOTHING, reason=reason)


class PayloadError(ValueError):
    """The body is not the JSON document the forge's event has."""


class Provider(Protocol):
    name: ProviderName
    signature_headers: frozenset[str]
    """Lowercase names of the headers that carry the secret or a signature of it."""

    def detects(self, headers: Mapping[str, str]) -> bool:
        """Whether these (lowercase-named) headers come from this forge."""

    def event_name(self, headers: Mapping[str, str]) -> str:
        """The forge's name of the event ('' when the delivery names none)."""

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        """The id the forge keeps across redeliveries of this delivery, if any."""

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        """Whether the delivery is signed with `secret` (in constant time)."""

    def parse(self, event_name: str, payload: dict[str, Any]) -> ForgeEvent:
        """The facts of the delivery. Raises PayloadError when the payload lacks what
        the event must have."""


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison; a missing signature never matches."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.strip().encode("utf-8"))


def prefixed_signature_matches(secret: str, body: bytes, given: str | None) -> bool:
    """`sha256=<hex HMAC>` (GitHub, Bitbucket, generic)."""
    if not given:
        return False
    scheme, _, digest = given.strip().partition("=")
    if scheme.lower() != "sha256":
        return False
    return signature_matches(hmac_sha256_hex(secret, body), digest.lower())


def text_at(payload: Any, *path: str) -> str | None:
    """The string at `path` in nested objects, or None when any step is missing."""
    value = payload
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if value is None:
        return None
    if isinstance(value, bool | dict | list):
        return None
    return str(value)


def required_text(payload: Any, *path: str) -> str:
    value = text_at(payload, *path)
    if not value:
        raise PayloadError(f"the payload has no {'.'.join(path)}")
    return value


def person(name: str | None, email: str | None) -> str:
    """``Name <email>`` as git writes it (either part may be missing)."""
    name, email = (name or "").strip(), (email or "").strip()
    if name and email:
        return f"{name} <{email}>"
    return name or (f"<{email}>" if email else "")


def split_ref(ref: str) -> tuple[str | None, str | None]:
    """(branch, tag) of a full ref; (None, None) for any other ref."""
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/"), None
    if ref.startswith("refs/tags/"):
        return None, ref.removeprefix("refs/tags/")
    return None, None


def push_event(
    *,
    ref: str,
    after: str,
    message: str,
    author: str,
    actor: str,
) -> ForgeEvent:
    """A push or tag push given as git refs (GitHub, Gitea, GitLab, generic)."""
    branch, tag = split_ref(ref)
    if branch is None and tag is None:
        return nothing(f"ref {ref!r} is neither a branch nor a tag")
    if not after or set(after) == {"0"}:
        return nothing(f"{'tag' if tag else 'branch'} {tag or branch!r} was deleted")
    return ForgeEvent(
        kind=EventKind.TAG if tag is not None else EventKind.PUSH,
        branch=branch,
        tag=tag,
        sha=after,
        message=message,
        author=author,
        actor=actor,
    )


def pull_request_event(
    *,
    number: str,
    target_branch: str,
    source_branch: str,
    sha: str,
    actor: str,
    from_fork: bool,
    message: str = "",
    author: str = "",
) -> ForgeEvent:
    return ForgeEvent(
        kind=EventKind.PULL_REQUEST,
        branch=target_branch,
        sha=sha,
        message=message,
        author=author,
        actor=actor,
        from_fork=from_fork,
        variables={
            "CI_PULL_REQUEST": number,
            "CI_PULL_REQUEST_SOURCE_BRANCH": source_branch,
            "CI_PULL_REQUEST_TARGET_BRANCH": target_branch,
        },
    )
